"""no_corruption: amcheck on every btree index (with heapallindexed) and every table; no invalid indexes."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from fixtures.connections import Comparison
from fixtures.outcomes import not_applicable
from fixtures.params import Param, checksummed_copy, full_depth, manifest_params, parameters, restore_proves
from restore import hints
from restore.backups.outcome import PreparedDatabase
from restore.compare.catalog import Catalog
from restore.compare.comparison import bucket_differences, large_object_differences
from restore.config import RestoreConfig
from restore.errors import verifier_world
from restore.run import RunState
from restore.verify import (
    CHECKUNIQUE_SIGNATURE,
    bt_index_check,
    gin_index_check,
    has_function,
    may_run,
    missing_amcheck_grants,
    unique_index_pass,
    verify_heapam,
)
from restore.verify import amcheck_schema as find_amcheck

pytestmark = pytest.mark.checklist("no_corruption")


PROVEN_INDEX = ("built by the restore: CREATE INDEX read every restored row into this index moments ago, so "
                "amcheck checks its structure without re-reading the heap (heapallindexed: --depth full, and always "
                "on existing targets or after a restore with errors)")


PAGES_OF_A_COPY = (
    "pages and structure (standard depth, a physical copy of a cluster with data checksums): amcheck read every "
    "page of the index, each proven by its checksum to be a page PostgreSQL wrote, and checked their order and "
    "links. Not proven at this depth: that the index holds every row of its table (heapallindexed) — an index that "
    "already lacked rows in the source, or an old version of one of its pages that the backup held and recovery "
    "did not replace, passes it; --depth full proves it")


@parameters('index', empty="the database has no valid indexes", needs_db=True)
def checkable_indexes(state: RunState) -> list[Param]:
    """Valid indexes (invalid ones fail test_no_invalid_indexes); non-btree ones skip, saying so.
    At --depth full, the TOAST tables' indexes too. Largest first: amcheck checks one index per process, so the
    largest index bounds the item, and it must not start last."""
    assert state.prepared is not None
    archive = state.prepared.archive
    built = (set(archive.indexes) | {f"{t.split('.', 1)[0]}.{name}" for t, name in archive.constraints}
             if archive else set())
    proves = restore_proves(state)
    # A unique index is read whole anyway (its pass proves duplicate_primary_keys too); a non-unique one of a
    # checksummed copy is read for its pages and structure only.
    copy = checksummed_copy(state)
    params = [pytest.param(i | {"proven": PROVEN_INDEX if proves and f"{i['schema']}.{i['name']}" in built else None,
                                "pages": PAGES_OF_A_COPY if copy and i["method"] == "btree" and not i["is_unique"]
                                else None},
                           id=f"{i['schema']}.{i['name']}")
              for i in sorted(state.catalog.indexes, key=lambda i: -i["size_bytes"]) if i["valid"] and i["ready"]]
    if full_depth(state):
        params += [pytest.param({"schema": "pg_toast", "name": t["index"], "table": t["name"], "method": "btree",
                                 "proven": None}, id=f"pg_toast.{t['index']}")
                   for t in state.catalog.toast if t["index"]]
    return params


@parameters('heap_table', empty="the database has no tables", needs_db=True)
def heap_tables(state: RunState) -> list[Param]:
    params = [pytest.param(t, id=f"{t['schema']}.{t['name']}")  # largest first, like the indexes
              for t in sorted(state.catalog.tables, key=lambda t: -t["size_bytes"]) if t["kind"] in ("r", "m")]
    if full_depth(state):
        params += [pytest.param(t, id=f"pg_toast.{t['name']}") for t in state.catalog.toast]
    return params


@parameters('content_table', empty="the manifest records no table contents", needs_db=True)
def content_tables(state: RunState) -> list[Param] | str:
    return manifest_params(state, lambda src: [
        pytest.param({"table": t}, id=t) for t, e in src["tables"].items() if "checksum" in e])


@pytest.fixture(scope="session")
def amcheck_schema(db_session_conn: psycopg.Connection[Any], restored_db: PreparedDatabase) -> str:
    """Where amcheck is installed; the suite never installs it on a database it did not restore itself."""
    schema = find_amcheck(db_session_conn)
    db_session_conn.rollback()
    if schema is None:
        pytest.skip(
            "amcheck is not installed in this database, and restore-verify writes nothing to a database it did "
            "not restore (not even CREATE EXTENSION). A DBA can enable it with CREATE EXTENSION amcheck; "
            "(on RDS: rds_superuser may create it)."
        )
    missing = missing_amcheck_grants(db_session_conn, schema)
    db_session_conn.rollback()
    if missing:
        grants = " ".join(f"GRANT EXECUTE ON FUNCTION {f} TO <verifying role>;" for f in missing)
        pytest.skip(f"cannot verify: the verifying role may not run amcheck ({', '.join(missing)}): permission "
                    f"denied, so no index or table was checked (this is not a finding about the data). {grants}")
    return schema


def test_no_invalid_indexes(catalog: Catalog, restored_db: PreparedDatabase) -> None:
    """An INVALID index (a failed CREATE INDEX CONCURRENTLY, a failed rebuild) is not used and not maintained."""
    broken = [f"{i['schema']}.{i['name']} on {i['table']} ({'invalid' if not i['valid'] else 'not ready'})"
              for i in catalog.indexes if not (i["valid"] and i["ready"])]
    assert not broken, (
        f"{len(broken)} index(es) are INVALID: {'; '.join(broken)}. Queries do not use them and uniqueness they "
        "promise is not enforced. Drop and recreate them (REINDEX INDEX CONCURRENTLY …)."
    )


@checkable_indexes
def test_index(
    index: dict[str, Any], amcheck_schema: str, db_conn: psycopg.Connection[Any], restore_config: RestoreConfig,
    catalog: Catalog, record_property: Callable[[str, object], None], run_state_data: RunState,
) -> None:
    """bt_index_check(index, heapallindexed => true): structure sound and every heap row present in the index.
    At --depth full, bt_index_parent_check (root-descending) where the server allows it."""
    i = index
    if restore_config.depth == "quick":
        pytest.skip("--depth quick: amcheck is not run (run --depth=standard)")
    # parent_check takes a ShareLock: only on our own restored copy, never on a standby.
    parent = restore_config.depth == "full" and not catalog.in_recovery
    heapallindexed = not i.get("proven") and not i.get("pages")
    record_property("amcheck", ("bt_index_parent_check" if parent else "bt_index_check")
                    + (" heapallindexed" if heapallindexed else ""))
    if i.get("proven"):
        record_property("verified_by", i["proven"])
    elif i.get("pages"):
        record_property("proof", i["pages"])
    gin = i["method"] == "gin" and has_function(db_conn, f"{amcheck_schema}.gin_index_check(regclass)")
    if i["method"] != "btree" and not gin:
        not_applicable(f"not checked: {i['schema']}.{i['name']} is a {i['method']} index, and this server's amcheck "
                    "has checks for btree (and, from PostgreSQL 18, gin) indexes only")
    if (heapallindexed and not parent and i["method"] == "btree" and i.get("is_unique")
            and may_run(db_conn, f"{sql.Identifier(amcheck_schema).as_string(db_conn)}.{CHECKUNIQUE_SIGNATURE}")):
        # One pass with duplicate_primary_keys: heapallindexed and checkunique together (PostgreSQL 17+).
        shared = unique_index_pass(db_conn, amcheck_schema, i["schema"], i["name"],
                                   shared=run_state_data.facts.run_dir / "amcheck")
        record_property("amcheck", "bt_index_check heapallindexed checkunique (one pass, shared with "
                                   "duplicate_primary_keys)")
        if shared.ok:
            return
        if not shared.duplicates:
            _fail_index(db_conn, i, shared.error or "amcheck failed")
        # checkunique stopped at a duplicate key (duplicate_primary_keys' finding): check the rest without it
    try:
        if gin:
            gin_index_check(db_conn, amcheck_schema, i["schema"], i["name"])
        else:
            bt_index_check(db_conn, amcheck_schema, i["schema"], i["name"], parent=parent,
                           heapallindexed=heapallindexed)
        failure = None
    except (psycopg.errors.QueryCanceled, psycopg.errors.InsufficientPrivilege, psycopg.errors.LockNotAvailable):
        raise  # a statement_timeout or a missing privilege is not corruption; each shows as what it is
    except psycopg.Error as exc:
        if verifier_world(exc):
            raise  # a lost connection, a server out of disk: not run (fixtures/outcomes.py), never corruption
        failure = f"{exc.diag.message_primary} {exc.diag.message_detail or ''}".strip()
    if failure is not None:
        _fail_index(db_conn, i, failure)


def _fail_index(db_conn: psycopg.Connection[Any], i: dict[str, Any], failure: str) -> None:
    if _heap_damage(db_conn, i, failure):
        table = i["table"] if "." in i["table"] else f"{i['schema']}.{i['table']}"
        pytest.fail(
            f"The table {table} is damaged (found while amcheck read it to check index "
            f"{i['schema']}.{i['name']}): {failure}. Its data file is missing or holds pages that cannot be read, "
            "so rows are lost or unreadable; REINDEX would not help (the index is not the damaged part). Restore "
            "that table from another backup, and treat this backup as damaged until you know how it happened.",
            pytrace=False,
        )
    pytest.fail(
        f"amcheck found corruption in index {i['schema']}.{i['name']} on {i['table']}: {failure}. Queries "
        f"through this index return wrong results; on a copy: {hints.reindex(i['schema'], i['name'])} and find "
        "out how it happened.",
        pytrace=False,
    )


_FILE = re.compile(r"(?:relation|file) \"?((?:base|global|pg_tblspc)/[\w/]+?)(?:\.\d+)?\"?(?:[:\s]|$)")


def _heap_damage(conn: psycopg.Connection[Any], index: dict[str, Any], failure: str) -> bool:
    """Whether amcheck's error is about the table's own file (a missing file, an invalid page of the heap), not the
    index's: the file it names is the table's."""
    named = _FILE.search(failure)
    if named is None:
        return False
    conn.rollback()  # the failed check aborted the transaction
    row = conn.execute("SELECT pg_relation_filepath(i.indrelid), pg_relation_filepath(i.indexrelid) FROM pg_index i "
                       "WHERE i.indexrelid = %s::regclass",
                       (sql.Identifier(index["schema"], index["name"]).as_string(conn),)).fetchone()
    return row is not None and named.group(1) == row[0] and named.group(1) != row[1]


@content_tables
def test_content_checksum(
    content_table: dict[str, Any], comparison: Comparison, restore_config: RestoreConfig,
    record_property: Callable[[str, object], None],
) -> None:
    """The table's rows hash to the manifest's checksum: no value changed, no row swapped for another."""
    table = content_table["table"]
    if restore_config.depth == "quick":
        pytest.skip("--depth quick: rows are counted, not hashed (run --depth=standard to compare content)")
    if comparison.kind == "baseline":
        not_applicable("content is compared against a manifest taken with the backup, not a live baseline that "
                       "moves on")
    src, dst = comparison.source["tables"][table], comparison.restored["tables"].get(table)
    if dst is None or "checksum" not in dst:
        not_applicable(f"{table} is missing (see tables_present)")
    record_property("checksum", dst["checksum"])
    if src["checksum"] == dst["checksum"]:
        return
    where = bucket_differences(src, dst, limit=10**9)
    changed = [w for w in where if w.endswith(": different content")]
    if src["row_count"] != dst["row_count"] and not changed:
        # Rows lost or added are row_counts' finding, said there once. Where rows went, the content cannot be
        # compared; where the count held (every other key range), it matches the backup.
        pytest.skip(f"{table} lost or gained rows (row_counts reports it): their content cannot be compared" + (
            "; the key ranges that kept their rows match the backup" if where else ""))
    record_property("origin", "restore")  # the backup's manifest records what the rows were
    places = changed or where
    shown = "".join(f"\n  - {w}" for w in places[:5]) + (f"\n  - and {len(places) - 5} more" if len(places) > 5
                                                         else "")
    lost = (f" ({dst['row_count']} rows instead of {src['row_count']}: see row_counts)"
            if src["row_count"] != dst["row_count"] else "")
    pytest.fail(
        f"The content of {table} is not what was backed up: a value changed, or a row was replaced by another, "
        f"with the same number of rows{lost}.{shown or ''}\n  Checksum (sum of hashtextextended(row::text, 0)) was "
        f"{src['checksum']}, is {dst['checksum']}. Compare the table with the source around the backup time; "
        f"{comparison.source_path} records the source's values.", pytrace=False)


@parameters('large_objects', empty="the backup holds no large objects", needs_db=True)
def large_object_sets(state: RunState) -> list[Param] | str:
    return manifest_params(state, lambda src: [pytest.param("large objects", id="large objects")]
                           if src.get("large_objects", {"objects": {}, "unreadable": None})["objects"] else [])


@large_object_sets
def test_large_objects(
    large_objects: str, comparison: Comparison, restore_config: RestoreConfig,
    record_property: Callable[[str, object], None],
) -> None:
    """Every large object of the backup is in the restore with the same bytes (md5 per object, by oid)."""
    if restore_config.depth == "quick":
        pytest.skip("--depth quick: large objects are not read (run --depth=standard to compare their content)")
    if comparison.kind == "baseline":
        not_applicable("content is compared against a manifest taken with the backup, not a live baseline")
    src, dst = comparison.source["large_objects"], comparison.restored.get("large_objects")
    if dst is None:
        pytest.skip("the restore's large objects were not read (--depth quick?)")
    if src.get("unreadable"):
        pytest.skip(f"cannot verify: when the manifest was taken, {src['unreadable']}")
    if dst.get("unreadable"):
        pytest.skip(f"cannot verify: {dst['unreadable']}")
    problems, compared = large_object_differences(src, dst)
    record_property("checksum", f"{compared} large object(s) compared by md5")
    if problems:
        record_property("origin", "restore")
        pytest.fail("Large objects are not what was backed up: " + "; ".join(problems), pytrace=False)


@heap_tables
def test_heap(
    heap_table: dict[str, Any], amcheck_schema: str, db_conn: psycopg.Connection[Any], restore_config: RestoreConfig
) -> None:
    """verify_heapam(table): no corrupt tuples or pages (and, at --depth full, no broken TOAST pointers)."""
    t = heap_table
    if restore_config.depth == "quick":
        pytest.skip("--depth quick: amcheck is not run (run --depth=standard)")
    full = restore_config.depth == "full"
    problems = verify_heapam(db_conn, amcheck_schema, t["schema"], t["name"], check_toast=full)
    assert not problems, (
        f"amcheck's verify_heapam found corruption in {t['schema']}.{t['name']}: {'; '.join(problems)}. "
        "The rows on those pages cannot be trusted: restore from another backup."
    )
