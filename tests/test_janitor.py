"""Nothing left behind, nothing lost: kill -9, concurrent runs, a corrupt record, a held lock, a silent server,
an exported PGPASSWORD, concurrent writers of an S3 record. Every wait here waits for a condition, with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from restore import janitor
from restore.records import record
from restore.targets.embedded import EmbeddedServer
from tests.conftest import (
    ROOT,
    FaultServer,
    Sample,
    SuiteRun,
    postgres_processes_in,
    wait_for,
    wait_for_running_check,
)


def _slow_expectations(tmp_path: Path, sample: Sample) -> Path:
    slow = tmp_path / "slow-expectations"
    (slow / "critical_queries").mkdir(parents=True)
    (slow / "critical_queries" / "slow.sql").write_text("SELECT pg_sleep(120) AS restore_verify_janitor_marker\n")
    return slow


def test_kill_9_during_the_checks_leaves_nothing_behind(sample: Sample, tmp_path: Path, server_tmp: Path) -> None:
    """An OOM kill or a cancelled runner: no teardown runs, yet within 10 s the server is gone."""
    run_tmp = server_tmp
    env = {**os.environ, "TMPDIR": str(run_tmp)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:xdist", f"--backup={sample.dump}",
         f"--expectations={_slow_expectations(tmp_path, sample)}", f"--reports-dir={tmp_path / 'reports'}",
         "--no-record"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        registry = run_tmp / "rv-janitor"
        tag = wait_for_running_check(run_tmp, "janitor_marker")
        assert tag.base_dir
        assert postgres_processes_in(tag.base_dir), "the server should be running before the kill"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        wait_for(lambda: not Path(tag.base_dir).exists() and not postgres_processes_in(tag.base_dir),
                  seconds=10, what="the watchdog to remove the server")
        assert not list(registry.glob("*.json")), "the tag should be gone with its server"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_two_runs_started_together_keep_their_own_folders_and_record_lines(
    sample: Sample, tmp_path: Path
) -> None:
    reports, history = tmp_path / "reports", tmp_path / "record.jsonl"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:xdist", *sample.restore_args(), f"--reports-dir={reports}",
         f"--record={history}"], cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp_path)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    folders = sorted(p for p in reports.iterdir() if p.is_dir())
    assert len(folders) == 2, folders
    results = [json.loads((f / "result.json").read_text()) for f in folders]
    assert {r["run_id"] for r in results} == {json.loads(line)["run_id"] for line in history.read_text().splitlines()}
    assert all(r["outcome"] == "passed" for r in results)


def test_a_corrupt_record_line_is_left_out_with_a_warning(
    sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    history = tmp_path / "record.jsonl"
    first = run_suite(*sample.restore_args(), f"--record={history}")
    assert first.returncode == 0, first.explain()
    with history.open("a") as fh:
        fh.write('{"date": "2026-11-25T03:00:00+00:00", "target": {"na')  # a write cut short
    second = run_suite(*sample.restore_args(), f"--record={history}")
    assert second.returncode == 0, second.explain()
    assert "line 2 is not a complete run" in second.output
    assert any("line 2" in p for p in second.result["record_problems"])
    rendered = subprocess.run([sys.executable, "-m", "restore", "record", f"--history={history}",
                               f"--output={tmp_path / 'out'}"], cwd=ROOT, capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr
    assert "line 2 is not a complete run" in rendered.stderr
    assert "line 2 is not a complete run" in (tmp_path / "out" / "record.html").read_text()


def test_a_held_lock_is_named_and_does_not_stall_the_run(
    fault_server: FaultServer, sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    dsn = fault_server.copy("locked")
    empty = tmp_path / "none"
    empty.mkdir()
    with psycopg.connect(dsn) as holder:
        holder.execute("SET application_name = 'the-lock-holder'")
        holder.execute("LOCK TABLE public.orders IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        run = run_suite(f"--target={dsn}", f"--expectations={empty}", "--statement-timeout=10s", "--lock-timeout=3s")
        elapsed = time.monotonic() - started
        holder.rollback()
    assert elapsed < 60, f"the run took {elapsed:.0f} s"
    reasons = json.dumps(run.result["checklist_reasons"])
    assert "the-lock-holder" in reasons or "AccessExclusiveLock on public.orders" in reasons, run.explain()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung server, a half-open proxy)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


def test_a_silent_server_fails_in_seconds(
    silent_server: int, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    empty = tmp_path / "none"
    empty.mkdir()
    started = time.monotonic()
    run = run_suite(f"--target=host=127.0.0.1 port={silent_server} dbname=app user=app", f"--expectations={empty}")
    elapsed = time.monotonic() - started
    # Without connect_timeout libpq waits for ever on a server that accepts and never answers; with it (10 s per
    # attempt), the run ends in seconds: a bound far from both, so that a busy machine does not make it red.
    assert elapsed < 120, f"the run took {elapsed:.0f} s"
    # The verifier's own world (a target that never answers): an error naming it, never a failed backup test.
    assert run.returncode == 7, run.explain()
    assert run.result["outcome"] == "error", run.explain()
    assert "timeout" in run.result["outcome_reason"].lower(), run.explain()
    assert not run.failed_items(), run.explain()
    assert "timeout" in run.result["checklist_reasons"]["db_accessible"].lower()
    assert "Traceback" not in run.output, run.output[-3000:]
    assert len(run.output.split("restore-verify checklist", 1)[1].splitlines()) <= 15, run.output[-3000:]


def test_an_exported_pgpassword_changes_no_credentials(sample: Sample, run_suite: Callable[..., SuiteRun]) -> None:
    """The Quickstart with a stray PGPASSWORD (and PGUSER) in the shell stays green."""
    run = run_suite(*sample.restore_args(), env={"PGPASSWORD": "not-the-app-password", "PGUSER": "nobody"})
    assert run.returncode == 0, run.explain()
    assert run.result["checklist"]["app_connect"] == "passed"


def test_concurrent_s3_record_writers_lose_no_line(moto_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in moto_env.items():
        monkeypatch.setenv(key, value)
    import boto3

    boto3.client("s3").create_bucket(Bucket="records")
    spec = "s3://records/backup-tests/record.jsonl"
    base = {"date": "2026-11-25T03:00:00+00:00", "target": {"name": "t"}, "checklist": {}, "outcome": "passed"}
    record.append(spec, base | {"run_id": "first"})
    # Another writer appends between this writer's read and its write: its conditional write must fail, re-read
    # and append after the other's line.
    interleaved = iter([lambda: record.append(spec, base | {"run_id": "other"})])
    record.append(spec, base | {"run_id": "mine"}, on_read=lambda: next(interleaved, lambda: None)())
    assert [r["run_id"] for r in record.load(spec)] == ["first", "other", "mine"]


def test_a_stopped_servers_folder_is_deleted_by_its_watchdog() -> None:
    """Stopping the embedded server frees its place at once and leaves the deleting (60,000 files at 10,000 tables)
    to its watchdog: the folder and its tag are gone soon after, without the owner waiting or exiting."""
    server = EmbeddedServer(jobs=1).start()
    base, tag_path = server.base_dir, server._tag
    assert tag_path is not None
    assert tag_path.exists()
    server.stop()
    assert not base.exists(), "the folder should have left its place when stop() returned"
    wait_for(lambda: not list(base.parent.glob(f".{base.name}.*.removing")) and not tag_path.exists(), seconds=60,
             what="the watchdog to delete the stopped server's folder and forget its tag")


def test_a_handed_over_folder_whose_tag_was_deleted_with_its_tmpdir_is_still_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run hands its stopped cluster over and exits; its TMPDIR (the tags' folder) is removed at once, before the
    watchdog's next poll (a test, a CI job): the watchdog, finding its tag gone, still deletes the folder — and
    only its own cluster's."""
    folder, other = tmp_path / "restore-verify-x", tmp_path / ".restore-verify-y.1234abcd.removing"
    (folder / "data").mkdir(parents=True)
    other.mkdir()
    tag_path = janitor.register(janitor.owner_tag("embedded", "a stopped server", base_dir=str(folder)), watch=False)
    seen = [janitor.load(tag_path)]  # what the watchdog read at its last poll, while the server still ran
    assert janitor.hand_over(tag_path, folder)
    tag_path.unlink()  # the TMPDIR removed with the tag
    polls = iter([*seen, None])
    monkeypatch.setattr(janitor, "load", lambda path: next(polls))
    monkeypatch.setattr(janitor.os, "setpgrp", lambda: None)  # the loop runs in this process here
    monkeypatch.setattr(janitor.time, "sleep", lambda seconds: None)
    assert janitor.watch(tag_path) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".restore-verify-x.")]
    assert other.exists()  # another cluster's hand-over is its own watchdog's


def test_hand_over_moves_the_folder_out_of_its_place_and_the_watchdog_deletes_it(tmp_path: Path) -> None:
    folder = tmp_path / "restore-verify-x"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "16384").write_text("a relation's file")
    tag_path = janitor.register(janitor.owner_tag("embedded", "a stopped server", base_dir=str(folder)), watch=False)
    assert janitor.hand_over(tag_path, folder)
    assert not folder.exists()
    tag = janitor.load(tag_path)
    assert tag is not None
    trash = Path(tag.base_dir or "")
    assert trash.parent == tmp_path
    assert trash.name.startswith(".restore-verify-x.")
    assert (trash / "data" / "16384").exists()
    assert not tag.owner_alive()  # handed over: the owner, alive, no longer holds it
    janitor.sweep()  # another run starting now leaves it to the watchdog
    assert trash.exists()
    assert janitor.watch(tag_path) == 0  # the watchdog's loop: removes it and forgets the tag
    assert not trash.exists()
    assert not tag_path.exists()
    assert not janitor.hand_over(tag_path, folder)  # no tag any more: the caller deletes it itself
