"""A scheduled run's signals: the Prometheus textfile, the Pushgateway and the heartbeat (issue #28).

The heartbeat goes to a local HTTP server the test runs; the metrics go to a real Pushgateway (Debian's
prometheus-pushgateway on a loopback port), scraped back; both it and the textfile are parsed with
prometheus_client's own parser.
A failed run keeps the last success of the run before it, so that "no success within the cadence" can alert.
"""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Sample, SuiteRun


class _Heartbeats(http.server.BaseHTTPRequestHandler):
    calls: list[tuple[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        self.calls.append((self.path, self.rfile.read(length).decode()))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def heartbeat_url() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Heartbeats)
    _Heartbeats.calls = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ping/secret-token", _Heartbeats.calls
    finally:
        server.shutdown()


@pytest.fixture
def pushgateway() -> Iterator[str]:
    """A real Pushgateway on a loopback port, started for the test and waited for (its /-/ready)."""
    from tests.conftest import _free_port

    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        pytest.skip("no Pushgateway: apt-get install prometheus-pushgateway (.ci/run does)")
    port = _free_port()
    proc = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, "the Pushgateway exited"
                assert time.monotonic() < deadline, "the Pushgateway did not become ready in 30 s"
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return _parse(path.read_text())


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        return _parse(answer.read().decode())


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return next((v for (n, ls), v in samples.items() if n == name and all(dict(ls).get(k) == w
                                                                           for k, w in labels.items())), None)


def test_metrics_and_heartbeat_of_a_passed_then_a_failed_run(
    sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun],
    heartbeat_url: tuple[str, list[tuple[str, str]]], pushgateway: str,
) -> None:
    url, calls = heartbeat_url
    metrics = tmp_path / "textfile" / "restore_verify.prom"
    run = run_suite(*sample.restore_args(), f"--metrics={metrics}", f"--heartbeat={url}",
                    f"--pushgateway={pushgateway}", "--label=shop")
    assert run.returncode == 0, run.explain()
    assert [path for path, _ in calls] == ["/ping/secret-token/start", "/ping/secret-token"]
    assert calls[-1][1].startswith("backup test PASSED")
    samples = _samples(metrics)
    success = _value(samples, "restore_verify_last_success_timestamp_seconds")
    assert success is not None
    assert _value(samples, "restore_verify_outcome", outcome="passed") == 1.0
    assert _value(samples, "restore_verify_item_state", item="row_counts", state="passed") == 1.0
    assert _value(samples, "restore_verify_rto_seconds") is not None
    assert _value(samples, "restore_verify_phase_duration_seconds", phase="verification") is not None
    assert run.result["metrics"] == {"file": str(metrics), "error": None}
    # The same metrics reached the Pushgateway, grouped by job and database.
    assert run.result["pushgateway"]["error"] is None, run.result["pushgateway"]
    pushed = _scrape(pushgateway)
    group = {"job": "restore-verify", "database": "shop"}
    assert _value(pushed, "restore_verify_last_success_timestamp_seconds", **group) == success
    assert _value(pushed, "restore_verify_outcome", outcome="passed", **group) == 1.0
    assert _value(pushed, "restore_verify_item_state", item="no_corruption", state="passed", **group) == 1.0
    assert _value(pushed, "restore_verify_backup_size_bytes", **group) == float(sample.dump.stat().st_size)
    assert _value(pushed, "push_time_seconds", **group) is not None  # the Pushgateway's own: when it last heard
    # A failed run: outcome failed, the heartbeat's /fail, and the last success carried over from the file.
    expectations = tmp_path / "expectations"
    import shutil

    shutil.copytree(sample.expectations, expectations)
    (expectations / "business_rules" / "no_orders.sql").write_text("SELECT id FROM public.orders LIMIT 1\n")
    failed = run_suite(f"--backup={sample.dump}", f"--globals={sample.globals_sql}", f"--expectations={expectations}",
                       f"--metrics={metrics}", f"--heartbeat={url}", f"--pushgateway={pushgateway}", "--label=shop")
    assert failed.returncode == 1, failed.explain()
    assert calls[-1][0] == "/ping/secret-token/fail"
    samples = _samples(metrics)
    assert _value(samples, "restore_verify_outcome", outcome="failed") == 1.0
    assert _value(samples, "restore_verify_last_success_timestamp_seconds") == success
    assert "secret-token" not in failed.output
    pushed = _scrape(pushgateway)  # the failed run replaced the outcome; the last success is the passed run's
    assert _value(pushed, "restore_verify_outcome", outcome="failed", **group) == 1.0
    assert _value(pushed, "restore_verify_outcome", outcome="passed", **group) == 0.0
    assert _value(pushed, "restore_verify_last_success_timestamp_seconds", **group) == success


def test_an_unreachable_heartbeat_is_said_and_never_changes_the_verdict(
    sample: Sample, run_suite: Callable[..., SuiteRun],
) -> None:
    from tests.conftest import _free_port

    run = run_suite(*sample.restore_args(), f"--heartbeat=http://127.0.0.1:{_free_port()}/ping/secret-token",
                    f"--pushgateway=http://user:secret-password@127.0.0.1:{_free_port()}")
    assert run.returncode == 0, run.explain()
    error = run.result["pushgateway"]["error"]
    assert error
    assert "127.0.0.1" in error, error
    assert "secret-password" not in error, error
    assert "Pushgateway 127.0.0.1" in (run.run_dir / "report.html").read_text()
    errors = run.result["heartbeat"]["errors"]
    assert len(errors) == 2, errors  # the start and the end
    assert all("127.0.0.1" in e and "secret-token" not in e for e in errors), errors
