"""Manifests: what a database holds — schema, exact counts, content checksums, sequences — as one JSON document.

A manifest captured from the source (ideally from the very snapshot the dump was taken from, see
:func:`take_backup`) and one captured, by the same code, from the restored copy are compared object by object.

Content checksum: per table, in one scan, ``count(*)`` and ``sum(hashtextextended(t::text, 0))`` — an
order-independent sum of 64-bit hashes of each row's text form (sum of bigint is numeric: no overflow; a sum,
unlike XOR, does not cancel duplicate rows). A row's text form depends on session settings, which are pinned
(:data:`PINNED_SETTINGS`) so that the checksum is the same on any server of any supported major version;
the database encoding, column order and column types must match too (compared in the schema part).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from typing_extensions import TypedDict

from restore.backups.archive import ArchiveInfo, inspect
from restore.compare import fidelity, inventory
from restore.errors import ManifestMismatch
from restore.hints import listed
from restore.tools import clean_env, pg_tool

FORMAT = "restore-verify-manifest"
# 2: adds "behaviour" (privileges, ownership, row-level security, persistence, … see restore/compare/fidelity.py) and
# backup.toc_digest. 3: adds "inventory" (pg_dump's list of every object, restore/compare/inventory.py) and
# "large_objects" (each one's owner, privileges and content digest). Older manifests still verify; what they lack
# is reported as not recorded.
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)

# Every setting that changes a value's text form, pinned per session. Measured: unpinned, 4 of 5 tables of a
# test database hashed differently between two servers whose defaults differed (TimeZone, DateStyle,
# extra_float_digits, bytea_output, IntervalStyle).
PINNED_SETTINGS: dict[str, str] = {
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "lc_monetary": "C",
    "xmlbinary": "base64",
    "xmloption": "content",
    # Definitions (pg_get_*def) qualify every name they print when no user schema is on the path.
    "search_path": "pg_catalog",
}
CHECKSUM_EXPRESSION = "count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text"
COUNT_ONLY_EXPRESSION = "count(*), NULL::text"  # --depth quick: counting costs a fraction of hashing

_USER = ("n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'"
         " AND n.nspname NOT LIKE 'pg\\_temp\\_%'")
_NOT_EXT = ("NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = {cls}::regclass AND d.objid = {oid}"
            " AND d.deptype = 'e')")

TABLES_SQL = f"""
SELECT c.oid, n.nspname || '.' || c.relname AS name, c.relkind AS kind, c.relispopulated AS populated,
       (SELECT pn.nspname || '.' || p.relname FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
        JOIN pg_namespace pn ON pn.oid = p.relnamespace WHERE i.inhrelid = c.oid AND c.relispartition) AS partition_of,
       CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END AS partition_bound,
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partition_key,
       pg_get_userbyid(c.relowner) AS owner, c.relpages AS pages
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'f', 'm') AND {_USER} AND {_NOT_EXT.format(cls="'pg_class'", oid="c.oid")}
ORDER BY 2
"""
COLUMNS_SQL = """
SELECT a.attrelid AS oid, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
       a.attnotnull AS not_null, pg_get_expr(d.adbin, d.adrelid) AS "default", a.attidentity AS identity,
       a.attgenerated AS generated,
       CASE WHEN a.attcollation <> t.typcollation THEN (SELECT collname FROM pg_collation WHERE oid = a.attcollation)
       END AS collation
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""
# NOT NULL lives in the column (PostgreSQL 18 also lists it as a constraint, older servers do not).
CONSTRAINTS_SQL = """
SELECT conrelid AS oid, conname AS name, contype AS type, pg_get_constraintdef(oid, true) AS definition
FROM pg_constraint WHERE conrelid = ANY(%s) AND contype <> 'n' AND conparentid = 0 ORDER BY conrelid, conname
"""
INDEXES_SQL = """
SELECT i.indrelid AS oid, c.relname AS name, pg_get_indexdef(i.indexrelid) AS definition, i.indisunique AS is_unique
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = ANY(%s) ORDER BY i.indrelid, c.relname
"""
TRIGGERS_SQL = """
SELECT tgrelid AS oid, tgname AS name, pg_get_triggerdef(oid) AS definition, tgenabled AS enabled
FROM pg_trigger WHERE tgrelid = ANY(%s) AND NOT tgisinternal AND tgparentid = 0 ORDER BY tgrelid, tgname
"""
SEQUENCES_SQL = f"""
SELECT n.nspname || '.' || c.relname AS name, s.last_value,
       (SELECT jsonb_build_object('table', tn.nspname || '.' || t.relname, 'column', a.attname,
                                  'schema', tn.nspname, 'relname', t.relname)
        FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
          AND d.deptype IN ('a', 'i') AND NOT t.relispartition LIMIT 1) AS owned_by,
       seq.seqincrement AS increment
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_sequence seq ON seq.seqrelid = c.oid
LEFT JOIN pg_sequences s ON s.schemaname = n.nspname AND s.sequencename = c.relname
WHERE c.relkind = 'S' AND {_USER} AND {_NOT_EXT.format(cls="'pg_class'", oid="c.oid")}
ORDER BY 1
"""
VIEWS_SQL = f"""
SELECT n.nspname || '.' || c.relname AS name, c.relkind AS kind, pg_get_viewdef(c.oid, true) AS definition
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND {_USER} AND {_NOT_EXT.format(cls="'pg_class'", oid="c.oid")} ORDER BY 1
"""
FUNCTIONS_SQL = f"""
SELECT p.oid::regprocedure::text AS name, pg_get_functiondef(p.oid) AS definition
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.prokind IN ('f', 'p') AND {_USER} AND {_NOT_EXT.format(cls="'pg_proc'", oid="p.oid")} ORDER BY 1
"""
TYPES_SQL = f"""
SELECT n.nspname || '.' || t.typname AS name,
       CASE t.typtype
         WHEN 'e' THEN 'enum (' || (SELECT string_agg(quote_literal(enumlabel), ', ' ORDER BY enumsortorder)
                                    FROM pg_enum WHERE enumtypid = t.oid) || ')'
         WHEN 'd' THEN 'domain ' || format_type(t.typbasetype, t.typtypmod)
                       || CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END
                       || coalesce((SELECT ' ' || string_agg(pg_get_constraintdef(oid, true), ' ' ORDER BY conname)
                                    FROM pg_constraint WHERE contypid = t.oid), '')
         WHEN 'c' THEN 'composite (' || (SELECT string_agg(quote_ident(attname) || ' '
                                                            || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
                                         FROM pg_attribute WHERE attrelid = t.typrelid AND attnum > 0
                                           AND NOT attisdropped) || ')'
         ELSE t.typtype::text END AS definition
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype IN ('e', 'd', 'c') AND {_USER} AND {_NOT_EXT.format(cls="'pg_type'", oid="t.oid")}
  AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
ORDER BY 1
"""
ROLES_SQL = f"""
SELECT DISTINCT r FROM (
  SELECT pg_get_userbyid(c.relowner) AS r FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_USER}
  UNION SELECT pg_get_userbyid(n.nspowner) FROM pg_namespace n WHERE {_USER}
  UNION SELECT pg_get_userbyid(p.proowner) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {_USER}
  UNION SELECT pg_get_userbyid(a.grantee) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
        aclexplode(c.relacl) a WHERE {_USER} AND a.grantee <> 0
  UNION SELECT pg_get_userbyid(a.grantee) FROM pg_namespace n, aclexplode(n.nspacl) a WHERE {_USER} AND a.grantee <> 0
) roles ORDER BY 1
"""
DATABASE_SQL = """
SELECT current_database() AS name, pg_encoding_to_char(encoding) AS encoding, datcollate AS collate,
       datctype AS ctype, current_setting('server_version') AS server_version,
       current_setting('server_version_num')::int AS server_version_num,
       pg_database_size(current_database()) AS size_bytes
FROM pg_database WHERE datname = current_database()
"""


# The manifest document (JSON, format restore-verify-manifest; versions 1 and 2 read), typed as it is read: the
# keys a version-1 manifest lacks are optional (total=False), and every reader checks for them.

class DatabaseFacts(TypedDict, total=False):
    name: str
    encoding: str
    collate: str
    ctype: str
    server_version: str
    server_version_num: int
    size_bytes: int  # on disk when captured: what a restore needs room for (restore/session.py space_needed)


class TableEntry(TypedDict, total=False):
    kind: str
    owner: str | None
    partition_of: str | None
    partition_bound: str | None
    partition_key: str | None
    columns: list[dict[str, Any]]
    constraints: dict[str, dict[str, Any]]
    indexes: dict[str, dict[str, Any]]
    triggers: dict[str, dict[str, Any]]
    partitions: list[str]
    populated: bool  # materialized views
    row_count: int
    checksum: str | None
    buckets: dict[str, Any]


class SequenceEntry(TypedDict, total=False):
    last_value: int | None
    last_value_max: int | None  # read after pg_dump ended (python -m restore backup)
    increment: int
    owned_by: str | None
    column_max: int | None


class Freshness(TypedDict):
    query: str
    value: Any  # ISO 8601 text for a timestamp


class Position(TypedDict, total=False):
    """Where in the WAL, and when, the manifest's snapshot was taken."""

    lsn: str
    time: str  # ISO 8601
    exact: bool  # the snapshot sees exactly the commits before ``lsn`` (see :func:`export_snapshot`)


# The insert position, read in the statement that takes the snapshot (a standby: what it replayed).
POSITION_SQL = ("clock_timestamp() AS at, CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
                "ELSE pg_current_wal_insert_lsn() END::text AS lsn, pg_is_in_recovery() AS standby, "
                "(SELECT count(*) FROM txid_snapshot_xip(txid_current_snapshot())) AS in_progress")  # (any major)
SNAPSHOT_ATTEMPTS = 200


def export_snapshot(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Begin a REPEATABLE READ READ ONLY transaction on ``conn`` (autocommit, no transaction open), export its
    snapshot and say where in the WAL it stands.

    A position is exact only when the snapshot sees precisely the commits written before it: a transaction whose
    commit record is in the WAL but which is still finishing (flushing) is invisible to a snapshot taken then, and a
    recovery to that position would hold it. So the position is read before and in the snapshot's statement, and
    the snapshot is taken again (a few milliseconds later) until nothing was written between the two reads and no
    transaction was in progress — on a busy source, usually within a few attempts. Otherwise the last one is used,
    marked not exact (its time is then the recovery target)."""
    row: dict[str, Any] | None = None
    with conn.cursor(row_factory=dict_row) as cur:
        for attempt in range(SNAPSHOT_ATTEMPTS):
            before = cur.execute("SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
                                 "ELSE pg_current_wal_insert_lsn() END::text AS lsn").fetchone()
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            row = cur.execute(f"SELECT pg_export_snapshot() AS s, {POSITION_SQL}").fetchone()
            assert row is not None
            assert before is not None
            row["exact"] = bool(row["standby"]) or (before["lsn"] == row["lsn"] and row["in_progress"] == 0)
            if row["exact"] or attempt == SNAPSHOT_ATTEMPTS - 1:
                break
            conn.execute("ROLLBACK")
            time.sleep(0.002 * (1 + attempt % 5))  # let the in-flight commits finish (bounded: SNAPSHOT_ATTEMPTS)
    assert row is not None
    return row


def _position(row: dict[str, Any] | None) -> Position | None:
    if not row or not row.get("lsn"):
        return None
    return {"lsn": str(row["lsn"]), "time": row["at"].isoformat(), "exact": bool(row.get("exact"))}


class LargeObject(TypedDict):
    owner: str
    acl: Any  # [[grantee, privilege, grantable], …]
    md5: str | None  # None: the capturing role could not read it


class LargeObjects(TypedDict):
    objects: dict[str, LargeObject]  # by oid
    unreadable: str | None  # why some contents could not be read (the fix: a GRANT)


LARGE_OBJECTS_SQL = f"""
SELECT m.oid::bigint AS oid, pg_get_userbyid(m.lomowner) AS owner,
       {fidelity.acl_sql("m.lomacl", "acldefault('L', m.lomowner)")} AS acl, {{content}} AS md5
FROM pg_largeobject_metadata m ORDER BY 1
"""


def _large_objects(cur: psycopg.Cursor[Any]) -> LargeObjects:
    """Every large object's owner, privileges and content digest (md5 of its bytes, read with lo_get: the
    privileges of the capturing role apply; where it may not read them, the digests are left out and said)."""
    cur.execute("SAVEPOINT restore_verify_lo")
    try:
        rows = cur.execute(LARGE_OBJECTS_SQL.format(content="md5(lo_get(m.oid))").encode()).fetchall()
        unreadable = None
    except psycopg.errors.InsufficientPrivilege as exc:
        cur.execute("ROLLBACK TO SAVEPOINT restore_verify_lo")
        rows = cur.execute(LARGE_OBJECTS_SQL.format(content="NULL::text").encode()).fetchall()
        unreadable = (f"the content of large objects could not be read ({exc.diag.message_primary}): let the "
                      "verifying role read them (GRANT SELECT ON LARGE OBJECT <oid> TO <role>, or a superuser "
                      "sets lo_compat_privileges = on)")
    cur.execute("RELEASE SAVEPOINT restore_verify_lo")
    return {"objects": {str(r["oid"]): {"owner": r["owner"], "acl": r["acl"], "md5": r["md5"]} for r in rows},
            "unreadable": unreadable}


def large_object_differences(src: LargeObjects, dst: LargeObjects, *, limit: int = 10) -> tuple[list[str], int]:
    """Large objects whose content differs or is gone (named by oid), and how many were compared."""
    a, b = src["objects"], dst["objects"]
    missing = sorted((o for o in a if o not in b), key=int)
    changed = sorted((o for o, e in a.items() if o in b and e["md5"] and b[o]["md5"] and e["md5"] != b[o]["md5"]),
                     key=int)
    out = []
    if missing:
        out.append(f"{len(missing)} large object(s) of the backup are gone from the restore, with their content: "
                   f"ids {listed(missing, limit=limit)}")
    if changed:
        out.append(f"{len(changed)} large object(s) hold other bytes than in the backup: ids "
                   f"{listed(changed, limit=limit)}. Fix: restore them from the backup (pg_restore restores large "
                   "objects with the data)")
    compared = sum(1 for o, e in a.items() if e["md5"] and o in b and b[o]["md5"])
    return out, compared


class Manifest(TypedDict, total=False):
    format: str
    version: int
    captured_at: str
    snapshot: str | None
    database: DatabaseFacts
    settings: dict[str, str]
    checksum: dict[str, str]
    extensions: dict[str, str]
    schemas: list[str]
    roles: list[str]
    tables: dict[str, TableEntry]
    sequences: dict[str, SequenceEntry]
    views: dict[str, dict[str, Any]]
    functions: dict[str, dict[str, Any]]
    types: dict[str, dict[str, Any]]
    freshness: Freshness | None
    behaviour: fidelity.Behaviour
    backup: dict[str, Any]  # python -m restore backup: the dump it describes (file, size, toc_digest)
    position: Position  # the snapshot's place in the WAL and its time
    inventory: inventory.Inventory  # version 3: every object pg_dump writes (restore/compare/inventory.py)
    large_objects: LargeObjects  # version 3


def _md5(text: str | None) -> str | None:
    return None if text is None else hashlib.md5(text.encode()).hexdigest()


def _normal(text: str | None) -> str | None:
    return None if text is None else re.sub(r"\s+", " ", text).strip()


def pin_session(conn: psycopg.Connection[Any]) -> None:
    """Pin the settings that change a row's text form (session level: allowed on a read-only standby)."""
    for name, value in PINNED_SETTINGS.items():
        conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))


@contextlib.contextmanager
def _snapshot_session(conninfo: str, snapshot: str | None) -> Iterator[psycopg.Connection[Any]]:
    """A pinned, read-only REPEATABLE READ session, on the exported snapshot when one is given."""
    with psycopg.connect(conninfo, autocommit=True, application_name="restore-verify manifest") as conn:
        pin_session(conn)
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if snapshot:
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")


BUCKETS = 32  # per table: a content mismatch is narrowed to one of these


def _bucket_expression(spec: dict[str, Any]) -> sql.Composable:
    """SQL assigning each row of ``t`` a bucket 0..n-1 (n: a NULL key), the same on the backup and the restore."""
    n = int(spec["n"])
    cols = [sql.SQL("t.{}").format(sql.Identifier(c)) for c in spec["columns"]]
    if spec["by"] == "range":
        lo, span = int(spec["lo"]), int(spec["hi"]) - int(spec["lo"]) + 1
        # Integer arithmetic (numeric costs more than the row's hash); (k - lo) * n stays far inside bigint.
        return sql.SQL("CASE WHEN {k} IS NULL THEN {n} ELSE least({last}, greatest(0, ({k}::bigint - {lo}) * {n} "
                       "/ {span}))::int END").format(k=cols[0], n=sql.Literal(n), last=sql.Literal(n - 1),
                                                      lo=sql.Literal(lo), span=sql.Literal(span))
    # A hash of the key (or, without a key, of the first column): hashing the whole row twice would double the
    # cost of the scan for no better answer.
    return sql.SQL("(hashtextextended(ROW({cols})::text, 1) & {mask})::int").format(
        cols=sql.SQL(", ").join(cols), mask=sql.Literal(n - 1))


def workers_planned(conn: psycopg.Connection[Any], query: sql.Composable) -> int:
    """The parallel workers the planner plans for ``query`` (EXPLAIN, not run): 0 for a serial plan."""
    row = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query)).fetchone()
    found = [0]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found[0] = max(found[0], int(node.get("Workers Planned") or 0))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(row[0] if row else None)
    return found[0]


def _table_content(conninfo: str, snapshot: str | None, names: list[str], specs: dict[str, dict[str, Any] | None],
                   results: dict[str, tuple[int, str | None, dict[str, Any] | None]], lock: threading.Lock,
                   progress: Callable[[str], None] | None, *, checksums: bool,
                   plans: dict[str, int] | None = None) -> None:
    with _snapshot_session(conninfo, snapshot) as conn:
        while True:
            with lock:
                if not names:
                    return
                name = names.pop(0)
            schema, _, table = name.partition(".")
            relation = sql.Identifier(schema, table)
            spec = specs.get(name)
            if not checksums or spec is None:
                query = sql.SQL("SELECT " + (CHECKSUM_EXPRESSION if checksums else COUNT_ONLY_EXPRESSION)
                                + " FROM {} t").format(relation)
                if plans is not None:  # what the planner makes of the server's cores, recorded (cheap)
                    plans[name] = workers_planned(conn, query)
                row = conn.execute(query).fetchone()
                assert row is not None
                found: tuple[int, str | None, dict[str, Any] | None] = (
                    int(row[0]), None if row[1] is None else str(row[1]), None)
            else:
                # One scan: count and checksum per bucket; the table's are their sums (the same numbers as the
                # single-expression checksum, so manifests of either kind compare).
                # Grouped by a join column of a small VALUES list, not by the bucket expression itself: the planner
                # would estimate one group per row for the expression and give up parallel query (measured: 2-4x
                # slower than the plain checksum), while 33 known groups keep the partial aggregate in parallel.
                n = int(spec["n"])
                buckets_list = sql.SQL(", ").join(sql.SQL("({})").format(sql.Literal(i)) for i in range(n + 1))
                query = sql.SQL(
                    "SELECT v.b, count(*), coalesce(sum(hashtextextended(t::text, 0)), 0) FROM {r} t "
                    "JOIN (VALUES {values}) v(b) ON v.b = {b} GROUP BY v.b"
                ).format(b=_bucket_expression(spec), r=relation, values=buckets_list)
                if plans is not None:
                    plans[name] = workers_planned(conn, query)
                rows = conn.execute(query).fetchall()
                counts, sums = [0] * (n + 1), [0] * (n + 1)
                for bucket, count, total in rows:
                    counts[int(bucket)], sums[int(bucket)] = int(count), int(total)
                found = (sum(counts), str(sum(sums)), spec | {"counts": counts, "sums": [str(x) for x in sums]})
            with lock:
                results[name] = found
            if progress:
                progress(name)


def table_contents(conninfo: str, tables: list[str], *, jobs: int, snapshot: str | None = None,
                   progress: Callable[[str], None] | None = None, checksums: bool = True,
                   buckets: dict[str, dict[str, Any] | None] | None = None, plans: dict[str, int] | None = None,
                   ) -> dict[str, tuple[int, str | None, dict[str, Any] | None]]:
    """(row count, checksum, buckets) per table, hashed over ``jobs`` connections at once, in the order given."""
    results: dict[str, tuple[int, str | None, dict[str, Any] | None]] = {}
    queue = list(tables)
    lock = threading.Lock()
    workers = max(1, min(jobs, len(queue) or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_table_content, conninfo, snapshot, queue, buckets or {}, results, lock, progress,
                               checksums=checksums, plans=plans) for _ in range(workers)]
        for future in futures:
            future.result()
    return results


PRIMARY_KEYS_SQL = """
SELECT i.indrelid AS oid,
       array(SELECT a.attname FROM unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.ord) AS columns,
       (SELECT a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype) FROM pg_attribute a
         WHERE a.attrelid = i.indrelid AND a.attnum = i.indkey[0]) AS integer_key
FROM pg_index i WHERE i.indisprimary AND i.indrelid = ANY(%s)
"""
FIRST_COLUMN_SQL = """
SELECT a.attrelid AS oid, a.attname AS name FROM pg_attribute a
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
  AND a.attnum = (SELECT min(b.attnum) FROM pg_attribute b WHERE b.attrelid = a.attrelid AND b.attnum > 0
                  AND NOT b.attisdropped)
"""


def _bucket_specs(cur: psycopg.Cursor[Any], tables: dict[str, TableEntry], oids: dict[str, int],
                  given: dict[str, dict[str, Any] | None]) -> dict[str, dict[str, Any] | None]:
    """How each table's rows are bucketed: the backup's own choice when comparing with it, else by primary-key
    range (one integer column), by a hash of the primary key, or by a hash of the first column."""
    keys = {r["oid"]: r for r in cur.execute(PRIMARY_KEYS_SQL, (list(oids.values()),)).fetchall()}
    first = {r["oid"]: r["name"] for r in cur.execute(FIRST_COLUMN_SQL, (list(oids.values()),)).fetchall()}
    specs: dict[str, dict[str, Any] | None] = {}
    for name, oid in oids.items():
        columns = {c["name"] for c in tables[name]["columns"]}
        wanted = given.get(name)
        if wanted is not None:
            wanted = {k: v for k, v in wanted.items() if k not in ("counts", "sums")}
            specs[name] = wanted if set(wanted["columns"]) <= columns else None
            continue
        key = keys.get(oid)
        if key and len(key["columns"]) == 1 and key["integer_key"]:
            schema, _, table = name.partition(".")
            row = cur.execute(sql.SQL("SELECT min({k}) AS lo, max({k}) AS hi FROM {t}").format(
                k=sql.Identifier(key["columns"][0]), t=sql.Identifier(schema, table))).fetchone()
            # (k - lo) * n must stay inside bigint: keys near its limits (snowflake ids) are bucketed by hash.
            if row and row["lo"] is not None and max(abs(int(row["lo"])), abs(int(row["hi"]))) < 2**57:
                specs[name] = {"by": "range", "columns": list(key["columns"]), "lo": int(row["lo"]),
                               "hi": int(row["hi"]), "n": BUCKETS}
                continue
        if key:
            specs[name] = {"by": "key", "columns": list(key["columns"]), "n": BUCKETS}
        elif oid in first:
            specs[name] = {"by": "column", "columns": [first[oid]], "n": BUCKETS}
        else:
            specs[name] = None
    return specs


def bucket_differences(src: TableEntry, dst: TableEntry, *, limit: int = 5) -> list[str]:
    """Where two tables' contents differ: the buckets whose count or checksum differ, as key ranges or hashes."""
    a, b = src.get("buckets"), dst.get("buckets")
    if not a or not b:
        return []
    spec = {k: v for k, v in a.items() if k not in ("counts", "sums")}
    if spec != {k: v for k, v in b.items() if k not in ("counts", "sums")}:
        return []
    n, cols = int(a["n"]), ", ".join(a["columns"])
    out = []
    for i in range(n + 1):
        if a["counts"][i] == b["counts"][i] and a["sums"][i] == b["sums"][i]:
            continue
        if i == n:
            where = f"rows whose {cols} is NULL"
        elif a["by"] == "range":
            lo, span = int(a["lo"]), int(a["hi"]) - int(a["lo"]) + 1
            first, last = lo + -(-i * span // n), lo + -(-(i + 1) * span // n) - 1
            where = f"rows with {cols} from {first} to {last}" + (" (and below)" if i == 0 else "") + (
                " (and above)" if i == n - 1 else "")
        else:
            what = "primary key" if a["by"] == "key" else "first column"
            where = f"rows whose {what} ({cols}) hashes to bucket {i} of {n}"
        change = ("different content" if a["counts"][i] == b["counts"][i]
                  else f"{b['counts'][i]} rows instead of {a['counts'][i]}")
        out.append(f"{where}: {change}")
    return out[:limit] + ([f"and {len(out) - limit} more bucket(s)"] if len(out) > limit else [])


def capture(conninfo: str, *, jobs: int = 2, snapshot: str | None = None, freshness_sql: str | None = None,
            content: bool = True, checksums: bool = True,
            compare_with: dict[str, TableEntry] | None = None, objects: bool = True,
            progress: Callable[[str], None] | None = None, plans: dict[str, int] | None = None) -> Manifest:
    """The manifest of the database at ``conninfo`` (read-only; on ``snapshot`` when given). ``compare_with``: the
    backup manifest's tables, when capturing a restore to compare with it (its buckets are reused). ``objects``:
    list every object with pg_dump (on the same snapshot, while the catalog and contents are read)."""
    captured_at = datetime.now(UTC)
    with _snapshot_session(conninfo, snapshot) as conn, conn.cursor(row_factory=dict_row) as cur:
        position: Position | None = None
        if snapshot is None:
            # Let the content workers see exactly what this catalog read sees; and say where in the WAL and when
            # that snapshot was taken (a base backup recovered to that time holds this content).
            conn.execute("ROLLBACK")  # taken again, at a moment whose WAL position is exact
            exported = export_snapshot(conn)
            snapshot_for_content = str(exported["s"])
            position = _position(exported)
        else:
            snapshot_for_content = snapshot
        listed: list[inventory.Inventory | BaseException] = []
        lister = threading.Thread(target=_list_objects, args=(conninfo, snapshot_for_content, listed), daemon=True)
        if objects:
            lister.start()
        try:
            found = _capture_in(cur, conninfo, jobs=jobs, snapshot_for_content=snapshot_for_content,
                                freshness_sql=freshness_sql, content=content, checksums=checksums,
                                compare_with=compare_with, progress=progress, plans=plans)
        finally:
            if objects:
                lister.join()
    if objects:
        if isinstance(listed[0], BaseException):
            raise listed[0]
        found["inventory"] = listed[0]
    found["captured_at"] = captured_at.isoformat(timespec="seconds")
    found["snapshot"] = snapshot
    if position:
        found["position"] = position
    return found


def _list_objects(conninfo: str, snapshot: str | None, out: list[inventory.Inventory | BaseException]) -> None:
    try:
        out.append(inventory.of_database(conninfo, snapshot=snapshot))
    except BaseException as exc:  # handed to the capturing thread, which raises it
        out.append(exc)


def _capture_in(cur: psycopg.Cursor[Any], conninfo: str, *, jobs: int, snapshot_for_content: str | None,
                freshness_sql: str | None, content: bool, checksums: bool,
                compare_with: dict[str, TableEntry] | None, progress: Callable[[str], None] | None,
                plans: dict[str, int] | None) -> Manifest:
    database = cast(DatabaseFacts, dict(cur.execute(DATABASE_SQL).fetchone() or {}))
    tables_rows = cur.execute(TABLES_SQL).fetchall()
    oids = [r["oid"] for r in tables_rows]
    by_oid: dict[int, TableEntry] = {}
    tables: dict[str, TableEntry] = {}
    for r in tables_rows:
        entry: TableEntry = {"kind": r["kind"], "owner": r["owner"], "partition_of": r["partition_of"],
                 "partition_bound": r["partition_bound"], "partition_key": r["partition_key"],
                 "columns": [], "constraints": {}, "indexes": {}, "triggers": {}, "partitions": []}
        if r["kind"] == "m":
            entry["populated"] = r["populated"]
        tables[r["name"]] = entry
        by_oid[r["oid"]] = entry
    for r in cur.execute(COLUMNS_SQL, (oids,)).fetchall():
        by_oid[r["oid"]]["columns"].append({k: r[k] for k in ("name", "type", "not_null", "default", "identity",
                                                              "generated", "collation")})
    for r in cur.execute(CONSTRAINTS_SQL, (oids,)).fetchall():
        by_oid[r["oid"]]["constraints"][r["name"]] = {"type": r["type"], "definition": r["definition"]}
    for r in cur.execute(INDEXES_SQL, (oids,)).fetchall():
        by_oid[r["oid"]]["indexes"][r["name"]] = {"definition": r["definition"], "unique": r["is_unique"]}
    for r in cur.execute(TRIGGERS_SQL, (oids,)).fetchall():
        by_oid[r["oid"]]["triggers"][r["name"]] = {"definition": r["definition"], "enabled": r["enabled"]}
    for name, entry in tables.items():
        if entry["partition_of"] in tables:
            tables[entry["partition_of"]]["partitions"].append(name)
    sequences: dict[str, SequenceEntry] = {}
    for r in cur.execute(SEQUENCES_SQL).fetchall():
        owned = r["owned_by"]
        column_max = None
        if owned:
            agg = sql.SQL("max" if r["increment"] > 0 else "min")
            row = cur.execute(sql.SQL("SELECT {}({}) AS v FROM {}").format(
                agg, sql.Identifier(owned["column"]), sql.Identifier(owned["schema"], owned["relname"]))).fetchone()
            column_max = None if row is None or row["v"] is None else int(row["v"])
        sequences[r["name"]] = {"last_value": r["last_value"], "increment": r["increment"],
                                "owned_by": f"{owned['table']}.{owned['column']}" if owned else None,
                                "column_max": column_max}
    views = {r["name"]: {"kind": r["kind"], "definition": _normal(r["definition"]),
                         "definition_md5": _md5(_normal(r["definition"]))}
             for r in cur.execute(VIEWS_SQL).fetchall()}
    functions = {r["name"]: {"definition": r["definition"], "definition_md5": _md5(_normal(r["definition"]))}
                 for r in cur.execute(FUNCTIONS_SQL).fetchall()}
    types = {r["name"]: {"definition": r["definition"], "definition_md5": _md5(r["definition"])}
             for r in cur.execute(TYPES_SQL).fetchall()}
    extensions = {r["extname"]: r["extversion"]
                  for r in cur.execute("SELECT extname, extversion FROM pg_extension ORDER BY 1").fetchall()}
    schemas = [r["nspname"] for r in cur.execute(
        f"SELECT nspname FROM pg_namespace n WHERE {_USER} ORDER BY 1".encode()).fetchall()]
    roles = [r["r"] for r in cur.execute(ROLES_SQL.encode()).fetchall()]
    behaviour = fidelity.capture(cur, roles)
    freshness: Freshness | None = None
    if freshness_sql:
        row = cur.execute(freshness_sql.encode()).fetchone()
        value = next(iter(row.values())) if row else None
        freshness = {"query": freshness_sql, "value": value.isoformat() if isinstance(value, datetime) else value}
    large_objects = _large_objects(cur) if content else None
    if content:
        pages = {r["name"]: int(r["pages"]) for r in tables_rows}
        populated = {r["name"] for r in tables_rows if r["populated"]}
        storable = [n for n, e in tables.items() if e["kind"] == "r" or (e["kind"] == "m" and n in populated)]
        # Biggest first, so that the last connection to finish is not stuck with the largest table.
        storable.sort(key=lambda n: -pages[n])
        storable_oids = {r["name"]: r["oid"] for r in tables_rows if r["name"] in storable}
        if compare_with is None:  # the backup's side: every table bucketed, so that a mismatch can be placed
            specs = _bucket_specs(cur, tables, storable_oids, {}) if checksums else {}
            results = table_contents(conninfo, storable, jobs=jobs, snapshot=snapshot_for_content,
                                     checksums=checksums, buckets=specs, progress=progress, plans=plans)
        else:
            # The restore's side: one plain pass; only a table that differs from the backup is scanned again,
            # bucketed as the backup's was, to say where. A faithful restore pays nothing for the buckets.
            results = table_contents(conninfo, storable, jobs=jobs, snapshot=snapshot_for_content,
                                     checksums=checksums, plans=plans)
            differing = [n for n, (count, checksum, _) in results.items() if checksums
                         and (compare_with.get(n) or {}).get("buckets")
                         and (compare_with[n].get("row_count"), compare_with[n].get("checksum"))
                         != (count, checksum)]
            if differing:
                given: dict[str, dict[str, Any] | None] = {n: compare_with[n]["buckets"] for n in differing}
                specs = _bucket_specs(cur, tables, {n: storable_oids[n] for n in differing}, given)
                results.update(table_contents(conninfo, differing, jobs=jobs, snapshot=snapshot_for_content,
                                              buckets=specs))
        for name, (count, checksum, bucketed) in results.items():
            tables[name]["row_count"] = count
            tables[name]["checksum"] = checksum
            if bucketed is not None:
                tables[name]["buckets"] = bucketed
    found: Manifest = {
        "format": FORMAT, "version": VERSION,
        "snapshot": None, "database": database, "settings": PINNED_SETTINGS,
        "checksum": {"expression": CHECKSUM_EXPRESSION, "per": "table"},
        "extensions": extensions, "schemas": schemas, "roles": roles, "tables": tables, "sequences": sequences,
        "views": views, "functions": functions, "types": types, "freshness": freshness,
        "behaviour": behaviour,
    }
    if large_objects is not None:
        found["large_objects"] = large_objects
    return found


def write(manifest: Manifest, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Streamed: the text of a 10,000-table manifest (~40 MB) is never held whole (the same bytes as json.dumps).
    with path.open("w") as out:
        json.dump(manifest, out, indent=1, sort_keys=True, default=str)
        out.write("\n")


def load(path: Path) -> Manifest:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not complete JSON ({exc.msg} at line {exc.lineno}): truncated?") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"{path} is not a restore-verify manifest (versions {READABLE_VERSIONS} are read)")
    for key in ("tables", "sequences", "database"):
        if not isinstance(data.get(key), dict):
            raise ValueError(f"{path} has no {key!r} section: cut short or edited by hand")
    return cast(Manifest, data)  # its sections checked above; optional keys are checked where they are read


def check_belongs_to(manifest: Manifest, path: Path, archive: ArchiveInfo) -> None:
    """Raise :class:`ManifestMismatch` unless the manifest can describe this backup.

    A manifest from ``python -m restore backup`` carries its dump's table-of-contents digest: equal, it is the
    same schema. Otherwise (another format of the same database, an older manifest) the database names must
    agree where both are known, and most tables must be common to both: a restore that lost or gained a few
    tables is what the checks are for; two databases that share almost nothing are a mix-up.
    """
    recorded = (manifest.get("backup") or {}).get("toc_digest")
    if recorded and recorded == archive.toc_digest():
        return
    name = manifest["database"].get("name")
    described = f"database {name!r}" + (f" as dumped to {manifest['backup']['file']!r}"
                                        if (manifest.get("backup") or {}).get("file") else "")
    if name and archive.dbname and name != archive.dbname:
        raise ManifestMismatch.other_backup(path, described, f"database {archive.dbname!r}",
                                            "the database names differ")
    in_backup = set(archive.tables())
    in_manifest = {t for t, e in manifest["tables"].items() if e.get("kind") in ("r", "p", "f", None)}
    if in_backup and in_manifest:
        common = len(in_backup & in_manifest)
        if common * 2 < max(len(in_backup), len(in_manifest)):
            raise ManifestMismatch.other_backup(
                path, described, str(archive.path),
                f"only {common} of its {len(in_manifest)} tables are among the backup's {len(in_backup)}")


def _sequence_values(conn: psycopg.Connection[Any]) -> dict[str, int | None]:
    rows = conn.execute(
        "SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences"
        " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
    ).fetchall()
    return {str(name): None if value is None else int(value) for name, value in rows}


def sequence_bounds(entry: SequenceEntry) -> tuple[int | None, int | None]:
    """The range a restored sequence's last value may take: exact for a manifest read once, bracketed for one
    taken with ``take_backup`` (read before pg_dump started and after it ended)."""
    low, high = entry.get("last_value"), entry.get("last_value_max", entry.get("last_value"))
    return (low, high) if entry.get("increment", 1) > 0 else (high, low)


def take_backup(conninfo: str, output: Path, *, jobs: int = 2, freshness_sql: str | None = None,
                pg_dump_args: tuple[str, ...] = (), progress: Callable[[str], None] | None = None,
                ) -> tuple[Path, Path]:
    """``pg_dump -Fc`` and the manifest, both from one exported snapshot: they describe the same data to the row.

    A REPEATABLE READ transaction exports its snapshot; pg_dump (``--snapshot``) and every manifest connection
    (``SET TRANSACTION SNAPSHOT``) import it, and the exporting transaction stays open until both are done.
    ``progress`` is told, every few seconds, how far both are (the dump's size so far, the tables hashed).
    """
    hashed: list[str] = []
    started = time.monotonic()
    stop = threading.Event()

    def say(prefix: str) -> None:
        if progress is not None:
            size = output.stat().st_size / 1e6 if output.exists() else 0.0
            progress(f"{prefix}pg_dump: {size:,.1f} MB written; manifest: {len(hashed)} table(s) hashed; "
                     f"{time.monotonic() - started:.0f} s")

    def tick() -> None:
        while not stop.wait(5.0):
            say("")

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        taken = _take_backup(conninfo, output, jobs=jobs, freshness_sql=freshness_sql, pg_dump_args=pg_dump_args,
                             on_table=hashed.append)
    finally:
        stop.set()
        ticker.join()
    say("done: ")
    return taken


def _take_backup(conninfo: str, output: Path, *, jobs: int, freshness_sql: str | None,
                 pg_dump_args: tuple[str, ...], on_table: Callable[[str], None]) -> tuple[Path, Path]:
    manifest_path = output.with_name(output.name + ".manifest.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(conninfo, autocommit=True, application_name="restore-verify backup") as leader:
        # Sequences are not transactional: pg_dump reads each one when it gets to it. Reading them before
        # pg_dump starts and after it ends brackets the values it dumped (for sequences that only move forward).
        before = _sequence_values(leader)
        row = export_snapshot(leader)
        snapshot, position = str(row["s"]), _position(row)
        dump = subprocess.Popen(
            [str(pg_tool("pg_dump")), "-Fc", f"--snapshot={snapshot}", "-f", str(output), *pg_dump_args,
             "-d", conninfo],
            env=clean_env(), stderr=subprocess.PIPE, text=True,
        )
        try:
            manifest = capture(conninfo, jobs=jobs, snapshot=snapshot, freshness_sql=freshness_sql,
                               progress=on_table, objects=False)
        finally:
            _, stderr = dump.communicate()
        leader.execute("ROLLBACK")
        after = _sequence_values(leader)
    for name, entry in manifest["sequences"].items():
        entry["last_value"], entry["last_value_max"] = before.get(name), after.get(name)
    if position:
        manifest["position"] = position
    if dump.returncode != 0:
        raise RuntimeError(f"pg_dump failed (exit {dump.returncode}): {stderr.strip()}")
    # Identity: the run refuses this manifest beside any other backup (compared before restoring).
    manifest["backup"] = {"file": output.name, "size_bytes": output.stat().st_size,
                          "toc_digest": inspect(output).toc_digest()}
    manifest["inventory"] = inventory.of_archive(output)  # the dump's own list of objects: the same snapshot
    write(manifest, manifest_path)
    return output, manifest_path


# --- comparison ---------------------------------------------------------------------------------------------

def compare_table(name: str, src: TableEntry, dst: TableEntry) -> list[str]:
    """Every schema difference of one table, each naming the object and both sides."""
    diffs: list[str] = []
    detached = bool(src.get("partition_of")) and not dst.get("partition_of")
    if src["kind"] != dst["kind"]:
        diffs.append(f"{name}: relation kind was {src['kind']!r}, is {dst['kind']!r}")
    src_cols = {c["name"]: c for c in src["columns"]}
    dst_cols = {c["name"]: c for c in dst["columns"]}
    for col, s in src_cols.items():
        d = dst_cols.get(col)
        if d is None:
            diffs.append(f"column {name}.{col} ({s['type']}) is missing")
            continue
        for key, label in (("type", "type"), ("not_null", "nullability"), ("default", "default"),
                           ("identity", "identity"), ("generated", "generated"), ("collation", "collation")):
            if _normal(str(s.get(key))) != _normal(str(d.get(key))):
                fix = ""
                if key == "default":  # the one column property with a statement that cannot lose data
                    column = f"ALTER TABLE {_table_sql(name)} ALTER COLUMN {sql.Identifier(col).as_string()}"
                    fix = (f". Fix: {column} SET DEFAULT {s['default']};" if s.get("default") else
                           f". Fix: {column} DROP DEFAULT;")
                diffs.append(f"column {name}.{col}: {label} was {_column_words(key, s.get(key))}, is "
                             f"{_column_words(key, d.get(key))}{fix}")
    diffs += [f"column {name}.{col} ({d['type']}) is not in the backup" for col, d in dst_cols.items()
              if col not in src_cols]
    if [c["name"] for c in src["columns"]] != [c["name"] for c in dst["columns"]] and set(src_cols) == set(dst_cols):
        diffs.append(f"{name}: column order changed (row checksums depend on it)")
    for kind in ("constraints", "indexes", "triggers"):
        label = kind[:-1] if kind != "indexes" else "index"
        for obj, s in src[kind].items():
            d = dst[kind].get(obj)
            if d is None:
                diffs.append(f"{label} {obj} on {name} is missing (was: {s['definition']})")
            elif _normal(s["definition"]) != _normal(d["definition"]):
                diffs.append(f"{label} {obj} on {name} is defined differently in the restore"
                             f"{text_change(str(s['definition']), str(d['definition']))}")
            elif kind == "triggers" and s["enabled"] != d["enabled"]:
                diffs.append(f"trigger {obj} on {name} was {fidelity.trigger_state(s['enabled'])} in the backup, is "
                             f"{fidelity.trigger_state(d['enabled'])} in the restore. Fix: ALTER TABLE "
                             f"{_table_sql(name)} {_TRIGGER_FIX.get(s['enabled'], 'ENABLE')} TRIGGER "
                             f"{sql.Identifier(obj).as_string()};")
        if detached:
            continue  # a detached partition keeps its own copies of the parent's keys and triggers: not new objects
        diffs += [f"{label} {obj} on {name} is not in the backup ({d['definition']})"
                  for obj, d in dst[kind].items() if obj not in src[kind]]
    if src["kind"] == "m" and src.get("populated") is False and dst.get("populated"):
        # (the opposite, rows lost, is row_counts' finding)
        diffs.append(f"materialized view {name} was not populated (WITH NO DATA) in the backup, is populated in the "
                     f"restore: it answers queries the backup's refused. Fix: REFRESH MATERIALIZED VIEW "
                     f"{_table_sql(name)} WITH NO DATA;")
    for part in src["partitions"]:
        if part not in dst["partitions"]:
            diffs.append(f"partition {part} of {name} is missing (dropped, or detached from {name})")
    parent = src.get("partition_of")
    if parent and not dst.get("partition_of"):
        diffs.append(f"{name} is detached from {parent}: its rows no longer show in {parent}"
                     f" (was {src.get('partition_bound')}). Fix: ALTER TABLE {_table_sql(parent)} ATTACH "
                     f"PARTITION {_table_sql(name)} {src.get('partition_bound')};")
    elif src.get("partition_bound") != dst.get("partition_bound"):
        diffs.append(f"{name}: partition bound was {src.get('partition_bound')!r}, is {dst.get('partition_bound')!r}")
    return diffs


_TRIGGER_FIX = {"O": "ENABLE", "D": "DISABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}


def _table_sql(name: str) -> str:
    schema, _, table = name.partition(".")
    return sql.Identifier(schema, table).as_string()


def _column_words(key: str, value: Any) -> str:
    """A column property as a DBA says it ("the database default", not None)."""
    if key == "collation":
        return "the type's default collation" if value is None else repr(value)
    if key == "default":
        return "no default" if value is None else repr(value)
    if key == "identity":
        return {"": "not an identity", "a": "GENERATED ALWAYS AS IDENTITY", "d": "GENERATED BY DEFAULT AS IDENTITY"
                }.get(value or "", repr(value))
    if key == "generated":
        return {"": "not generated", "s": "GENERATED ALWAYS AS (…) STORED", "v": "GENERATED ALWAYS AS (…) VIRTUAL"
                }.get(value or "", repr(value))
    if key == "not_null":
        return "NOT NULL" if value else "nullable"
    return repr(value)


CHANGE_CONTEXT_WORDS = 8
CHANGE_LINES = 12


def text_change(before: str, after: str) -> str:
    """What changed between two definitions, not both whole: the lines that differ (a unified diff) for texts of
    several lines, else the words that differ with a little context, as ``…ctx [-old-] {+new+} ctx…``."""
    a, b = before.splitlines(), after.splitlines()
    if len(a) > 1 or len(b) > 1:
        diff = list(difflib.unified_diff(a, b, "backup", "restore", lineterm="", n=1))[2:]
        shown = diff[:CHANGE_LINES] + ([f"… and {len(diff) - CHANGE_LINES} more line(s)"]
                                       if len(diff) > CHANGE_LINES else [])
        return ":\n" + "\n".join(f"      {line}" for line in shown)
    wa, wb = before.split(), after.split()
    p = 0
    while p < min(len(wa), len(wb)) and wa[p] == wb[p]:
        p += 1
    s = 0
    while s < min(len(wa), len(wb)) - p and wa[len(wa) - 1 - s] == wb[len(wb) - 1 - s]:
        s += 1
    pre = " ".join(wa[max(0, p - CHANGE_CONTEXT_WORDS):p])
    post = " ".join(wa[len(wa) - s:len(wa) - s + CHANGE_CONTEXT_WORDS])
    old, new = " ".join(wa[p:len(wa) - s]), " ".join(wb[p:len(wb) - s])
    return (f": {'…' if p > CHANGE_CONTEXT_WORDS else ''}{pre} [-{old}-] {{+{new}+}} {post}"
            f"{'…' if s > CHANGE_CONTEXT_WORDS else ''}").replace("  ", " ")


def compare_named(kind: str, src: dict[str, Any], dst: dict[str, Any], *, definitions: bool = True) -> list[str]:
    """Views, functions, types: missing, extra or redefined (by normalized definition). ``definitions``: False
    between servers of different majors, which print some definitions differently (PostgreSQL 15 qualifies a
    view's columns, 16 does not): pg_dump's inventory says which comparison applied."""
    diffs = [f"{kind} {name} is missing" for name in src if name not in dst]
    for name, s in src.items():
        d = dst.get(name)
        if definitions and d is not None and s["definition_md5"] != d["definition_md5"]:
            # What changed, not both texts whole (a function's body runs to thousands of characters); the backup's
            # definition is in its manifest.
            diffs.append(f"{kind} {name} is defined differently in the restore"
                         f"{text_change(str(s['definition']), str(d['definition']))}")
    diffs += [f"{kind} {name} is not in the backup" for name in dst if name not in src]
    return diffs
