"""One way to wait for something with a deadline: poll, say how it stands, give up with a clear error.

Every wait of the library goes through :func:`wait_until` (an RDS instance becoming available, a deployment's pods
stopping or becoming ready), so that each has a deadline, a progress line and one wording of "not done in time".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(poll: Callable[[], T | None], *, timeout_s: float, interval_s: float,
               on_timeout: Callable[[float], Exception], progress: Callable[[float], None] | None = None) -> T:
    """Call ``poll`` until it returns something other than None (returned), at most ``timeout_s`` seconds.

    ``progress`` is told the elapsed seconds after every unsuccessful poll; ``on_timeout`` makes the error raised
    when the deadline passes (it is told the elapsed seconds too). The first poll happens at once, and the last
    one no later than the deadline.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        found = poll()
        if found is not None:
            return found
        now = time.monotonic()
        if progress is not None:
            progress(now - started)
        if now >= deadline:
            raise on_timeout(now - started)
        time.sleep(max(0.0, min(interval_s, deadline - now)))
