"""pgBackRest: ``--backup=pgbackrest:STANZA[@TIME|@latest][?config=FILE&db=NAME]``.

The repository (posix, S3, …) is whatever the pgBackRest configuration says: ``config=FILE`` (pgBackRest's
``--config``), else its default ``/etc/pgbackrest/pgbackrest.conf``. ``pgbackrest verify`` checks the backups and WAL
in the repository first; ``pgbackrest restore`` picks the backup for the target itself (the newest one that ended
before it) and lays it into the private data directory, writing the ``restore_command`` (``pgbackrest archive-get``)
and the recovery target. pgBackRest runs as the recovering server's user: the configuration and the repository must
be readable by it (embedded_postgres when the suite runs as root).

Versions: the pgBackRest on this machine decides which PostgreSQL majors it reads (Debian 12's 2.45: up to 15;
2.56 and later: 18); the backup recovers into a server of its own major (see ``physical.server_binaries``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from restore.backups import walfetch
from restore.backups.physical import RecoveryFailed, RecoveryTarget, RunAsOwner, recovery_settings
from restore.errors import ArchiveUnreadable, ConfigError
from restore.tools import clean_env


def _binary() -> str:
    found = shutil.which("pgbackrest")
    if found is None:
        raise ConfigError("pgBackRest is not installed here (no pgbackrest on PATH): a pgbackrest: backup is read with "
                          "pgBackRest's own restore. Install it (apt install pgbackrest, or pgbackrest.org) at a "
                          "version that supports the backup's PostgreSQL major.")
    return found


def _first_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["(no output)"])[0]


@dataclass(frozen=True)
class PgBackRest:
    stanza: str
    config: Path | None
    target: RecoveryTarget
    format: str = "pgbackrest"

    @property
    def label(self) -> str:
        return f"pgBackRest stanza {self.stanza}" + (f" ({self.config})" if self.config else "")

    @property
    def archive(self) -> str:
        return f"the pgBackRest repository of stanza {self.stanza}"

    def _args(self, *more: str) -> list[str]:
        return [_binary(), *([f"--config={self.config}"] if self.config else []), f"--stanza={self.stanza}", *more]

    def _run(self, *more: str) -> subprocess.CompletedProcess[str]:
        """A read of the repository by this process (info, verify): its log on stderr only, no log file written."""
        return subprocess.run(self._args("--log-level-file=off", *more), capture_output=True, text=True,
                              env=clean_env(), timeout=3600)

    def info(self) -> dict[str, Any]:
        done = self._run("--output=json", "--log-level-console=error", "info")
        try:
            stanzas = json.loads(done.stdout) if done.returncode == 0 else []
        except json.JSONDecodeError:
            stanzas = []
        if not stanzas:
            raise ArchiveUnreadable(f"pgbackrest info cannot read stanza {self.stanza}: "
                                    f"{_first_error(done.stderr or done.stdout)}. Check the configuration "
                                    f"({self.config or '/etc/pgbackrest/pgbackrest.conf'}) and the repository's "
                                    "credentials.", detail=done.stderr)
        stanza: dict[str, Any] = stanzas[0]
        if stanza.get("status", {}).get("code", 0) != 0 or not stanza.get("backup"):
            message = stanza.get("status", {}).get("message", "no backup")
            raise ArchiveUnreadable(f"The pgBackRest repository has no usable backup of stanza {self.stanza}: "
                                    f"{message}. Check the stanza's name (pgbackrest info) and that a backup finished "
                                    "(pgbackrest --stanza=NAME backup).")
        return stanza

    def major(self) -> str:
        stanza = self.info()
        newest = stanza["backup"][-1]
        versions = {db["id"]: db["version"] for db in stanza.get("db", [])}
        return str(versions.get(newest.get("database", {}).get("id"), stanza["db"][-1]["version"])).split(".")[0]

    def verify(self) -> list[str]:
        done = self._run("--log-level-console=info", "verify")
        output = done.stdout + done.stderr
        # 2.45 exits 0 while reporting "status: error" for a stanza it could not verify: read the report too.
        if done.returncode != 0 or "status: error" in output:
            problems = [line.strip() for line in output.splitlines()
                        if line.strip() and "INFO: verify command" not in line]
            raise ArchiveUnreadable(f"pgbackrest verify rejects stanza {self.stanza}: "
                                    f"{'; '.join(problems[-4:]) or _first_error(output)}. A backup file or WAL segment "
                                    "in the repository is missing or damaged; take a new backup (or repair the "
                                    "repository) before relying on it.", detail=output)
        return [f"$ pgbackrest --stanza={self.stanza} verify", "pgbackrest verify: backups and WAL in the repository "
                "verified"]

    def fill(self, datadir: Path, run: RunAsOwner) -> dict[str, str]:
        private = datadir.parent / "pgbackrest"  # lock and spool: the server's own, not /tmp's or /var's
        run(["mkdir", "-m", "700", str(private)])
        target = self._target_options()
        # archive-get as the server runs it: the same repository, with lock and log where the server's user can
        # write (pgBackRest would otherwise also put the spool path, valid only with archive-async, in it).
        # Wrapped: "not in the repository" apart from "could not read it" (walfetch.py).
        fetch = walfetch.wrapped(datadir.parent, self._args(f"--pg1-path={datadir}", f"--lock-path={private}",
                                                            "--log-level-file=off", "--log-level-stderr=warn",
                                                            "archive-get"))
        done = run(self._args(f"--pg1-path={datadir}", f"--lock-path={private}", f"--spool-path={private}",
                              "--log-level-console=warn", "--log-level-file=off", *target,
                              f"--recovery-option=restore_command={fetch}", "restore"))
        if done.returncode != 0:
            raise self._restore_failed(done.stderr or done.stdout)
        # pgBackRest wrote restore_command and the target to postgresql.auto.conf (read after these): only what
        # every recovery needs is added here.
        return recovery_settings(None, RecoveryTarget())

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        return dict(base)  # pgBackRest's repository settings (PGBACKREST_…) are in it already (tools.clean_env)

    def about(self) -> dict[str, Any] | None:
        return None

    def wal_segments(self) -> set[str] | None:
        """Every WAL segment and history file in the stanza's archive (``pgbackrest repo-ls``)."""
        done = self._run("--log-level-console=error", "--recurse", "--output=text", "repo-ls", f"archive/{self.stanza}")
        if done.returncode != 0:  # the end of recovery then stays unproven, saying this
            raise ArchiveUnreadable(f"pgbackrest repo-ls archive/{self.stanza} failed: "
                                    f"{_first_error(done.stderr or done.stdout)}")
        return {m.group(1) for line in done.stdout.splitlines()
                if (m := re.search(r"(?:^|/)([0-9A-F]{24}|[0-9A-F]{8}\.history)(?:-[0-9a-f]{40})?(?:\.\w+)?$",
                                   line.strip()))}

    def _target_options(self) -> list[str]:
        if self.target.lsn is not None:
            return ["--type=lsn", f"--target={self.target.lsn}", "--target-action=promote"]
        if self.target.time is not None:
            # pgBackRest picks the backup by this time as well as handing it to PostgreSQL.
            when = self.target.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
            return ["--type=time", f"--target={when}", "--target-action=promote"]
        if self.target.name is not None:
            return ["--type=name", f"--target={self.target.name}", "--target-action=promote"]
        return ["--type=default"]

    def _restore_failed(self, output: str) -> Exception:
        if "unable to find backup set with stop time less than" in output:
            oldest = self._oldest_stop()
            return RecoveryFailed(f"The recovery target {self.target} is not after the end of any backup of stanza "
                                  f"{self.stanza} ({f'the oldest ended at {oldest}; ' if oldest else ''}pgBackRest "
                                  "compares whole seconds): a backup recovers only to moments after it finished. "
                                  "Choose a later target, or keep backups for longer (repo1-retention-full). Nothing "
                                  "was restored.")
        if "Permission denied" in output or "[13]" in output:
            return ArchiveUnreadable(f"pgbackrest restore cannot read stanza {self.stanza} as the server's user "
                                     f"(embedded_postgres when the suite runs as root): {_first_error(output)}. Make "
                                     "the configuration and the repository readable to it.", detail=output)
        return ArchiveUnreadable(f"pgbackrest restore of stanza {self.stanza} failed: {_first_error(output)}.",
                                 detail=output)

    def _oldest_stop(self) -> str | None:
        try:
            backups = self.info()["backup"]
        except ArchiveUnreadable:
            return None
        stop = backups[0].get("timestamp", {}).get("stop") if backups else None
        return datetime.fromtimestamp(stop, UTC).isoformat() if stop else None
