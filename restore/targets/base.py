"""Where a backup is restored to, or which existing database is verified: ``--target NAME|DSN``.

:class:`TargetSpec` is a target as configured; :class:`Target` is the interface every kind implements (embedded,
container, RDS, existing), so that the restore pipeline (restore/session.py) never asks which kind it has.
:func:`open_target` makes the implementation of a spec.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

from psycopg.conninfo import conninfo_to_dict

from restore.backups.retention import RetentionPolicy
from restore.conninfo import get_param, redact, with_params
from restore.errors import ConfigError
from restore.targets.container import ContainerTarget
from restore.targets.elsewhere import ServerElsewhere
from restore.targets.embedded import EmbeddedTarget
from restore.targets.kube import AppConfig
from restore.targets.rds import RdsTarget, RdsTargetConfig

if TYPE_CHECKING:
    from restore.backups.archive import ArchiveInfo, BackupSummary
    from restore.backups.pgrestore import ToolRun
    from restore.backups.sources import Source

TargetKind = Literal["embedded", "existing", "container", "rds"]
KNOWN_KINDS: tuple[str, ...] = ("embedded", "existing", "container", "rds")
BUILTIN_LOCAL = "local"
CONNECT_TIMEOUT_S = 10
BUILTIN_DOCKER = "docker"  # a container of the dump's major version (see restore/targets/container.py)


class Target(Protocol):
    """A place to verify, one implementation per kind. ``start`` brings it up (an RDS target restores its backup
    there); ``stop`` tears down what the run made, unless kept. Connection strings may hold passwords: show
    :meth:`display`."""

    restores: bool  # a backup is restored here (False: an existing database, verified as it is)
    loads_dumps: bool  # the pipeline loads a dump into it (a throwaway server whose superuser the suite is)

    def check(self, source: Source | None) -> None:
        """Raise ConfigError when this target cannot take ``source`` (before anything starts)."""

    def start(self, *, source: Source | None, info: ArchiveInfo | None, log: IO[str]) -> None: ...

    def stop(self) -> None: ...

    def conninfo(self, dbname: str | None = None) -> str:
        """As the suite connects; ``None``: the target's own database (or the server's maintenance one)."""

    def display(self, dbname: str | None) -> str: ...

    def app_address(self) -> tuple[str | None, int | None]:
        """Host and port an application connects to."""

    def kept(self, dbname: str | None) -> tuple[str, ...]:
        """With --keep-target: how to connect and how to remove it (no secrets); empty otherwise."""

    def restore_dump(self, info: ArchiveInfo, dbname: str, *, jobs: int, log: IO[str],
                     on_line: Callable[[str], None], before_data: Callable[[], None] | None = None) -> ToolRun:
        """pg_restore an archive into ``dbname`` (only for targets that load dumps); ``before_data`` is called before
        anything but the schema is loaded (it may raise: the archive's end-to-end read failed)."""

    def server_label(self) -> str:
        """The server's release, as a DBA names it (for explanations of restore errors)."""

    def backup_summary(self) -> BackupSummary | None:
        """What the target itself learned of the backup (an RDS restore's facts); None for a dump."""

    def place(self, likely_bytes: int) -> str | None:
        """Before the start: choose where a restore of about ``likely_bytes`` writes on this machine (an embedded
        cluster: in memory when small); what was chosen, in words (None: nothing to choose)."""

    def room(self) -> tuple[Path, int] | None:
        """Where a restore into this target writes on this machine, and the bytes free there (None: not here)."""

    def trouble(self) -> str | None:
        """Why the server stopped serving, from its own log and process, when the verifier's world is the cause
        (killed, out of disk); None when it is up or this target cannot tell."""

    def server_log(self) -> Path | None:
        """The server's own log on this machine (a server of this run), else None."""


@dataclass(frozen=True)
class TargetSpec:
    """A target as configured: nothing is connected or started yet."""

    name: str
    kind: TargetKind
    dsn: str | None = None
    password_env: str | None = None
    image: str | None = None  # kind "container": image, may hold {major}
    rds: RdsTargetConfig | None = None  # kind "rds"
    app: AppConfig | None = None  # [targets.<name>.app]: the application stopped and restarted around the restore
    cores: int | None = None  # the cores the target has (default for a server of this run: this machine's)

    @property
    def verification_workers(self) -> int | None:
        """Parallel workers per query for the verification sessions: the cores of a server this run owns (it is
        sized for them); None for an existing database (its own settings stand, unless --parallel-workers)."""
        if self.kind in ("embedded", "container"):
            return max(self.cores or os.cpu_count() or 1, 1)
        return self.cores if self.kind == "rds" else None

    @property
    def needs_restore(self) -> bool:
        return self.kind != "existing"

    def conninfo(self) -> str:
        """The DSN with the password from ``password_env`` added; never log the result, log :meth:`redacted`.
        A server that accepts connections and never answers fails in seconds, not minutes: connect_timeout
        defaults to CONNECT_TIMEOUT_S unless the DSN sets it."""
        if self.dsn is None:
            raise ConfigError(f"Target {self.name!r} has no dsn.")
        dsn = self.dsn if get_param(self.dsn, "connect_timeout") else with_params(
            self.dsn, connect_timeout=CONNECT_TIMEOUT_S)
        if self.password_env:
            password = os.environ.get(self.password_env)
            if password is None:
                raise ConfigError(
                    f"Target {self.name!r} takes its password from ${self.password_env}, which is not set. "
                    f"Export it before running (export {self.password_env}=...)."
                )
            return with_params(dsn, password=password)
        return dsn

    def redacted(self) -> str:
        if self.kind == "rds":
            return f"new RDS instance ({self.name})"
        if self.kind == "container":
            return f"container {self.image or 'postgres:{major}'} ({self.name})"
        return redact(self.dsn) if self.dsn else f"embedded PostgreSQL ({self.name})"


def looks_like_dsn(value: str) -> bool:
    return value.startswith(("postgresql://", "postgres://")) or "=" in value


def _check_no_password(dsn: str, where: str) -> None:
    try:
        params = conninfo_to_dict(dsn)
    except Exception as exc:
        raise ConfigError.invalid("connection string", redact(dsn), where, f"libpq cannot parse it: {exc}") from exc
    if "password" in params and where != "--target":
        raise ConfigError(
            f"The dsn in {where} contains a password. Passwords never live in the targets file: remove it and "
            "name an environment variable instead (password_env = \"MY_DB_PASSWORD\")."
        )


@dataclass(frozen=True)
class TargetsFile:
    """``targets.toml``, read once: its named targets and its ``[retention]`` policy."""

    path: Path
    targets: dict[str, TargetSpec]
    retention: RetentionPolicy | None = None

    @classmethod
    def read(cls, path: Path) -> TargetsFile:
        if not path.exists():
            return cls(path, {})
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}. Fix the file named by --targets-file.") from exc
        raw_retention = data.get("retention")
        retention = RetentionPolicy.from_toml(raw_retention, f"{path} [retention]") if raw_retention else None
        return cls(path, {name: _target(name, raw, f"{path} [targets.{name}]")
                          for name, raw in (data.get("targets") or {}).items()}, retention)

    def resolve(self, value: str) -> TargetSpec:
        """``local`` → the embedded server; ``docker`` → a container; a URI or keyword string → an existing
        database; else a named target."""
        if value == BUILTIN_LOCAL:
            return TargetSpec(name=BUILTIN_LOCAL, kind="embedded")
        if value == BUILTIN_DOCKER:
            return TargetSpec(name=BUILTIN_DOCKER, kind="container")
        if looks_like_dsn(value):
            _check_no_password(value, "--target")
            params = conninfo_to_dict(value)
            label = str(params.get("dbname") or params.get("host") or "dsn")
            return TargetSpec(name=label, kind="existing", dsn=value)
        if value in self.targets:
            return self.targets[value]
        known = ", ".join(sorted([BUILTIN_LOCAL, BUILTIN_DOCKER, *self.targets]))
        raise ConfigError(
            f"Unknown target {value!r}: it is neither 'local', a connection string, nor a name in {self.path}. "
            f"Known targets: {known}. Add [targets.{value}] to the file, or pass --targets-file."
        )


def _target(name: str, raw: dict[str, Any], where: str) -> TargetSpec:
    kind = raw.get("kind", "existing" if "dsn" in raw else "embedded")
    if kind not in KNOWN_KINDS:
        raise ConfigError.invalid("target kind", kind, where, f"Use one of: {', '.join(KNOWN_KINDS)}.")
    if "password" in raw and kind != "rds":
        raise ConfigError(
            f"{where} has a password key. Passwords never live in the targets file: use "
            "password_env = \"NAME_OF_AN_ENVIRONMENT_VARIABLE\"."
        )
    dsn = raw.get("dsn")
    if kind == "existing":
        if not dsn:
            raise ConfigError(f"{where}: an existing target needs dsn = \"postgresql://host/db?user=…\".")
        _check_no_password(dsn, where)
    rds = RdsTargetConfig.from_toml(raw, where) if kind == "rds" else None
    app = AppConfig.from_toml(raw["app"], f"{where}.app") if "app" in raw else None
    cores = raw.get("cores")
    if cores is not None and (not isinstance(cores, int) or cores < 1):
        raise ConfigError.invalid("cores", cores, where, "Write the number of cores the target has: cores = 16.")
    return TargetSpec(name=name, kind=kind, dsn=dsn, password_env=raw.get("password_env"),
                      image=raw.get("image"), rds=rds, app=app, cores=cores)


def load_targets_file(path: Path) -> dict[str, TargetSpec]:
    return TargetsFile.read(path).targets


def resolve_target(value: str, targets_file: Path) -> TargetSpec:
    return TargetsFile.read(targets_file).resolve(value)


class ExistingTarget(ServerElsewhere):
    """kind "existing": a database restored by someone else, verified as it is; nothing is started or removed."""

    restores = False
    loads_dumps = False

    def __init__(self, spec: TargetSpec) -> None:
        self.spec = spec

    def check(self, source: Source | None) -> None:
        if source is not None:
            source.require_logical(self.spec.name)

    def start(self, *, source: Source | None, info: ArchiveInfo | None, log: IO[str]) -> None:
        return None

    def stop(self) -> None:
        return None

    def conninfo(self, dbname: str | None = None) -> str:
        return self.spec.conninfo()

    def display(self, dbname: str | None) -> str:
        return self.spec.redacted()

    def app_address(self) -> tuple[str | None, int | None]:
        conninfo = self.conninfo()
        return get_param(conninfo, "host"), int(get_param(conninfo, "port") or 5432)

    def kept(self, dbname: str | None) -> tuple[str, ...]:
        return ()

    def restore_dump(self, info: ArchiveInfo, dbname: str, *, jobs: int, log: IO[str],
                     on_line: Callable[[str], None], before_data: Callable[[], None] | None = None) -> ToolRun:
        raise ConfigError(f"Target {self.spec.name!r} is an existing database: nothing is restored into it.")

    def server_label(self) -> str:
        return self.spec.redacted()

    def backup_summary(self) -> BackupSummary | None:
        return None


def open_target(spec: TargetSpec, *, jobs: int, keep: bool, run_id: str,
                progress: Callable[[str], None] | None = None, server_dir: Path | None = None) -> Target:
    """The implementation of ``spec``'s kind (nothing is started yet)."""
    if spec.kind == "rds" and spec.rds is None:
        raise ConfigError(f"Target {spec.name!r} has kind = \"rds\" but no RDS settings.")
    kinds: dict[str, Callable[[], Target]] = {
        "embedded": lambda: EmbeddedTarget(spec.name, jobs=jobs, keep=keep, run_id=run_id, cores=spec.cores,
                                           base_dir=server_dir),
        "container": lambda: ContainerTarget(spec.name, image=spec.image, jobs=jobs, keep=keep, run_id=run_id,
                                             cores=spec.cores),
        "rds": lambda: RdsTarget(spec.name, spec.rds or RdsTargetConfig(), keep=keep, run_id=run_id,
                                 progress=progress),
        "existing": lambda: ExistingTarget(spec),
    }
    return kinds[spec.kind]()
