"""rto: the restore (fetch + verify + restore + ready) finished within the recovery time objective."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from restore.backups.outcome import PreparedDatabase
from restore.config import RestoreConfig

pytestmark = pytest.mark.checklist("rto")


def test_restore_within_rto(
    prepared_db: PreparedDatabase, restore_config: RestoreConfig, record_property: Callable[[str, object], None]
) -> None:
    """Measured from the start of the fetch to a database ready for the application."""
    outcome = prepared_db.restore
    if not outcome.performed:
        pytest.skip("existing target: this run restored nothing, so no restore time was measured")
    if outcome.verifier_fault:
        pytest.skip("not run: the verifier could not restore the backup (see the verdict)")
    if outcome.refused:
        pytest.skip("the restore did not run (see restore_succeeded): there is no recovery time to judge")
    duration = float(outcome.duration_s or 0)
    record_property("restore_duration_s", duration)
    assert duration <= restore_config.rto_s, (
        f"The restore took {duration:.0f} s, over the RTO of {restore_config.rto_s:.0f} s (--rto). Phases: "
        f"{outcome.phases_s}. Restore with more --restore-jobs, a larger target, or revisit the RTO."
    )
