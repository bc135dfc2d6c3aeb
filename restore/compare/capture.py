"""Capture a manifest from a database: its catalog in one read-only snapshot, the contents hashed over several
connections on the same snapshot (:mod:`restore.compare.content`), and pg_dump's list of every object beside it."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from restore.compare import fidelity, inventory
from restore.compare.content import bucket_specs, read_large_objects, snapshot_session, table_contents
from restore.compare.manifest import (
    CHECKSUM_EXPRESSION,
    FORMAT,
    PINNED_SETTINGS,
    VERSION,
    DatabaseFacts,
    Freshness,
    Manifest,
    Position,
    SequenceEntry,
    TableEntry,
    md5_of,
    normal,
)

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


# The insert position, read in the statement that takes the snapshot (a standby: what it replayed).
SERIAL_SCAN_SQL = """
SELECT c.oid FROM pg_class c
WHERE c.oid = ANY(%s) AND pg_relation_size(c.oid) < pg_size_bytes(current_setting('min_parallel_table_scan_size'))
  AND NOT coalesce(array_to_string(c.reloptions, ',') LIKE '%%parallel\\_workers=%%', false)
"""
POSITION_SQL = ("clock_timestamp() AS at, CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
                "ELSE pg_current_wal_insert_lsn() END::text AS lsn, pg_is_in_recovery() AS standby, "
                "(SELECT count(*) FROM txid_snapshot_xip(txid_current_snapshot())) AS in_progress, "
                "txid_snapshot_xmax(txid_current_snapshot()) AS xmax")  # (any major)


SNAPSHOT_ATTEMPTS = 200


def export_snapshot(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Begin a REPEATABLE READ READ ONLY transaction on ``conn`` (autocommit, no transaction open), export its
    snapshot and say where in the WAL it stands.

    A position is exact only when the snapshot sees precisely the commits written before it: a transaction whose
    commit record is in the WAL but which is still finishing (flushing) is invisible to a snapshot taken then, and a
    recovery to that position would hold it. So the position is read before and in the snapshot's statement, and
    the snapshot is taken again (a few milliseconds later) until nothing was written between the two reads and no
    transaction was in progress, listed or (its id at or above the snapshot's xmax) not — on a busy source, usually
    within a few attempts. Otherwise the last one is used,
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
            row["exact"] = bool(row["standby"]) or (before["lsn"] == row["lsn"] and row["in_progress"] == 0
                                                    and not _assigned(conn, int(row["xmax"])))
            if row["exact"] or attempt == SNAPSHOT_ATTEMPTS - 1:
                break
            conn.execute("ROLLBACK")
            time.sleep(0.002 * (1 + attempt % 5))  # let the in-flight commits finish (bounded: SNAPSHOT_ATTEMPTS)
    assert row is not None
    return row


def _assigned(conn: psycopg.Connection[Any], xid: int) -> bool:
    """Whether transaction id ``xid`` (the snapshot's xmax) has been handed out. A snapshot lists as in progress only
    the running transactions below its xmax: one whose id is xmax or above — say, committing, its commit record
    already in the WAL, still flushing it — is invisible to it and not listed, and a recovery to the position would
    hold it. PostgreSQL says "in the future" of an id not handed out yet (read in a savepoint: the error is the
    answer, and the snapshot's transaction stays open)."""
    conn.execute("SAVEPOINT rv_xmax")
    try:
        conn.execute("SELECT txid_status(%s)", (xid,))
        assigned = True
    except psycopg.errors.InvalidParameterValue:  # "transaction ID … is in the future": none at or above xmax
        assigned = False
    except psycopg.Error:  # cannot tell: not exact (the snapshot is taken again)
        assigned = True
    conn.execute("ROLLBACK TO SAVEPOINT rv_xmax")
    conn.execute("RELEASE SAVEPOINT rv_xmax")
    return assigned


def position_of(row: dict[str, Any] | None) -> Position | None:
    if not row or not row.get("lsn"):
        return None
    return {"lsn": str(row["lsn"]), "time": row["at"].isoformat(), "exact": bool(row.get("exact"))}


def capture(conninfo: str, *, jobs: int = 2, snapshot: str | None = None, freshness_sql: str | None = None,
            content: bool = True, checksums: bool = True,
            compare_with: dict[str, TableEntry] | None = None, objects: bool = True,
            progress: Callable[[str], None] | None = None, plans: dict[str, int] | None = None) -> Manifest:
    """The manifest of the database at ``conninfo`` (read-only; on ``snapshot`` when given). ``compare_with``: the
    backup manifest's tables, when capturing a restore to compare with it (its buckets are reused). ``objects``:
    list every object with pg_dump (on the same snapshot, while the catalog and contents are read)."""
    captured_at = datetime.now(UTC)
    with snapshot_session(conninfo, snapshot) as conn, conn.cursor(row_factory=dict_row) as cur:
        position: Position | None = None
        if snapshot is None:
            # Let the content workers see exactly what this catalog read sees; and say where in the WAL and when
            # that snapshot was taken (a base backup recovered to that time holds this content).
            conn.execute("ROLLBACK")  # taken again, at a moment whose WAL position is exact
            exported = export_snapshot(conn)
            snapshot_for_content = str(exported["s"])
            position = position_of(exported)
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
    sequence_rows = cur.execute(SEQUENCES_SQL).fetchall()
    # Each owning column's max (min for a descending sequence), one statement each (each under the session's
    # statement_timeout), pipelined: a round trip per sequence cost 1 s at 1,000 tables.
    column_max: dict[str, psycopg.Cursor[Any]] = {}
    conn = cur.connection
    with conn.pipeline() if psycopg.Pipeline.is_supported() else contextlib.nullcontext():  # libpq >= 14
        for r in sequence_rows:
            owned = r["owned_by"]
            if owned:
                agg = sql.SQL("max" if r["increment"] > 0 else "min")
                column_max[r["name"]] = conn.cursor(row_factory=dict_row).execute(
                    sql.SQL("SELECT {}({}) AS v FROM {}").format(
                        agg, sql.Identifier(owned["column"]), sql.Identifier(owned["schema"], owned["relname"])))
    for r in sequence_rows:
        owned = r["owned_by"]
        row = column_max[r["name"]].fetchone() if r["name"] in column_max else None
        sequences[r["name"]] = {"last_value": r["last_value"], "increment": r["increment"],
                                "owned_by": f"{owned['table']}.{owned['column']}" if owned else None,
                                "column_max": None if row is None or row["v"] is None else int(row["v"])}
    views = {r["name"]: {"kind": r["kind"], "definition": normal(r["definition"]),
                         "definition_md5": md5_of(normal(r["definition"]))}
             for r in cur.execute(VIEWS_SQL).fetchall()}
    functions = {r["name"]: {"definition": r["definition"], "definition_md5": md5_of(normal(r["definition"]))}
                 for r in cur.execute(FUNCTIONS_SQL).fetchall()}
    types = {r["name"]: {"definition": r["definition"], "definition_md5": md5_of(r["definition"])}
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
    large_objects = read_large_objects(cur) if content else None
    if content:
        pages = {r["name"]: int(r["pages"]) for r in tables_rows}
        populated = {r["name"] for r in tables_rows if r["populated"]}
        storable = [n for n, e in tables.items() if e["kind"] == "r" or (e["kind"] == "m" and n in populated)]
        # Biggest first, so that the last connection to finish is not stuck with the largest table.
        storable.sort(key=lambda n: -pages[n])
        storable_set = set(storable)  # asked once per table (a list here cost 1.7 s at 10,000 tables)
        storable_oids = {r["name"]: r["oid"] for r in tables_rows if r["name"] in storable_set}
        if plans is not None and storable_oids:
            # A table the planner never scans in parallel is recorded as such without asking it (an EXPLAIN per
            # table is 10,000 round trips at 10,000 tables): below min_parallel_table_scan_size, no
            # parallel_workers option. The others are asked, with the query that runs.
            names_of = {oid: name for name, oid in storable_oids.items()}
            serial = cur.execute(SERIAL_SCAN_SQL, (list(names_of),)).fetchall()
            plans.update({names_of[r["oid"]]: 0 for r in serial})
        if compare_with is None:  # the backup's side: every table bucketed, so that a mismatch can be placed
            specs = bucket_specs(cur, tables, storable_oids, {}) if checksums else {}
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
                specs = bucket_specs(cur, tables, {n: storable_oids[n] for n in differing}, given)
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
