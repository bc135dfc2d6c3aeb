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
