"""retention: the runbook's backup retention policy holds for the source instance's snapshots."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from fixtures.params import Param, parameters
from restore.backups.retention import RetentionRule, check_rule
from restore.config import RestoreConfig
from restore.run import RunState

pytestmark = pytest.mark.checklist("retention")


@parameters('retention_rule', empty="no retention rules", needs_db=False)
def retention_rules(state: RunState) -> list[Param] | str:
    policy = state.config.retention
    if policy is None:
        return ("no retention policy configured (it checks the RDS snapshots the runbook keeps: hourly, daily, "
                "weekly): add [retention] (instance and rules) to the targets file, as docs/options.md says")
    return [pytest.param(rule, id=f"{policy.instance}:{rule.snapshot_type or 'any'}-every-{i}")
            for i, rule in enumerate(policy.rules)]


@retention_rules
def test_retention_rule(
    retention_rule: RetentionRule, run_state_data: RunState, restore_config: RestoreConfig,
    record_property: Callable[[str, object], None],
) -> None:
    """Every window of the rule has a snapshot, the newest is younger than the frequency, none outlives retention."""
    policy, listing = restore_config.retention, run_state_data.facts.retention
    assert policy is not None
    assert listing is not None
    if listing.error:
        pytest.fail(f"The snapshots of {policy.instance} could not be listed: {listing.error}. The check needs "
                    "rds:DescribeDBSnapshots and rds:DescribeDBInstances on it.", pytrace=False)
    snapshots = [{"id": s["id"], "type": s["type"], "created": datetime.fromisoformat(s["created"])}
                 for s in listing.snapshots]
    record_property("snapshots", len(snapshots))
    record_property("pitr_latest_restorable", listing.pitr.get("latest_restorable"))
    problems = check_rule(retention_rule, snapshots, policy, datetime.fromisoformat(listing.listed_at))
    assert not problems, (
        f"Retention of {policy.instance} breaks the rule \"{retention_rule.label}\": " + "; ".join(problems)
        + ". Check the automated backup settings (backup window, retention period) and the manual snapshot job."
    )
