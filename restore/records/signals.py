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

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway, write_to_textfile
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
    success = _timestamp(result.get("finished_at")) if result["outcome"] == "passed" else _previous_success(path,
                                                                                                            labels)
    registry = registry_of(result, labels, success)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)  # writes PATH.tmp.<pid> and renames it


PUSH_JOB = "restore-verify"


def push_metrics(result: dict[str, Any], url: str, *, fleet: str | None = None) -> str | None:
    """The same metrics pushed to a Pushgateway, grouped by job and database; returns the error in words, or None.

    POST (``pushadd``), not PUT: a run that did not pass leaves out the last-success metric, and the Pushgateway
    keeps the value a passed run pushed before (PUT would drop it, and the alert would read "never tested")."""
    labels = labels_of(result, fleet=fleet)
    success = _timestamp(result.get("finished_at")) if result["outcome"] == "passed" else None
    registry = registry_of(result, labels, success)
    try:
        pushadd_to_gateway(url, job=PUSH_JOB, registry=registry, grouping_key={"database": labels["database"]},
                           timeout=HEARTBEAT_TIMEOUT_S)
        return None
    except Exception as exc:  # refused, a timeout, an HTTP error: said, never raised
        return (f"the push to the Pushgateway at {host_of(url)} failed: "
                f"{type(exc).__name__}: {str(exc)[:200]}")


def registry_of(result: dict[str, Any], labels: dict[str, str], success: float | None) -> CollectorRegistry:
    """The run's metrics; ``success`` is the last complete passed run's time (None: never, or not known here)."""
    names = list(labels)
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, [*names, *extra], registry=registry)

    finished = _timestamp(result.get("finished_at"))
    gauge("restore_verify_last_run_timestamp_seconds", "When the last run finished").labels(**labels).set(finished)
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
    objectives = result.get("objectives") or {}
    for name, key in (("restore_verify_rto_objective_seconds", "rto_s"), ("restore_verify_rpo_objective_seconds",
                                                                           "rpo_s")):
        if objectives.get(key) is not None:
            gauge(name, f"The run's {key[:3].upper()} objective (--{key[:3]})").labels(**labels).set(
                float(objectives[key]))
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
    return registry


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
        return f"the heartbeat to {host_of(target)} failed: {type(exc).__name__}"


def host_of(url: str) -> str:
    """host[:port] of a URL, never its user, password, path or query (they may hold a token)."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return "its URL"
    return parts.hostname + (f":{parts.port}" if parts.port else "")


def write_record_metrics(rows: list[Any], path: Path, *, within_days: float, fleet: str = "") -> None:
    """The record's view (``python -m restore record --metrics``): one series per database the record or the fleet
    knows, so that a database never tested is a series with no last success, not a missing one."""
    from datetime import UTC, datetime

    registry = CollectorRegistry()
    names = ["database", "fleet"]
    known = Gauge("restore_verify_record_database", "A database of the fleet (or of the record): always 1", names,
                  registry=registry)
    success = Gauge("restore_verify_record_last_success_timestamp_seconds",
                    "Its last complete, passed backup test (absent: never)", names, registry=registry)
    last_run = Gauge("restore_verify_record_last_run_timestamp_seconds", "Its last run of any outcome (absent: never)",
                     names, registry=registry)
    overdue = Gauge("restore_verify_record_overdue", "1 when it has no complete passing test within the window",
                    names, registry=registry)
    for row in rows:
        labels = {"database": row.name, "fleet": fleet}
        known.labels(**labels).set(1)
        overdue.labels(**labels).set(1 if row.overdue else 0)
        if row.last_passed:
            success.labels(**labels).set(datetime.fromisoformat(row.last_passed).timestamp())
        if row.last_run:
            last_run.labels(**labels).set(datetime.fromisoformat(row.last_run).timestamp())
    Gauge("restore_verify_record_window_seconds", "The overdue window (--within-days)", ["fleet"],
          registry=registry).labels(fleet=fleet).set(within_days * 86400)
    Gauge("restore_verify_record_exported_timestamp_seconds", "When this view was written", ["fleet"],
          registry=registry).labels(fleet=fleet).set(datetime.now(UTC).timestamp())
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
