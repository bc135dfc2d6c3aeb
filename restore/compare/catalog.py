"""The restored database's objects, read once per run (by the xdist controller) as plain JSON-able data.

Checks are parametrized over this snapshot so that every xdist worker collects the same tests and no check
re-queries the catalog. Only user objects count: system schemas and extension members are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import psycopg
from psycopg.rows import dict_row
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

_USER_SCHEMA = """
    n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
"""
_NOT_EXTENSION_MEMBER = """
    NOT EXISTS (SELECT 1 FROM pg_depend d
                WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
"""

TABLES_SQL = f"""
SELECT n.nspname AS schema, c.relname AS name, c.relkind AS kind, c.relispartition AS is_partition,
       c.relispopulated AS populated, pg_relation_size(c.oid) AS size_bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'f', 'm') AND {_USER_SCHEMA} AND {_NOT_EXTENSION_MEMBER}
ORDER BY 1, 2
"""

_COLS = """array(SELECT a.attname::text FROM unnest({key}) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = {rel} AND a.attnum = k.attnum ORDER BY k.ord)"""

FOREIGN_KEYS_SQL = f"""
SELECT con.conname AS name, n.nspname AS schema, c.relname AS table,
       rn.nspname AS ref_schema, rc.relname AS ref_table,
       {_COLS.format(key="con.conkey", rel="con.conrelid")} AS columns,
       {_COLS.format(key="con.confkey", rel="con.confrelid")} AS ref_columns,
       con.convalidated AS validated, con.confmatchtype AS match_type,
       {{enforced}} AS enforced,
       coalesce((SELECT bool_and(t.tgenabled <> 'D') FROM pg_trigger t WHERE t.tgconstraint = con.oid), false)
           AS triggers_enabled,
       c.relkind = 'p' OR c.relispartition AS partitioned
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class rc ON rc.oid = con.confrelid JOIN pg_namespace rn ON rn.oid = rc.relnamespace
WHERE con.contype = 'f' AND con.conparentid = 0 AND {_USER_SCHEMA}
ORDER BY 2, 3, 1
"""

CONSTRAINTS_SQL = f"""
SELECT con.conname AS name, n.nspname AS schema, c.relname AS table, con.contype AS type,
       con.convalidated AS validated, pg_get_constraintdef(con.oid, true) AS definition
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE con.contype IN ('f', 'c') AND con.conparentid = 0 AND {_USER_SCHEMA}
ORDER BY 2, 3, 1
"""

UNIQUE_KEYS_SQL = f"""
SELECT ic.relname AS index, n.nspname AS schema, c.relname AS table,
       coalesce(con.conname, ic.relname) AS name,
       CASE con.contype WHEN 'p' THEN 'primary key' WHEN 'u' THEN 'unique constraint' ELSE 'unique index' END
           AS kind,
       {_COLS.format(key="i.indkey[0:i.indnkeyatts - 1]", rel="i.indrelid")} AS columns,
       0 = ANY (i.indkey[0:i.indnkeyatts - 1]::int2[]) AS has_expressions,
       array(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k)
           AS key_sql,
       pg_get_expr(i.indpred, i.indrelid, true) AS predicate,
       {{nulls_not_distinct}} AS nulls_not_distinct, i.indisvalid AND i.indisready AS valid,
       c.relispopulated AS populated
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.contype IN ('p', 'u')
WHERE i.indisunique AND c.relkind IN ('r', 'm') AND {_USER_SCHEMA}
ORDER BY 2, 3, 1
"""

# Sequences feeding a column: owned by it (serial: deptype 'a'; identity: 'i'), or only named in its
# DEFAULT nextval(...) (legacy schemas and many sample databases never ran ALTER SEQUENCE ... OWNED BY): the
# default's pg_attrdef row depends on the sequence ('n'). Integer columns only: a default such as
# 'ORD-' || nextval('s') has no max() to compare with.
SEQUENCES_SQL = """
SELECT sn.nspname AS schema, s.relname AS name, tn.nspname AS table_schema, t.relname AS table,
       a.attname AS column, CASE d.deptype WHEN 'i' THEN 'identity' ELSE 'serial' END AS kind,
       seq.seqincrement AS increment
FROM pg_depend d
JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' JOIN pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_sequence seq ON seq.seqrelid = s.oid
JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
  AND t.relkind IN ('r', 'p') AND NOT t.relispartition
UNION
SELECT sn.nspname, s.relname, tn.nspname, t.relname, a.attname, 'default', seq.seqincrement
FROM pg_attrdef ad
JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S' JOIN pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_sequence seq ON seq.seqrelid = s.oid
JOIN pg_class t ON t.oid = ad.adrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ad.adnum
WHERE t.relkind IN ('r', 'p') AND NOT t.relispartition
  AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
  AND NOT EXISTS (SELECT 1 FROM pg_depend o WHERE o.classid = 'pg_class'::regclass AND o.objid = s.oid
                    AND o.refobjid = t.oid AND o.refobjsubid = a.attnum AND o.deptype IN ('a', 'i'))
ORDER BY 1, 2, 3, 4, 5
"""

INDEXES_SQL = f"""
SELECT n.nspname AS schema, ic.relname AS name, c.relname AS table, am.amname AS method,
       i.indisvalid AS valid, i.indisready AS ready, i.indisunique AS is_unique, pg_relation_size(ic.oid) AS size_bytes
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam
JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE ic.relkind = 'i' AND ic.relpersistence <> 't' AND {_USER_SCHEMA}
ORDER BY 1, 2
"""


# Every primary, unique and foreign key by name, partitioned tables' and their partitions' included: a key the
# backup recorded is "lost" only when it is in none of them.
KEY_NAMES_SQL = f"""
SELECT n.nspname AS schema, c.relname AS table, con.conname AS name, con.contype AS type
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE con.contype IN ('p', 'u', 'f') AND {_USER_SCHEMA}
ORDER BY 1, 2, 3
"""

# TOAST tables of user tables and their indexes: checked at --depth full, as pg_amcheck does.
TOAST_SQL = f"""
SELECT 'pg_toast' AS schema, t.relname AS name, n.nspname || '.' || c.relname AS "table", 't' AS kind,
       ti.relname AS index
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_class t ON t.oid = c.reltoastrelid
LEFT JOIN pg_index i ON i.indrelid = t.oid LEFT JOIN pg_class ti ON ti.oid = i.indexrelid
WHERE c.relkind IN ('r', 'm') AND {_USER_SCHEMA}
ORDER BY 2
"""


# One typed row per query above: the keys are the queries' column names (mypy checks every access).

class TableRow(TypedDict):
    schema: str
    name: str
    kind: str  # pg_class.relkind: r, p, f, m
    is_partition: bool
    populated: bool
    size_bytes: int  # the main fork: the largest are checked first


class ForeignKeyRow(TypedDict):
    name: str
    schema: str
    table: str
    ref_schema: str
    ref_table: str
    columns: list[str]
    ref_columns: list[str]
    validated: bool
    match_type: str
    enforced: bool
    triggers_enabled: bool
    partitioned: bool


class ConstraintRow(TypedDict):
    name: str
    schema: str
    table: str
    type: str  # f, c
    validated: bool
    definition: str


class UniqueKeyRow(TypedDict):
    index: str
    schema: str
    table: str
    name: str
    kind: str  # "primary key" | "unique constraint" | "unique index"
    columns: list[str]
    has_expressions: bool
    key_sql: list[str]
    predicate: str | None
    nulls_not_distinct: bool
    valid: bool
    populated: bool


class SequenceRow(TypedDict):
    schema: str
    name: str
    table_schema: str
    table: str
    column: str
    kind: str  # "identity" | "serial" | "default"
    increment: int


class IndexRow(TypedDict):
    schema: str
    name: str
    table: str
    method: str
    valid: bool
    ready: bool
    is_unique: bool
    size_bytes: int


class ToastRow(TypedDict):
    schema: str
    name: str
    table: str
    kind: str
    index: str | None


class KeyNameRow(TypedDict):
    schema: str
    table: str
    name: str
    type: str  # p, u, f


@dataclass(frozen=True)
class Catalog:
    """The restored database's user objects, one typed row per object."""

    server_version: str = ""
    server_version_num: int = 0
    tables: list[TableRow] = field(default_factory=list)
    foreign_keys: list[ForeignKeyRow] = field(default_factory=list)
    constraints: list[ConstraintRow] = field(default_factory=list)
    unique_keys: list[UniqueKeyRow] = field(default_factory=list)
    sequences: list[SequenceRow] = field(default_factory=list)
    indexes: list[IndexRow] = field(default_factory=list)
    toast: list[ToastRow] = field(default_factory=list)
    key_names: list[KeyNameRow] = field(default_factory=list)
    in_recovery: bool = False
    data_checksums: bool = False  # the cluster checks every page it reads against its checksum

    def table_names(self) -> frozenset[str]:
        """Every table's ``schema.name``. A set built once: checks ask it once per table, and a list rebuilt on
        each call made 10,000 tables cost 22 s of the workers' time."""
        return self._table_names

    @cached_property
    def _table_names(self) -> frozenset[str]:
        return frozenset(f"{t['schema']}.{t['name']}" for t in self.tables)


def read_catalog(conninfo: str) -> Catalog:
    """One read-only pass over the system catalogs."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.read_only = True
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            num = int(cur.execute("SELECT current_setting('server_version_num')::int AS n").fetchone()["n"])  # type: ignore[index]
            version = str(cur.execute("SELECT current_setting('server_version') AS v").fetchone()["v"])  # type: ignore[index]
            # Columns that newer servers added: NOT ENFORCED constraints (18), NULLS NOT DISTINCT (15).
            enforced = "con.conenforced" if num >= 180000 else "true"
            nnd = "i.indnullsnotdistinct" if num >= 150000 else "false"

            def rows(query: str) -> list[Any]:
                return [dict(r) for r in cur.execute(query.encode()).fetchall()]  # static text, no user input

            # The codec checks each row against its type when the state crosses to a worker.
            return Catalog(
                server_version=version,
                server_version_num=num,
                tables=rows(TABLES_SQL),
                foreign_keys=rows(FOREIGN_KEYS_SQL.replace("{enforced}", enforced)),
                constraints=rows(CONSTRAINTS_SQL),
                unique_keys=rows(UNIQUE_KEYS_SQL.replace("{nulls_not_distinct}", nnd)),
                sequences=rows(SEQUENCES_SQL),
                indexes=rows(INDEXES_SQL),
                toast=rows(TOAST_SQL),
                key_names=rows(KEY_NAMES_SQL),
                in_recovery=bool(cur.execute("SELECT pg_is_in_recovery() AS r").fetchone()["r"]),  # type: ignore[index]
                data_checksums=bool(cur.execute(  # type: ignore[index]
                    "SELECT current_setting('data_checksums') = 'on' AS c").fetchone()["c"]),
            )
