"""retention: the runbook's backup retention policy holds for the source instance's snapshots."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from fixtures.options import RestoreConfig
from fixtures.session import RunState
from restore.retention import RetentionRule, check_rule

pytestmark = pytest.mark.checklist("retention")


def test_retention_rule(
    retention_rule: RetentionRule, run_state_data: RunState, restore_config: RestoreConfig,
    record_property: Callable[[str, object], None],
) -> None:
    """Every window of the rule has a snapshot, the newest is younger than the frequency, none outlives retention."""
    policy, data = restore_config.retention, run_state_data.retention_data
    assert policy is not None
    assert data is not None
    if "error" in data:
        pytest.fail(f"The snapshots of {policy.instance} could not be listed: {data['error']}. The check needs "
                    "rds:DescribeDBSnapshots and rds:DescribeDBInstances on it.", pytrace=False)
    snapshots = [s | {"created": datetime.fromisoformat(s["created"])} for s in data["snapshots"]]
    record_property("snapshots", len(snapshots))
    record_property("pitr_latest_restorable", data["pitr"].get("latest_restorable"))
    problems = check_rule(retention_rule, snapshots, policy, datetime.fromisoformat(data["listed_at"]))
    assert not problems, (
        f"Retention of {policy.instance} breaks the rule \"{retention_rule.label}\": " + "; ".join(problems)
        + ". Check the automated backup settings (backup window, retention period) and the manual snapshot job."
    )
