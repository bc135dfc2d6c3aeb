"""The runbook's checklist, as the ids this suite reports (a public interface: keep them stable)."""

from __future__ import annotations

from typing import Literal

Status = Literal["passed", "failed", "skipped"]

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


def item_status(outcomes: list[str]) -> Status:
    """failed if any test failed; passed if none failed and one passed; skipped if all were skipped."""
    if "failed" in outcomes:
        return "failed"
    if "passed" in outcomes:
        return "passed"
    return "skipped"
