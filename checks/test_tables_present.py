"""tables_present: every expected table exists, and the data the dump held for it arrived."""

from __future__ import annotations

import pytest

from fixtures.findings import Attribution
from fixtures.params import Param, parameters
from restore.backups.outcome import PreparedDatabase
from restore.compare.catalog import Catalog
from restore.compare.expectations import Expectations
from restore.run import RunState
from restore.verify import split_qualified

pytestmark = pytest.mark.checklist("tables_present")


@parameters('expected_table', needs_db=False,
            empty="no list of expected tables: no dump was restored and expectations/tables.txt does not exist")
def expected_tables(state: RunState) -> list[Param]:
    assert state.prepared is not None
    names: dict[str, str] = {}
    manifests = state.manifests()
    if manifests is not None:
        source, restored = manifests
        label = "the backup's manifest" if state.facts.source_kind == "manifest" else "the live baseline"
        params = [pytest.param({"table": t, "source": label}, id=t) for t in source["tables"]]
        params += [pytest.param({"table": t, "source": label, "unexpected": True}, id=f"{t}.unexpected")
                   for t in restored["tables"] if t not in source["tables"]]
        return params
    archive = state.prepared.archive
    if archive:
        for table in archive.tables:
            names.setdefault(table, "the dump's table of contents")
    for table in state.expectations.tables or ():
        names.setdefault(table, str(state.expectations.directory / "tables.txt"))
    return [pytest.param({"table": t, "source": src}, id=t) for t, src in names.items()]


def _data_left_out(name: str, catalog: Catalog, expectations: Expectations) -> None:
    """A table whose rows the backup does not hold at all (pg_dump --exclude-table-data, a schema-only dump):
    restored, it is empty, and nothing else would notice. Fine only when someone said so."""
    kind = next((t["kind"] for t in catalog.tables if f"{t['schema']}.{t['name']}" == name), None)
    if kind != "r":
        return  # a partitioned parent holds no rows of its own; its partitions have their data entries
    rule = expectations.row_counts.get(name)
    if rule is not None and rule.accepts(0):
        return  # the expectations say it is meant to be empty (its data is left out of the backup on purpose)
    where = expectations.directory / "row_counts.toml"
    pytest.fail(
        f"Table {name} is in the backup without its data: the dump has its definition but no TABLE DATA entry "
        f"(taken with --exclude-table-data or --schema-only?), so the restored table is empty whatever the source "
        f"held. If that is intended, say so in {where}: [tables] \"{name}\" = 0; otherwise take the backup with the "
        "table's data.", pytrace=False,
    )


@expected_tables
def test_table_present(expected_table: dict[str, str], restored_db: PreparedDatabase, catalog: Catalog,
                       expectations: Expectations, attribution: Attribution) -> None:
    """The table exists in the restored database; if the dump held rows for it, they were loaded."""
    name = expected_table["table"]
    schema, table = split_qualified(name)
    # The backup (its manifest or its table of contents) recording the table makes its absence the restore's.
    from_backup = expected_table["source"] in ("the backup's manifest", "the dump's table of contents")
    note = ""
    if expected_table.get("unexpected") or name not in catalog.table_names():
        note = attribution.settle("restore" if from_backup else "unknown") or ""
    assert not expected_table.get("unexpected"), (
        f"Table {name} is in the restored database but not in {expected_table['source']}: the restore holds "
        f"something the backup did not (a wrong backup, or a target that was not empty).{note}"
    )
    assert name in catalog.table_names(), (
        f"Table {name} is missing from the restored database; it is expected because it is in "
        f"{expected_table['source']}.{note} Look for its CREATE TABLE error in the restore log "
        f"({restored_db.restore.log_path or 'n/a'}), or restore from a backup that has it."
    )
    failed = [tag for tag in restored_db.restore.data_failed if tag in (table, name)]
    assert not failed, (
        f"Table {name} exists but its data did not arrive: the restore reported an error loading its "
        "TABLE DATA (see restore_succeeded and the restore log)."
    )
    archive = restored_db.archive
    if archive is None:
        return
    if name in archive.without_data and expected_table.get("source") != "the backup's manifest":
        _data_left_out(name, catalog, expectations)
    by_pg_restore = restored_db.restore.performed and archive.restored_by_pg_restore
    if by_pg_restore and name in archive.with_data:
        # pg_restore --verbose names every TABLE DATA entry it loads; one it never reached did not arrive.
        processed = restored_db.data_processed
        assert name in processed or table in processed, (
            f"The dump holds rows for {name} (a TABLE DATA entry), but pg_restore never loaded them: the "
            "restore stopped early or skipped the entry. See the restore log."
        )
