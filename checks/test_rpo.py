"""rpo: the newest data in the backup is no older than the recovery point objective at backup time."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from fixtures.outcomes import not_applicable, owner_says
from restore.backups.outcome import PreparedDatabase
from restore.compare.expectations import Expectations
from restore.config import RestoreConfig
from restore.run import RunState

pytestmark = pytest.mark.checklist("rpo")

# Clocks of the database and of the backup host differ a little; data "newer" than that is an error.
CLOCK_SKEW_S = 120


def test_newest_data_within_rpo(
    restored_db: PreparedDatabase, db_conn: psycopg.Connection[Any], expectations: Expectations,
    restore_config: RestoreConfig, run_state_data: RunState, record_property: Callable[[str, object], None],
) -> None:
    """backup time − newest row's timestamp ≤ RPO (freshness from expectations/rpo.toml)."""
    manifests = run_state_data.manifests() if run_state_data.facts.source_kind == "manifest" else None
    recorded: Mapping[str, Any] = (manifests[0].get("freshness") or {}) if manifests else {}
    if expectations.freshness_sql is None and recorded.get("value") is None:
        pytest.skip(f"no freshness configured: create {expectations.directory / 'rpo.toml'} with "
                    "column = \"schema.table.timestamp_column\" or query = \"SELECT max(…) FROM …\", or take the "
                    "backup with python -m restore backup --freshness \"SELECT max(…) FROM …\" (kept in its manifest)")
    archive = restored_db.archive
    backup_time = restore_config.backup_time
    source = "--backup-time"
    if backup_time is None and archive is not None and archive.created_at:
        backup_time, source = datetime.fromisoformat(archive.created_at), str(archive.created_at_source)
    taken = (manifests[0].get("position") or {}).get("time") or manifests[0].get("captured_at") if manifests else None
    if backup_time is None and taken:  # the manifest says when its snapshot was taken: the backup's moment
        backup_time, source = datetime.fromisoformat(str(taken)), "the manifest's snapshot"
    if backup_time is None:
        pytest.skip("the backup time is unknown (an existing target): pass --backup-time=ISO8601")
    newest: object
    if recorded.get("value") is not None:  # read from the backup's own snapshot when it was taken
        newest = datetime.fromisoformat(str(recorded["value"]))
        record_property("freshness_source", f"manifest: {recorded.get('query')}")
    else:
        assert expectations.freshness_sql is not None
        row = db_conn.execute(expectations.freshness_sql.encode()).fetchone()
        newest = row[0] if row else None
    assert isinstance(newest, datetime), (
        f"The freshness query returned {newest!r}, not a timestamp: it must return one timestamptz "
        f"({expectations.directory / 'rpo.toml'})."
    )
    if newest.tzinfo is None:  # timestamp without time zone: read as UTC, the usual convention for such columns
        newest = newest.replace(tzinfo=UTC)
    age = (backup_time - newest).total_seconds()
    record_property("data_age_at_backup_s", round(age, 1))
    assert age >= -CLOCK_SKEW_S, (
        f"The newest row ({newest.isoformat()}) is newer than the backup time ({backup_time.isoformat()}, from "
        f"{source}): the backup time is wrong or this data did not come from that backup."
    )
    assert age <= restore_config.rpo_s, (
        f"At backup time ({backup_time.isoformat()}, from {source}) the newest data was {age / 60:.1f} min old "
        f"({newest.isoformat()}), over the RPO of {restore_config.rpo_s / 60:.1f} min (--rpo): writes stopped "
        "reaching the database long before the backup, or the backup is of a stale replica."
    )


def test_recovery_reached_its_target(restored_db: PreparedDatabase, restore_config: RestoreConfig,
                                     record_property: Callable[[str, object], None]) -> None:
    """A physical backup recovered to a time: the last transaction replayed is not after the target, and not older than
    it by more than the RPO (a recovery that stopped early, short of WAL, would land there)."""
    archive = restored_db.archive
    if archive is None or archive.recovery_target is None:
        not_applicable("not a point-in-time recovery (no physical backup was recovered to a target)")
    if archive.recovery_target_time is None:
        not_applicable(f"recovered to {archive.recovery_target}: there is no target time to compare with")
    target = datetime.fromisoformat(archive.recovery_target_time)
    assert archive.created_at is not None, (
        f"Recovery to {target.isoformat()} cannot say when its data is from: it replayed no transaction and the "
        "backup has no backup_label START TIME. Check the WAL archive (wal=DIR) holds the segments after the backup.")
    replayed = datetime.fromisoformat(archive.created_at)
    gap = (target - replayed).total_seconds()
    record_property("recovery_gap_s", gap)
    assert replayed <= target, (
        f"Recovery landed after its target: the last transaction replayed committed at {replayed.isoformat()}, after "
        f"the target {target.isoformat()}. The restored data is not the data of that moment.")
    assert gap <= restore_config.rpo_s, (
        f"Recovery stopped {gap:.0f} s before its target {target.isoformat()} (last transaction replayed at "
        f"{replayed.isoformat()}), beyond the RPO of {restore_config.rpo_s:.0f} s (--rpo): transactions of that "
        "window are missing (or nothing was committed in it). Look for a gap in the WAL archive.")


def test_cloudnativepg_says_wal_archiving_works(restored_db: PreparedDatabase) -> None:
    """A CloudNativePG cluster (cnpg:): its ContinuousArchiving condition is not False. While archiving fails, WAL
    stops reaching the object store and no restore can reach the present, whatever this restore proved."""
    owner_says(restored_db.archive, "rpo")
