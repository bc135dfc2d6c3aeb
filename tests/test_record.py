"""The monthly backup-test record: history lines, the count-drop trend, the rendered record, screenshots."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from reports.checklist import CHECKLIST
from reports.pages import render_record
from restore.records import record
from tests.conftest import RECORD_ENV, ROOT, FaultServer, Sample, SuiteRun

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_each_run_appends_one_line_with_what_an_auditor_asks(
    sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    history = tmp_path / "record.jsonl"
    for _ in range(2):
        run = run_suite(*sample.restore_args(), f"--record={history}", "--operator=dba-on-call")
        assert run.returncode == 0, run.explain()
    lines = record.load(history)
    assert len(lines) == 2
    line = lines[-1]
    assert line["operator"] == "dba-on-call"
    assert line["target"]["name"] == "local"
    assert line["backup"]["id"] == "sample.dump"
    assert line["backup"]["age_s"] is not None
    assert line["rto"] == {"target_s": 3600.0, "measured_s": line["restore"]["duration_s"], "status": "passed"}
    assert line["rpo"]["status"] == "passed"
    assert line["rpo"]["measured_s"] is not None
    assert line["counts"]["public.orders"] == 10000
    assert line["total_rows"] == sum(line["counts"].values())
    assert set(line["checklist"]) == set(CHECKLIST)
    assert line["outcome"] == "passed"
    assert Path(line["run_dir"]).is_dir()
    assert line["suite_version"]


def test_row_count_trend_fails_on_a_ten_percent_shrink_and_passes_on_growth(
    fault_server: FaultServer, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    history = tmp_path / "record.jsonl"
    empty = tmp_path / "empty"
    empty.mkdir()
    dsn = fault_server.copy("trend")
    args = (f"--target={dsn}", f"--expectations={empty}", f"--record={history}")
    first = run_suite(*args)
    assert first.result["checklist"]["row_counts"] == "skipped"  # nothing to compare with yet: said, not passed
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM audit.order_events WHERE id % 10 = 0")  # 10 %
    shrunk = run_suite(*args)
    assert shrunk.failed_items() == {"row_counts"}, shrunk.explain()
    assert "shrank from 3333 rows" in shrunk.result["checklist_reasons"]["row_counts"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO audit.order_events (order_id, event, at) SELECT 1, 'x', now()"
                     " FROM generate_series(1, 1000)")
    grown = run_suite(*args)
    assert grown.result["checklist"]["row_counts"] == "passed", grown.explain()


def _synthetic(month: str, day: int, *, failed: bool = False, duration: float = 900.0, rows: int = 1_000_000,
               age: float = 300.0) -> dict[str, object]:
    checklist = dict.fromkeys(CHECKLIST, "passed")
    if failed:
        checklist["orphaned_records"] = "failed"
    return {
        "record_version": 1, "date": f"{month}-{day:02d}T03:00:00+00:00", "run_id": f"{month}-{day}",
        "target": {"name": "prod-restored", "kind": "existing", "server_version": "15.8"},
        "backup": {"spec": f"s3://ecommerce-backups/database/backup-{month}.dump", "id": f"backup-{month}.dump",
                   "format": "custom", "created_at": f"{month}-{day:02d}T02:00:00+00:00", "age_s": 3600.0},
        "restore": {"performed": True, "duration_s": duration, "errors": 0, "accepted_errors": 0},
        "rto": {"target_s": 3600.0, "measured_s": duration, "status": "passed"},
        "rpo": {"target_s": 900.0, "measured_s": age, "status": "passed" if age <= 900 else "failed"},
        "checklist": checklist, "tests": {"passed": 100, "failed": int(failed), "skipped": 0},
        "failures": [{"checklist": "orphaned_records", "message": "3 orphans"}] if failed else [],
        "counts": {"public.orders": rows}, "total_rows": rows, "outcome": "failed" if failed else "passed",
        "depth": "standard", "suite_version": "0.1.0", "operator": "dba", "run_dir": f"reports/runs/{month}",
    }


def _history(tmp_path: Path, sample: Sample, run_suite: Callable[..., SuiteRun]) -> tuple[Path, list[dict]]:
    """Six synthetic months (one failed, one missing) followed by two real runs of the suite."""
    history = tmp_path / "record.jsonl"
    synthetic = [
        _synthetic("2026-04", 1, duration=1500, rows=900_000),
        _synthetic("2026-05", 1, duration=1700, rows=950_000),
        _synthetic("2026-06", 2, failed=True, duration=2100, rows=990_000, age=1200),
        # 2026-07: no backup test ran
        _synthetic("2026-08", 1, duration=1600, rows=1_020_000),
        _synthetic("2026-09", 1, duration=4000, rows=1_050_000),  # over the RTO
        _synthetic("2026-10", 1, duration=1800, rows=600_000),  # a sudden drop
    ]
    for line in synthetic:
        record.append(history, line)
    for _ in range(2):
        run_suite(*sample.restore_args(), f"--record={history}")
    return history, record.load(history)


def test_rendered_record_shows_failed_and_missing_months_limits_and_the_data(
    sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    history, lines = _history(tmp_path, sample, run_suite)
    out = tmp_path / "rendered"
    proc = subprocess.run([sys.executable, "-m", "restore", "record", f"--history={history}", f"--output={out}",
                           "--until=2026-11"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    page = (out / "record.html").read_text()
    assert "<script" not in page
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert re.search(r'<tr class="missing" data-month="2026-07">', page)
    assert re.search(r'<tr class="run failed" data-month="2026-06">', page)
    rto_chart = re.search(r'<svg id="chart-rto".*?</svg>', page, re.S)
    assert rto_chart is not None
    assert 'class="limit" data-value="3600.0"' in rto_chart.group(0)
    plotted = [float(v) for v in re.findall(r'class="point[^"]*" data-date="[^"]+" data-value="([^"]+)"',
                                            rto_chart.group(0))]
    # Only complete, passed runs are charted: a failed run's figures are not a backup test's.
    expected = [float(h["restore"]["duration_s"]) for h in sorted(lines, key=lambda h: h["date"])
                if h["outcome"] == "passed"]
    assert plotted == expected
    assert 'class="point over" data-date="2026-09-01' in rto_chart.group(0)
    rows_chart = re.search(r'<svg id="chart-rows".*?</svg>', page, re.S)
    assert rows_chart is not None
    assert 'data-value="600000.0"' in rows_chart.group(0)
    md = (out / "record.md").read_text()
    assert "2026-07 | — | — | — | **MISSING" in md
    assert "1 month(s) without a complete test: 2026-07" in md


_MEASURE = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="f" src="{src}" style="border:0;width:{width}px;height:1600px"></iframe>
<script>document.getElementById('f').addEventListener('load', function () {{ setTimeout(function () {{
  var d = document.getElementById('f').contentDocument, w = d.defaultView;
  var reason = d.querySelector('#checklist tr.checklist-failed td:nth-child(4)').getBoundingClientRect();
  var range = d.createRange();
  range.selectNodeContents(d.querySelector('#checklist tr.checklist-failed td:nth-child(2)'));
  document.body.setAttribute('data-layout', JSON.stringify({{inner: w.innerWidth,
    scroll: d.documentElement.scrollWidth, reason: [reason.left, reason.right],
    status_lines: new Set(Array.from(range.getClientRects()).map(function (r) {{ return Math.round(r.top); }}))
      .size}}));
}}, 300); }});</script></body></html>"""


def _layout(report: Path, width: int) -> dict[str, Any]:
    """How the report lays out in a frame ``width`` px wide (headless Chromium's own window is at least 500 px):
    the page's scroll width, the failed item's reason box and the lines its status takes."""
    wrapper = report.with_name(f"layout-{width}.html")
    wrapper.write_text(_MEASURE.format(src=report.name, width=width))
    dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, "--allow-file-access-from-files", "--window-size=1500,1800",
                          "--virtual-time-budget=4000", f"--user-data-dir={report.parent / f'profile-{width}'}",
                          "--dump-dom", wrapper.as_uri()], capture_output=True, text=True, timeout=120,
                         check=False).stdout
    found = re.search(r'data-layout="([^"]*)"', dom)
    assert found is not None, dom[-2000:]
    layout: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return layout


def _chromium(url: Path, png: Path) -> str:
    profile = png.parent / f"profile-{png.stem}"
    subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1280,1600",
                    f"--screenshot={png}", url.as_uri()], capture_output=True, timeout=120, check=False)
    dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url.as_uri()],
                         capture_output=True, text=True, timeout=120, check=False).stdout
    return dom


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)")
def test_report_and_record_render_in_a_browser(
    sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    history, _ = _history(tmp_path, sample, run_suite)
    out = tmp_path / "rendered"
    html_path, _ = render_record(record.load(history), out, until="2026-11")
    report = Path(record.load(history)[-1]["run_dir"]) / "report.html"
    dom = _chromium(report, tmp_path / "report.png")
    # The rendered page (after pytest-html's script built it) holds the checklist and the results table.
    checklist = re.search(r'<table id="checklist">.*?</table>', dom, re.S)
    assert checklist is not None, dom[:2000]
    assert all(f"<td>{item}</td>" in checklist.group(0) for item in CHECKLIST)
    assert len(re.findall(r'class="[^"]*\bpassed\b[^"]*"', dom)) >= 50
    dom = _chromium(html_path, tmp_path / "record.png")
    assert len(re.findall(r'<svg id="chart-', dom)) == 3
    assert len(re.findall(r"<circle ", dom)) >= 8
    for png in ("report.png", "record.png"):
        assert (tmp_path / png).stat().st_size > 20_000, f"{png} looks blank"


def test_no_secret_reaches_any_file_the_run_writes(
    fault_server: FaultServer, sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    secret = "Sup3r-s3cret-Pa55word"
    with psycopg.connect(fault_server.server.conninfo(), autocommit=True) as conn:
        conn.execute(f"ALTER ROLE postgres PASSWORD '{secret}'")
    targets = tmp_path / "targets.toml"
    targets.write_text(f'[targets.audited]\ndsn = "{fault_server.copy("secret_copy")}"\npassword_env = "RV_SECRET"\n')
    history = tmp_path / "record.jsonl"
    run = run_suite(f"--targets-file={targets}", "--target=audited", f"--manifest={sample.manifest}",
                    f"--expectations={sample.expectations}", f"--record={history}", env={"RV_SECRET": secret})
    assert run.result["checklist"]["db_accessible"] == "passed", run.explain()
    written = [p for p in run.run_dir.rglob("*") if p.is_file()] + [history, tmp_path / "result0.json"]
    assert len(written) >= 6
    for path in written:
        assert secret not in path.read_text(errors="replace"), f"the password leaked into {path}"
    assert secret not in run.output
    assert json.loads(history.read_text().splitlines()[-1])["target"]["name"] == "audited"


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)")
def test_a_failed_run_reads_at_3am_verdict_checklist_first_no_traceback_offending_rows(
    sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """The report as a DBA opens it: the verdict, then the checklist (above pytest-html's Environment table); a
    failed check shows its own words and the offending rows as a table, pytest's traceback folded away."""
    expectations = tmp_path / "expectations"
    shutil.copytree(sample.expectations, expectations)
    (expectations / "business_rules" / "orders_are_free.sql").write_text(
        "-- every order must be free\nSELECT id, status, total FROM public.orders WHERE total > 0 ORDER BY id\n")
    run = run_suite(f"--backup={sample.dump}", f"--globals={sample.globals_sql}", f"--expectations={expectations}")
    assert run.failed_items() == {"business_rules"}, run.explain()
    dom = _chromium(run.run_dir / "report.html", tmp_path / "failed.png")
    verdict = re.search(r'<h2 id="verdict"[^>]*>([^<]*)</h2>', dom)
    assert verdict is not None, dom[:2000]
    assert verdict.group(1) == "Backup test FAILED"
    facts = re.search(r'<table id="run-facts">.*?</table>', dom, re.S)
    assert facts is not None
    assert "sample.dump" in facts.group(0)
    assert "None" not in facts.group(0)
    assert dom.index('id="checklist"') < dom.index('id="environment"') < dom.index('id="results-table"')
    failure = re.search(r'<div class="failure-message">(.*?)</div>', dom, re.S)
    assert failure is not None
    assert failure.group(1).startswith("Business rule orders_are_free is broken")
    for noise in ("Traceback", "AssertionError", "Failed: ", "def test_", "assert "):
        assert noise not in failure.group(1)
    offending = re.search(r'<table class="offending">(.*?)</table>', dom, re.S)
    assert offending is not None
    assert "<th>id</th><th>status</th><th>total</th>" in offending.group(1)
    assert offending.group(1).count("<tr>") == 1 + 10  # the header and the first rows
    assert "<details" in dom  # pytest's own report is still there, folded
    assert (tmp_path / "failed.png").stat().st_size > 20_000


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)")
def test_the_record_reads_well_with_one_month_of_data(sample: Sample, tmp_path: Path,
                                                      run_suite: Callable[..., SuiteRun]) -> None:
    """One three-second restore is not drawn against a 0-4,140 s axis, and its date is written once."""
    history = tmp_path / "record.jsonl"
    assert run_suite(*sample.restore_args(), f"--record={history}").returncode == 0
    html_path, _ = render_record(record.load(history), tmp_path / "rendered")
    dom = _chromium(html_path, tmp_path / "record.png")
    chart = re.search(r'<svg id="chart-rto".*?</svg>', dom, re.S)
    assert chart is not None
    assert 'class="limit"' not in chart.group(0)  # far above the data: named, not drawn
    assert "RTO 3600 s: far above every value" in chart.group(0)
    point = re.search(r'<circle class="point" [^>]*cy="([\d.]+)"', chart.group(0))
    assert point is not None
    assert float(point.group(1)) < 100  # near the top of a 220 px chart, not flattened onto the axis
    assert len(re.findall(r'class="date-label"', chart.group(0))) == 1


def test_a_run_that_cannot_reach_its_target_is_an_error_not_a_failed_backup_test(
    fault_server: FaultServer, sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """A mistyped password or a closed port tests no backup: outcome error (exit 7), recorded in the chain but never
    counted as a test, and never a database of the record."""
    from tests.conftest import _free_port

    history = tmp_path / "record.jsonl"
    wrong_password = (f"host=127.0.0.1 port={fault_server.server.port} dbname=pristine user=postgres "
                      "password=not-the-password connect_timeout=5")
    closed_port = f"host=127.0.0.1 port={_free_port()} dbname=prod user=postgres password=x connect_timeout=5"
    for dsn in (wrong_password, closed_port):
        run = run_suite(f"--target={dsn}", f"--expectations={sample.expectations}", f"--record={history}")
        assert run.returncode == 7, run.explain()
        assert run.result["outcome"] == "error", run.explain()
        assert "could not be reached or logged into" in run.result["outcome_reason"], run.explain()
        assert "not-the-password" not in run.output
    lines = record.load(history)
    assert [line["outcome"] for line in lines] == ["error", "error"]
    overdue = subprocess.run([sys.executable, "-m", "restore", "record", f"--history={history}", "--overdue"],
                             cwd=ROOT, capture_output=True, text=True, check=False)
    assert overdue.returncode == 1  # no backup was ever tested: that is overdue, and says so
    assert "pristine" not in overdue.stdout + overdue.stderr
    assert "None" not in overdue.stdout + overdue.stderr
    html_path, md_path = render_record(lines, tmp_path / "rendered")
    assert "2 error(s)" in md_path.read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)")
def test_the_failed_report_reads_on_a_desktop_and_a_phone(
    sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """A failed item lists all its failures in its checklist row (with a count), skipped tests show their reason
    (not pytest's tuples), the page is laid out for a phone's width, and the runbook's Chinese has a CJK font."""
    expectations = tmp_path / "expectations"
    shutil.copytree(sample.expectations, expectations)
    for n in (1, 2, 3):
        (expectations / "business_rules" / f"broken_rule_{n}.sql").write_text(
            f"SELECT id FROM public.orders WHERE id = {n}\n")
    # As on a DBA's terminal: on CI (CI=true) pytest prints every failure's whole message in its short summary.
    run = run_suite(f"--backup={sample.dump}", f"--globals={sample.globals_sql}", f"--expectations={expectations}",
                    env={"CI": None, "BUILD_NUMBER": None})
    assert run.failed_items() == {"business_rules"}, run.explain()
    report = run.run_dir / "report.html"
    for width in (1400, 390):
        png = tmp_path / f"report-{width}.png"
        profile = tmp_path / f"profile-{width}"
        subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},1600",
                        f"--screenshot={png}", report.as_uri()], capture_output=True, timeout=120, check=False)
        assert png.stat().st_size > 10_000, f"{png} looks blank"
    dom = _chromium(report, tmp_path / "dom.png")
    row = re.search(r'<tr class="checklist-failed"><td>business_rules</td><td>failed \(3\)</td>.*?</tr>', dom, re.S)
    assert row is not None, dom[:3000]
    assert row.group(0).count("<li>") == 3, row.group(0)
    assert "('/" not in dom  # a skipped test's reason, not pytest's (path, line, reason) tuple
    assert '<meta name="viewport"' in report.read_text()  # in the page itself, not added by a script
    phone, desktop = _layout(report, 390), _layout(report, 1400)
    assert phone["inner"] == 390, phone
    assert phone["scroll"] <= 390, f"the page scrolls sideways on a phone: {phone}"
    assert phone["reason"][0] >= 0, phone
    assert phone["reason"][1] <= 390, phone  # the reason, the one thing a phone reader needs, in view
    assert desktop["scroll"] <= 1400, desktop
    assert desktop["status_lines"] == 1, desktop  # "failed (3)" on one line, never "faile/d"
    assert "Noto Sans CJK" in report.read_text()  # the runbook's wording has a CJK-capable font named
    assert "((" not in re.sub(r"<[^>]+>", "", row.group(0) + dom[dom.index('id="checklist"'):][:20000])
    # The terminal: after pytest's own progress, a failed run of the sample says what it must in a screenful.
    tail = run.output.split("[100%]", 1)[-1]
    assert len(tail.splitlines()) <= 40, tail


def test_self_tests_never_write_the_checkouts_record(tmp_path: Path) -> None:
    """A run started by a self-test without --record (the way a user would run it) records into the self-test
    session's own file, never the checkout's reports/record.jsonl: the user's audit trail."""
    checkout = ROOT / "reports" / "record.jsonl"
    before = checkout.read_bytes() if checkout.exists() else None
    session_record = Path(os.environ[RECORD_ENV])
    lines_before = len(session_record.read_text().splitlines()) if session_record.exists() else 0
    done = subprocess.run([sys.executable, "-m", "pytest", "--target=host=127.0.0.1 port=1 dbname=nothing",
                           f"--reports-dir={tmp_path / 'reports'}", f"--result-json={tmp_path / 'result.json'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 7, done.stdout[-3000:]  # nothing to reach: an error, recorded as one
    assert (checkout.read_bytes() if checkout.exists() else None) == before
    assert len(session_record.read_text().splitlines()) == lines_before + 1


def test_a_mistyped_backup_is_a_failed_run_but_never_a_database_overdue_forever(
    tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """--backup=/no/such.dump: a failed run in the history (a missing backup is a finding), but not a database the
    record follows; the year's export says what is unknown with a dash, never Python's None."""
    history = tmp_path / "record.jsonl"
    run = run_suite("--backup=/no/such/backup.dump", f"--record={history}")
    assert run.result["outcome"] == "failed", run.explain()
    assert len(record.load(history)) == 1
    overdue = subprocess.run([sys.executable, "-m", "restore", "record", f"--history={history}", "--overdue"],
                             cwd=ROOT, capture_output=True, text=True, check=False)
    assert "backup.dump" not in overdue.stdout, overdue.stdout
    assert "holds no complete run of any database" in overdue.stderr, overdue.stderr
    year = run.result["finished_at"][:4]
    exported = subprocess.run([sys.executable, "-m", "restore", "record", f"--history={history}",
                               f"--export={year}", "--format=md"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout
    assert "None" not in exported, exported
    assert "failed" in exported, exported
