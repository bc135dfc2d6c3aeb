"""RDS as a backup source: restore a snapshot or a point in time into a NEW, tagged, throwaway instance.

    rds-snapshot:ID                                   that snapshot
    rds-snapshot:latest?instance=ecommerce-production the newest available snapshot (automated or manual)
    rds-pitr:INSTANCE@2025-10-25T10:30:00Z            restore_db_instance_to_point_in_time, RestoreTime
    rds-pitr:INSTANCE@latest                          … UseLatestRestorableTime

Safety: only the instance this run created is ever modified or deleted; the new instance's name is refused when it is
the source's or one of the protected names; it is tagged ``restore-verify=true`` with the run id and an expiry time, so
that ``python -m restore cleanup`` can delete what a killed run left behind.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from restore.cloud import CloudError, aws_call, explain
from restore.conninfo import with_params
from restore.errors import ConfigError, RestoreError

TAG = "restore-verify"
DEFAULT_PROTECTED = ("ecommerce-production",)


class RdsError(RestoreError):
    """An RDS restore could not be made or did not become available (CloudError, a failed AWS call, is one too)."""


@dataclass(frozen=True)
class RdsSource:
    kind: str  # "snapshot" | "pitr"
    snapshot: str | None = None  # id, or "latest"
    instance: str | None = None  # source instance (pitr, or latest snapshot of it)
    restore_time: datetime | None = None  # pitr; None = latest restorable


def is_rds(spec: str) -> bool:
    return spec.startswith(("rds-snapshot:", "rds-pitr:"))


def parse_rds(spec: str) -> RdsSource:
    if spec.startswith("rds-snapshot:"):
        rest = spec.removeprefix("rds-snapshot:")
        if rest.startswith("latest"):
            m = re.fullmatch(r"latest\?instance=([A-Za-z0-9-]+)", rest)
            if not m:
                raise ConfigError.invalid("RDS source", spec, "--backup",
                                          "Write rds-snapshot:latest?instance=INSTANCE.")
            return RdsSource("snapshot", snapshot="latest", instance=m.group(1))
        return RdsSource("snapshot", snapshot=rest)
    instance, _, when = spec.removeprefix("rds-pitr:").partition("@")
    if not instance or not when:
        raise ConfigError.invalid("RDS source", spec, "--backup", "Write rds-pitr:INSTANCE@ISO8601 or @latest.")
    if when == "latest":
        return RdsSource("pitr", instance=instance)
    try:
        moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError.invalid("restore time", when, "--backup", "Use ISO 8601: 2025-10-25T10:30:00Z.") from exc
    return RdsSource("pitr", instance=instance, restore_time=moment if moment.tzinfo else moment.replace(tzinfo=UTC))


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
        )


def _client(service: str) -> Any:
    import boto3

    return boto3.client(service)


def latest_snapshot(rds: Any, instance: str, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    pages = aws_call(lambda **kw: list(rds.get_paginator("describe_db_snapshots").paginate(**kw)),
                     "rds:DescribeDBSnapshots", resource=f"snapshots of instance {instance!r}", log=log,
                     summarize=lambda pages: f"{sum(len(p['DBSnapshots']) for p in pages)} snapshot(s)",
                     DBInstanceIdentifier=instance)
    snapshots = [s for page in pages for s in page["DBSnapshots"] if s.get("Status") == "available"]
    if not snapshots:
        raise RdsError(f"No available snapshot of instance {instance!r} (automated or manual): checked with "
                       "DescribeDBSnapshots. Is the name right, and does this role have rds:DescribeDBSnapshots?")
    return max(snapshots, key=lambda s: s["SnapshotCreateTime"])


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

    def _common(self) -> dict[str, Any]:
        args: dict[str, Any] = {"DBInstanceClass": self.config.instance_class, "PubliclyAccessible": False,
                                "MultiAZ": False, "DeletionProtection": False, "Tags": self._tags()}
        if self.config.subnet_group:
            args["DBSubnetGroupName"] = self.config.subnet_group
        if self.config.security_groups:
            args["VpcSecurityGroupIds"] = list(self.config.security_groups)
        if self.config.parameter_group:
            args["DBParameterGroupName"] = self.config.parameter_group
        return args

    def _restore(self) -> None:
        rds, src = self._rds, self.source
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
            self.facts |= {"source": "rds-snapshot", "snapshot": snapshot["DBSnapshotIdentifier"],
                           "snapshot_type": snapshot.get("SnapshotType"), "source_instance": base,
                           "backup_time": snapshot["SnapshotCreateTime"].isoformat(),
                           "engine_version": snapshot.get("EngineVersion")}
            self._call(rds.restore_db_instance_from_db_snapshot, "rds:RestoreDBInstanceFromDBSnapshot",
                       resource=f"new instance {self.instance_id!r} from snapshot "
                                f"{snapshot['DBSnapshotIdentifier']!r}",
                       DBInstanceIdentifier=self.instance_id, DBSnapshotIdentifier=snapshot["DBSnapshotIdentifier"],
                       **self._common())
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
            self.facts |= {"source": "rds-pitr", "source_instance": src.instance,
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

    def _wait(self) -> None:
        """The boto3 waiter, with a status line every poll so that a 20-minute restore is not a silent terminal."""
        started = time.monotonic()
        delay = 30 if "AWS_ENDPOINT_URL" not in os.environ else 1
        attempts = max(1, int(self.config.wait_timeout_s // delay))
        for attempt in range(attempts):
            status = self._call(self._rds.describe_db_instances, "rds:DescribeDBInstances",
                                resource=f"instance {self.instance_id!r}", DBInstanceIdentifier=self.instance_id,
                                summarize=lambda r: str(r["DBInstances"][0].get("DBInstanceStatus")),
                                )["DBInstances"][0]
            if self.progress:
                self.progress(f"RDS instance {self.instance_id}: {status.get('DBInstanceStatus')}, "
                              f"{time.monotonic() - started:.0f} s")
            if status.get("DBInstanceStatus") == "available":
                self.facts["endpoint"] = status["Endpoint"]["Address"]
                self.facts["port"] = int(status["Endpoint"]["Port"])
                return
            if attempt + 1 < attempts:
                time.sleep(delay)
        raise RdsError(f"RDS instance {self.instance_id} did not become available within "
                       f"{self.config.wait_timeout_s:.0f} s (wait_timeout_minutes in targets.toml). It is deleted "
                       "now; check the AWS console for its events.")

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
        if self.created and not self.keep:
            try:
                self._call(self._rds.delete_db_instance, "rds:DeleteDBInstance",
                           resource=f"instance {self.instance_id!r}", DBInstanceIdentifier=self.instance_id,
                           SkipFinalSnapshot=True, DeleteAutomatedBackups=True)
            except CloudError as error:  # said, never a traceback at teardown; cleanup deletes it by its tags
                self._log(f"# not deleted: {error} python -m restore cleanup deletes it once its expiry passes.")
            self.created = False


def cleanup_expired(*, now: datetime | None = None, dry_run: bool = False) -> list[str]:
    """Delete restore-verify instances whose expiry tag has passed; nothing without the tag is touched."""
    rds = _client("rds")
    now = now or datetime.now(UTC)
    deleted = []
    for page in rds.get_paginator("describe_db_instances").paginate():
        for instance in page["DBInstances"]:
            tags = {t["Key"]: t["Value"] for t in instance.get("TagList", [])}
            if tags.get(TAG) != "true" or f"{TAG}:expires-at" not in tags:
                continue
            if datetime.fromisoformat(tags[f"{TAG}:expires-at"]) <= now:
                if not dry_run:
                    rds.delete_db_instance(DBInstanceIdentifier=instance["DBInstanceIdentifier"],
                                           SkipFinalSnapshot=True, DeleteAutomatedBackups=True)
                deleted.append(instance["DBInstanceIdentifier"])
    return deleted
