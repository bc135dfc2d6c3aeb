"""What a target whose server does not run on this machine says about this machine (RDS, a container engine's
storage, an existing database): no room to check here, no process or log to read when it goes away."""

from __future__ import annotations

from pathlib import Path


class ServerElsewhere:
    """The defaults of :class:`restore.targets.base.Target`'s place/room/trouble/server_log, for a server not run
    here."""

    def place(self, likely_bytes: int) -> str | None:
        return None  # where it writes is not this machine's to choose

    def room(self) -> tuple[Path, int] | None:
        return None  # its data lives elsewhere

    def trouble(self) -> str | None:
        return None  # no process or log of it to read here

    def server_log(self) -> Path | None:
        return None
