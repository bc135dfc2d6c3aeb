"""The SQL behind each check: read-only, identifiers composed with ``psycopg.sql``, results as plain data.

Every function takes an open connection whose transaction is READ ONLY (see ``fixtures/connections.py``).
Integrity scans turn index scans off for their transaction: a corrupt index must not be the thing that
answers "are there duplicates / orphans?".
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from restore.errors import verifier_world

SAMPLE_LIMIT = 10


def split_qualified(name: str) -> tuple[str, str]:
    schema, sep, table = name.partition(".")
    return (schema, table) if sep else ("public", schema)


def read_heap_only(conn: psycopg.Connection[Any]) -> None:
    """Make the rest of this transaction read tables, not indexes that may be corrupt."""
    for setting in ("enable_indexscan", "enable_indexonlyscan", "enable_bitmapscan"):
        conn.execute(sql.SQL("SET LOCAL {} = off").format(sql.Identifier(setting)))


def relation_exists(conn: psycopg.Connection[Any], schema: str, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    ).fetchone()
    return row is not None


def count_rows(conn: psycopg.Connection[Any], schema: str, table: str) -> int:
    """The table's rows, read from the table: an index-only count would count an index's entries instead, too few
    for an index that lacks rows, and an error for a damaged one (no_corruption's findings, not row_counts')."""
    read_heap_only(conn)
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))).fetchone()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True)
class Findings:
    """How many offending rows or groups a scan found, with the first few: as text (for messages) and as a table
    (``columns`` and ``rows``, for the report)."""

    count: int
    sample: list[str]
    columns: list[str] = field(default_factory=list)
    rows: list[list[str | None]] = field(default_factory=list)

    def table(self) -> dict[str, object]:
        """The ``offending`` record of a check: what the report shows as a table."""
        return {"columns": self.columns, "rows": self.rows, "total": self.count}


def _sample(conn: psycopg.Connection[Any], query: sql.Composable) -> tuple[list[str], list[list[str | None]]]:
    """The first offending rows, read once: ``query``'s first column as text (for messages), the others as the
    table the report shows (the same rows for both)."""
    found = conn.execute(sql.SQL("{} LIMIT {}").format(query, sql.Literal(SAMPLE_LIMIT))).fetchall()
    return [str(r[0]) for r in found], [[None if v is None else str(v) for v in r[1:]] for r in found]


def orphans(conn: psycopg.Connection[Any], fk: dict[str, Any]) -> Findings:
    """Child rows whose parent row is missing, with the FK's own null semantics.

    MATCH SIMPLE (the default): a row with any NULL key column is not checked. MATCH FULL: a row with some
    but not all key columns NULL is itself a violation.
    """
    child = sql.Identifier(fk["schema"], fk["table"])
    parent = sql.Identifier(fk["ref_schema"], fk["ref_table"])
    cols = [sql.Identifier("c", col) for col in fk["columns"]]
    join = sql.SQL(" AND ").join(
        sql.SQL("p.{} = {}").format(sql.Identifier(ref), c) for ref, c in zip(fk["ref_columns"], cols, strict=True)
    )
    all_set = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(c) for c in cols)
    missing_parent = sql.SQL("({all_set} AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {join}))").format(
        all_set=all_set, parent=parent, join=join
    )
    condition: sql.Composable = missing_parent
    if fk["match_type"] == "f" and len(cols) > 1:
        some_null = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(c) for c in cols)
        condition = sql.SQL("{} OR (({}) AND NOT ({}))").format(missing_parent, some_null, all_set)
    key_text = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(cols))
    read_heap_only(conn)
    count_row = conn.execute(
        sql.SQL("SELECT count(*) FROM {child} c WHERE {cond}").format(child=child, cond=condition)
    ).fetchone()
    assert count_row is not None
    count = int(count_row[0])
    if not count:
        return Findings(0, [])
    # Distinct keys: three missing parents with hundreds of children are three keys, not one key repeated.
    sample, rows = _sample(conn, sql.SQL("SELECT DISTINCT {k}, {cols} FROM {child} c WHERE {cond}").format(
        k=key_text, cols=sql.SQL(", ").join(cols), child=child, cond=condition))
    return Findings(count, sample, list(fk["columns"]), rows)


def duplicates(conn: psycopg.Connection[Any], key: dict[str, Any]) -> Findings:
    """Key values held by more than one row, scanning the heap (the unique index may be the broken part).

    ``key`` is a catalog unique key, or a declared one (``columns`` only). Expression keys and predicates come
    from ``pg_get_indexdef``/``pg_get_expr`` — server-generated SQL text, used as such.
    """
    table = sql.Identifier(key["schema"], key["table"])
    if key.get("has_expressions"):
        parts: list[sql.Composable] = [sql.SQL(text) for text in key["key_sql"]]
    else:
        parts = [sql.Identifier(col) for col in key["columns"]]
    cols = sql.SQL(", ").join(parts)
    conditions: list[sql.Composable] = []
    if not key.get("nulls_not_distinct"):
        conditions += [sql.SQL("({}) IS NOT NULL").format(p) for p in parts]
    if key.get("predicate"):
        conditions.append(sql.SQL("({})").format(sql.SQL(key["predicate"])))
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
    # Aliases no real key column is likely to share: the key's own columns follow them in the same rows.
    groups = sql.SQL("SELECT ROW({cols})::text AS rv_key_text, count(*) AS rv_rows, {cols} FROM {table}{where} "
                     "GROUP BY {cols} HAVING count(*) > 1").format(cols=cols, table=table, where=where)
    read_heap_only(conn)
    row = conn.execute(sql.SQL("SELECT count(*) FROM ({}) d").format(groups)).fetchone()
    assert row is not None
    count = int(row[0])
    if not count:
        return Findings(0, [])
    labels = list(key["key_sql"]) if key.get("has_expressions") else list(key["columns"])
    sample, found = _sample(conn, sql.SQL("SELECT rv_key_text || ' x' || rv_rows, d.* FROM ({}) d").format(groups))
    # d.* is the key as text, its row count, then the key's values: shown as the columns and how many rows hold it
    rows = [[*values[2:], values[1]] for values in found]
    return Findings(count, sample, [*labels, "rows with this key"], rows)


@dataclass(frozen=True)
class SequenceState:
    next_value: int
    column_extreme: int | None
    ok: bool


def sequence_state(conn: psycopg.Connection[Any], seq: dict[str, Any]) -> SequenceState:
    """Where the sequence will hand out its next value, against the column's max (min if descending)."""
    row = conn.execute(
        sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(seq["schema"], seq["name"]))
    ).fetchone()
    assert row is not None
    last_value, is_called = int(row[0]), bool(row[1])
    increment = int(seq["increment"])
    next_value = last_value + increment if is_called else last_value
    agg = sql.SQL("max" if increment > 0 else "min")
    extreme_row = conn.execute(
        sql.SQL("SELECT {}({}) FROM {}").format(
            agg, sql.Identifier(seq["column"]), sql.Identifier(seq["table_schema"], seq["table"])
        )
    ).fetchone()
    extreme = None if extreme_row is None or extreme_row[0] is None else int(extreme_row[0])
    ok = extreme is None or (next_value > extreme if increment > 0 else next_value < extreme)
    return SequenceState(next_value, extreme, ok)


def amcheck_schema(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = 'amcheck'"
    ).fetchone()
    return None if row is None else str(row[0])


AMCHECK_FUNCTIONS = ("bt_index_check(regclass, boolean)", "verify_heapam(regclass, boolean, boolean, text, bigint, "
                     "bigint)")


def missing_amcheck_grants(conn: psycopg.Connection[Any], ext_schema: str) -> list[str]:
    """The amcheck functions the current role may not EXECUTE (amcheck revokes them from PUBLIC)."""
    missing = []
    for signature in AMCHECK_FUNCTIONS:
        qualified = f"{sql.Identifier(ext_schema).as_string(conn)}.{signature}"
        row = conn.execute("SELECT CASE WHEN to_regprocedure(%s) IS NULL THEN false"
                           " ELSE has_function_privilege(to_regprocedure(%s), 'EXECUTE') END",
                           (qualified, qualified)).fetchone()
        if not (row and row[0]):
            missing.append(qualified)
    return missing


def bt_index_check(conn: psycopg.Connection[Any], ext_schema: str, schema: str, index: str, *,
                   parent: bool = False, heapallindexed: bool = True) -> None:
    """amcheck's B-tree check with ``heapallindexed``: raises on corruption (a heap row missing from the index).

    ``parent``: bt_index_parent_check (also checks parent/child invariants and descends from the root for each
    tuple), which takes a ShareLock on the table (blocks writes) and cannot run on a standby.
    """
    func = "bt_index_parent_check(%s::regclass, %s, true)" if parent else "bt_index_check(%s::regclass, %s)"
    conn.execute(
        sql.SQL("SELECT {}." + func).format(sql.Identifier(ext_schema)),
        (sql.Identifier(schema, index).as_string(conn), heapallindexed),
    )


def has_function(conn: psycopg.Connection[Any], signature: str) -> bool:
    row = conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", (signature,)).fetchone()
    return bool(row and row[0])


def may_run(conn: psycopg.Connection[Any], signature: str) -> bool:
    """The function exists and the current role may EXECUTE it (an optional proof is used only then)."""
    row = conn.execute("SELECT CASE WHEN to_regprocedure(%s) IS NULL THEN false "
                       "ELSE has_function_privilege(to_regprocedure(%s), 'EXECUTE') END", (signature, signature)
                       ).fetchone()
    return bool(row and row[0])


def gin_index_check(conn: psycopg.Connection[Any], ext_schema: str, schema: str, index: str) -> None:
    """amcheck's GIN check (amcheck 1.5, PostgreSQL 18): raises on corruption."""
    conn.execute(sql.SQL("SELECT {}.gin_index_check(%s::regclass)").format(sql.Identifier(ext_schema)),
                 (sql.Identifier(schema, index).as_string(conn),))


def verify_heapam(conn: psycopg.Connection[Any], ext_schema: str, schema: str, table: str, *,
                  check_toast: bool = False) -> list[str]:
    rows = conn.execute(
        sql.SQL("SELECT blkno, offnum, msg FROM {}.verify_heapam(%s::regclass, check_toast => %s) LIMIT {}").format(
            sql.Identifier(ext_schema), sql.Literal(SAMPLE_LIMIT)
        ),
        (sql.Identifier(schema, table).as_string(conn), check_toast),
    ).fetchall()
    return [f"block {b}, offset {o}: {m}" for b, o, m in rows]


_PRIVILEGE_FUNCTIONS = {
    "table": "has_table_privilege",
    "schema": "has_schema_privilege",
    "sequence": "has_sequence_privilege",
    "function": "has_function_privilege",
    "database": "has_database_privilege",
}


def has_privilege(conn: psycopg.Connection[Any], role: str, kind: str, obj: str, privilege: str) -> bool:
    func = sql.Identifier(_PRIVILEGE_FUNCTIONS[kind])
    row = conn.execute(sql.SQL("SELECT {}(%s, %s, %s)").format(func), (role, obj, privilege)).fetchone()
    return bool(row and row[0])


def privilege_kinds() -> tuple[str, ...]:
    return tuple(_PRIVILEGE_FUNCTIONS)


@dataclass(frozen=True)
class QueryRun:
    rows: list[tuple[Any, ...]]
    columns: list[str]
    elapsed_ms: float


def run_query(conn: psycopg.Connection[Any], text: str, *, max_rows: int | None = None) -> QueryRun:
    """Run a user's SQL file as it is (it is the user's query, in a read-only transaction)."""
    start = time.perf_counter()
    cur = conn.execute(text.encode())  # a whole .sql file from expectations/, sent verbatim
    rows = cur.fetchmany(max_rows) if max_rows is not None else cur.fetchall()
    elapsed = (time.perf_counter() - start) * 1000
    columns = [d.name for d in cur.description] if cur.description else []
    return QueryRun(rows=list(rows), columns=columns, elapsed_ms=elapsed)


LOCK_HOLDERS_SQL = """
SELECT l.pid, l.mode, l.relation::regclass::text, coalesce(a.application_name, ''), coalesce(a.usename, ''),
       round(extract(epoch FROM now() - a.xact_start))
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.locktype = 'relation' AND l.mode IN ('AccessExclusiveLock', 'ExclusiveLock')
  AND l.pid <> pg_backend_pid() AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY a.xact_start LIMIT 5
"""


def describe_lock_holders(conninfo: str) -> str:
    """Who holds exclusive locks in this database, asked on a fresh connection (the waiting one was cancelled):
    the relation, the PID, its application and how long its transaction has been open."""
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            rows = conn.execute(LOCK_HOLDERS_SQL).fetchall()
    except psycopg.Error as exc:
        return f"the holder could not be asked ({exc.diag.message_primary or exc})"
    if not rows:
        return "no exclusive lock is held any more"
    return "; ".join(f"{mode} on {rel} held by PID {pid} ({app or 'no application_name'}, user {user}, "
                     f"transaction open {age} s)" for pid, mode, rel, app, user, age in rows)


# --- one amcheck pass for two items ---------------------------------------------------------------------------

CHECKUNIQUE_SIGNATURE = "bt_index_check(regclass, boolean, boolean)"  # amcheck 1.4, PostgreSQL 17


@dataclass(frozen=True)
class IndexPass:
    """One ``bt_index_check(index, heapallindexed => true, checkunique => true)``: every heap row is in the unique
    index and the index holds no two visible entries with one key — corruption and duplicates in one read."""

    ok: bool
    error: str | None = None
    duplicates: bool = False  # the error is checkunique's ("index uniqueness is violated")


def unique_index_pass(conn: psycopg.Connection[Any], ext_schema: str, schema: str, index: str, *,
                      shared: Path) -> IndexPass:
    """The pass over a unique index, run once per run whichever check asks first (no_corruption or
    duplicate_primary_keys, in any process): the others wait for it on a file lock in ``shared`` (the run's
    folder) and read its result."""
    key = hashlib.sha256(f"{schema}\0{index}".encode()).hexdigest()[:20]
    shared.mkdir(parents=True, exist_ok=True)
    result_path = shared / f"{key}.json"
    with (shared / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if result_path.exists():
            return IndexPass(**json.loads(result_path.read_text()))
        try:
            conn.execute(sql.SQL("SELECT {}.bt_index_check(%s::regclass, true, true)").format(
                sql.Identifier(ext_schema)), (sql.Identifier(schema, index).as_string(conn),))
            found = IndexPass(ok=True)
        except (psycopg.errors.QueryCanceled, psycopg.errors.InsufficientPrivilege, psycopg.errors.LockNotAvailable):
            raise  # not a result: each check says what it is; the next asker runs the pass itself
        except psycopg.Error as exc:
            if verifier_world(exc):
                raise  # a lost connection is not an index's result (and is not kept for the next asker)
            message = f"{exc.diag.message_primary} {exc.diag.message_detail or ''}".strip()
            found = IndexPass(ok=False, error=message, duplicates="uniqueness is violated" in message)
            conn.rollback()
        result_path.write_text(json.dumps({"ok": found.ok, "error": found.error, "duplicates": found.duplicates}))
        return found
