"""Connection strings: built with psycopg's conninfo helpers, redacted before they are ever shown."""

from __future__ import annotations

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
    """``conninfo`` with some parameters replaced (e.g. another ``dbname`` or ``user``)."""
    return make_conninfo(conninfo, **{k: v for k, v in params.items()})


def get_param(conninfo: str, key: str) -> str | None:
    value = conninfo_to_dict(conninfo).get(key)
    return None if value is None else str(value)
