"""Collects every check's outcome by checklist id and writes the run folder.

Only the controller writes (xdist workers send their reports to it): ``report.html`` (pytest-html,
self-contained), ``junit.xml``, ``result.json`` and the record line, in ``<reports-dir>/<run folder>/``.
The suite's adapter (fixtures/session.py) calls :func:`install` with the run's state; this module knows the
library (restore/) and nothing of the fixtures.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import subprocess
import textwrap
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import restore
from reports import pages
from reports.checklist import (
    BATCH,
    CHECKLIST,
    EXIT_CODES,
    VERIFIER_FAULT,
    RunOutcome,
    checklist_id_of,
    is_not_applicable,
    item_status,
    plain_failure,
)
from restore.backups.outcome import PreparedDatabase
from restore.errors import server_crash
from restore.records import evidence, record, signals
from restore.run import RunState
from restore.session import refused
from restore.untrusted import visible


@dataclass
class TestResult:
    nodeid: str
    checklist: str | None
    outcome: str = "passed"
    message: str = ""
    duration_s: float = 0.0
    verified_by: str | None = None
    compared: str | None = None  # which comparison applied and why (schema_matches: pg_dump's inventory)
    proof: str | None = None  # which proof was used, where a check has more than one (duplicate_primary_keys)
    not_applicable: bool = False  # skipped with nothing to check: not a gap in its item's proof
    origin: str | None = None  # of a finding: "backup" | "restore" | "unknown" (see restore/compare/origin.py)
    accepted: str | None = None  # an inherited finding accepted by --accept-inherited
    note: str | None = None  # a difference that does not fail its item (layout only), said under it
    fault: str | None = None  # the verifier's own world stopped it (fixtures/outcomes.py): the run is an error
    finished: bool = False  # its teardown ran: the test did not stop half-way (an interrupted run)
    batch: str | None = None  # the test that verified this object with others (fixtures/batches.py)


@dataclass
class Collected:
    results: dict[str, TestResult] = field(default_factory=dict)
    workers: set[str] = field(default_factory=set)
    row_counts: dict[str, int] = field(default_factory=dict)
    measurements: dict[str, float] = field(default_factory=dict)
    result_json: dict[str, Any] | None = None
    collected: list[str] | None = None  # every test id this run selected (xdist: as the workers collected it)
    deselected: int = 0
    collection_errors: int = 0
    batches: set[str] = field(default_factory=set)  # batch tests whose objects are counted one by one


def install(config: pytest.Config, state: RunState) -> None:
    """On the controller (or a run without xdist), before junitxml and pytest-html configure themselves: the run
    folder's report files, and the plugins that collect the outcomes and write them."""
    collected = Collected()
    # Each finding is said once in the terminal: by the checklist printed last (and pytest's one-line short
    # summary of test ids). pytest's FAILURES section would repeat every message; --tb=… on the command line
    # still shows it. junit.xml and report.html keep every report whole.
    if config.option.tbstyle == "auto":
        config.option.tbstyle = "no"
    config.pluginmanager.register(_Collector(collected), "restore_verify_collector")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistCollection(collected), "restore_verify_xdist_ids")
    # Defaults for the built-in junitxml and pytest-html; an explicit --junitxml / --html still wins.
    if not getattr(config.option, "xmlpath", None):
        config.option.xmlpath = str(state.facts.run_dir / "junit.xml")
    if hasattr(config.option, "htmlpath") and not config.option.htmlpath:
        config.option.htmlpath = str(state.facts.run_dir / "report.html")
        config.option.self_contained_html = True
    config.pluginmanager.register(_RunReport(state, collected), "restore_verify_report")
    if config.pluginmanager.hasplugin("html"):
        config.pluginmanager.register(_HtmlReport(state, collected), "restore_verify_html")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker("checklist")
        if marker is not None:
            item.user_properties.append(("checklist", marker.args[0]))


def _checklist_of(report: pytest.TestReport) -> str | None:
    return next((str(v) for k, v in report.user_properties if k == "checklist"), None)


def _message(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return plain_failure(str(crash.message))
    return str(report.longrepr or "")


class _Collector:
    """Records each test's final outcome on the controller (xdist forwards worker reports to it)."""

    def __init__(self, collected: Collected) -> None:
        self.collected = collected

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        results = self.collected.results
        node = getattr(report, "node", None)  # set by xdist on reports a worker sent to the controller
        if node is not None:
            self.collected.workers.add(str(node.workerinput["workerid"]))
        batch = getattr(report, BATCH, None)  # a batch test's call report (fixtures/batches.py)
        if batch is not None or report.nodeid in self.collected.batches:
            self._batch(report, batch)
            return
        result = results.setdefault(report.nodeid, TestResult(
            report.nodeid, _checklist_of(report) or checklist_id_of(report.nodeid),
            batch=getattr(report, "batch_nodeid", None)))
        if report.when == "teardown":
            result.finished = True
        if report.failed:
            result.outcome = "failed"
            where = "" if report.when == "call" else f"error in {report.when}: "
            result.message = where + _message(report)
        elif report.skipped and result.outcome != "failed":
            result.outcome = "skipped"
            result.message = _message(report)
            result.not_applicable = is_not_applicable(report)
            result.fault = next((visible(str(v)) for k, v in report.user_properties if k == VERIFIER_FAULT), None)
            result.finished = result.finished or (result.fault is not None and report.when not in ("setup", "call"))
        if report.when == "call":
            self._properties(result, report.user_properties, report.duration)

    def _properties(self, result: TestResult, user_properties: list[Any], duration: float) -> None:
        props = dict(user_properties)
        if "origin" in props:
            result.origin = str(props["origin"])
        if "accepted" in props:
            result.accepted = f"{props['accepted']}: {props.get('offending') or ''}".rstrip(": ")
        if "rows" in props and "::test_row_count[" in result.nodeid:
            self.collected.row_counts[result.nodeid.rsplit("[", 1)[1].rstrip("]")] = int(str(props["rows"]))
        for key in ("data_age_at_backup_s", "restore_duration_s"):
            if key in props:
                self.collected.measurements[key] = float(str(props[key]))
        result.duration_s = round(duration, 3)
        result.verified_by = str(props["verified_by"]) if "verified_by" in props else None
        result.compared = str(props["compared"]) if "compared" in props else None
        result.proof = str(props["proof"]) if "proof" in props else None
        result.note = visible(str(props["note"])) if "note" in props else None  # it names database objects

    def _batch(self, report: pytest.TestReport, batch: dict[str, Any] | None) -> None:
        """A batch test that verified its objects: they count one by one (those that failed or skipped arrived
        as reports of their own); the batch itself is not a test of the checklist."""
        results = self.collected.results
        if report.when == "call" and batch is not None:
            self.collected.batches.add(report.nodeid)
            results.pop(report.nodeid, None)  # its setup report
            checklist = _checklist_of(report) or checklist_id_of(report.nodeid)
            for nodeid, props, duration in batch["passed"]:
                result = results[nodeid] = TestResult(nodeid, checklist, finished=True, batch=report.nodeid)
                self._properties(result, props, float(duration))
        elif report.failed:  # its teardown failed after its objects were verified
            results[report.nodeid] = TestResult(report.nodeid, _checklist_of(report), "failed",
                                                f"error in {report.when}: {_message(report)}", finished=True)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collected.collection_errors += 1
            self.collected.results[report.nodeid] = TestResult(report.nodeid, checklist_id_of(report.nodeid),
                                                               "failed", str(report.longrepr), finished=True)

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.collected.deselected += len(items)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if session.items or self.collected.collected is None:  # the xdist controller collects nothing itself
            self.collected.collected = [item.nodeid for item in session.items] or self.collected.collected


class _XdistCollection:
    """Registered only with xdist: the controller learns the selected tests from the workers' collection."""

    def __init__(self, collected: Collected) -> None:
        self.collected = collected

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        if not self.collected.collected:
            self.collected.collected = list(ids)

    def pytest_handlecrashitem(self, crashitem: str, report: pytest.TestReport, sched: Any) -> None:
        """A worker that died under a test (SIGKILL from the OOM killer or an operator, a crash of the Python
        process) says nothing about the backup: the test did not run, and the run is an error naming it. xdist
        replaces the worker and the other tests go on; the lost one is not rerun (it may kill the next one too)."""
        words = (f"the pytest-xdist worker running it died ({report.longrepr}): killed (the OOM killer, see dmesg, "
                 "or an operator) or crashed; run again, with fewer workers (-n) if memory is short")
        report.outcome = "skipped"
        report.longrepr = (crashitem.split("::")[0], 0, f"not run: {words}")
        report.user_properties.append((VERIFIER_FAULT, words))


@functools.cache
def _suite_version() -> str:
    """The package version and the git commit (asked once: the report and result.json both show it)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{restore.__version__}+{commit}" if commit else restore.__version__


def _config_digest(state: RunState) -> str:
    """SHA-256 over what judged this run: the expectation files, the targets file, the manifest (names and bytes)."""
    cfg = state.config
    files = sorted(p for p in cfg.expectations.rglob("*") if p.is_file()) if cfg.expectations.is_dir() else []
    files += [p for p in (cfg.targets_file, cfg.manifest) if p is not None and p.is_file()]
    if state.facts.source_manifest_path:
        files.append(state.facts.source_manifest_path)
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.name).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def narrowed_by(config: pytest.Config) -> str | None:
    """How this run's selection was narrowed below the whole checklist, or None when it was not."""
    option = config.option
    if getattr(option, "keyword", ""):
        return f"-k {option.keyword!r}"
    if getattr(option, "markexpr", ""):
        return f"-m {option.markexpr!r}"
    if getattr(option, "deselect", None):
        return f"--deselect {' '.join(option.deselect)}"
    checks_dir = (config.rootpath / "checks").resolve()
    for arg in config.args:
        path = (config.invocation_params.dir / arg.split("::", 1)[0]).resolve()
        if "::" in arg or checks_dir in path.parents:
            return f"only {arg}"
    return None


def _item_verdicts(by_item: dict[str, list[TestResult]], never_ran: dict[str, int], *, interrupted: bool,
                   narrowed: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """Each item's state and one-line reason: passed only when every proof it has ran and found nothing."""
    checklist: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for cid, results in by_item.items():
        unfinished = [r for r in results if not r.finished]
        not_run = never_ran.get(cid, 0)
        gaps = [r for r in results if r.outcome == "skipped" and not r.not_applicable]
        status = item_status([r.outcome for r in results if r.finished],
                             len(gaps) + len(unfinished) + not_run)
        checklist[cid] = status
        if not results:
            reasons[cid] = (f"not run: this run selected none of its tests ({narrowed})" if narrowed else
                            "not run: the run ended before any of its tests ran" if interrupted else
                            "not run: no test of this item was collected")
        elif status == "failed":
            reasons[cid] = next(r.message for r in results if r.outcome == "failed")
        elif status == "skipped":
            reasons[cid] = next((r.message for r in results if r.outcome == "skipped" and not r.not_applicable),
                                results[0].message)
        elif status == "passed":
            compared = next((r.compared for r in results if r.compared), None)
            proofs = [r for r in results if r.proof]
            notes = [r for r in results if r.note]
            if notes:  # said first: what a DBA must read of a passed item (see "notes" in result.json)
                reasons[cid] = f"passed with {len(notes)} note(s): {notes[0].note}" + (f"; {compared}" if compared
                                                                                         else "")
            elif compared:
                reasons[cid] = compared
            elif proofs and cid == "duplicate_primary_keys":
                reasons[cid] = (f"{len(proofs)} of {len(results)} proven by one amcheck pass over their unique index "
                                "(heapallindexed and checkunique, shared with no_corruption); the others scanned")
            elif proofs:  # what this depth proved of some of its objects, said in its own words
                reasons[cid] = f"{len(proofs)} of {len(results)} proven by {proofs[0].proof}"
        elif status == "incomplete":
            total = len(results) + not_run
            missing = len(gaps) + len(unfinished) + not_run
            why = (gaps[0].message if gaps else "the run was interrupted before they finished")
            reasons[cid] = f"{missing} of {total} proof(s) did not run: {why.removeprefix('not run: ')}"
    return checklist, reasons


def _signal(state: RunState, result: dict[str, Any]) -> None:
    """The heartbeat's end and the metrics file (--heartbeat, --metrics), said in result.json; never the verdict."""
    cfg = state.config
    if cfg.heartbeat:
        verdict = f"backup test {result['outcome'].upper()}: {result['outcome_reason']}"
        failed = signals.heartbeat(cfg.heartbeat, "" if result["outcome"] == "passed" else "fail", body=verdict)
        result["heartbeat"] = {"calls": ["start", "success" if result["outcome"] == "passed" else "fail"],
                               "errors": [*state.facts.heartbeat_errors, *([failed] if failed else [])]}
    if cfg.metrics is not None:
        try:
            signals.write_metrics(result, cfg.metrics)
            result["metrics"] = {"file": str(cfg.metrics), "error": None}
        except Exception as exc:  # a full disk, a directory not writable: said, never the verdict
            result["metrics"] = {"file": str(cfg.metrics), "error": f"{type(exc).__name__}: {exc}"}
    if cfg.pushgateway:
        labels = signals.labels_of(result)
        result["pushgateway"] = {"host": signals.host_of(cfg.pushgateway), "job": signals.PUSH_JOB,
                                 "grouping": {"database": labels["database"]},
                                 "error": signals.push_metrics(result, cfg.pushgateway)}


def _counted(checklist: dict[str, str], *, failed: bool) -> str:
    """What ran, said with numbers: "13 of 17 items ran, none failed; 4 skipped: rpo, …" (a skipped item is not a
    passed one, whatever the run's verdict)."""
    ran = [cid for cid, status in checklist.items() if status in ("passed", "failed", "incomplete")]
    skipped = [cid for cid, status in checklist.items() if status == "skipped"]
    broken = [cid for cid, status in checklist.items() if status == "failed"]
    said = (f"{len(broken)} of {len(checklist)} items failed: {', '.join(broken)}; {len(ran)} ran" if failed and broken
            else "a check failed" if failed else f"{len(ran)} of {len(checklist)} items ran, none failed")
    return said + (f"; {len(skipped)} skipped: {', '.join(skipped)}" if skipped else "")


def run_outcome(*, interrupted: bool, failed: bool, narrowed: str | None, unfinished: int) -> RunOutcome:
    """passed only when the whole checklist was selected, every selected test finished and none failed."""
    if interrupted:
        return "interrupted"
    if failed:
        return "failed"
    if narrowed or unfinished:
        return "partial"
    return "passed"


def _placeholder(state: RunState) -> PreparedDatabase:
    """What result.json says of a run that stopped before its database was prepared (interrupted)."""
    return refused(state.config.target, "the run was interrupted before the restore finished",
                   log_path=state.facts.run_dir / "restore.log", write_log=False)


def build_result(state: RunState, collected: Collected, exitstatus: int, *,
                 narrowed: str | None = None) -> dict[str, Any]:
    prepared, facts = state.prepared or _placeholder(state), state.facts
    outcome, archive = prepared.restore, prepared.archive
    by_item: dict[str, list[TestResult]] = {cid: [] for cid in CHECKLIST}
    for result in collected.results.values():
        if result.checklist in by_item:
            by_item[result.checklist].append(result)
    # Selected tests that never reported (an interrupted run): a batch counts as one, having none of its objects.
    started = set(collected.results) | collected.batches | {r.batch for r in collected.results.values() if r.batch}
    selected: dict[str, int] = {}
    never_ran: dict[str, int] = {}
    for nodeid in collected.collected or []:
        cid = checklist_id_of(nodeid)
        if cid:
            selected[cid] = selected.get(cid, 0) + 1
            never_ran[cid] = never_ran.get(cid, 0) + (nodeid not in started)
    interrupted = int(exitstatus) == int(pytest.ExitCode.INTERRUPTED) or state.prepared is None
    checklist, reasons = _item_verdicts(by_item, never_ran, interrupted=interrupted, narrowed=narrowed)
    unfinished = sum(1 for r in collected.results.values() if not r.finished) + sum(never_ran.values())
    not_selected = [cid for cid, results in by_item.items() if not results and not selected.get(cid)]
    run_narrowed = narrowed or (f"no test of {', '.join(not_selected)} was selected" if not_selected else None)
    failed = any(r.outcome == "failed" for r in collected.results.values()) or collected.collection_errors > 0
    verdict = run_outcome(interrupted=interrupted, failed=failed, narrowed=run_narrowed, unfinished=unfinished)
    # The verifier's own fault (an unreachable target, no credentials, a full disk, an unforeseen error): no
    # evidence against the backup, so the run is an error, never a failed backup test.
    stopped = [r for r in collected.results.values() if r.fault]
    fault = (f"the database to verify could not be reached or logged into ({facts.unreachable}); fix the target or "
             "its credentials and run again" if facts.unreachable else
             (outcome.refused or "").splitlines()[0] if outcome.verifier_fault else
             f"{stopped[0].fault} ({len(stopped)} test(s) not run, first {stopped[0].nodeid.split('::')[-1]})"
             if stopped else None)
    # A backend of the run's own server that crashed on its own while the checks read (not killed): what the restored
    # data did to the server, evidence against the restore, whatever stopped the tests after it (or if none did).
    # Only what the server wrote after the restore ended, and only when it restored something: a crash during the
    # restore is the restore's own verdict (a full disk's PANIC, a SIGKILL: the verifier's world, said there).
    crash = None
    if prepared.server_log and Path(prepared.server_log).exists() and outcome.refused is None:
        with Path(prepared.server_log).open("rb") as server_log:
            server_log.seek(prepared.server_log_from)
            crash = server_crash(server_log.read().decode(errors="replace"))
        crash = visible(crash) if crash else None  # the query it ran names the database's objects
    if crash:
        fault, failed = None, True
        verdict = run_outcome(interrupted=interrupted, failed=True, narrowed=run_narrowed, unfinished=unfinished)
        checklist["no_corruption"] = "failed"
        reasons["no_corruption"] = (f"the server crashed while the checks read the restored data: {crash}. A "
                                    "crash on reading is the data's doing (corrupt pages or values) or a server bug: "
                                    "treat the restore as damaged until a second run says otherwise")
    if fault and verdict != "interrupted":
        verdict = "error"
    tests = {k: sum(1 for r in collected.results.values() if r.outcome == k) for k in ("passed", "failed", "skipped")}
    return {
        "outcome": verdict,
        "outcome_reason": {"interrupted": "the run was interrupted (Ctrl-C, SIGTERM, a CI timeout) before it "
                                          f"finished: {unfinished} test(s) did not finish",
                           "failed": (f"the restore failed, so nothing could be verified: "
                                      f"{prepared.restore.refused.splitlines()[0]}" if prepared.restore.refused
                                      else _counted(checklist, failed=True)),
                           "partial": f"not a complete backup test: {run_narrowed or 'some tests did not run'}",
                           "error": f"no backup was tested: {fault} (the verifier's own fault: recorded as an "
                                    "error, not as a failed backup test)",
                           "passed": _counted(checklist, failed=False)}[verdict],
        "started_at": facts.started_at,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": facts.run_id,
        "label": state.config.label,
        "run_dir": str(facts.run_dir),
        "suite_version": _suite_version(),
        "target": {"name": prepared.target_name, "kind": prepared.target_kind, "database": prepared.dbname,
                   "server_version": state.catalog.server_version or None, "display": prepared.target_display,
                   "kept": bool(prepared.kept)},
        "backup": {"spec": outcome.backup_spec or (state.config.source.spec if state.config.source else None),
                   "checksum": outcome.fetched_checksum, "rds": archive.rds if archive else None,
                   "format": archive.format if archive else None,
                   # a cnpg: source: what CloudNativePG says (cluster, Backup restored, findings; no secret)
                   "cnpg": archive.cnpg if archive else None,
                   "dumped_from": archive.dumped_from if archive else None,
                   "dumped_by": archive.dumped_by if archive else None,
                   "archive_version": archive.archive_version if archive else None,
                   "created_at": archive.created_at if archive else None,
                   "size_bytes": archive.size_bytes if archive else None,
                   # a recovered base backup: where it was recovered to, and how long the WAL replay took
                   "recovery": None if archive is None or archive.recovery_target is None else {
                       "target": archive.recovery_target, "seconds": archive.recovery_s,
                       "wal_segments": archive.wal_segments_replayed,
                       "end_proven": archive.recovery_end_proven, "end": archive.recovery_end,
                       "wal_mb_per_s": round(16 * (archive.wal_segments_replayed or 0)
                                             / max(archive.recovery_s or 0.001, 0.001), 1)}},
        "restore": {"duration_s": outcome.duration_s, "errors": outcome.errors,
                    "accepted_errors": outcome.accepted_errors, "performed": outcome.performed,
                    "refused": outcome.refused, "verifier_fault": outcome.verifier_fault,
                    "exit_code": outcome.exit_code,
                    "phases_s": outcome.phases_s, "jobs": outcome.jobs,
                    "jobs_used": outcome.jobs_used, "jobs_reason": outcome.jobs_reason,
                    "roles_created": outcome.roles_created, "globals_file": outcome.globals_file,
                    "pg_restore_version": outcome.pg_restore_version,
                    "pg_restore_where": outcome.pg_restore_where, "log": outcome.log_path,
                    "server_dir": outcome.server_dir, "server_placement": outcome.server_placement},
        "manifest": {"kind": facts.source_kind, "source": _str(facts.source_manifest_path),
                     "restored": _str(facts.restored_manifest_path), "error": facts.manifest_error},
        "checklist": checklist,
        "checklist_reasons": reasons,
        "tests": tests,
        "objectives": {"rto_s": state.config.rto_s, "rpo_s": state.config.rpo_s},
        # Checks verified many objects per test (fixtures/batches.py): "tests" above counts objects either way.
        "batching": {"batch_size": state.config.batch_size, "batch_tests": len(collected.batches),
                     "objects_in_batches": sum(1 for r in collected.results.values() if r.batch)},
        "failures": [{"nodeid": r.nodeid, "checklist": r.checklist, "message": r.message,
                      "origin": r.origin or "unknown"}
                     for r in collected.results.values() if r.outcome == "failed"]
        + ([{"nodeid": "(the server's log)", "checklist": "no_corruption", "message": reasons["no_corruption"],
             "origin": "restore"}] if crash else []),
        "accepted_findings": [{"nodeid": r.nodeid, "checklist": r.checklist, "reason": r.accepted}
                              for r in collected.results.values() if r.accepted],
        "skips": [{"nodeid": r.nodeid, "checklist": r.checklist, "reason": r.message}
                  for r in collected.results.values() if r.outcome == "skipped"],
        "slowest_checks": [{"nodeid": r.nodeid, "checklist": r.checklist, "duration_s": r.duration_s}
                           for r in sorted(collected.results.values(), key=lambda r: -r.duration_s)[:10]],
        "proven_by_restore": [{"nodeid": r.nodeid, "checklist": r.checklist, "reason": r.verified_by}
                              for r in collected.results.values() if r.verified_by],
        "proofs": [{"nodeid": r.nodeid, "checklist": r.checklist, "reason": r.proof}
                   for r in collected.results.values() if r.proof],
        # Differences that do not fail an item (layout only, docs/checks.md): said, never hidden.
        "notes": [{"nodeid": r.nodeid, "checklist": r.checklist, "note": r.note}
                  for r in collected.results.values() if r.note],
        "depth": state.config.depth,
        "row_counts": dict(sorted(collected.row_counts.items())),
        "measurements": collected.measurements,
        "workers": sorted(collected.workers),
        "record_problems": facts.record_problems,
        # What the server's parallel query made of each table's checksum (planned workers; 0: a serial plan).
        "parallel": {"workers_per_query": state.config.session_parallel_workers,
                     "planned": dict(sorted(facts.workers_planned.items(), key=lambda kv: (-kv[1], kv[0])))},
        "config_sha256": _config_digest(state),
        "exit_status": EXIT_CODES[verdict] if verdict != "failed" else int(exitstatus) or 1,
    }


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def describe_environment(config: pytest.Config, state: RunState) -> None:
    """Restore provenance in pytest-metadata's Environment table (connection strings are already redacted), once
    the restore ended: pytest-html shows that same table when it writes the report."""
    prepared = state.prepared
    if prepared is None or not config.pluginmanager.hasplugin("metadata"):
        return
    from pytest_metadata.plugin import metadata_key

    metadata = config.stash[metadata_key]
    archive, outcome = prepared.archive, prepared.restore
    metadata["restore-verify"] = _suite_version()
    metadata["Target"] = f"{prepared.target_name} ({prepared.target_kind})"
    metadata["PostgreSQL (target)"] = state.catalog.server_version or "unknown"
    if archive is not None:
        metadata["Backup"] = f"{archive.path} ({archive.format})"
        metadata["Dumped from / by"] = f"{archive.dumped_from} / {archive.dumped_by}"
    if outcome.performed:
        metadata["pg_restore"] = str(outcome.pg_restore_version)
        metadata["Restore jobs"] = str(outcome.jobs)


class _RunReport:
    """result.json when the session finishes, the record line at the very end, the checklist in the terminal."""

    def __init__(self, state: RunState, collected: Collected) -> None:
        self.state, self.collected = state, collected

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        state, collected = self.state, self.collected
        if state.prepared is None and exitstatus != pytest.ExitCode.INTERRUPTED:
            return  # a usage error before anything ran: pytest says it; there is no run to record
        collected.result_json = build_result(state, collected, exitstatus, narrowed=narrowed_by(session.config))
        _signal(state, collected.result_json)
        # The exit code says the run's outcome: 0 only for a complete, passed backup test.
        session.exitstatus = collected.result_json["exit_status"]
        text = json.dumps(collected.result_json, indent=2, ensure_ascii=False) + "\n"
        (state.facts.run_dir / "result.json").write_text(text)
        if state.config.result_json is not None:
            state.config.result_json.parent.mkdir(parents=True, exist_ok=True)
            state.config.result_json.write_text(text)

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """The record line, then the checklist: the last thing on the terminal, after pytest's own summary.
        report.html (written by pytest-html when the session finishes) exists now, so the line carries its digest
        as well as result.json's."""
        cfg, result = self.state.config, self.collected.result_json
        if result is None:
            return
        html_path = getattr(config.option, "htmlpath", None)
        if html_path:  # before its digest goes into the record
            pages.finish_report(Path(html_path))
        if cfg.record is not None:
            line = record.record_line(result, operator=record.operator_name(cfg.operator), rto_s=cfg.rto_s,
                                      rpo_s=cfg.rpo_s, ticket=cfg.ticket)
            record.append(cfg.record, line, signer=evidence.signer_for(cfg.record_key))
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            print_checklist(reporter, result)


FAILURES_SHOWN = 5


def _cut(text: str, width: int) -> str:
    """The first line, cut at a word boundary."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    if len(first) <= width:
        return first
    return first[:width].rsplit(" ", 1)[0].rstrip(",;:") + " …"


NO_DATABASE = "no database to verify"  # restore/run.py: RunState.no_database_reason
WRAPPED_LINES = 4  # of a reason's first line in the terminal's checklist: the fix is in the words, so wrap them
DETAIL_LINES = 4  # of the lines below it (differences, rows), each as it is: the report has the rest


def _wrapped(text: str, width: int) -> list[str]:
    """A reason's first line wrapped to ``width`` (at most WRAPPED_LINES), then the lines of detail below it in
    the first paragraph, each on its own line as the check wrote it (rows stay a table), at most DETAIL_LINES."""
    width = max(40, width)
    head, *details = [line for line in text.strip().split("\n\n")[0].splitlines() if line.strip()] or [""]
    lines = textwrap.wrap(head, width=width, break_long_words=False, break_on_hyphens=False) or [""]
    if len(lines) > WRAPPED_LINES:
        lines = [*lines[:WRAPPED_LINES - 1], _cut(" ".join(lines[WRAPPED_LINES - 1:]), width - 20)
                 + " (see the report)"]
    shown = [line.rstrip() if len(line.rstrip()) <= width else line[:width - 2].rstrip() + " …"
             for line in details[:DETAIL_LINES]]
    if len(details) > DETAIL_LINES:
        shown[-1] = f"  … and {len(details) - DETAIL_LINES + 1} more line(s): see the report"
    return lines + shown


def print_checklist(reporter: Any, result: dict[str, Any]) -> None:
    """The items that passed on one line; each other item with its state and reason (a failed item, its failures:
    a few, then how many more). A screenful at 3 a.m.: the report has the rest."""
    reporter.write_sep("=", "restore-verify checklist")
    failures: dict[str, list[dict[str, Any]]] = {}
    for failure in result["failures"]:
        failures.setdefault(str(failure["checklist"]), []).append(failure)
    terminal = getattr(reporter, "_tw", None)
    # A log (no terminal) is read in a wide window: 120 columns; a terminal, its own width.
    full = max(60, int(getattr(terminal, "fullwidth", 120) or 120)) if reporter.isatty() else 120
    width = full - 36
    passed = [cid for cid, status in result["checklist"].items() if status == "passed"]
    if passed:
        reporter.write(f"{'PASSED':10} ", green=True)
        lines = _wrapped(f"({len(passed)}) {', '.join(passed)}", full - 12)
        reporter.write_line(lines[0])
        for line in lines[1:]:
            reporter.write_line(f"{'':11}{line}")
    if result["outcome"] == "error":  # the cause is the verdict's, said once below: the items are only named
        _print_error_items(reporter, result, full)
        _print_verdict(reporter, result)
        return
    # Items skipped because there was no database say so once (the reason is restore_succeeded's).
    no_db = [cid for cid, status in result["checklist"].items() if status == "skipped"
             and result["checklist_reasons"].get(cid, "").startswith(NO_DATABASE)]
    for cid, status in result["checklist"].items():
        reason = result["checklist_reasons"].get(cid, "")
        if status == "passed" or cid in no_db[1:]:
            continue
        if cid in no_db and len(no_db) > 1:
            reporter.write("SKIPPED    ", yellow=True)
            reporter.write_line(f"({len(no_db)}) {', '.join(no_db)}: no database to verify (see restore_succeeded)")
            continue
        markup = {"failed": {"red": True, "bold": True}}.get(status, {"yellow": True})
        reporter.write(f"{status.upper():10} ", **markup)
        mine = failures.get(cid, [])
        # A skipped item: one line (what would enable it is in the report); a failed one: its words in full.
        lines = [] if len(mine) > 1 else [_cut(reason, width)] if status == "skipped" else _wrapped(reason, width)
        reporter.write_line(f"{cid:24} {lines[0] if lines else ''}")
        for line in lines[1:]:
            reporter.write_line(f"{'':35} {line}")
        if len(mine) > 1:
            for failure in mine[:FAILURES_SHOWN]:
                test = failure["nodeid"].split("::")[-1]
                wrapped = _wrapped(f"{test}: {failure['message']}", width - 2)
                reporter.write_line(f"{'':35} - {wrapped[0]}")
                for line in wrapped[1:2]:
                    reporter.write_line(f"{'':37} {line}")
            if len(mine) > FAILURES_SHOWN:
                reporter.write_line(f"{'':35}   and {len(mine) - FAILURES_SHOWN} more — see the report")
    for note in result.get("notes", [])[:FAILURES_SHOWN]:
        reporter.write(f"{'NOTE':10} ", cyan=True)
        lines = _wrapped(note["note"], width)
        reporter.write_line(f"{note['checklist']:24} {lines[0]}")
        for line in lines[1:2]:
            reporter.write_line(f"{'':35} {line}")
    if len(result.get("notes", [])) > FAILURES_SHOWN:
        reporter.write_line(f"{'':35} and {len(result['notes']) - FAILURES_SHOWN} more notes — see the report")
    _print_verdict(reporter, result)


def _print_error_items(reporter: Any, result: dict[str, Any], full: int) -> None:
    """An error run's items that did not pass, by what stopped them: not run (the verdict's cause), or skipped and
    incomplete for their own reasons (in the report)."""
    stopped = {s["checklist"] for s in result["skips"] if str(s["reason"]).startswith("not run:")}
    groups: dict[str, list[str]] = {}
    for cid, status in result["checklist"].items():
        if status == "passed":
            continue
        label = "NOT RUN" if cid in stopped else status.upper()
        groups.setdefault(label, []).append(cid)
    for label, items in groups.items():
        said = ("stopped by the verifier's own fault (the verdict below)" if label == "NOT RUN"
                else "their reasons are in the report")
        lines = _wrapped(f"({len(items)}) {', '.join(items)}: {said}", full - 12)
        reporter.write(f"{label:10} ", yellow=True)
        reporter.write_line(lines[0])
        for line in lines[1:]:
            reporter.write_line(f"{'':11}{line}")


def _print_verdict(reporter: Any, result: dict[str, Any]) -> None:
    reporter.write_line(f"report: {result['run_dir']}/report.html   result: {result['run_dir']}/result.json")
    verdict = result["outcome"]
    markup = {"passed": {"green": True, "bold": True}}.get(verdict, {"red": True, "bold": True})
    reporter.write(f"backup test {verdict.upper()}", **markup)
    reporter.write_line(f": {result['outcome_reason']} (exit code {result['exit_status']})")
    for line in _signal_lines(result):  # what the scheduler's side received: one line each, never the verdict
        reporter.write_line(line)


def _signal_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    if metrics := result.get("metrics"):
        lines.append(f"metrics -> {metrics['file']}" if not metrics.get("error") else
                     f"metrics NOT written to {metrics['file']}: {metrics['error']}")
    if push := result.get("pushgateway"):
        lines.append(f"metrics pushed to {push['host']} (job {push['job']}, database {push['grouping']['database']})"
                     if not push.get("error") else f"metrics NOT pushed to {push['host']}: {push['error']}")
    if beat := result.get("heartbeat"):
        errors = beat.get("errors") or []
        lines.append(f"heartbeat: {' and '.join(beat['calls'])} sent" if not errors else
                     f"heartbeat: {'; '.join(errors)}")
    return lines


class _HtmlReport:
    """pytest-html hooks; registered only when pytest-html is installed. The summary is a Jinja2 template."""

    def __init__(self, state: RunState, collected: Collected) -> None:
        self.state, self.collected = state, collected

    def pytest_html_results_table_row(self, report: pytest.TestReport, cells: list[str]) -> None:
        """The test id, escaped: it carries database identifiers, and pytest-html 4.2 writes it into the page
        unescaped (pytest-dev/pytest-html#1024), where a table named <svg onload=…> would run as script."""
        test_id = report.nodeid + ("" if report.when == "call" else f"::{report.when}")
        cells[1] = f'<td class="col-testId">{html.escape(visible(test_id))}</td>'

    def pytest_html_results_table_html(self, report: pytest.TestReport, data: list[str]) -> None:
        """A failed check: its own message and the offending rows first; pytest's traceback folded away."""
        if report.skipped:  # its reason in words, not pytest's (path, line, "Skipped: …") tuple
            data[:] = [f'<div class="skip-reason">{html.escape(_message(report))}</div>']
            return
        if not report.failed:
            return
        offending = next((v for k, v in report.user_properties if k == "offending"), None)
        data[:] = [pages.failure_html(_message(report), offending, "".join(data))]

    def pytest_html_report_title(self, report: Any) -> None:
        cfg = self.state.config
        report.title = f"restore-verify: {cfg.target.name} ← {cfg.source.spec if cfg.source else 'existing database'}"

    def pytest_html_results_summary(self, prefix: list[str], summary: list[str], postfix: list[str],
                                    session: pytest.Session) -> None:
        if self.collected.result_json is not None:
            prefix.append(pages.report_prefix(self.collected.result_json))
            postfix.append(pages.report_postfix(self.collected.result_json))
