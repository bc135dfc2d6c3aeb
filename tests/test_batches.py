"""Batched checks (fixtures/batches.py) say exactly what one test per object says.

The same damaged copy is verified twice: one test per object (``--batch-size=0``) and two objects per test over two
xdist workers (``--batch-size=2 -n 2``; the sample's items have up to a few dozen objects). The verdicts, every
failure (its test id and its words) and the number of objects passed, failed and skipped must be the same; each
failing object must be its own failure in junit.xml, report.html and the terminal.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg

from tests.conftest import FaultServer, Sample, SuiteRun

FAULTS = (
    "DELETE FROM audit.order_events WHERE id % 10 = 0",
    "DELETE FROM public.order_items WHERE order_id % 7 = 0",  # a second row count in the same item
    "SELECT setval('public.orders_id_seq', 5)",
    "ALTER TABLE audit.order_events DISABLE TRIGGER ALL",
    "UPDATE audit.order_events SET order_id = 999999 WHERE id = 3",
    "ALTER TABLE audit.order_events ENABLE TRIGGER ALL",
    "CREATE INDEX CONCURRENTLY products_broken_idx ON public.products ((1 / (stock - stock)))",
)


def _damaged(fault_server: FaultServer) -> str:
    dsn = fault_server.copy("batched")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in FAULTS:
            try:
                conn.execute(statement.encode())
            except psycopg.Error:
                assert "CONCURRENTLY" in statement  # the failing concurrent build is the fault itself
    return dsn


def _failures(run: SuiteRun) -> dict[str, str]:
    return {f["nodeid"]: f["message"] for f in run.result["failures"]}


def test_batches_report_each_failing_object_as_one_test_per_object_would(
    fault_server: FaultServer, sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    dsn = _damaged(fault_server)
    args = (f"--target={dsn}", f"--expectations={sample.expectations}",
            f"--backup-time={datetime.now(UTC).isoformat(timespec='seconds')}", "--rpo=1d")
    alone = run_suite(*args, "--batch-size=0")
    batched = run_suite(*args, "--batch-size=2", "-n", "2")
    assert alone.returncode == batched.returncode == 1, batched.explain()

    # The same verdicts, failures (ids and words) and counts of objects.
    assert batched.result["checklist"] == alone.result["checklist"], batched.explain()
    assert _failures(batched) == _failures(alone), batched.explain()
    assert batched.result["tests"] == alone.result["tests"], batched.explain()
    assert {s["nodeid"] for s in batched.result["skips"]} == {s["nodeid"] for s in alone.result["skips"]}
    failures = _failures(batched)
    rows = [n for n in failures if "test_row_count[" in n]
    assert sorted(rows) == ["checks/test_row_counts.py::test_row_count[audit.order_events]",
                            "checks/test_row_counts.py::test_row_count[public.order_items]"], failures
    assert any("orders_id_seq" in m for m in failures.values()), failures
    assert any("999999" in m or "no parent" in m for m in failures.values()), failures

    # pytest's progress counts the tests collected: a batch's objects reported one by one do not pass 100%.
    progress = [int(p) for p in re.findall(r"\[\s*(\d+)%\]", batched.output)]
    assert progress, batched.output[-2000:]
    assert max(progress) == 100, progress

    # The run really batched: fewer tests than objects, and the batch ids name their ranges.
    collected = batched.output.split(" workers [", 1)[1].split(" items]", 1)[0]
    objects = sum(batched.result["tests"].values())
    assert int(collected) < objects, (collected, objects)

    # Each failing object is its own test case in junit.xml, its own row in report.html, its own terminal line.
    cases = ET.parse(batched.run_dir / "junit.xml").getroot().iter("testcase")
    failed_cases = {f"{c.get('classname', '').replace('.', '/')}.py::{c.get('name')}"
                    for c in cases if c.find("failure") is not None}
    assert failed_cases == set(failures), (failed_cases, set(failures))
    report = (batched.run_dir / "report.html").read_text()
    for nodeid in failures:
        assert html.escape(nodeid, quote=True) in report or nodeid in report, nodeid
        assert f"FAILED {nodeid}" in batched.output, nodeid


def test_a_clean_copy_stays_green_batched(
    fault_server: FaultServer, sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    dsn = fault_server.copy("batched_clean")
    run = run_suite(f"--target={dsn}", f"--expectations={sample.expectations}",
                    f"--backup-time={datetime.now(UTC).isoformat(timespec='seconds')}", "--rpo=1d",
                    "--batch-size=1", "-n", "2")
    assert run.returncode == 0, run.explain()
    assert run.result["outcome"] == "passed", run.explain()
    assert run.result["tests"]["failed"] == 0
