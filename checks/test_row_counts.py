"""row_counts: each table holds the number of rows expected — exactly as in the backup's manifest, or as
expectations/row_counts.toml says."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from fixtures.findings import Attribution
from fixtures.outcomes import not_applicable
from fixtures.params import Param, parameters, qualified
from restore import hints
from restore.backups.outcome import PreparedDatabase
from restore.compare.catalog import Catalog
from restore.compare.expectations import Expectations
from restore.config import RestoreConfig
from restore.run import RunState
from restore.verify import count_rows, split_qualified

pytestmark = pytest.mark.checklist("row_counts")


@parameters('counted_table', empty="the database has no tables", needs_db=True)
def counted_tables(state: RunState) -> list[Param]:
    known = {qualified(t["schema"], t["name"]): t for t in state.catalog.tables}
    names = list(known) + [t for t in state.expectations.row_counts if t not in known]
    def param(t: str) -> dict[str, Any]:
        if t in known:
            return {"table": t, "kind": known[t]["kind"], "schema": known[t]["schema"], "name": known[t]["name"],
                    "populated": known[t].get("populated")}
        schema, name = split_qualified(t)  # only in row_counts.toml: missing, reported by tables_present
        return {"table": t, "kind": None, "schema": schema, "name": name, "populated": None}

    return [pytest.param(param(t), id=t) for t in names if t not in known or known[t]["kind"] != "f"]


def _manifest_counts(state: RunState, name: str) -> tuple[int, int] | None:
    """(backed up, restored) counts when a manifest comparison has both; the restored side was counted in the
    same scan as its checksum, so no second pass is needed here."""
    manifests = state.manifests()
    if manifests is None:
        return None
    src, dst = manifests[0]["tables"].get(name), manifests[1]["tables"].get(name)
    if not src or not dst or "row_count" not in src or "row_count" not in dst:
        return None
    return int(src["row_count"]), int(dst["row_count"])


def _check_trend(state: RunState, config: RestoreConfig, name: str, count: int,
                 record_property: Callable[[str, object], None]) -> bool:
    """Against the same target's previous run in the record: a shrink beyond --max-count-drop fails.
    Returns whether there was a previous count to compare with."""
    previous = (state.facts.previous_counts or {}).get(name)
    if previous is None:
        return False
    record_property("previous_rows", previous)
    drop = (previous - count) / previous if previous else 0.0
    assert drop <= config.max_count_drop, (
        f"{name} shrank from {previous} rows at the previous run of target {config.target.name!r} to {count} "
        f"({-drop:+.1%}), beyond --max-count-drop ({config.max_count_drop:.0%}; record {config.record}). Data "
        "rarely shrinks: find out why (a purge? a partial backup?) before trusting this backup."
    )
    return True


def _unpopulated_matview(name: str, schema: str, table: str, state: RunState, restored_db: PreparedDatabase) -> None:
    """A materialized view restored WITH NO DATA has no rows to count: right when the backup had none either."""
    manifests = state.manifests()
    if manifests is not None and name in manifests[0]["tables"]:
        had_rows = bool(manifests[0]["tables"][name].get("populated", "row_count" in manifests[0]["tables"][name]))
        source = f"the backup's manifest ({state.facts.source_manifest_path})"
    elif restored_db.archive and restored_db.archive.restored_by_pg_restore:
        had_rows = name in restored_db.archive.materialized_views_with_data
        source = "the dump's table of contents (a MATERIALIZED VIEW DATA entry)"
    else:
        not_applicable(f"materialized view {name} is not populated, and nothing says whether the backup's was: "
                       f"no rows to count ({hints.refresh(schema, table)} fills it)")
    assert not had_rows, (
        f"Materialized view {name} is not populated in the restore, but it was in the backup ({source}): the "
        f"application reading it gets an error until {hints.refresh(schema, table)} runs. The restore skipped or "
        "failed its REFRESH (see the restore log)."
    )
    not_applicable(f"materialized view {name} was not populated in the backup either (created WITH NO DATA): no "
                   f"rows to count; {hints.refresh(schema, table)} fills it")


@counted_tables
def test_row_count(
    counted_table: dict[str, Any], restored_db: PreparedDatabase, db_conn: psycopg.Connection[Any],
    expectations: Expectations, run_state_data: RunState, restore_config: RestoreConfig, catalog: Catalog,
    record_property: Callable[[str, object], None], attribution: Attribution,
) -> None:
    """Exact count(*) against the manifest or the table's expectation; a table with neither is "not checked"."""
    name = counted_table["table"]
    schema, table = counted_table["schema"], counted_table["name"]
    if counted_table.get("kind") == "m" and counted_table.get("populated") is False:
        _unpopulated_matview(name, schema, table, run_state_data, restored_db)
    from_manifest = _manifest_counts(run_state_data, name)
    if from_manifest is not None:
        expected, count = from_manifest
        record_property("rows", count)
        _check_trend(run_state_data, restore_config, name, count, record_property)
        if run_state_data.facts.source_kind == "baseline":
            tolerance = restore_config.baseline_tolerance
            assert tolerance.accepts(expected, count), (
                f"{name} has {count} rows; the live baseline has {expected} ({count - expected:+d}), beyond the "
                f"tolerance of {tolerance} (--baseline-tolerance)."
            )
        else:
            note = "" if count == expected else attribution.settle("restore")
            assert count == expected, (
                f"{name} has {count} rows; the backup held exactly {expected} ({count - expected:+d}) according to "
                f"its manifest.{note}"
            )
        if name not in expectations.row_counts:
            return
    if name not in catalog.table_names():
        not_applicable(f"{name} does not exist, so it has no rows to count (see tables_present)")
    count = from_manifest[1] if from_manifest else count_rows(db_conn, schema, table)
    record_property("rows", count)
    trend_checked = from_manifest is None and _check_trend(run_state_data, restore_config, name, count,
                                                           record_property)
    rule = expectations.row_counts.get(name)
    if rule is None:
        if trend_checked:
            return  # checked against the previous run, within --max-count-drop
        not_applicable(f"not checked: {name} has {count} rows, but {expectations.directory / 'row_counts.toml'} "
                    "has no expectation for it")
    note = "" if rule.accepts(count) else attribution.settle(attribution.content([name]))
    if note is None:
        return  # the backup held the same count, accepted (--accept-inherited=row_counts): listed, not hidden
    assert rule.accepts(count), (
        f"{name} has {count} rows; expected {rule.describe()} ({expectations.directory / 'row_counts.toml'}). "
        f"{'Rows are missing' if (rule.exact or rule.minimum or 0) > count else 'There are more rows than expected'}: "
        f"compare with the source, or update the expectation if the data legitimately changed.{note}"
    )
