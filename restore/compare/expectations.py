"""The user's expectations of a restored database: ``expectations/`` (``--expectations DIR``).

- ``tables.txt``: one ``schema.table`` per line, the tables that must exist (when no dump was restored).
- ``row_counts.toml``: ``[tables]`` with ``"schema.table" = 123`` (exact), ``{ min = 1, max = 9 }`` or
  ``{ expected = 100, tolerance = "2%" }``.
- ``keys.toml``: ``[primary_keys]`` ``"schema.table" = ["col", …]``; ``[foreign_keys]`` ``"schema.table" = ["fk", …]``.
- ``app.toml``: ``role``, ``password_env`` or ``passfile``, optional ``database``, and ``[privileges]`` with
  ``"table public.orders" = ["SELECT"]``.
- ``rpo.toml``: ``column = "public.orders.created_at"`` or ``query = "SELECT max(created_at) FROM …"``.
- ``critical_queries/*.sql``: queries that must succeed; header comments ``-- max_ms: 500``, ``-- min_rows: 1``,
  ``-- max_rows: …``.
- ``business_rules/*.sql``: queries returning the rows that break a rule; none may come back.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg import sql

from restore.errors import ConfigError
from restore.verify import privilege_kinds


@dataclass(frozen=True)
class RowCountRule:
    table: str
    exact: int | None = None
    minimum: int | None = None
    maximum: int | None = None

    def describe(self) -> str:
        if self.exact is not None:
            return f"exactly {self.exact}"
        low = "" if self.minimum is None else f">= {self.minimum}"
        high = "" if self.maximum is None else f"<= {self.maximum}"
        return " and ".join(p for p in (low, high) if p)

    def accepts(self, count: int) -> bool:
        if self.exact is not None:
            return count == self.exact
        return (self.minimum is None or count >= self.minimum) and (self.maximum is None or count <= self.maximum)


@dataclass(frozen=True)
class Privilege:
    kind: str
    obj: str
    privilege: str

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.obj}:{self.privilege}"


@dataclass(frozen=True)
class AppExpectation:
    role: str
    database: str | None
    password_env: str | None
    passfile: str | None
    privileges: tuple[Privilege, ...]
    host: str | None = None  # where the application connects (an existing target): its password proven there
    port: int | None = None


@dataclass(frozen=True)
class SqlCheck:
    name: str
    path: str
    sql: str
    max_ms: float | None = None
    min_rows: int | None = None
    max_rows: int | None = None


@dataclass(frozen=True)
class Expectations:
    directory: Path
    tables: tuple[str, ...] | None = None
    row_counts: dict[str, RowCountRule] = field(default_factory=dict)
    primary_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    foreign_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    app: AppExpectation | None = None
    freshness_sql: str | None = None
    critical_queries: tuple[SqlCheck, ...] = ()
    business_rules: tuple[SqlCheck, ...] = ()


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}. Fix it or remove it from --expectations.") from exc


def _row_count_rule(table: str, raw: object, where: str) -> RowCountRule:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return RowCountRule(table, exact=raw)
    if isinstance(raw, dict):
        if "expected" in raw:
            expected = int(raw["expected"])
            tolerance = str(raw.get("tolerance", "0"))
            m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", tolerance)
            if not m:
                raise ConfigError.invalid("tolerance", tolerance, where, 'Write it as a count (10) or a share ("2%").')
            slack = expected * float(m.group(1)) / 100 if m.group(2) else float(m.group(1))
            return RowCountRule(table, minimum=int(expected - slack), maximum=int(expected + slack + 0.999999))
        if "min" in raw or "max" in raw or "exact" in raw:
            if "exact" in raw:
                return RowCountRule(table, exact=int(raw["exact"]))
            return RowCountRule(table, minimum=raw.get("min"), maximum=raw.get("max"))
    raise ConfigError.invalid(
        "row count expectation", raw, where, 'Use 123, { min = 1, max = 9 } or { expected = 100, tolerance = "2%" }.'
    )


_HEADER = re.compile(r"^--\s*(max_ms|min_rows|max_rows)\s*:\s*(\d+(?:\.\d+)?)\s*$")


def _sql_checks(directory: Path) -> tuple[SqlCheck, ...]:
    checks = []
    for path in sorted(directory.glob("*.sql")) if directory.is_dir() else []:
        text = path.read_text()
        headers: dict[str, float] = {}
        for line in text.splitlines():
            if m := _HEADER.match(line.strip()):
                headers[m.group(1)] = float(m.group(2))
        checks.append(SqlCheck(
            name=path.stem, path=str(path), sql=text, max_ms=headers.get("max_ms"),
            min_rows=int(headers["min_rows"]) if "min_rows" in headers else None,
            max_rows=int(headers["max_rows"]) if "max_rows" in headers else None,
        ))
    return tuple(checks)


def _app(path: Path) -> AppExpectation | None:
    if not path.exists():
        return None
    raw = _toml(path)
    if "role" not in raw:
        raise ConfigError(f"{path} has no role = \"…\": name the role the application logs in as.")
    if "password" in raw:
        raise ConfigError(f"{path} holds a password. Use password_env = \"VAR\" or passfile = \"path\" instead.")
    privileges = []
    for target, privs in (raw.get("privileges") or {}).items():
        kind, _, obj = str(target).partition(" ")
        if kind not in privilege_kinds() or not obj:
            raise ConfigError.invalid(
                "privilege target", target, f"{path} [privileges]",
                f"Write it as \"KIND object\" with KIND one of {', '.join(privilege_kinds())}.",
            )
        privileges += [Privilege(kind, obj.strip(), str(p).upper()) for p in privs]
    passfile = raw.get("passfile")
    if passfile is not None:
        passfile = str((path.parent / passfile).resolve())
    return AppExpectation(
        role=raw["role"], database=raw.get("database"), password_env=raw.get("password_env"),
        passfile=passfile, privileges=tuple(privileges),
        host=None if raw.get("host") is None else str(raw["host"]),
        port=None if raw.get("port") is None else int(raw["port"]),
    )


def _freshness(path: Path) -> str | None:
    if not path.exists():
        return None
    raw = _toml(path)
    if "query" in raw:
        return str(raw["query"])
    if "column" in raw:
        parts = str(raw["column"]).split(".")
        if len(parts) != 3:
            raise ConfigError.invalid(
                "freshness column", raw["column"], str(path), 'Write it as "schema.table.column".'
            )
        query = sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(parts[2]), sql.Identifier(parts[0], parts[1]))
        return query.as_string()
    raise ConfigError(f"{path} needs query = \"SELECT max(ts) FROM …\" or column = \"schema.table.column\".")


def load(directory: Path) -> Expectations:
    """Read every expectation file present; a missing file means "no expectation", never "expect nothing"."""
    if not directory.exists():
        return Expectations(directory=directory)
    tables_file = directory / "tables.txt"
    tables = None
    if tables_file.exists():
        tables = tuple(
            line.split("#", 1)[0].strip() for line in tables_file.read_text().splitlines()
            if line.split("#", 1)[0].strip()
        )
    row_counts: dict[str, RowCountRule] = {}
    if (directory / "row_counts.toml").exists():
        raw = _toml(directory / "row_counts.toml").get("tables", {})
        where = directory / "row_counts.toml"
        row_counts = {t: _row_count_rule(t, v, f"{where} [tables] {t!r}") for t, v in raw.items()}
    keys = _toml(directory / "keys.toml") if (directory / "keys.toml").exists() else {}
    return Expectations(
        directory=directory,
        tables=tables,
        row_counts=row_counts,
        primary_keys={t: tuple(c) for t, c in (keys.get("primary_keys") or {}).items()},
        foreign_keys={t: tuple(c) for t, c in (keys.get("foreign_keys") or {}).items()},
        app=_app(directory / "app.toml"),
        freshness_sql=_freshness(directory / "rpo.toml"),
        critical_queries=_sql_checks(directory / "critical_queries"),
        business_rules=_sql_checks(directory / "business_rules"),
    )
