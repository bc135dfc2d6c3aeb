"""Where a finding comes from: already in the backup, introduced by the restore, or unknown.

A DBA's first question on a red item. With the backup's manifest the suite can answer for most data and schema
findings: rows whose table hashes to the backup's checksum are the backed-up rows, so an orphan or a duplicate
among them was already there; an object the manifest records and the restore lacks was lost by the restore; a
constraint the manifest records as NOT VALID was so in the source. Without a manifest (or for what it does not
record) the answer is "unknown" — said, never guessed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from restore.compare.manifest import Manifest, sequence_bounds

Origin = Literal["backup", "restore", "unknown"]

EXPLAINED: dict[str, str] = {
    "backup": ("already in the backup: the source held this when the backup was taken (the backup's manifest shows "
               "it), so the restore is faithful — fix the source"),
    "restore": ("introduced by the restore: this differs from the backup's manifest, so the restore (or the backup "
                "file) is at fault"),
    "unknown": ("origin unknown: no manifest records the backed-up state of this, so whether the backup or the "
                "restore caused it cannot be told (python -m restore backup writes one with each dump)"),
}


def content_origin(source: Manifest | None, restored: Manifest | None, tables: Iterable[str]) -> Origin:
    """For a finding about rows: "backup" when every table involved holds exactly the backed-up rows."""
    if source is None or restored is None:
        return "unknown"
    for table in tables:
        src, dst = source["tables"].get(table), (restored["tables"].get(table) or {})
        if src is None or src.get("checksum") is None or dst.get("checksum") is None:
            return "unknown"
        if src["checksum"] != dst["checksum"] or src.get("row_count") != dst.get("row_count"):
            return "restore"
    return "backup"


def object_origin(source: Manifest | None, *, recorded: bool) -> Origin:
    """For an object that is missing or changed: the manifest recording it means the restore lost or changed it."""
    if source is None:
        return "unknown"
    return "restore" if recorded else "unknown"


def sequence_origin(source: Manifest | None, restored: Manifest | None, sequence: str,
                    table: str) -> Origin:
    """A sequence behind its column: inherited when both the sequence and the table are as backed up."""
    if source is None or restored is None:
        return "unknown"
    src, dst = source["sequences"].get(sequence), restored["sequences"].get(sequence)
    if src is None or dst is None:
        return "unknown"
    low, high = sequence_bounds(src)
    value = dst.get("last_value")
    if low is None or high is None:  # never called in the backup: the same only if never called since
        same_sequence = value is None
    else:
        same_sequence = value is not None and low <= value <= high
    if not same_sequence:
        return "restore"
    return content_origin(source, restored, [table])


def constraint_origin(source: Manifest | None, table: str, name: str) -> tuple[Origin, bool | None]:
    """(origin, whether the manifest records it NOT VALID) for a NOT VALID constraint in the restore."""
    if source is None or table not in source["tables"]:
        return "unknown", None
    recorded = source["tables"][table]["constraints"].get(name)
    if recorded is None:
        return "restore", None  # the backup did not have it at all
    not_valid = "NOT VALID" in str(recorded.get("definition", ""))
    return ("backup" if not_valid else "restore"), not_valid
