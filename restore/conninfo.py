"""Connection strings: built with psycopg's conninfo helpers, redacted before they are ever shown."""

from __future__ import annotations

import os
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

_SECRET_KEYS = ("password", "sslpassword", "sslkey")


def redact(conninfo: str) -> str:
    """The same connection string with every secret replaced by ``***``; never raises."""
    try:
        params = conninfo_to_dict(conninfo)
    except Exception:  # an unparsable string is shown as nothing rather than risk leaking it
        return "<unparsable connection string>"
    for key in _SECRET_KEYS:
        if key in params:
            params[key] = "***"
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def with_params(conninfo: str, **params: str | int | None) -> str:
    """``conninfo`` with some parameters replaced; a ``None`` value removes the parameter.

    (``make_conninfo`` alone keeps a parameter passed as None: an application login built from the suite's
    own DSN would silently carry the suite's password.)
    """
    merged: dict[str, object] = dict(conninfo_to_dict(conninfo)) if conninfo else {}
    for key, value in params.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return make_conninfo(**{k: str(v) for k, v in merged.items()})


def get_param(conninfo: str, key: str) -> str | None:
    value = conninfo_to_dict(conninfo).get(key)
    return None if value is None else str(value)


# libpq reads these from the environment for any parameter a connection string leaves out: a PGPASSWORD exported
# in the operator's shell would silently change which credentials a check uses (it even beats passfile=). The
# suite builds every connection's parameters itself and removes these from its own process (TLS settings,
# PGSSL*/PGGSS*, stay: they say how to connect, not as whom or where).
LIBPQ_ENV_IGNORED = ("PGPASSWORD", "PGPASSFILE", "PGSERVICE", "PGSERVICEFILE", "PGUSER", "PGHOST", "PGHOSTADDR",
                     "PGPORT", "PGDATABASE", "PGOPTIONS", "PGAPPNAME", "PGTARGETSESSIONATTRS", "PGCONNECT_TIMEOUT",
                     "PGTZ", "PGDATESTYLE", "PGCLIENTENCODING", "PGREQUIREAUTH", "PGLOADBALANCEHOSTS")


def isolate_libpq_environment() -> dict[str, str]:
    """Remove the libpq variables above from this process's environment; returns what was removed."""
    return {name: os.environ.pop(name) for name in LIBPQ_ENV_IGNORED if name in os.environ}


def bounded(conninfo: str, *, statement_timeout_s: float, lock_timeout_s: float,
            parallel_workers: int | None = None) -> str:
    """Every statement and every lock wait of this connection bounded in time (session settings, so they hold
    on a read-only standby too); ``parallel_workers``: the session's max_parallel_workers_per_gather (never a
    server-wide change)."""
    options = get_param(conninfo, "options") or ""
    extra = (f"-c statement_timeout={int(statement_timeout_s * 1000)} "
             f"-c lock_timeout={int(lock_timeout_s * 1000)}")
    if parallel_workers is not None:
        extra += f" -c max_parallel_workers_per_gather={parallel_workers}"
    return with_params(conninfo, options=f"{options} {extra}".strip())


def read_pgpass(path: str, *, host: str, port: str, dbname: str, user: str) -> str | None:
    """The password a libpq password file holds for this connection (its own matching rules: first match wins,
    ``*`` matches anything, ``\\`` escapes ``:`` and ``\\``)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields: list[str] = []
        current, escaped = "", False
        for ch in line:
            if escaped:
                current, escaped = current + ch, False
            elif ch == "\\":
                escaped = True
            elif ch == ":" and len(fields) < 4:
                fields.append(current)
                current = ""
            else:
                current += ch
        fields.append(current)
        if len(fields) != 5:
            continue
        wanted = (host, port, dbname, user)
        if all(f == "*" or f == w for f, w in zip(fields[:4], wanted, strict=True)):
            return fields[4]
    return None
