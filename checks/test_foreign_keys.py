"""foreign_keys: every expected foreign key exists in the restored database and is enforced.

A NOT VALID foreign key is the business of ``unvalidated_constraints``; orphans, of ``orphaned_records``.
"""

from __future__ import annotations

from typing import Any

import pytest

from fixtures.findings import Attribution
from fixtures.outcomes import not_applicable
from fixtures.params import Param, parameters, qualified
from restore import hints
from restore.backups.outcome import PreparedDatabase
from restore.compare.catalog import Catalog
from restore.run import RunState

pytestmark = pytest.mark.checklist("foreign_keys")


@parameters('expected_fk', empty="no foreign keys expected or present", needs_db=True)
def expected_foreign_keys(state: RunState) -> list[Param]:
    assert state.prepared is not None
    found = {(qualified(fk["schema"], fk["table"]), fk["name"]): fk for fk in state.catalog.foreign_keys}
    wanted: dict[tuple[str, str], str] = {}
    archive = state.prepared.archive
    for table, name in (archive.foreign_keys if archive else []):
        wanted.setdefault((table, name), "the dump's table of contents")
    for table, names in state.expectations.foreign_keys.items():
        for name in names:
            wanted.setdefault((table, name), str(state.expectations.directory / "keys.toml"))
    for key in found:
        wanted.setdefault(key, "the catalog")
    return [
        pytest.param({"table": t, "name": n, "source": src, "catalog": found.get((t, n))}, id=f"{t}.{n}")
        for (t, n), src in wanted.items()
    ]


@expected_foreign_keys
def test_foreign_key(expected_fk: dict[str, Any], restored_db: PreparedDatabase, catalog: Catalog,
                     attribution: Attribution) -> None:
    """The constraint exists, is ENFORCED, and its referential-integrity triggers are enabled."""
    table, name, fk = expected_fk["table"], expected_fk["name"], expected_fk["catalog"]
    if fk is None and table not in catalog.table_names():
        not_applicable(f"{table} itself is missing, and its foreign keys with it (see tables_present)")
    note = "" if fk is not None else attribution.settle(
        "restore" if expected_fk["source"] == "the dump's table of contents" else "unknown")
    assert fk is not None, (
        f"Foreign key {name} on {table} is missing (expected from {expected_fk['source']}): nothing stops "
        f"orphaned rows.{note} Look for its 'FK CONSTRAINT' error in the restore log; recreate it with ALTER TABLE … "
        "ADD CONSTRAINT once orphans are removed."
    )
    assert fk["enforced"], (
        f"Foreign key {name} on {table} is NOT ENFORCED: {hints.enforce(fk['schema'], fk['table'], name)}"
    )
    assert fk["triggers_enabled"], (
        f"Foreign key {name} on {table} exists but its triggers are disabled (ALTER TABLE … DISABLE TRIGGER ALL): "
        f"it does not check new rows. Re-enable with {hints.enable_triggers(fk['schema'], fk['table'])}"
    )
