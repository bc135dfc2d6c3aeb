"""What a scheduled run tells the outside world: Prometheus metrics (a node_exporter textfile) and a heartbeat.

The monthly backup test runs unattended; its silence must read as an alarm, not as health. A run writes metrics
with ``prometheus_client`` (``--metrics=FILE``: the textfile collector's format, written atomically) — among them the
time of the last *successful* run, which only a complete passed run moves (a failed run carries the previous value
over from the file), so that ``time() - restore_verify_last_success_timestamp_seconds > 2 × cadence`` is the alert —
and calls a heartbeat URL in the healthchecks.io convention (``--heartbeat=URL``: ``URL/start`` when the run starts,
``URL`` on a passed run, ``URL/fail`` otherwise, with the verdict line as the body). Neither ever changes the verdict:
a failure to write or to call is said in result.json and the report.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

OUTCOMES = ("passed", "failed", "partial", "interrupted", "error")
ITEM_STATES = ("passed", "failed", "incomplete", "skipped")
LAST_SUCCESS = "restore_verify_last_success_timestamp_seconds"
HEARTBEAT_TIMEOUT_S = 10.0


def _previous_success(path: Path, labels: dict[str, str]) -> float | None:
    """The last success of the same series in the file a previous run wrote (None: none, or unreadable)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
    except ValueError:
        return None
    return None


def labels_of(result: dict[str, Any], *, fleet: str | None = None) -> dict[str, str]:
    """The run's identity as Prometheus labels: the database (its --label, else target/database), the target, the
    kind of backup and the fleet."""
    target = result["target"]
    database = result.get("label") or f"{target['name']}/{target.get('database') or 'unknown'}"
    return {"database": str(database), "target": str(target["name"]),
            "backup_kind": str((result.get("backup") or {}).get("format") or "none"), "fleet": fleet or ""}


def write_metrics(result: dict[str, Any], path: Path, *, fleet: str | None = None) -> None:
    """The run's metrics as a textfile, written to a temporary file and renamed (a scrape never reads half)."""
    labels = labels_of(result, fleet=fleet)
    names = list(labels)
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, [*names, *extra], registry=registry)

    finished = _timestamp(result.get("finished_at"))
    gauge("restore_verify_last_run_timestamp_seconds", "When the last run finished").labels(**labels).set(finished)
    success = finished if result["outcome"] == "passed" else _previous_success(path, labels)
    if success is not None:
        gauge(LAST_SUCCESS, "When the last complete, passed backup test finished").labels(**labels).set(success)
    outcome = gauge("restore_verify_outcome", "The last run's outcome (1 for the state it is in)", ("outcome",))
    for state in OUTCOMES:
        outcome.labels(**labels, outcome=state).set(1 if result["outcome"] == state else 0)
    item = gauge("restore_verify_item_state", "Each checklist item's state in the last run", ("item", "state"))
    for cid, status in result["checklist"].items():
        for state in ITEM_STATES:
            item.labels(**labels, item=cid, state=state).set(1 if status == state else 0)
    phases = gauge("restore_verify_phase_duration_seconds", "How long each phase of the last run took", ("phase",))
    restore = result["restore"]
    fetch = float((restore.get("phases_s") or {}).get("fetch") or 0.0)
    restore_s = float(restore.get("duration_s") or 0.0)
    total = finished - _timestamp(result.get("started_at")) if result.get("started_at") else restore_s
    for phase, seconds in (("fetch", fetch), ("restore", restore_s), ("verification", max(0.0, total - restore_s))):
        phases.labels(**labels, phase=phase).set(seconds)
    if restore.get("performed") and restore.get("duration_s") is not None:
        gauge("restore_verify_rto_seconds", "Measured restore time (fetch + restore + ready)").labels(
            **labels).set(restore_s)
    rpo = (result.get("measurements") or {}).get("data_age_at_backup_s")
    if rpo is not None:
        gauge("restore_verify_rpo_seconds", "Age of the newest data at backup time").labels(**labels).set(float(rpo))
    size = (result.get("backup") or {}).get("size_bytes")
    if size is not None:
        gauge("restore_verify_backup_size_bytes", "Size of the backup verified").labels(**labels).set(float(size))
    findings = gauge("restore_verify_findings", "Failed checks of the last run, by where the fault came from",
                     ("origin",))
    for origin in ("backup", "restore", "unknown"):
        findings.labels(**labels, origin=origin).set(
            sum(1 for f in result["failures"] if (f.get("origin") or "unknown") == origin))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)  # writes PATH.tmp.<pid> and renames it


def _timestamp(iso: str | None) -> float:
    from datetime import UTC, datetime

    return (datetime.fromisoformat(iso) if iso else datetime.now(UTC)).timestamp()


def heartbeat(url: str, suffix: str = "", *, body: str = "") -> str | None:
    """One call of the healthchecks.io convention (``URL/start``, ``URL``, ``URL/fail``); returns the error in words,
    or None. Never raises: a heartbeat that cannot be sent must not change the verdict."""
    target = url.rstrip("/") + (f"/{suffix}" if suffix else "")
    request = urllib.request.Request(target, data=body.encode() if body else b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=HEARTBEAT_TIMEOUT_S) as answer:  # noqa: S310 - the user's URL
            answer.read()
        return None
    except Exception as exc:  # URLError, a timeout, an HTTP error: said, never raised
        # The host only: a heartbeat URL's path is often its secret (a check's token).
        return f"the heartbeat to {urllib.parse.urlsplit(target).netloc or 'its URL'} failed: {type(exc).__name__}"
