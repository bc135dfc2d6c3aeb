"""Where a backup comes from: :class:`Source`, parsed once from ``--backup``.

A local path, ``s3://bucket/key`` (``s3://bucket/prefix/`` with a pick), an RDS snapshot or an RDS point in time.
A logical source (a dump file) fetches itself to a local path (:meth:`Source.fetch`); an RDS source is restored by
the RDS target itself.

An S3 dump is downloaded (multipart, with progress) into a temporary directory that the caller removes, its size
checked against the object's and its checksum against the ETag where the ETag is a checksum of the content; the
manifest next to it (``<key>.manifest.json``) comes along when present. boto3 finds credentials and the endpoint
the standard way (``AWS_*`` variables, profiles, instance roles; ``AWS_ENDPOINT_URL`` for an S3-compatible store).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

from restore.backups.physical import BaseBackup, PhysicalBackup, RecoveryTarget
from restore.errors import ConfigError, DumpNotFound, VerifierFault

MANIFEST_SUFFIX = ".manifest.json"
PICKS = ("latest",)
SourceKind = Literal["file", "s3", "rds", "basebackup", "pgbackrest", "barman-cloud", "cnpg"]
PHYSICAL_KINDS = ("basebackup", "pgbackrest", "barman-cloud", "cnpg")
_K8S_NAME = r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?"


@dataclass(frozen=True)
class RdsSource:
    kind: str  # "snapshot" | "pitr"
    snapshot: str | None = None  # id, or "latest"
    instance: str | None = None  # source instance or Aurora cluster (pitr, or latest snapshot of it)
    restore_time: datetime | None = None  # pitr; None = latest restorable
    cluster: bool = False  # Aurora: a cluster snapshot or a cluster's point in time (restored into a new cluster)
    recovery_point: str | None = None  # awsbackup:ARN: the AWS Backup recovery point the snapshot came from

    @property
    def label(self) -> str:
        """The source kind as result.json's backup.format says it."""
        if self.recovery_point:
            return "awsbackup"
        return f"{'aurora' if self.cluster else 'rds'}-{'snapshot' if self.kind == 'snapshot' else 'pitr'}"


RDS_PREFIXES = ("rds-snapshot:", "rds-pitr:", "aurora-snapshot:", "aurora-pitr:", "awsbackup:")
_RECOVERY_POINT = re.compile(r"arn:aws[a-z-]*:rds:[a-z0-9-]+:\d{12}:(snapshot|cluster-snapshot):(.+)")


def parse_recovery_point(arn: str) -> RdsSource:
    """An AWS Backup recovery point of RDS or Aurora is the snapshot itself: its ARN names the snapshot
    (``…:snapshot:awsbackup:job-…`` or ``…:cluster-snapshot:awsbackup:job-…``)."""
    m = _RECOVERY_POINT.fullmatch(arn)
    if not m:
        raise ConfigError.invalid(
            "AWS Backup recovery point", arn, "--backup",
            "Give the recovery point ARN of an RDS or Aurora backup: arn:aws:rds:REGION:ACCOUNT:snapshot:awsbackup:"
            "job-… or …:cluster-snapshot:awsbackup:job-… (aws backup list-recovery-points-by-backup-vault shows "
            "them); other resource types (EBS, EC2, S3 …) hold no PostgreSQL database this suite can restore.")
    return RdsSource("snapshot", snapshot=m.group(2), cluster=m.group(1) == "cluster-snapshot", recovery_point=arn)


def parse_rds(spec: str) -> RdsSource:
    if spec.startswith("awsbackup:"):
        return parse_recovery_point(spec.removeprefix("awsbackup:"))
    for prefix, of, cluster in (("rds-snapshot:", "instance", False), ("aurora-snapshot:", "cluster", True)):
        if spec.startswith(prefix):
            rest = spec.removeprefix(prefix)
            if not rest.startswith("latest"):
                if not rest:
                    raise ConfigError.invalid("backup source", spec, "--backup", f"Write {prefix}SNAPSHOT-ID.")
                return RdsSource("snapshot", snapshot=rest, cluster=cluster)
            m = re.fullmatch(rf"latest\?{of}=([A-Za-z0-9-]+)", rest)
            if not m:
                raise ConfigError.invalid("backup source", spec, "--backup",
                                          f"Write {prefix}latest?{of}={of.upper()}.")
            return RdsSource("snapshot", snapshot="latest", instance=m.group(1), cluster=cluster)
    cluster = spec.startswith("aurora-pitr:")
    prefix, form = ("aurora-pitr:", "aurora-pitr:CLUSTER") if cluster else ("rds-pitr:", "rds-pitr:INSTANCE")
    source = _pitr(spec, spec.removeprefix(prefix), form)
    return RdsSource("pitr", instance=source.instance, restore_time=source.restore_time, cluster=cluster)


def _pitr(spec: str, rest: str, form: str) -> RdsSource:
    instance, _, when = rest.partition("@")
    if not instance or not when:
        raise ConfigError.invalid("RDS source", spec, "--backup", f"Write {form}@ISO8601 or @latest.")
    if when == "latest":
        return RdsSource("pitr", instance=instance)
    try:
        moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError.invalid("restore time", when, "--backup", "Use ISO 8601: 2025-10-25T10:30:00Z.") from exc
    return RdsSource("pitr", instance=instance, restore_time=moment if moment.tzinfo else moment.replace(tzinfo=UTC))


@dataclass(frozen=True)
class FetchedBackup:
    path: Path
    manifest: Path | None
    spec: str
    size_bytes: int
    checksum: str | None  # what was verified, or why it could not be; None for a local file


def parse_s3(spec: str) -> tuple[str, str]:
    bucket, _, key = spec.removeprefix("s3://").partition("/")
    if not bucket:
        raise ConfigError.invalid("S3 backup", spec, "--backup", "Write it as s3://bucket/key or s3://bucket/prefix/.")
    return bucket, key


def _pick_latest(client: Any, bucket: str, prefix: str) -> str:
    newest: tuple[Any, str] | None = None
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(MANIFEST_SUFFIX) or obj["Key"].endswith("/"):
                continue
            if newest is None or obj["LastModified"] > newest[0]:
                newest = (obj["LastModified"], obj["Key"])
    if newest is None:
        raise DumpNotFound(f"No backup under s3://{bucket}/{prefix} (manifests left aside): the prefix is empty or "
                           f"wrong. List it with: aws s3 ls s3://{bucket}/{prefix}")
    return newest[1]


def _md5_etag(path: Path, part_size: int, *, multipart: bool) -> str:
    """The ETag S3 gives an object uploaded whole (its MD5) or in parts of ``part_size`` (MD5 of the parts' MD5s)."""
    digests = []
    with path.open("rb") as fh:
        while chunk := fh.read(part_size):
            digests.append(hashlib.md5(chunk).digest())
    if not multipart:
        return digests[0].hex() if digests else hashlib.md5(b"").hexdigest()
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def verify_etag(path: Path, etag: str) -> str:
    """Compare the file with an S3 ETag: MD5 for single-part uploads, MD5 of part MD5s for multipart ones (the part
    size is not recorded: the usual sizes, and the one the part count implies, are tried)."""
    etag = etag.strip('"')
    size = path.stat().st_size
    if "-" not in etag:
        if _md5_etag(path, max(size, 1), multipart=False) != etag:
            # S3 computed the ETag from the bytes it stored: a copy that differs was damaged on its way here.
            raise VerifierFault(f"{path.name}: MD5 differs from the S3 ETag {etag}: the download was damaged on its "
                                "way (the object S3 holds is what its ETag says). Try again; if it repeats, check the "
                                "network path to S3.")
        return f"md5 {etag} (matches the S3 ETag)"
    parts = int(etag.rsplit("-", 1)[1])
    mib = 1024 * 1024
    implied = math.ceil(size / parts / mib) * mib
    for part_size in dict.fromkeys((8 * mib, 16 * mib, 64 * mib, 5 * mib, implied)):
        if _md5_etag(path, part_size, multipart=True) == etag:
            return f"multipart ETag {etag} (parts of {part_size // mib} MiB) matches"
    return f"not verified: multipart ETag {etag} with a part size that could not be inferred (size was checked)"


def check_downloaded(path: Path, size: int, where: str) -> None:
    """A download shorter (or longer) than the object: the network's doing, not the backup's (S3 said its size)."""
    got = path.stat().st_size
    if got != size:
        raise VerifierFault(f"{where}: downloaded {got} bytes of {size}: the download was cut short (the object is "
                            f"whole on S3). Try again; if it repeats, check the network path to S3.")


def fetch_s3(spec: str, dest_dir: Path, *, pick: str | None = None,
             progress: Callable[[str], None] | None = None, client: Any = None) -> FetchedBackup:
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import ClientError

    s3 = client or boto3.client("s3")
    bucket, key = parse_s3(spec)
    if not key or key.endswith("/"):
        if pick not in PICKS:
            # Not a configuration error: the run is recorded as refused, saying which flag picks one.
            raise DumpNotFound(f"{spec} is a prefix: pass --backup-pick=latest to restore its newest backup.")
        key = _pick_latest(s3, bucket, key)
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchKey", "NotFound"):
            raise DumpNotFound(f"No object s3://{bucket}/{key}: checked with HeadObject. Check the key (aws s3 ls "
                               f"s3://{bucket}/{key.rsplit('/', 1)[0]}/) or pass the prefix with --backup-pick "
                               "latest.") from exc
        raise VerifierFault(f"s3://{bucket}/{key} cannot be read ({code or exc}): check the credentials and the "
                            "bucket policy (s3:GetObject, s3:ListBucket).") from exc
    size = int(head["ContentLength"])
    target = dest_dir / Path(key).name
    done = [0]

    def on_bytes(count: int) -> None:
        done[0] += count
        if progress is not None:
            progress(f"downloading s3://{bucket}/{key}: {done[0] / 1e6:,.0f} of {size / 1e6:,.0f} MB")

    s3.download_file(bucket, key, str(target), Callback=on_bytes,
                     Config=TransferConfig(multipart_threshold=64 * 1024 * 1024, max_concurrency=4))
    check_downloaded(target, size, f"s3://{bucket}/{key}")
    checksum = verify_etag(target, head.get("ETag", ""))
    manifest: Path | None = dest_dir / (target.name + MANIFEST_SUFFIX)
    try:
        s3.download_file(bucket, key + MANIFEST_SUFFIX, str(manifest))
    except ClientError:
        manifest = None
    return FetchedBackup(path=target, manifest=manifest, spec=f"s3://{bucket}/{key}", size_bytes=size,
                         checksum=checksum)


@dataclass(frozen=True)
class Source:
    """A backup as given to ``--backup``, classified once: what it is, and how to get it as a local file."""

    spec: str  # as given (a path is made absolute)
    kind: SourceKind
    path: Path | None = None  # kind "file"
    pick: str | None = None  # kind "s3", for a prefix
    rds: RdsSource | None = None  # kind "rds"
    wal: Path | None = None  # kind "basebackup": the WAL archive (?wal=DIR)
    database: str = "postgres"  # a physical kind: the database to verify (?db=NAME); cnpg: "" = the cluster's
    incrementals: tuple[Path, ...] = ()  # kind "basebackup": incremental backups after it, oldest first
    recovery: RecoveryTarget = RecoveryTarget()  # a physical kind: where recovery stops
    repository: str | None = None  # pgbackrest: the stanza; barman-cloud: s3://bucket/prefix/SERVER; cnpg: NS/NAME
    config: Path | None = None  # kind "pgbackrest": its configuration file (?config=FILE)
    endpoint: str | None = None  # kind "barman-cloud": an S3-compatible endpoint (?endpoint=URL)
    recovery_from_spec: bool = False  # the target came from the spec's @TIME / @latest

    @classmethod
    def parse(cls, value: str, *, base: Path, pick: str | None = None) -> Source:
        """``s3://…`` → an S3 object or prefix; ``rds-snapshot:…``/``rds-pitr:…`` → RDS; anything else a path
        (relative to ``base``). Raises ConfigError for an RDS spec that does not parse."""
        if value.startswith("s3://"):
            parse_s3(value)
            return cls(spec=value, kind="s3", pick=pick)
        if value.startswith(RDS_PREFIXES):
            return cls(spec=value, kind="rds", rds=parse_rds(value))
        if value.startswith("basebackup:"):
            path_text, _, query = value.removeprefix("basebackup:").partition("?")
            pairs = parse_qsl(query)
            params = dict(pairs)
            if not path_text or set(params) - {"wal", "db", "incremental"}:
                raise ConfigError.invalid("base backup", value, "--backup",
                                          "Write basebackup:PATH?wal=DIR&db=NAME, with &incremental=PATH for each "
                                          "incremental backup after it, oldest first (all optional but PATH).")

            def resolved(text: str) -> Path:
                return Path(text) if Path(text).is_absolute() else base / text

            return cls(spec=value, kind="basebackup", path=resolved(path_text), database=params.get("db", "postgres"),
                       wal=resolved(params["wal"]) if "wal" in params else None,
                       incrementals=tuple(resolved(v) for k, v in pairs if k == "incremental"))
        if value.startswith(("pgbackrest:", "barman-cloud:", "cnpg:")):
            return cls._repository(value, base)
        path = Path(value)
        path = path if path.is_absolute() else base / path
        return cls(spec=str(path), kind="file", path=path)

    @classmethod
    def _repository(cls, value: str, base: Path) -> Source:
        """``pgbackrest:STANZA[@WHEN][?config=FILE&db=NAME]``, ``barman-cloud:s3://…/SERVER[@WHEN][?endpoint=URL&
        db=NAME]``; WHEN is an ISO 8601 time or ``latest``."""
        kind, _, rest = value.partition(":")
        head, _, query = rest.partition("?")
        where, _, when = head.partition("@")
        params = dict(parse_qsl(query))
        allowed = {"pgbackrest": {"db", "config"}, "barman-cloud": {"db", "endpoint"}, "cnpg": {"db"}}[kind]
        usage = {"pgbackrest": "Write pgbackrest:STANZA[@TIME|@latest][?config=FILE&db=NAME]",
                 "barman-cloud": "Write barman-cloud:s3://BUCKET/PREFIX/SERVER[@TIME|@latest][?endpoint=URL&db=NAME]",
                 "cnpg": "Write cnpg:NAMESPACE/CLUSTER[@TIME|@latest][?db=NAME] (the CloudNativePG Cluster's "
                         "namespace and name, as kubectl get clusters.postgresql.cnpg.io -A shows them)"}[kind]
        if kind == "cnpg" and not re.fullmatch(f"{_K8S_NAME}/{_K8S_NAME}", where):
            raise ConfigError.invalid("CloudNativePG cluster", value, "--backup", usage + ".")
        if not where or set(params) - allowed:
            raise ConfigError.invalid("physical backup", value, "--backup", usage + " (TIME in ISO 8601).")
        recovery = RecoveryTarget()
        if when and when != "latest":
            try:
                moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
            except ValueError as exc:
                raise ConfigError.invalid("recovery time", when, "--backup",
                                          "Use ISO 8601 (2025-10-25T10:30:00Z) or latest.") from exc
            recovery = RecoveryTarget(time=moment if moment.tzinfo else moment.replace(tzinfo=UTC))
        if kind == "barman-cloud":
            from restore.backups.barman import split_url

            split_url(where)  # refuses a URL without a server name now, not after the server started
        config = params.get("config")
        kinds: dict[str, SourceKind] = {"cnpg": "cnpg", "pgbackrest": "pgbackrest", "barman-cloud": "barman-cloud"}
        return cls(spec=value, kind=kinds[kind],
                   repository=where, database=params.get("db", "" if kind == "cnpg" else "postgres"),
                   recovery=recovery,
                   recovery_from_spec=bool(when),
                   config=None if config is None else Path(config) if Path(config).is_absolute() else base / config,
                   endpoint=params.get("endpoint"))

    def physical_backup(self) -> PhysicalBackup:
        """The physical backup this source names, with its recovery target (kinds basebackup, pgbackrest,
        barman-cloud)."""
        if self.kind == "pgbackrest":
            from restore.backups.pgbackrest import PgBackRest

            assert self.repository is not None
            return PgBackRest(self.repository, self.config, self.recovery)
        if self.kind == "barman-cloud":
            from restore.backups.barman import BarmanCloud

            assert self.repository is not None
            return BarmanCloud(self.repository, self.endpoint, self.recovery)
        if self.kind == "cnpg":
            from restore.backups import cnpg  # reads the Cluster through the Kubernetes API, now

            assert self.repository is not None
            namespace, _, name = self.repository.partition("/")
            return cnpg.read(namespace, name, self.recovery)
        assert self.path is not None  # kind "basebackup"
        return BaseBackup(self.path, self.wal, self.incrementals, self.recovery)

    @property
    def logical(self) -> bool:
        """A dump file (restored with pg_restore or psql), as opposed to a physical backup restored in place."""
        return self.kind in ("file", "s3")

    @property
    def physical(self) -> bool:
        """A physical backup (pg_basebackup, pgBackRest, Barman Cloud) and its WAL, recovered into a fresh server
        of this machine."""
        return self.kind in PHYSICAL_KINDS

    @property
    def manifest_beside(self) -> Path | None:
        """``<dump>.manifest.json`` next to a local dump, when it exists."""
        if self.path is None:
            return None
        beside = self.path.with_name(self.path.name + MANIFEST_SUFFIX)
        return beside if beside.exists() else None

    def require_logical(self, target: str) -> None:
        """A dump restores into a server; an RDS snapshot or point in time only into a new RDS instance; a base
        backup into a fresh server of this machine (--target=local)."""
        if self.physical:
            raise ConfigError(f"{self.spec} is a physical backup: it is recovered into a fresh server of this "
                              f"machine, not into target {target!r}. Pass --target=local (or a kind = \"embedded\" "
                              "target).")
        if not self.logical:
            raise ConfigError(f"{self.spec} is an RDS snapshot or point in time: it restores only into a new RDS "
                              f"instance, not into target {target!r}. Pass --target=NAME of a target with kind = "
                              "\"rds\" in targets.toml.")

    def fetch(self, scratch: Path, *, progress: Callable[[str], None] | None = None) -> FetchedBackup:
        """The dump as a local path: a local file as it is (it must exist), an S3 object downloaded into
        ``scratch`` (the caller removes it) with its size and checksum verified and its manifest beside it."""
        if self.kind == "s3":
            return fetch_s3(self.spec, scratch, pick=self.pick, progress=progress)
        if self.path is None:
            raise ConfigError(f"{self.spec} is not a dump file: it is restored by its own target.")
        if not self.path.exists():
            raise DumpNotFound.at(self.path)
        # A local dump's manifest is found when the options are resolved (--manifest, or the one beside it).
        return FetchedBackup(path=self.path, manifest=None, spec=str(self.path),
                             size_bytes=self.path.stat().st_size if self.path.is_file() else 0, checksum=None)
