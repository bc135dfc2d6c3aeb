"""A plugin for self-tests: ``-p tests.kill_in_restore`` kills the embedded server (SIGKILL, as the OOM killer
does) when pg_restore starts loading the first table's data, and waits until it is gone: the fault lands inside the
restore at a known point, never a race. With ``RV_RESTORE_FAULT=sigterm-self`` it sends SIGTERM to the run itself
there instead (a CI job cancelled while the restore runs).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import IO, Any

from restore.targets.embedded import EmbeddedTarget
from tests.kill_in_check import _alive

_original = EmbeddedTarget.restore_dump


def _restore_dump(self: EmbeddedTarget, info: Any, dbname: str, *, jobs: int, log: IO[str],
                  on_line: Callable[[str], None], before_data: Callable[[], None] | None = None) -> Any:
    killed: list[int] = []

    def line(text: str) -> None:
        if not killed and "processing data for table" in text and os.environ.get("RV_RESTORE_FAULT") == "sigterm-self":
            killed.append(os.getpid())
            os.kill(os.getpid(), signal.SIGTERM)
        if not killed and "processing data for table" in text:
            pid = int((self.server.datadir / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            deadline = time.monotonic() + 60
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        on_line(text)

    return _original(self, info, dbname, jobs=jobs, log=log, on_line=line, before_data=before_data)


def pytest_configure() -> None:
    EmbeddedTarget.restore_dump = _restore_dump  # type: ignore[method-assign]
