"""A table's content as numbers: its row count and checksum in one scan, per bucket of its key where a mismatch
must be placed, over several connections of one snapshot; large objects' digests. The session settings that change a
row's text form are pinned here (:data:`restore.compare.manifest.PINNED_SETTINGS`)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg import sql

from restore.compare import fidelity
from restore.compare.manifest import (
    CHECKSUM_EXPRESSION,
    COUNT_ONLY_EXPRESSION,
    PINNED_SETTINGS,
    LargeObjects,
    TableEntry,
)


def pin_session(conn: psycopg.Connection[Any]) -> None:
    """Pin the settings that change a row's text form (session level: allowed on a read-only standby)."""
    for name, value in PINNED_SETTINGS.items():
        conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))


@contextlib.contextmanager
def snapshot_session(conninfo: str, snapshot: str | None) -> Iterator[psycopg.Connection[Any]]:
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


LARGE_OBJECTS_SQL = f"""
SELECT m.oid::bigint AS oid, pg_get_userbyid(m.lomowner) AS owner,
       {fidelity.acl_sql("m.lomacl", "acldefault('L', m.lomowner)")} AS acl, {{content}} AS md5
FROM pg_largeobject_metadata m ORDER BY 1
"""


def read_large_objects(cur: psycopg.Cursor[Any]) -> LargeObjects:
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
    with snapshot_session(conninfo, snapshot) as conn:
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
                if plans is not None and name not in plans:  # what the planner makes of the server's cores
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
                if plans is not None and name not in plans:
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


def bucket_specs(cur: psycopg.Cursor[Any], tables: dict[str, TableEntry], oids: dict[str, int],
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
