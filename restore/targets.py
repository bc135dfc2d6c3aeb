"""Where a backup is restored to, or which existing database is verified: ``--target NAME|DSN``."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from psycopg.conninfo import conninfo_to_dict

from restore.aws import RdsTargetConfig
from restore.conninfo import get_param, redact, with_params
from restore.errors import ConfigError
from restore.kube import AppConfig

TargetKind = Literal["embedded", "existing", "container", "rds"]
KNOWN_KINDS: tuple[str, ...] = ("embedded", "existing", "container", "rds")
BUILTIN_LOCAL = "local"
CONNECT_TIMEOUT_S = 10
BUILTIN_DOCKER = "docker"  # a container of the dump's major version (see restore/container.py)


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


def load_targets_file(path: Path) -> dict[str, TargetSpec]:
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}. Fix the file named by --targets-file.") from exc
    targets: dict[str, TargetSpec] = {}
    for name, raw in (data.get("targets") or {}).items():
        where = f"{path} [targets.{name}]"
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
        targets[name] = TargetSpec(name=name, kind=kind, dsn=dsn, password_env=raw.get("password_env"),
                                   image=raw.get("image"), rds=rds, app=app)
    return targets


def resolve_target(value: str, targets_file: Path) -> TargetSpec:
    """``local`` → the embedded server; a URI or keyword string → an existing database; else a named target."""
    if value == BUILTIN_LOCAL:
        return TargetSpec(name=BUILTIN_LOCAL, kind="embedded")
    if value == BUILTIN_DOCKER:
        return TargetSpec(name=BUILTIN_DOCKER, kind="container")
    if looks_like_dsn(value):
        _check_no_password(value, "--target")
        params = conninfo_to_dict(value)
        label = str(params.get("dbname") or params.get("host") or "dsn")
        return TargetSpec(name=label, kind="existing", dsn=value)
    targets = load_targets_file(targets_file)
    if value in targets:
        return targets[value]
    known = ", ".join(sorted([BUILTIN_LOCAL, BUILTIN_DOCKER, *targets]))
    raise ConfigError(
        f"Unknown target {value!r}: it is neither 'local', a connection string, nor a name in {targets_file}. "
        f"Known targets: {known}. Add [targets.{value}] to the file, or pass --targets-file."
    )
