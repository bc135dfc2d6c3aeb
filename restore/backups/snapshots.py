"""Which snapshots an RDS instance or Aurora cluster keeps: automated, manual and taken by AWS Backup.

Read by the RDS restore (``restore/targets/rds.py``: the newest, for ``rds-snapshot:latest``) and by the retention
check (``restore/backups/retention.py``: every one, against the runbook's 7/30/90 days).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from restore.cloud import aws_call


def available_snapshots(rds: Any, instance: str, log: Callable[[str], None] | None = None, *,
                        cluster: bool = False) -> list[dict[str, Any]]:
    """Every available snapshot of an instance (or an Aurora cluster): automated, manual, and taken by AWS Backup
    (SnapshotType awsbackup, which DescribeDB*Snapshots lists only when asked for by type)."""
    operation, key, ident, what = (("describe_db_cluster_snapshots", "DBClusterSnapshots", "DBClusterIdentifier",
                                    "cluster") if cluster else
                                   ("describe_db_snapshots", "DBSnapshots", "DBInstanceIdentifier", "instance"))
    action = "rds:DescribeDBClusterSnapshots" if cluster else "rds:DescribeDBSnapshots"
    found: dict[str, dict[str, Any]] = {}
    for types in ({}, {"SnapshotType": "awsbackup"}):
        pages = aws_call(lambda **kw: list(rds.get_paginator(operation).paginate(**kw)), action,
                         resource=f"{types.get('SnapshotType', 'automated and manual')} snapshots of {what} "
                                  f"{instance!r}", log=log,
                         summarize=lambda pages: f"{sum(len(p[key]) for p in pages)} snapshot(s)",
                         **{ident: instance}, **types)
        for page in pages:
            for snapshot in page[key]:
                if snapshot.get("Status") == "available":
                    found[snapshot_id(snapshot)] = snapshot
    return list(found.values())


def snapshot_id(snapshot: dict[str, Any]) -> str:
    return str(snapshot.get("DBClusterSnapshotIdentifier") or snapshot["DBSnapshotIdentifier"])


def snapshot_kind(snapshot: dict[str, Any]) -> str:
    """In words, for the log and the report: which kind of snapshot was picked."""
    kind = str(snapshot.get("SnapshotType") or "unknown")
    return {"awsbackup": "taken by AWS Backup", "automated": "automated", "manual": "manual"}.get(kind, kind)
