"""A plugin for self-tests: ``-p tests.kill_in_check`` with ``RV_KILL_PID=PID``, ``RV_KILL_AT=CHECKLIST_ID`` and
``RV_KILL_ONCE=PATH`` kills PID (``self``: the pytest-xdist worker running the test; ``postmaster``: the run's own
server; ``backend-segv``: the check's own backend, with SIGSEGV as a crash on reading) with SIGKILL, as the OOM
killer does, just before the first test of that item runs, in whichever worker gets there first, and waits until
it is gone: the fault lands at a known point, never a race.
"""

from __future__ import annotations

import os
import signal
import time

import pytest


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child of another process lingers as a zombie until reaped: gone for every client.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def _postmaster(item: pytest.Item) -> int:
    import psycopg

    from fixtures.session import STATE_KEY

    state = item.config.stash[STATE_KEY]
    assert state is not None
    assert state.prepared is not None
    assert state.prepared.conninfo is not None
    with psycopg.connect(state.prepared.conninfo) as conn:  # read while the backend lives
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        with open(f"/proc/{row[0]}/stat") as stat:
            return int(stat.read().split(") ", 1)[1].split()[1])


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    at, pid, once = os.environ.get("RV_KILL_AT"), os.environ.get("RV_KILL_PID"), os.environ.get("RV_KILL_ONCE")
    marker = item.get_closest_marker("checklist")
    if not (at and pid and once) or marker is None or marker.args[0] != at:
        return
    try:
        os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return  # another worker killed it
    if pid == "self":  # this worker itself, as the OOM killer would pick it
        os.kill(os.getpid(), signal.SIGKILL)
    if pid == "postmaster":  # the run's own server: the parent of this check's backend
        pid = str(_postmaster(item))
    if pid == "backend-segv":  # this check's own backend dies as a crash on reading would (SIGSEGV)
        conn = item.funcargs["db_conn"]  # type: ignore[attr-defined]
        pid = str(conn.info.backend_pid)
        os.kill(int(pid), signal.SIGSEGV)
        _wait_gone(int(pid))
        return
    os.kill(int(pid), signal.SIGKILL)
    _wait_gone(int(pid))


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 60
    while _alive(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} still alive 60 s after its signal")
        time.sleep(0.05)
