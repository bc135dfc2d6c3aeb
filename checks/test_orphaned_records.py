"""orphaned_records: for every foreign key, no child row lacks its parent (the runbook's orders.customer_id query)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from fixtures.findings import Attribution
from fixtures.outcomes import not_applicable
from fixtures.params import Param, parameters, qualified, recorded_keys, restore_proves
from restore import hints
from restore.backups.outcome import PreparedDatabase
from restore.config import RestoreConfig
from restore.run import RunState
from restore.verify import orphans, relation_exists

pytestmark = pytest.mark.checklist("orphaned_records")


PROVEN_FK = ("proven by the restore: pg_restore created this foreign key after loading the rows, and ADD CONSTRAINT "
             "checked every row, in an error-free restore into a fresh cluster (scan skipped; --depth full scans)")


@parameters('foreign_key', empty="the database has no foreign keys", needs_db=True)
def catalog_foreign_keys(state: RunState) -> list[Param]:
    assert state.prepared is not None
    created = set(state.prepared.archive.foreign_keys) if state.prepared.archive else set()
    proves = restore_proves(state)
    params = []
    present = {(qualified(k["schema"], k["table"]), k["name"]) for k in state.catalog.key_names}
    for fk in state.catalog.foreign_keys:
        key = (f"{fk['schema']}.{fk['table']}", fk["name"])
        proven = PROVEN_FK if proves and fk["validated"] and key in created else None
        params.append(pytest.param(fk | {"proven": proven}, id=f"{key[0]}.{fk['name']}"))
    # Foreign keys the backup had and the restore lost: their rows must still have parents.
    for rec in recorded_keys(state):
        key = (f"{rec['schema']}.{rec['table']}", rec["name"])
        if rec["kind"] == "foreign key" and key not in present:
            present.add(key)
            params.append(pytest.param(rec | {"proven": None, "validated": False, "dropped": rec["source"]},
                                       id=f"{key[0]}.{rec['name']}.dropped"))
    return params


@catalog_foreign_keys
def test_no_orphans(
    foreign_key: dict[str, Any], restored_db: PreparedDatabase, db_conn: psycopg.Connection[Any],
    restore_config: RestoreConfig, record_property: Callable[[str, object], None], attribution: Attribution,
) -> None:
    """Anti-join of the child's heap against the parent's, honouring MATCH SIMPLE/FULL null rules."""
    if foreign_key["proven"]:
        assert foreign_key["validated"], "a proven foreign key must be validated"  # the proof's premise
        record_property("verified_by", foreign_key["proven"])
        return
    if restore_config.depth == "quick":
        pytest.skip("--depth quick: no data scans (run --depth=standard to scan for orphans)")
    fk = foreign_key
    if fk.get("dropped"):
        for schema, table in ((fk["schema"], fk["table"]), (fk["ref_schema"], fk["ref_table"])):
            if not relation_exists(db_conn, schema, table):
                not_applicable(f"{schema}.{table} does not exist (see tables_present)")
    found = orphans(db_conn, fk)
    record_property("orphans", found.count)
    if found.count:
        record_property("offending", found.table())
    note = "" if not found.count else attribution.settle(attribution.content(
        [f"{fk['schema']}.{fk['table']}", f"{fk['ref_schema']}.{fk['ref_table']}"]))
    if note is None:
        return  # inherited from the backup and accepted (--accept-inherited): listed, not hidden
    lost = (f" The restored database has lost that foreign key ({fk['dropped']} records it), so nothing stopped "
            f"them: {hints.add_key(fk['schema'], fk['table'], fk['name'], fk)} fails until they are resolved."
            if fk.get("dropped") else "")
    assert found.count == 0, (
        f"{found.count} row(s) of {fk['schema']}.{fk['table']} ({', '.join(fk['columns'])}) have no parent in "
        f"{fk['ref_schema']}.{fk['ref_table']} ({', '.join(fk['ref_columns'])}) although foreign key {fk['name']} "
        f"requires one. First keys: {', '.join(found.sample)}.{note}{lost} The data was loaded with triggers disabled, "
        "the key was dropped, or the parent rows were lost: compare with the source before deleting anything."
    )
