"""RDS and Aurora as backup sources: restore a snapshot or a point in time into a NEW, tagged, throwaway instance
(RDS) or cluster with one instance in it (Aurora).

    rds-snapshot:ID                                   that snapshot
    rds-snapshot:latest?instance=ecommerce-production the newest available snapshot (automated, manual or AWS Backup)
    rds-pitr:INSTANCE@2025-10-25T10:30:00Z            restore_db_instance_to_point_in_time, RestoreTime
    rds-pitr:INSTANCE@latest                          … UseLatestRestorableTime
    aurora-snapshot:ID                                that cluster snapshot
    aurora-snapshot:latest?cluster=ecommerce-aurora   the newest available cluster snapshot (any kind, as above)
    aurora-pitr:CLUSTER@2025-10-25T10:30:00Z|latest   restore_db_cluster_to_point_in_time
    awsbackup:arn:aws:rds:…:snapshot:awsbackup:job-…  an AWS Backup recovery point: the snapshot (or cluster snapshot)
                                                      its ARN names

An Aurora cluster has no endpoint to connect to until an instance is available in it: the restore creates the cluster,
then one instance (the target's instance_class), waits for both, and verifies through the cluster's writer endpoint.

Safety: only the instance and cluster this run created are ever modified or deleted (the instance first, then the
cluster, skipping its final snapshot); a new name is refused when it is the source's or one of the protected names;
each is tagged ``restore-verify=true`` with the run id and an expiry time, so that ``python -m restore cleanup`` can
delete what a killed run left behind.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from restore.backups.archive import BackupSummary
from restore.backups.snapshots import available_snapshots, snapshot_id, snapshot_kind
from restore.backups.sources import RdsSource, Source
from restore.cloud import CloudError, aws_call, explain
from restore.conninfo import get_param, with_params
from restore.errors import ConfigError, RestoreError
from restore.targets.elsewhere import ServerElsewhere

if TYPE_CHECKING:
    from restore.backups.archive import ArchiveInfo
    from restore.backups.pgrestore import ToolRun
from restore.waiting import wait_until

TAG = "restore-verify"
DEFAULT_PROTECTED = ("ecommerce-production",)


class RdsError(RestoreError):
    """An RDS restore could not be made or did not become available (CloudError, a failed AWS call, is one too)."""


@dataclass(frozen=True)
class RdsTargetConfig:
    """``kind = "rds"`` in targets.toml."""

    instance_class: str = "db.t3.medium"
    subnet_group: str | None = None
    security_groups: tuple[str, ...] = ()
    parameter_group: str | None = None
    secret: str | None = None  # Secrets Manager id holding DB_HOST, DB_NAME, DB_USERNAME, DB_PASSWORD
    dbname: str | None = None
    user_env: str | None = None
    password_env: str | None = None
    connect_via: str | None = None  # "127.0.0.1:15432": tunnel or port-forward; TLS still checks the endpoint name
    protected: tuple[str, ...] = DEFAULT_PROTECTED
    expires_after_s: float = 6 * 3600
    wait_timeout_s: float = 3600
    cluster_parameter_group: str | None = None  # Aurora: DBClusterParameterGroupName of the new cluster
    kms_key_id: str | None = None  # Aurora: the KMS key of the new cluster (default: the snapshot's own)

    @classmethod
    def from_toml(cls, raw: dict[str, Any], where: str) -> RdsTargetConfig:
        if "password" in raw:
            raise ConfigError(f"{where} has a password key: use secret = \"…\" or password_env = \"VAR\".")
        return cls(
            instance_class=str(raw.get("instance_class", cls.instance_class)),
            subnet_group=raw.get("subnet_group"), security_groups=tuple(raw.get("security_groups", ())),
            parameter_group=raw.get("parameter_group"), secret=raw.get("secret"), dbname=raw.get("dbname"),
            user_env=raw.get("user_env"), password_env=raw.get("password_env"), connect_via=raw.get("connect_via"),
            protected=tuple(raw.get("protected", DEFAULT_PROTECTED)),
            expires_after_s=float(raw.get("expires_after_hours", 6)) * 3600,
            wait_timeout_s=float(raw.get("wait_timeout_minutes", 60)) * 60,
            cluster_parameter_group=raw.get("cluster_parameter_group"), kms_key_id=raw.get("kms_key_id"),
        )


def _client(service: str) -> Any:
    import boto3

    return boto3.client(service)


def latest_snapshot(rds: Any, instance: str, log: Callable[[str], None] | None = None, *,
                    cluster: bool = False) -> dict[str, Any]:
    """The newest of :func:`available_snapshots`, whichever its kind."""
    found = available_snapshots(rds, instance, log, cluster=cluster)
    if not found:
        what, action = (("cluster", "rds:DescribeDBClusterSnapshots") if cluster else
                        ("instance", "rds:DescribeDBSnapshots"))
        raise RdsError(f"No available snapshot of {what} {instance!r} (automated, manual or AWS Backup): checked "
                       f"with {action[4:]}. Is the name right, and does this role have {action}?")
    return max(found, key=lambda s: s["SnapshotCreateTime"])


@dataclass
class RdsRestore:
    """Restores into a new instance on enter; deletes that instance (and only it) on exit unless kept."""

    source: RdsSource
    config: RdsTargetConfig
    run_id: str
    keep: bool = False
    progress: Callable[[str], None] | None = None
    instance_id: str = ""
    created: bool = False
    cluster_id: str = ""  # Aurora: the new cluster (the instance above is in it)
    cluster_created: bool = False
    copy_id: str = ""  # an RDS snapshot copied under the target's kms_key_id, deleted at the end
    copy_created: bool = False
    facts: dict[str, Any] = field(default_factory=dict)
    log_lines: list[str] = field(default_factory=list)  # every AWS call and its answer, for restore.log
    _rds: Any = None

    def _log(self, line: str) -> None:
        self.log_lines.append(line)

    def _call(self, method: Callable[..., Any], action: str, *, resource: str,
              summarize: Callable[[Any], str] | None = None, **params: Any) -> Any:
        return aws_call(method, action, resource=resource, log=self._log, summarize=summarize, **params)

    def _new_name(self, base: str) -> str:
        """The source's name shortened, never the run id: two runs never collide on a long source name."""
        suffix = re.sub(r"[^a-z0-9-]", "-", f"-verify-{self.run_id}".lower())
        head = re.sub(r"[^a-z0-9-]", "-", base.lower())[: 63 - len(suffix)].rstrip("-")
        name = f"{head}{suffix}"
        if name == base or name in self.config.protected:
            raise RdsError(f"Refusing to restore into {name!r}: it is the source or a protected instance.")
        return name

    def __enter__(self) -> RdsRestore:
        try:
            self._rds = _client("rds")
        except Exception as exc:  # no region, no botocore data: the same clear failure as any call
            raise CloudError(explain("unreachable", "rds", "the RDS API", f"{type(exc).__name__}: {exc}"),
                             kind="unreachable", action="rds", resource="the RDS API") from exc
        try:
            self._restore()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _tags(self) -> list[dict[str, str]]:
        expires = datetime.now(UTC) + timedelta(seconds=self.config.expires_after_s)
        return [{"Key": TAG, "Value": "true"}, {"Key": f"{TAG}:run-id", "Value": self.run_id},
                {"Key": f"{TAG}:expires-at", "Value": expires.isoformat(timespec="seconds")}]

    def _common(self, *, cluster: bool = False) -> dict[str, Any]:
        """Where a new instance (or Aurora cluster) lives, and its tags: from targets.toml."""
        args: dict[str, Any] = {"DeletionProtection": False, "Tags": self._tags()}
        if not cluster:
            args |= {"DBInstanceClass": self.config.instance_class, "PubliclyAccessible": False, "MultiAZ": False}
        if self.config.subnet_group:
            args["DBSubnetGroupName"] = self.config.subnet_group
        if self.config.security_groups:
            args["VpcSecurityGroupIds"] = list(self.config.security_groups)
        group = self.config.cluster_parameter_group if cluster else self.config.parameter_group
        if group:
            args["DBClusterParameterGroupName" if cluster else "DBParameterGroupName"] = group
        return args

    def _restore(self) -> None:
        rds, src = self._rds, self.source
        if src.cluster:
            self._restore_cluster()
            return
        if src.kind == "snapshot":
            snapshot = (latest_snapshot(rds, str(src.instance), self._log) if src.snapshot == "latest" else
                        self._call(rds.describe_db_snapshots, "rds:DescribeDBSnapshots",
                                   resource=f"snapshot {src.snapshot!r}", DBSnapshotIdentifier=src.snapshot,
                                   summarize=lambda r: ", ".join(f"{s['DBSnapshotIdentifier']} {s.get('Status')}"
                                                                 for s in r["DBSnapshots"]))["DBSnapshots"][0])
            if snapshot.get("Status") != "available":
                raise CloudError(explain("invalid_state", "rds:RestoreDBInstanceFromDBSnapshot",
                                         f"snapshot {snapshot['DBSnapshotIdentifier']!r}",
                                         f"it is still {snapshot.get('Status')}: "
                                         f"{snapshot.get('PercentProgress', '?')} %"),
                                 kind="invalid_state", action="rds:RestoreDBInstanceFromDBSnapshot",
                                 resource=str(snapshot["DBSnapshotIdentifier"]))
            base = snapshot["DBInstanceIdentifier"]
            self.instance_id = self._new_name(base)
            self._say_snapshot(snapshot)
            restore_from = str(snapshot["DBSnapshotIdentifier"])
            if self.config.kms_key_id and self.config.kms_key_id != snapshot.get("KmsKeyId"):
                restore_from = self._copy_under_key(restore_from, self.config.kms_key_id)
            self.facts |= {"source": src.label, "snapshot": snapshot["DBSnapshotIdentifier"],
                           "snapshot_type": snapshot.get("SnapshotType"), "source_instance": base,
                           "backup_time": snapshot["SnapshotCreateTime"].isoformat(),
                           "engine_version": snapshot.get("EngineVersion"),
                           "encrypted": bool(snapshot.get("Encrypted")) or bool(self.config.kms_key_id),
                           "kms_key_id": self.config.kms_key_id or snapshot.get("KmsKeyId"),
                           "recovery_point": src.recovery_point,
                           "copied_snapshot": self.copy_id or None}
            self._call(rds.restore_db_instance_from_db_snapshot, "rds:RestoreDBInstanceFromDBSnapshot",
                       resource=f"new instance {self.instance_id!r} from snapshot {restore_from!r}",
                       DBInstanceIdentifier=self.instance_id, DBSnapshotIdentifier=restore_from, **self._common())
        else:
            source = self._call(rds.describe_db_instances, "rds:DescribeDBInstances",
                                resource=f"source instance {src.instance!r}", DBInstanceIdentifier=src.instance,
                                summarize=lambda r: str(r["DBInstances"][0].get("DBInstanceStatus")),
                                )["DBInstances"][0]
            self.instance_id = self._new_name(str(src.instance))
            latest = source.get("LatestRestorableTime")
            when: dict[str, Any] = ({"RestoreTime": src.restore_time} if src.restore_time
                                    else {"UseLatestRestorableTime": True})
            point = src.restore_time or latest or datetime.now(UTC)
            self.facts |= {"source": src.label, "source_instance": src.instance,
                           # How far the restore point lies behind "now" when the restore was asked for.
                           "restore_point_lag_s": round((datetime.now(UTC) - point).total_seconds(), 1),
                           "requested_time": src.restore_time.isoformat() if src.restore_time else "latest",
                           "latest_restorable_time": latest.isoformat() if latest else None,
                           "backup_time": (src.restore_time or latest or datetime.now(UTC)).isoformat(),
                           "engine_version": source.get("EngineVersion")}
            self._call(rds.restore_db_instance_to_point_in_time, "rds:RestoreDBInstanceToPointInTime",
                       resource=f"new instance {self.instance_id!r} from {src.instance!r}",
                       SourceDBInstanceIdentifier=src.instance, TargetDBInstanceIdentifier=self.instance_id,
                       **when, **self._common())
        self.created = True
        self.facts["instance"] = self.instance_id
        self._wait()

    def _copy_under_key(self, name: str, key: str) -> str:
        """An RDS instance restore takes no KMS key (it keeps the snapshot's): a copy under the target's key is
        restored instead, tagged like the instance and deleted at the end."""
        rds = self._rds
        self.copy_id = f"{self.instance_id}-key-copy"
        self._call(rds.copy_db_snapshot, "rds:CopyDBSnapshot",
                   resource=f"snapshot {name!r} (copied under the target's KMS key {key})",
                   SourceDBSnapshotIdentifier=name, TargetDBSnapshotIdentifier=self.copy_id, KmsKeyId=key,
                   Tags=self._tags())
        self.copy_created = True
        self._until_available(f"snapshot copy {self.copy_id} (of {name}, under KMS key {key})",
                              rds.describe_db_snapshots, "rds:DescribeDBSnapshots", "DBSnapshots",
                              DBSnapshotIdentifier=self.copy_id)
        return self.copy_id

    def _say_snapshot(self, snapshot: dict[str, Any]) -> None:
        line = (f"snapshot {snapshot_id(snapshot)} ({snapshot_kind(snapshot)}, taken "
                f"{snapshot['SnapshotCreateTime'].isoformat(timespec='seconds')})")
        self._log(f"# restoring {line}")
        if self.progress:
            self.progress(f"restoring {line}")

    def _kms(self, *, encrypted: bool, key: str | None) -> tuple[dict[str, Any], str]:
        """The KMS parameter of a cluster restore, and the words naming the key (for the log and for errors)."""
        if self.config.kms_key_id:
            return {"KmsKeyId": self.config.kms_key_id}, f" (encrypted with KMS key {self.config.kms_key_id})"
        return {}, f" (encrypted with KMS key {key or 'of the source'})" if encrypted or key else ""

    def _restore_cluster(self) -> None:
        """Aurora: a new cluster from a cluster snapshot or a cluster's point in time, then one instance in it."""
        rds, src = self._rds, self.source
        if src.kind == "snapshot":
            snapshot = (latest_snapshot(rds, str(src.instance), self._log, cluster=True) if src.snapshot == "latest"
                        else self._call(rds.describe_db_cluster_snapshots, "rds:DescribeDBClusterSnapshots",
                                        resource=f"cluster snapshot {src.snapshot!r}",
                                        DBClusterSnapshotIdentifier=src.snapshot,
                                        summarize=lambda r: ", ".join(f"{snapshot_id(s)} {s.get('Status')}"
                                                                      for s in r["DBClusterSnapshots"]),
                                        )["DBClusterSnapshots"][0])
            name = snapshot_id(snapshot)
            if snapshot.get("Status") != "available":
                raise CloudError(explain("invalid_state", "rds:RestoreDBClusterFromSnapshot",
                                         f"cluster snapshot {name!r}",
                                         f"it is still {snapshot.get('Status')}: "
                                         f"{snapshot.get('PercentProgress', '?')} %"),
                                 kind="invalid_state", action="rds:RestoreDBClusterFromSnapshot", resource=name)
            base, engine = str(snapshot["DBClusterIdentifier"]), str(snapshot.get("Engine") or "aurora-postgresql")
            self.cluster_id = self._new_name(base)
            self._say_snapshot(snapshot)
            kms, kms_words = self._kms(encrypted=bool(snapshot.get("StorageEncrypted")),
                                        key=snapshot.get("KmsKeyId"))
            self.facts |= {"source": src.label, "snapshot": name, "snapshot_type": snapshot.get("SnapshotType"),
                           "source_cluster": base, "backup_time": snapshot["SnapshotCreateTime"].isoformat(),
                           "engine_version": snapshot.get("EngineVersion"),
                           "encrypted": bool(snapshot.get("StorageEncrypted")),
                           "kms_key_id": self.config.kms_key_id or snapshot.get("KmsKeyId"),
                           "recovery_point": src.recovery_point}
            self._call(rds.restore_db_cluster_from_snapshot, "rds:RestoreDBClusterFromSnapshot",
                       resource=f"new cluster {self.cluster_id!r} from cluster snapshot {name!r}{kms_words}",
                       DBClusterIdentifier=self.cluster_id, SnapshotIdentifier=name, Engine=engine,
                       **self._common(cluster=True), **kms)
        else:
            source = self._call(rds.describe_db_clusters, "rds:DescribeDBClusters",
                                resource=f"source cluster {src.instance!r}", DBClusterIdentifier=src.instance,
                                summarize=lambda r: str(r["DBClusters"][0].get("Status")))["DBClusters"][0]
            self.cluster_id = self._new_name(str(src.instance))
            engine = str(source.get("Engine") or "aurora-postgresql")
            latest = source.get("LatestRestorableTime")
            when: dict[str, Any] = ({"RestoreToTime": src.restore_time} if src.restore_time
                                    else {"UseLatestRestorableTime": True})
            point = src.restore_time or latest or datetime.now(UTC)
            kms, kms_words = self._kms(encrypted=bool(source.get("StorageEncrypted")), key=source.get("KmsKeyId"))
            self.facts |= {"source": src.label, "source_cluster": src.instance,
                           "restore_point_lag_s": round((datetime.now(UTC) - point).total_seconds(), 1),
                           "requested_time": src.restore_time.isoformat() if src.restore_time else "latest",
                           "latest_restorable_time": latest.isoformat() if latest else None,
                           "backup_time": point.isoformat(), "engine_version": source.get("EngineVersion"),
                           "encrypted": bool(source.get("StorageEncrypted")),
                           "kms_key_id": self.config.kms_key_id or source.get("KmsKeyId")}
            self._call(rds.restore_db_cluster_to_point_in_time, "rds:RestoreDBClusterToPointInTime",
                       resource=f"new cluster {self.cluster_id!r} from cluster {src.instance!r}{kms_words}",
                       SourceDBClusterIdentifier=src.instance, DBClusterIdentifier=self.cluster_id, **when,
                       **self._common(cluster=True), **kms)
        self.cluster_created = True
        self.facts["cluster"] = self.cluster_id
        # The instance's name: the cluster's, which is this run's own; "-1" as Aurora names a cluster's first.
        self.instance_id = f"{self.cluster_id[:61].rstrip('-')}-1"
        instance: dict[str, Any] = {"DBInstanceClass": self.config.instance_class, "PubliclyAccessible": False,
                                    "Tags": self._tags()}
        if self.config.parameter_group:
            instance["DBParameterGroupName"] = self.config.parameter_group
        self._call(rds.create_db_instance, "rds:CreateDBInstance",
                   resource=f"new instance {self.instance_id!r} in cluster {self.cluster_id!r}",
                   DBInstanceIdentifier=self.instance_id, DBClusterIdentifier=self.cluster_id, Engine=engine,
                   **instance)
        self.created = True
        self.facts["instance"] = self.instance_id
        self._wait()
        cluster = self._wait_cluster()
        self.facts["endpoint"] = cluster["Endpoint"]  # the writer endpoint
        self.facts["port"] = int(cluster.get("Port") or 5432)

    def _wait_cluster(self) -> dict[str, Any]:
        return self._until_available(f"Aurora cluster {self.cluster_id}", self._rds.describe_db_clusters,
                                     "rds:DescribeDBClusters", "DBClusters", DBClusterIdentifier=self.cluster_id)

    def _until_available(self, what: str, describe: Callable[..., Any], action: str, listed: str,
                         status_field: str = "Status", **params: Any) -> dict[str, Any]:
        """Poll ``what`` (an instance, a cluster, a snapshot copy) until it is available, with a status line every
        poll: a 20-minute restore is not a silent terminal. Bounded by wait_timeout_minutes."""
        delay = 30 if "AWS_ENDPOINT_URL" not in os.environ else 1
        status: dict[str, Any] = {}

        def available() -> dict[str, Any] | None:
            status.update(self._call(describe, action, resource=what,
                                     summarize=lambda r: str(r[listed][0].get(status_field)), **params)[listed][0])
            return status if status.get(status_field) == "available" else None

        def say(elapsed: float) -> None:
            if self.progress:
                done = f" {status['PercentProgress']} %" if status.get("PercentProgress") is not None else ""
                self.progress(f"{what}: {status.get(status_field)}{done}, {elapsed:.0f} s")

        return wait_until(available, timeout_s=self.config.wait_timeout_s, interval_s=delay, progress=say,
                          on_timeout=lambda _: RdsError(
                              f"{what} did not become available within {self.config.wait_timeout_s:.0f} s "
                              "(wait_timeout_minutes in targets.toml). It is deleted now; check the AWS console for "
                              "its events."))

    def _wait(self) -> None:
        ready = self._until_available(f"RDS instance {self.instance_id}", self._rds.describe_db_instances,
                                      "rds:DescribeDBInstances", "DBInstances", "DBInstanceStatus",
                                      DBInstanceIdentifier=self.instance_id)
        self.facts["endpoint"] = ready["Endpoint"]["Address"]
        self.facts["port"] = int(ready["Endpoint"]["Port"])

    def conninfo(self) -> str:
        """Credentials from Secrets Manager (the runbook's keys) or environment variables; never from the file."""
        user = password = dbname = None
        if self.config.secret:
            try:
                raw = self._call(_client("secretsmanager").get_secret_value, "secretsmanager:GetSecretValue",
                                 resource=f"secret {self.config.secret!r}", SecretId=self.config.secret,
                                 summarize=lambda _: "(value not shown)")["SecretString"]
            except CloudError as exc:
                raise RdsError(f"The credentials secret {self.config.secret!r} cannot be read from Secrets Manager: "
                               f"{exc} Check its name (secret = \"…\" in targets.toml).") from exc
            secret = json.loads(raw)
            user, password, dbname = secret.get("DB_USERNAME"), secret.get("DB_PASSWORD"), secret.get("DB_NAME")
        if self.config.user_env:
            user = os.environ.get(self.config.user_env, user)
        if self.config.password_env:
            password = os.environ.get(self.config.password_env, password)
        dbname = self.config.dbname or dbname or "postgres"
        if not user or not password:
            raise ConfigError("The RDS target has no credentials: set secret = \"…\" (Secrets Manager, keys "
                              "DB_USERNAME/DB_PASSWORD/DB_NAME) or user_env/password_env in targets.toml.")
        host, port = self.facts["endpoint"], self.facts["port"]
        params: dict[str, str | int | None] = {"host": host, "port": port, "user": user, "password": password,
                                               "dbname": dbname}
        if self.config.connect_via:
            via_host, _, via_port = self.config.connect_via.rpartition(":")
            # hostaddr: connect to the tunnel, while host stays the endpoint name for TLS verification.
            params |= {"hostaddr": via_host, "port": int(via_port)}
        return with_params("", **params)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.keep:
            return
        if self.created:
            try:
                params: dict[str, Any] = ({} if self.cluster_created else
                                          {"SkipFinalSnapshot": True, "DeleteAutomatedBackups": True})
                self._call(self._rds.delete_db_instance, "rds:DeleteDBInstance",
                           resource=f"instance {self.instance_id!r}", DBInstanceIdentifier=self.instance_id, **params)
            except CloudError as error:  # said, never a traceback at teardown; cleanup deletes it by its tags
                self._log(f"# not deleted: {error} python -m restore cleanup deletes it once its expiry passes.")
            self.created = False
        if self.copy_created:
            try:
                self._call(self._rds.delete_db_snapshot, "rds:DeleteDBSnapshot",
                           resource=f"snapshot copy {self.copy_id!r}", DBSnapshotIdentifier=self.copy_id)
            except CloudError as error:
                self._log(f"# not deleted: {error} python -m restore cleanup deletes it once its expiry passes.")
            self.copy_created = False
        if self.cluster_created:
            # A cluster is deleted only once it has no instance left (InvalidDBClusterStateFault otherwise).
            try:
                self._wait_gone()
                self._call(self._rds.delete_db_cluster, "rds:DeleteDBCluster", resource=f"cluster {self.cluster_id!r}",
                           DBClusterIdentifier=self.cluster_id, SkipFinalSnapshot=True)
            except (CloudError, RdsError) as error:
                self._log(f"# not deleted: {error} python -m restore cleanup deletes it once its expiry passes.")
            self.cluster_created = False

    def _wait_gone(self) -> None:
        delay = 15 if "AWS_ENDPOINT_URL" not in os.environ else 0.5

        def gone() -> bool | None:
            try:
                self._call(self._rds.describe_db_instances, "rds:DescribeDBInstances",
                           resource=f"instance {self.instance_id!r}", DBInstanceIdentifier=self.instance_id,
                           summarize=lambda r: str(r["DBInstances"][0].get("DBInstanceStatus")))
            except CloudError as error:
                if error.kind == "not_found":
                    return True
                raise
            return None

        def say(elapsed: float) -> None:
            if self.progress:
                self.progress(f"deleting instance {self.instance_id} before its cluster, {elapsed:.0f} s")

        wait_until(gone, timeout_s=self.config.wait_timeout_s, interval_s=delay, progress=say,
                   on_timeout=lambda _: RdsError(f"instance {self.instance_id} was still being deleted after "
                                                 f"{self.config.wait_timeout_s:.0f} s, so its cluster "
                                                 f"{self.cluster_id} could not be deleted yet."))


def _expired(resource: dict[str, Any], now: datetime) -> bool:
    tags = {t["Key"]: t["Value"] for t in resource.get("TagList", [])}
    if tags.get(TAG) != "true" or f"{TAG}:expires-at" not in tags:
        return False  # not this suite's: never touched
    return datetime.fromisoformat(tags[f"{TAG}:expires-at"]) <= now


def cleanup_expired(*, now: datetime | None = None, dry_run: bool = False) -> list[str]:
    """Delete restore-verify instances, snapshot copies, then Aurora clusters, whose expiry tag has passed; nothing
    without the tag is touched. A cluster whose instances are still being deleted is said, and deleted by the next
    cleanup."""
    rds = _client("rds")
    now = now or datetime.now(UTC)
    deleted = []
    for page in rds.get_paginator("describe_db_instances").paginate():
        for instance in page["DBInstances"]:
            if not _expired(instance, now):
                continue
            if not dry_run:
                # An Aurora cluster's instance takes no final snapshot of its own (its cluster would).
                extra = {} if instance.get("DBClusterIdentifier") else {"SkipFinalSnapshot": True,
                                                                         "DeleteAutomatedBackups": True}
                rds.delete_db_instance(DBInstanceIdentifier=instance["DBInstanceIdentifier"], **extra)
            deleted.append(instance["DBInstanceIdentifier"])
    for page in rds.get_paginator("describe_db_snapshots").paginate(SnapshotType="manual"):
        for snapshot in page["DBSnapshots"]:  # copies made under a target's KMS key
            if _expired(snapshot, now):
                if not dry_run:
                    rds.delete_db_snapshot(DBSnapshotIdentifier=snapshot["DBSnapshotIdentifier"])
                deleted.append(f"snapshot {snapshot['DBSnapshotIdentifier']}")
    for page in rds.get_paginator("describe_db_clusters").paginate():
        for cluster in page["DBClusters"]:
            if not _expired(cluster, now):
                continue
            name = cluster["DBClusterIdentifier"]
            if not dry_run:
                try:
                    rds.delete_db_cluster(DBClusterIdentifier=name, SkipFinalSnapshot=True)
                except rds.exceptions.InvalidDBClusterStateFault:
                    deleted.append(f"cluster {name} (its instances are still being deleted: run cleanup again)")
                    continue
            deleted.append(f"cluster {name}")
    return deleted


class RdsTarget(ServerElsewhere):
    """kind "rds": the backup (a snapshot or a point in time) is restored into a new instance, which ``stop``
    deletes (unless kept). The restore happens in :meth:`start`; every AWS call goes to the restore log."""

    restores = True
    loads_dumps = False

    def __init__(self, name: str, config: RdsTargetConfig, *, keep: bool, run_id: str,
                 progress: Callable[[str], None] | None = None) -> None:
        self.name, self.config, self.keep, self.run_id, self.progress = name, config, keep, run_id, progress
        self.restore: RdsRestore | None = None
        self._conninfo: str | None = None
        self._log: IO[str] | None = None
        self._logged = 0

    def check(self, source: Source | None) -> None:
        if source is None or source.rds is None:
            raise ConfigError(f"Target {self.name!r} is an RDS instance (or Aurora cluster) to restore into: pass an "
                              "RDS or Aurora source, --backup=rds-snapshot:ID, rds-snapshot:latest?instance=NAME, "
                              "rds-pitr:NAME@TIME, aurora-snapshot:ID, aurora-snapshot:latest?cluster=NAME, "
                              "aurora-pitr:CLUSTER@TIME or awsbackup:ARN.")

    def _flush_log(self) -> None:
        if self._log is not None and self.restore is not None:
            self._log.writelines(f"{line}\n" for line in self.restore.log_lines[self._logged:])
            self._logged = len(self.restore.log_lines)
            self._log.flush()

    def start(self, *, source: Source | None, info: ArchiveInfo | None, log: IO[str]) -> None:
        assert source is not None  # check() said so
        assert source.rds is not None
        self._log = log
        self.restore = RdsRestore(source.rds, self.config, self.run_id, keep=self.keep, progress=self.progress)
        try:
            self.restore.__enter__()
            self._conninfo = self.restore.conninfo()
        except BaseException:
            self.stop()
            raise
        finally:
            self._flush_log()
            # The facts last, as JSON: what was restored, from when.
            log.write("# facts: " + json.dumps(self.restore.facts, default=str) + "\n")

    def stop(self) -> None:
        if self.restore is not None:
            self.restore.__exit__(None, None, None)
            self._flush_log()

    def conninfo(self, dbname: str | None = None) -> str:
        if self._conninfo is None:
            raise RdsError("The RDS instance has not been restored.")
        return self._conninfo

    def display(self, dbname: str | None) -> str:
        if self.restore and self.restore.cluster_id:
            return f"Aurora cluster {self.restore.cluster_id} (instance {self.restore.instance_id})"
        return f"RDS instance {self.restore.instance_id}" if self.restore and self.restore.instance_id \
            else f"new RDS instance ({self.name})"

    def app_address(self) -> tuple[str | None, int | None]:
        conninfo = self.conninfo()
        return get_param(conninfo, "hostaddr") or get_param(conninfo, "host"), int(get_param(conninfo, "port") or 5432)

    def kept(self, dbname: str | None) -> tuple[str, ...]:
        if not self.keep or self.restore is None or not self.restore.created:
            return ()
        endpoint = self.restore.facts.get("endpoint")
        connect = (f"connect:  psql 'host={endpoint} port={self.restore.facts.get('port')} dbname={dbname}' with the "
                   "target's credentials (its secret or user_env/password_env)")
        if self.restore.cluster_id:
            return (connect, f"remove:   aws rds delete-db-instance --db-instance-identifier {self.restore.instance_id}"
                             f" && aws rds delete-db-cluster --db-cluster-identifier {self.restore.cluster_id} "
                             "--skip-final-snapshot (python -m restore cleanup does both once their expiry tag passes)")
        return (connect, f"remove:   aws rds delete-db-instance --db-instance-identifier {self.restore.instance_id} "
                         "--skip-final-snapshot (python -m restore cleanup does it once its expiry tag passes)")

    def restore_dump(self, info: ArchiveInfo, dbname: str, *, jobs: int, log: IO[str],
                     on_line: Callable[[str], None], before_data: Callable[[], None] | None = None) -> ToolRun:
        raise ConfigError(f"Target {self.name!r} restores RDS snapshots, not dump files.")

    def server_label(self) -> str:
        engine = self.restore.facts.get("engine_version") if self.restore else None
        return f"{'Aurora' if self.restore and self.restore.cluster_id else 'RDS'} PostgreSQL {engine or '?'}"

    def backup_summary(self) -> BackupSummary | None:
        facts = self.restore.facts if self.restore else {}
        source = facts.get("source")
        return BackupSummary(
            format=source, created_at=facts.get("backup_time"),
            created_at_source=("requested point in time" if str(source).endswith("-pitr") else
                               "AWS Backup recovery point time" if source == "awsbackup" else "RDS snapshot time"),
            dumped_from=facts.get("engine_version"),
            rds={key: value if isinstance(value, str | int | float) or value is None else str(value)
                 for key, value in facts.items()})
