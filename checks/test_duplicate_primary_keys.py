"""duplicate_primary_keys: no two rows share a primary key, unique constraint or unique index value.

Read from the heap, not the index: the check matters when an index is corrupt or a constraint went missing,
which is also why keys declared in expectations/keys.toml are checked even when the constraint is gone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from fixtures.findings import Attribution
from fixtures.outcomes import not_applicable
from fixtures.params import Param, parameters, qualified, recorded_keys, restore_proves
from restore import hints
from restore.backups.outcome import PreparedDatabase
from restore.config import RestoreConfig
from restore.run import RunState
from restore.verify import (
    CHECKUNIQUE_SIGNATURE,
    amcheck_schema,
    duplicates,
    may_run,
    missing_amcheck_grants,
    relation_exists,
    unique_index_pass,
)

pytestmark = pytest.mark.checklist("duplicate_primary_keys")


PROVEN_UNIQUE = ("proven by the restore: the unique index was built over the restored rows by an error-free restore "
                 "into a fresh cluster, and building it rejects duplicates (scan skipped; --depth full scans)")


@parameters('unique_key', empty="the database has no primary keys, unique constraints or unique indexes",
            needs_db=True)
def unique_keys(state: RunState) -> list[Param]:
    assert state.prepared is not None
    archive = state.prepared.archive
    created_constraints = set(archive.constraints) if archive else set()
    created_indexes = set(archive.indexes) if archive else set()
    proves = restore_proves(state)
    params = []
    for k in state.catalog.unique_keys:
        table = f"{k['schema']}.{k['table']}"
        created = (table, k["name"]) in created_constraints or f"{k['schema']}.{k['index']}" in created_indexes
        proven = PROVEN_UNIQUE if proves and k["valid"] and created else None
        params.append(pytest.param(k | {"proven": proven}, id=f"{table}.{k['name']}"))
    names = {(qualified(k["schema"], k["table"]), k["name"]) for k in state.catalog.key_names}
    for rec in recorded_keys(state):
        key = (qualified(rec["schema"], rec["table"]), rec["name"])
        if rec["kind"] != "foreign key" and key not in names:
            names.add(key)
            params.append(pytest.param(rec | {"missing": True, "dropped": rec["source"]},
                                       id=f"{key[0]}.{key[1]}.dropped"))
    present = {(qualified(k["schema"], k["table"]), tuple(k["columns"])) for k in state.catalog.unique_keys
               if k["kind"] == "primary key"}
    for table, columns in state.expectations.primary_keys.items():
        if (table, tuple(columns)) not in present:
            schema, _, name = table.partition(".")
            declared = {"schema": schema, "table": name, "name": f"declared primary key ({', '.join(columns)})",
                        "kind": "declared primary key", "columns": list(columns), "missing": True}
            params.append(pytest.param(declared, id=f"{table}.declared_pk"))
    return params


@pytest.fixture(scope="session")
def checkunique(db_session_conn: psycopg.Connection[Any], restored_db: PreparedDatabase) -> str | None:
    """Where amcheck with checkunique (PostgreSQL 17+) is, when the verifying role may run it; else None (the
    heap scan proves the keys instead)."""
    try:
        schema = amcheck_schema(db_session_conn)
        if schema is None or missing_amcheck_grants(db_session_conn, schema) or not may_run(
                db_session_conn, f"{sql.Identifier(schema).as_string(db_session_conn)}.{CHECKUNIQUE_SIGNATURE}"):
            return None
        return schema
    finally:
        db_session_conn.rollback()


ONE_PASS = ("amcheck bt_index_check(heapallindexed, checkunique) on {index}: every row of the table is in the unique "
            "index, and the index holds no key twice — one read of the table and the index, shared with "
            "no_corruption (PostgreSQL 17+)")


@unique_keys
def test_no_duplicate_keys(
    unique_key: dict[str, Any], restored_db: PreparedDatabase, db_conn: psycopg.Connection[Any],
    restore_config: RestoreConfig, record_property: Callable[[str, object], None], attribution: Attribution,
    checkunique: str | None, run_state_data: RunState,
) -> None:
    """GROUP BY the key columns over a sequential scan: no value may appear twice (or, on PostgreSQL 17+, one
    amcheck pass over the key's unique index proves it; the scan then only runs to name duplicates)."""
    k = unique_key
    table = f"{k['schema']}.{k['table']}"
    if k.get("proven"):
        assert k["valid"], "a proven unique index must be valid"  # the proof's premise
        record_property("verified_by", k["proven"])
        return
    if (checkunique and k.get("index") and k.get("valid") and not k.get("missing") and k.get("populated") is not False
            and restore_config.depth == "standard"):  # --depth full scans the heap as well
        found_pass = unique_index_pass(db_conn, checkunique, k["schema"], k["index"],
                                       shared=run_state_data.facts.run_dir / "amcheck")
        if found_pass.ok:
            record_property("proof", ONE_PASS.format(index=f"{k['schema']}.{k['index']}"))
            return
        # Duplicates, or a corrupt index (no_corruption's finding): the heap scan below decides, and names rows.
    if k.get("populated") is False:
        not_applicable(f"materialized view {table} is not populated: it holds no rows, so none can be duplicated "
                       "(row_counts compares its populated state with the backup)")
    if restore_config.depth == "quick":
        pytest.skip("--depth quick: no data scans (run --depth=standard to scan for duplicates)")
    if k.get("missing") and not relation_exists(db_conn, k["schema"], k["table"]):
        not_applicable(f"{table} does not exist (see tables_present)")
    found = duplicates(db_conn, k)
    record_property("duplicate_groups", found.count)
    if found.count:
        record_property("offending", found.table())
    note = "" if not found.count else attribution.settle(attribution.content([table]))
    if note is None:
        return  # inherited from the backup and accepted (--accept-inherited): listed, not hidden
    if k.get("missing"):
        cols = ", ".join(k["columns"])
        recreate = (hints.add_key(k["schema"], k["table"], k["name"], k) if k.get("dropped")
                    else hints.add_primary_key(k["schema"], k["table"], k["columns"]))
        source = k.get("dropped") or "keys.toml"
        what = f"{k['kind']} {k['name']}" if k.get("dropped") else "primary key"
        assert found.count == 0, (
            f"{table} has lost its {what} ({cols}), which {source} records, and now holds {found.count} "
            f"duplicated key value(s): {', '.join(found.sample)}.{note} Remove the duplicates, then {recreate}"
        )
        if k.get("dropped") == "the backup's manifest":
            # No duplicates: the lost constraint itself is schema_matches' finding, which names it.
            record_property("verified_by", f"heap scan of the {what} recorded in the manifest: no duplicates")
            return
        pytest.fail(
            f"{table} has no {what} on ({cols}) although {source} records one: nothing enforces uniqueness any "
            f"more (no duplicates yet). Recreate it: {recreate}", pytrace=False,
        )
    assert found.count == 0, (
        f"{k['kind']} {k['name']} on {table} ({', '.join(k['columns']) or 'expressions'}) has {found.count} "
        f"duplicated value(s) in the table's rows: {', '.join(found.sample)}.{note} The index {k['index']} does not "
        f"reflect the table (corruption): REINDEX fails until the duplicates are resolved."
    )
