"""The verifier's own world around a sound backup: a full disk where the server writes, the server killed under the
restore. Each run is an error (exit 7) naming the cause once, never a failed backup test; nothing is left behind.
(An existing target killed during the checks and a silent server: tests/test_faults.py, tests/test_janitor.py.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from restore.targets.embedded import EmbeddedServer
from restore.tools import clean_env, pg_tool
from tests.conftest import Sample, SuiteRun, wait_for


@pytest.fixture
def small_disk() -> Iterator[Callable[[int], Path]]:
    """A tmpfs of a given size in MB (root only: mount), unmounted at the end."""
    mounts: list[Path] = []

    def make(megabytes: int) -> Path:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("a small disk needs root (mount -t tmpfs): run the self-tests as root to prove this")
        where = Path(tempfile.mkdtemp(prefix="rv-small-disk-", dir="/tmp"))
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=1777", "tmpfs", str(where)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            where.rmdir()
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): a small disk cannot be proven")
        mounts.append(where)
        return where

    yield make
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)
        shutil.rmtree(where, ignore_errors=True)


def _assert_an_error(run: SuiteRun, *said: str) -> None:
    """Outcome error (exit 7) naming the cause, nothing failed, no traceback, at most 15 lines after the progress."""
    assert run.returncode == 7, run.explain()
    assert run.result["outcome"] == "error", run.explain()
    for words in said:
        assert words in run.result["outcome_reason"], run.explain()
    assert not run.failed_items(), run.explain()
    assert not run.result["failures"], run.explain()
    assert "Traceback" not in run.output, run.output[-3000:]
    after = run.output.split("restore-verify checklist", 1)[1].splitlines()
    assert len(after) <= 15, run.output[-3000:]


def _assert_error_said_once(run: SuiteRun, *said: str) -> None:
    """An error that stopped the restore: restore_succeeded not run, never an --allow-restore-error hint."""
    _assert_an_error(run, *said)
    assert run.result["checklist"]["restore_succeeded"] == "skipped", run.explain()
    assert "--allow-restore-error" not in run.output, run.output[-3000:]


def test_a_disk_too_small_for_the_manifests_database_is_refused_before_restoring(
    sample: Sample, small_disk: Callable[[int], Path], tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """The manifest records the database's size; where the server would write has far less free: refused at once,
    saying how much is needed, how much is free, and the option that moves it."""
    disk = small_disk(80)
    dump = tmp_path / "big.dump"
    shutil.copy(sample.dump, dump)
    manifest = json.loads(sample.manifest.read_text())
    assert manifest["database"]["size_bytes"] > 0  # recorded by python -m restore backup
    manifest["database"]["size_bytes"] = 600 * 10**6  # as a production database's would be
    (tmp_path / "big.dump.manifest.json").write_text(json.dumps(manifest))
    run = run_suite(f"--backup={dump}", f"--server-dir={disk}", f"--globals={sample.globals_sql}",
                    f"--expectations={sample.expectations}")
    _assert_error_said_once(run, "Not enough disk space to restore", "needs at least about 367 MB",
                            f"{disk} has", "--server-dir=PATH")
    # Its folder is the janitor's watchdog's to delete, beside the run's end: a condition, with a deadline.
    wait_for(lambda: not list(disk.iterdir()), seconds=60, what="the refused run's folder gone from the small disk")


def test_a_disk_that_fills_during_the_restore_is_the_verifiers_error(
    small_disk: Callable[[int], Path], tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """A dump that compresses well (no manifest to say its size) passes the early estimate and fills the disk while
    loading: an error naming the directory and its free space, never a failed backup or --allow-restore-error."""
    with EmbeddedServer(jobs=1) as source:
        with psycopg.connect(source.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE TABLE public.notes (id int PRIMARY KEY, body text)")
            conn.execute("INSERT INTO public.notes SELECT g, repeat('x', 300) FROM generate_series(1, 300000) g")
        dump = tmp_path / "compressible.dump"
        subprocess.run([str(pg_tool("pg_dump")), "-Fc", "-f", str(dump), "-d", source.conninfo()], check=True,
                       env=clean_env(), capture_output=True)
    disk = small_disk(110)
    empty = tmp_path / "no-expectations"
    empty.mkdir()
    run = run_suite(f"--backup={dump}", f"--server-dir={disk}", f"--expectations={empty}")
    _assert_error_said_once(run, "stopped by the verifier's own world", f"the disk where the embedded server "
                            f"writes ({disk}/", "is full", "--server-dir=PATH")
    wait_for(lambda: not list(disk.iterdir()), seconds=60, what="the run's cluster gone from the small disk")


def test_the_embedded_server_killed_during_the_restore_is_the_verifiers_error(
    sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    """SIGKILL to the server while pg_restore loads the data (as the OOM killer does): an error that says the server
    is gone and why that is the verifier's world; nothing is recorded against the backup."""
    run = run_suite("-p", "tests.kill_in_restore", *sample.restore_args())
    _assert_error_said_once(run, "stopped by the verifier's own world while loading the dump",
                            "the embedded server is gone", "SIGKILL")


@pytest.mark.parametrize("workers", ["-n2", "-pno:xdist"])
def test_a_run_cancelled_during_the_restore_stops_its_waiting_workers(
    workers: str, sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """xdist's workers start beside the restore and wait for its facts: SIGTERM to the run while pg_restore loads
    (a CI job cancelled) ends it as interrupted, tears the server down, and leaves no worker waiting."""
    mark = f"rv-cancelled-{tmp_path.name}"
    run = run_suite("-p", "tests.kill_in_restore", workers, *sample.restore_args(),
                    env={"RV_RESTORE_FAULT": "sigterm-self", "RV_TEST_MARK": mark})
    assert run.returncode == 2, run.explain()
    assert run.result["outcome"] == "interrupted", run.explain()
    assert "passed" not in run.result["checklist"].values(), run.explain()
    deadline = time.monotonic() + 60
    while processes_marked(mark):  # the workers end with the run (not killed after a timeout of their own)
        assert time.monotonic() < deadline, f"workers of the cancelled run still alive: {processes_marked(mark)}"
        time.sleep(0.1)


def processes_marked(mark: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and f"RV_TEST_MARK={mark}".encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
    return found


def test_a_worker_killed_during_the_checks_is_the_verifiers_error(
    sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """A pytest-xdist worker killed (-9) while it runs a check: that test did not run (never "failed"), the other
    tests go on in a fresh worker, and the run is an error naming the worker's death."""
    run = run_suite("-p", "tests.kill_in_check", "-n", "2", *sample.restore_args(),
                    env={"RV_KILL_AT": "row_counts", "RV_KILL_PID": "self", "RV_KILL_ONCE": str(tmp_path / "killed")})
    assert (tmp_path / "killed").exists(), run.explain()
    _assert_an_error(run, "worker running it died")
    assert run.result["checklist"]["row_counts"] == "incomplete", run.explain()
    assert run.result["checklist"]["no_corruption"] == "passed", run.explain()  # the others went on


def test_the_embedded_server_killed_during_the_checks_is_the_verifiers_error(
    sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """The run's own server killed (-9) just before no_corruption's first test: what ran before keeps its verdict,
    what could not run is "not run", the run is an error naming the lost connection; nothing is left behind. (Not
    at row_counts: with a manifest its counts come from the capture, and the tests run largest first, so every test
    that reads the server may have run before it; a server gone after the last of them changes no verdict.)"""
    run = run_suite("-p", "tests.kill_in_check", "-n", "2", *sample.restore_args(),
                    env={"RV_KILL_AT": "no_corruption", "RV_KILL_PID": "postmaster",
                         "RV_KILL_ONCE": str(tmp_path / "killed")})
    assert (tmp_path / "killed").exists(), run.explain()
    _assert_an_error(run, "connection to the database was lost")
    assert not list(run.tmp.glob("restore-verify-*")), "the run left its cluster behind"


def test_an_existing_target_killed_during_the_checks_is_an_error_said_once(
    sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """The server of an existing target is killed (-9) just before row_counts runs: the tests that could not run
    are "not run", the run is an error (exit 7) naming the lost connection once, nothing is failed."""
    from tests.conftest import restore_sample_into
    from tests.test_faults import _existing_target_args

    with EmbeddedServer(jobs=1) as server:
        restore_sample_into(server, sample, "killed_target")
        postmaster = int((server.datadir / "postmaster.pid").read_text().split()[0])
        run = run_suite("-p", "tests.kill_in_check", "-n", "2",
                        *_existing_target_args(server.conninfo("killed_target"), sample),
                        env={"RV_KILL_AT": "row_counts", "RV_KILL_PID": str(postmaster),
                             "RV_KILL_ONCE": str(tmp_path / "killed")})
    assert (tmp_path / "killed").exists(), run.explain()
    _assert_an_error(run, "connection to the database was lost")
    assert run.result["checklist"]["row_counts"] in ("skipped", "incomplete"), run.explain()
    assert run.result["checklist_reasons"]["row_counts"].count("not run:") == 1, run.explain()


def test_a_backend_that_crashes_while_a_check_reads_is_evidence_not_the_verifiers_world(
    sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """The other side of the line: a backend of the run's own server dies of SIGSEGV while a check reads (as a
    crash on a corrupt page would), not killed from outside: the run fails, no_corruption naming the server's own
    line and what the backend ran; the tests the crash stopped are not run, never failed themselves."""
    run = run_suite("-p", "tests.kill_in_check", "-n", "2", *sample.restore_args(),
                    env={"RV_KILL_AT": "row_counts", "RV_KILL_PID": "backend-segv",
                         "RV_KILL_ONCE": str(tmp_path / "killed")})
    assert (tmp_path / "killed").exists(), run.explain()
    assert run.returncode == 1, run.explain()
    assert run.result["outcome"] == "failed", run.explain()
    assert run.result["checklist"]["no_corruption"] == "failed", run.explain()
    reason = run.result["checklist_reasons"]["no_corruption"]
    assert "the server crashed while the checks read the restored data" in reason, reason
    assert "terminated by signal 11" in reason, reason
    assert [f["origin"] for f in run.result["failures"]] == ["restore"], run.explain()
