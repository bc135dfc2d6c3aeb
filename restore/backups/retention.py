"""The runbook's retention policy as a check: every window has its snapshot, none outlives its retention.

``[retention]`` in targets.toml::

    [retention]
    instance = "ecommerce-production"
    rules = [
      { every = "1h", keep = "7d",  type = "automated" },   # hourly, 7 days
      { every = "1d", keep = "30d", type = "automated" },   # daily, 30 days
      { every = "7d", keep = "90d", type = "manual" },      # weekly, 90 days
    ]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from restore.errors import ConfigError

_UNITS = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def _seconds(text: str, where: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(m|min|h|d|w)\s*", text)
    if not m:
        raise ConfigError.invalid("retention duration", text, where, "Write it as 30min, 1h, 1d or 1w.")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True)
class RetentionRule:
    every: timedelta
    keep: timedelta
    snapshot_type: str | None  # "automated", "manual", "awsbackup" (taken by AWS Backup), or None for any

    @property
    def label(self) -> str:
        kind = self.snapshot_type or "any"
        return f"{kind} snapshot every {_human(self.every)}, kept {_human(self.keep)}"


@dataclass(frozen=True)
class RetentionPolicy:
    instance: str
    rules: tuple[RetentionRule, ...]

    @classmethod
    def from_toml(cls, raw: dict[str, Any], where: str) -> RetentionPolicy:
        if "instance" not in raw:
            raise ConfigError(f"{where} needs instance = \"…\": whose snapshots the policy is about.")
        rules = []
        for i, rule in enumerate(raw.get("rules", [])):
            at = f"{where} rules[{i}]"
            kind = rule.get("type")
            if kind not in (None, "automated", "manual", "awsbackup"):
                raise ConfigError.invalid("snapshot type", kind, at,
                                          "Use automated, manual or awsbackup (AWS Backup's), or leave it out.")
            rules.append(RetentionRule(timedelta(seconds=_seconds(str(rule["every"]), at)),
                                       timedelta(seconds=_seconds(str(rule["keep"]), at)), kind))
        if not rules:
            raise ConfigError(f"{where} has no rules.")
        return cls(str(raw["instance"]), tuple(rules))


def _human(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:.0f}s"


def _matches(snapshot: dict[str, Any], rule: RetentionRule) -> bool:
    return rule.snapshot_type is None or snapshot["type"] == rule.snapshot_type


def check_rule(rule: RetentionRule, snapshots: list[dict[str, Any]], policy: RetentionPolicy,
               now: datetime) -> list[str]:
    """Problems with one rule: windows without a snapshot, a newest snapshot older than the frequency, and
    snapshots older than every rule of their type keeps them."""
    mine = sorted((s for s in snapshots if _matches(s, rule)), key=lambda s: s["created"])
    problems = []
    if not mine:
        return [f"no {rule.snapshot_type or ''} snapshot of {policy.instance} at all ({rule.label})".replace("  ", " ")]
    newest_age = timedelta(seconds=int((now - mine[-1]["created"]).total_seconds()))
    if newest_age > rule.every:
        problems.append(f"the newest one ({mine[-1]['id']}) is {_human(newest_age)} old, older than its frequency "
                        f"({_human(rule.every)})")
    gaps = []
    windows = int(rule.keep / rule.every)
    for i in range(windows):
        end, start = now - i * rule.every, now - (i + 1) * rule.every
        if not any(start <= s["created"] < end for s in mine):
            gaps.append(f"{start:%Y-%m-%d %H:%M}–{end:%H:%M}" if rule.every < timedelta(days=1)
                        else f"{start:%Y-%m-%d}–{end:%Y-%m-%d}")
    if gaps:
        shown = ", ".join(gaps[:5]) + (f" and {len(gaps) - 5} more" if len(gaps) > 5 else "")
        problems.append(f"{len(gaps)} of {windows} windows of {_human(rule.every)} in the last {_human(rule.keep)} "
                        f"have no snapshot: {shown}")
    longest = max(r.keep for r in policy.rules if r.snapshot_type in (rule.snapshot_type, None))
    expired = [s for s in mine if now - s["created"] > longest]
    if expired:
        problems.append(f"{len(expired)} snapshot(s) outlive their retention of {_human(longest)}: "
                        f"{', '.join(s['id'] for s in expired[:5])}")
    return problems


def list_snapshots(instance: str, rds: Any = None) -> list[dict[str, Any]]:
    """Available snapshots of the instance — automated, manual and AWS Backup's (listed only when asked for by
    type) — as plain data."""
    from restore.backups.snapshots import available_snapshots

    if rds is None:
        import boto3

        rds = boto3.client("rds")
    return [{"id": s["DBSnapshotIdentifier"], "type": s.get("SnapshotType", "manual"),
             "created": s["SnapshotCreateTime"]} for s in available_snapshots(rds, instance)]


def pitr_window(instance: str, rds: Any = None) -> dict[str, str | None]:
    if rds is None:
        import boto3

        rds = boto3.client("rds")
    found = rds.describe_db_instances(DBInstanceIdentifier=instance)["DBInstances"][0]
    latest = found.get("LatestRestorableTime")
    return {"latest_restorable": latest.isoformat() if latest else None,
            "backup_retention_days": str(found.get("BackupRetentionPeriod"))}
