"""The monthly backup-test record: one JSON line per run, rendered as an auditor-friendly history.

``append`` adds a run (derived from its ``result.json``) to a JSONL history; ``load`` reads it back, saying which
lines it left out. The pages (``record.html``, ``record.md``) are rendered by reports/pages.py; months without a
complete run are shown as missing there: a skipped monthly test is itself a finding.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from restore.records import evidence

FIELDS_VERSION = 1


def operator_name(explicit: str | None) -> str:
    return explicit or os.environ.get("RESTORE_VERIFY_OPERATOR") or os.environ.get("USER") or os.environ.get(
        "LOGNAME") or "unknown"


def _age_s(later: str | None, earlier: str | None) -> float | None:
    if not later or not earlier:
        return None
    return round((datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds(), 1)


def record_line(result: dict[str, Any], *, operator: str, rto_s: float, rpo_s: float,
                ticket: str | None = None) -> dict[str, Any]:
    """One history line from a run's result.json (plain data; no connection strings, no secrets)."""
    measurements = result.get("measurements", {})
    counts: dict[str, int] = result.get("row_counts", {})
    backup = result["backup"]
    return {
        "record_version": FIELDS_VERSION,
        "date": result["finished_at"],
        "run_id": result.get("run_id"),
        "label": result.get("label"),
        "target": {"name": result["target"]["name"], "kind": result["target"]["kind"],
                   "database": result["target"].get("database"),
                   "server_version": result["target"].get("server_version")},
        "backup": {"spec": backup.get("spec"), "id": Path(backup["spec"]).name if backup.get("spec") else None,
                   "format": backup.get("format"), "created_at": backup.get("created_at"),
                   "age_s": _age_s(result["finished_at"], backup.get("created_at"))},
        "restore": {"performed": result["restore"].get("performed"), "duration_s": result["restore"]["duration_s"],
                    "errors": len(result["restore"]["errors"]),
                    "accepted_errors": len(result["restore"]["accepted_errors"])},
        "rto": {"target_s": rto_s, "measured_s": result["restore"]["duration_s"],
                "status": result["checklist"].get("rto")},
        "rpo": {"target_s": rpo_s, "measured_s": measurements.get("data_age_at_backup_s"),
                "status": result["checklist"].get("rpo")},
        "checklist": result["checklist"],
        "tests": result["tests"],
        "failures": [{"checklist": f["checklist"], "message": f["message"][:300], "origin": f.get("origin", "unknown")}
                     for f in result["failures"]],
        # Is the backup bad, or did the restore break it? Counted per origin (see restore/compare/origin.py).
        "failure_origins": {o: sum(1 for f in result["failures"] if f.get("origin", "unknown") == o)
                            for o in ("backup", "restore", "unknown")},
        "accepted_findings": len(result.get("accepted_findings", [])),
        "counts": counts,
        "total_rows": sum(counts.values()) if counts else None,
        # passed | failed | interrupted | partial; result.json files older than the field: as they were judged
        "outcome": result.get("outcome") or ("failed" if result["tests"]["failed"] else "passed"),
        "depth": result.get("depth"),
        "suite_version": result.get("suite_version"),
        "operator": operator,
        "run_dir": result.get("run_dir"),
        # For auditors: how the restore was isolated, which configuration judged it, the follow-up of a failure,
        # and the digests of the files that hold the evidence (checked by python -m restore record --verify).
        "isolation": (evidence.KEPT if result["target"].get("kept") else
                      evidence.ISOLATION.get(result["target"]["kind"], result["target"]["kind"])),
        "config_sha256": result.get("config_sha256"),
        "ticket": ticket,
        "evidence": {"result_sha256": _digest(result, "result.json"), "report_sha256": _digest(result, "report.html")},
    }


def _digest(result: dict[str, Any], name: str) -> str | None:
    return evidence.sha256_file(Path(result["run_dir"]) / name) if result.get("run_dir") else None


def _s3_get(bucket: str, key: str) -> tuple[str, str | None]:
    """The object's text and ETag; ("", None) when it does not exist yet."""
    import boto3
    from botocore.exceptions import ClientError

    try:
        obj = boto3.client("s3").get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return "", None
        raise
    return str(obj["Body"].read().decode()), str(obj["ETag"])


S3_ATTEMPTS = 20


def append(path: Path | str, line: dict[str, Any], *, on_read: Callable[[], None] | None = None,
           signer: evidence.Signer | None = None) -> None:
    """Append one run. A file is appended under an exclusive lock (two runs never interleave a line). An
    ``s3://bucket/key`` object is read and written back with a conditional write (If-Match on the ETag read, or
    If-None-Match for a new object), retried when another writer got there first, so no line is ever lost.
    ``on_read`` runs between reading and writing (the self-tests put a second writer there). Each line is sealed
    into the hash chain (and signed with ``signer``) against the line it follows (see restore/records/evidence.py)."""
    if isinstance(path, str) and path.startswith("s3://"):
        import boto3
        from botocore.exceptions import ClientError

        bucket, _, key = path.removeprefix("s3://").partition("/")
        client = boto3.client("s3")
        for attempt in range(S3_ATTEMPTS):
            current, etag = _s3_get(bucket, key)
            if on_read is not None:
                on_read()
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            text = evidence.seal(current, line, signer) + "\n"
            if current and not current.endswith("\n"):
                current += "\n"
            try:
                client.put_object(Bucket=bucket, Key=key, Body=(current + text).encode(), **condition)
                return
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "412",
                                                                     "ConditionalRequestConflict"):
                    raise
                time.sleep(min(2.0, 0.05 * 2 ** attempt))  # another writer won: read its line, try again
        raise RuntimeError(f"Could not append to the record {path}: {S3_ATTEMPTS} conditional writes in a row "
                           "lost to other writers. Run again; nothing was overwritten.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes
        fh.seek(0)
        current = fh.read()  # the line it follows, read under the same lock the write holds
        prefix = "\n" if current and not current.endswith("\n") else ""  # after a truncated write
        fh.write(prefix + evidence.seal(current, line, signer) + "\n")
        fh.flush()


def annotate(path: Path | str, run_id: str, *, remediation: str, operator: str,
             signer: evidence.Signer | None = None) -> None:
    """A follow-up to an earlier run (a failed test's remediation), chained like any run."""
    append(path, {"type": "annotation", "date": datetime.now(UTC).isoformat(timespec="seconds"), "run_id": run_id,
                  "remediation": remediation, "operator": operator}, signer=signer)


def raw_text(path: Path | str) -> str:
    """The record exactly as stored (what the hash chain covers)."""
    if isinstance(path, str) and path.startswith("s3://"):
        bucket, _, key = path.removeprefix("s3://").partition("/")
        return _s3_get(bucket, key)[0]
    path = Path(path)
    return path.read_text() if path.exists() else ""


def load(path: Path | str, *, problems: list[str] | None = None) -> list[dict[str, Any]]:
    """The record's runs. A line that is not a complete run (a truncated write, a hand edit) is left out and
    named in ``problems`` — one bad line never costs the rest of the history."""
    text = raw_text(path)
    runs = []
    annotations: list[dict[str, Any]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            run = json.loads(raw)
            if isinstance(run, dict) and run.get("type") == "annotation":
                annotations.append(run)
                continue
            if not isinstance(run, dict) or not {"date", "target", "checklist", "outcome"} <= set(run):
                raise ValueError("not a run")
        except ValueError as exc:
            if problems is not None:
                problems.append(f"record {path} line {number} is not a complete run ({exc}: "
                                f"{raw[:60]!r}…): left out")
            continue
        runs.append(run)
    by_id = {r.get("run_id"): r for r in runs}
    for note in annotations:  # a remediation belongs with the run it follows up
        if note.get("run_id") in by_id:
            by_id[note["run_id"]].setdefault("annotations", []).append(note)
    return runs


def previous_counts(history: list[dict[str, Any]], target: str, database: str | None) -> dict[str, int] | None:
    """The table counts of the newest earlier run of the same target and database that recorded any."""
    for line in reversed(history):
        if line["target"]["name"] == target and line["target"].get("database") == database and line.get("counts"):
            return dict(line["counts"])
    return None


# --- months -------------------------------------------------------------------------------------------------

COMPLETE = ("passed", "failed")  # outcomes of a complete run; partial and interrupted runs prove nothing


def month_of(date: str) -> str:
    return date[:7]


def months_between(first: str, last: str) -> list[str]:
    year, month = int(first[:4]), int(first[5:7])
    end = (int(last[:4]), int(last[5:7]))
    months = []
    while (year, month) <= end:
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months
