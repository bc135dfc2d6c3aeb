"""The runbook's checklist, as the ids this suite reports (a public interface: keep them stable)."""

from __future__ import annotations

from typing import Literal

import pytest

Status = Literal["passed", "failed", "skipped", "incomplete"]
RunOutcome = Literal["passed", "failed", "interrupted", "partial", "error"]

# id -> (the runbook's wording, what the check proves)
CHECKLIST: dict[str, tuple[str, str]] = {
    "restore_succeeded": ("Restore 程序: pg_restore / restore-db-instance 完成",
                          "pg_restore exited cleanly with no unaccepted errors"),
    "db_accessible": ("Database 可存取", "connect, SELECT 1, server version, encoding and collation"),
    "tables_present": ("所有 tables 都存在", "every expected table exists and its data arrived"),
    "row_counts": ("Row 計數符合預期", "exact counts per table against expectations/row_counts.toml"),
    "foreign_keys": ("Foreign key constraints 完整", "every expected foreign key exists and is enforced"),
    "orphaned_records": ("Check for orphaned records", "no child row lacks its parent, for every foreign key"),
    "unvalidated_constraints": ("Verify referential integrity (convalidated = false)",
                                "no FK or CHECK constraint is NOT VALID"),
    "duplicate_primary_keys": ("Check for duplicate primary keys",
                               "no duplicates on any primary key, unique constraint or unique index"),
    "schema_matches": ("(restore 完整: schema 與備份一致)",
                       "every table, column, constraint, index, trigger, partition, view, function, type and "
                       "extension of the backup's manifest is there, defined the same"),
    "sequences": ("(application inserts)", "every serial/identity sequence is beyond its column's max"),
    "no_corruption": ("未偵測到資料損毀", "amcheck on every btree index and table; no invalid indexes"),
    "app_connect": ("Application 可以連線", "the application role logs in and holds its privileges"),
    "critical_queries": ("關鍵 queries 成功執行", "every critical query runs read-only within its budget"),
    "business_rules": ("業務邏輯正常運作", "every business-rule query returns no violating rows"),
    "rto": ("RTO < 1 小時", "restore duration (fetch + restore + ready) under the RTO"),
    "rpo": ("RPO < 15 分鐘", "age of the newest data at backup time under the RPO"),
    "retention": ("Backup 保留政策", "every retention window has its snapshot, none outlives its retention"),
}

# id -> the runbook item in English (shown first; the runbook's own wording follows it)
LABELS: dict[str, str] = {
    "restore_succeeded": "Restore procedure completed (pg_restore / restore-db-instance)",
    "db_accessible": "Database is accessible",
    "tables_present": "All tables exist",
    "row_counts": "Row counts match expectations",
    "foreign_keys": "Foreign key constraints intact",
    "orphaned_records": "No orphaned records",
    "unvalidated_constraints": "Referential integrity verified (no convalidated = false)",
    "duplicate_primary_keys": "No duplicate primary keys",
    "schema_matches": "Restore complete: the schema matches the backup",
    "sequences": "Application inserts work (sequences ahead of their columns)",
    "no_corruption": "No data corruption detected",
    "app_connect": "The application can connect",
    "critical_queries": "Critical queries succeed",
    "business_rules": "Business logic works",
    "rto": "RTO < 1 hour",
    "rpo": "RPO < 15 minutes",
    "retention": "Backup retention policy holds",
}


def item_status(outcomes: list[str], gaps: int = 0) -> Status:
    """The item's state from its tests' outcomes.

    failed: any test failed. passed: at least one passed and nothing that would prove the item was skipped
    (``gaps`` counts skipped tests whose proof did not run; a test that had nothing to check is not a gap).
    incomplete: some proof ran and found nothing, some did not run. skipped: no proof ran at all.
    """
    if "failed" in outcomes:
        return "failed"
    if "passed" not in outcomes:
        return "skipped"
    return "incomplete" if gaps else "passed"


def checklist_id_of(nodeid: str) -> str | None:
    """checks/test_<id>.py holds the tests of item <id> (one module per checklist item)."""
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    cid = module.removeprefix("test_").removesuffix(".py")
    return cid if module.startswith("test_") and cid in CHECKLIST else None


# Exit codes (pytest's own 0, 1, 2, 4 keep their meaning; 6 and 7 are this suite's).
EXIT_PARTIAL = 6
EXIT_ERROR = 7  # the run never tested a backup: the target could not be reached or logged into
EXIT_CODES: dict[str, int] = {"passed": 0, "failed": 1, "interrupted": 2, "partial": EXIT_PARTIAL,
                              "error": EXIT_ERROR}


NOT_APPLICABLE = "not_applicable"  # the marker and user property of a skipped test that had nothing to check
VERIFIER_FAULT = "verifier_fault"  # the user property of a test the verifier's own world stopped (its words)
# The attribute of a batch test's call report (fixtures/batches.py): {"objects": N, "passed": [[nodeid, props, s]…]}
BATCH = "batch"


def is_not_applicable(report: pytest.TestReport) -> bool:
    """A skip that leaves its item complete (nothing to check), as opposed to a gap in the item's proof."""
    return NOT_APPLICABLE in report.keywords or any(k == NOT_APPLICABLE for k, _ in report.user_properties)


def plain_failure(message: str) -> str:
    """The check's own words: without pytest's "AssertionError: "/"Failed: " prefix and its assertion
    introspection ("assert False", "+ where …"), which say nothing to a DBA."""
    for prefix in ("AssertionError: ", "Failed: "):
        message = message.removeprefix(prefix)
    lines = message.splitlines()
    cut = next((i for i, line in enumerate(lines) if i and line.startswith("assert ")), len(lines))
    return "\n".join(lines[:cut]).rstrip()
