"""Physical backups recovered to a point in time: what they share, and the ``pg_basebackup`` kind.

Each kind (:class:`PhysicalBackup`: :class:`BaseBackup` here, ``restore/pgbackrest.py``, ``restore/barman.py``) is
checked by its own tool first, laid into the data directory of a fresh private server of the backup's own major (the
embedded one, or another major's binaries found by :func:`server_binaries`), recovered with a ``restore_command``
reading its WAL (``--recovery-target-time=ISO`` or ``--recovery-target-name=NAME``; default: to the end of the WAL),
promoted, and verified like any other restore.

``--backup=basebackup:PATH?wal=DIR&db=NAME``: the backup is checked with ``pg_verifybackup`` (its manifest, and the
WAL it needs) and copied (or untarred, or combined with its incremental backups) into place.

Whether the recovery reached its target is read from the server: the commit time of the last transaction it
replayed (``rpo`` fails when that is older than the target by more than the RPO, or newer than the target).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import psycopg

from restore.errors import ArchiveUnreadable, ConfigError, RestoreError
from restore.tools import clean_env, pg_tool, tool_version
from restore.waiting import wait_until

# Runs a command as the user the recovering server runs as (embedded_postgres when the suite runs as root): the
# files it writes are the server's, and a repository it cannot read fails here, not halfway through recovery.
RunAsOwner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]

_SEGMENT = re.compile(r'restored log file "([0-9A-F]{24})" from archive')


@dataclass(frozen=True)
class RecoveryTarget:
    """Where recovery stops: a time, a named restore point (pg_create_restore_point), or the end of the WAL."""

    time: datetime | None = None
    name: str | None = None

    def settings(self) -> dict[str, str]:
        if self.time is not None:
            return {"recovery_target_time": f"'{self.time.isoformat()}'"}
        if self.name is not None:
            return {"recovery_target_name": "'" + self.name.replace("'", "''") + "'"}
        return {}

    def __str__(self) -> str:
        return self.time.isoformat() if self.time else f"restore point {self.name}" if self.name else "latest"


class RecoveryFailed(RestoreError):
    """The backup could not be recovered to its target: nothing usable was restored."""


class PhysicalBackup(Protocol):
    """One kind of physical backup (a pg_basebackup directory, a pgBackRest stanza, a Barman Cloud server): what
    the embedded target needs to recover it into a fresh server of the backup's own major."""

    @property
    def format(self) -> str:
        """result.json backup.format: "basebackup", "pgbackrest", "barman-cloud"."""
        ...

    @property
    def label(self) -> str:
        """The backup as a DBA names it (path, stanza, URL), never a secret."""
        ...

    @property
    def archive(self) -> str:
        """Where its WAL comes from, for messages ("the WAL archive /x", "the pgBackRest repository …")."""
        ...

    def major(self) -> str:
        """The PostgreSQL major the backup was taken from ("15"): the server it recovers into must be that."""
        ...

    def verify(self) -> list[str]:
        """The backup tool's own check of files and WAL; lines for the restore log. Raises ArchiveUnreadable."""
        ...

    def fill(self, datadir: Path, run: RunAsOwner) -> dict[str, str]:
        """Lay the backup's files into the empty ``datadir`` (``run``: as the server's user) and return the
        settings that make the server recover it to ``target`` (restore_command and the target)."""
        ...


# Where another major's server binaries live (Debian/Ubuntu's postgresql-N, the PGDG RPMs), after the override.
_BIN_DIRS = ("/usr/lib/postgresql/{major}/bin", "/usr/pgsql-{major}/bin")
BIN_ENV = "RESTORE_VERIFY_PG{major}_BIN"


def server_binaries(major: str) -> Path | None:
    """The bin directory of a PostgreSQL ``major`` server: None for the embedded one (its own major), else the
    directory named by ``$RESTORE_VERIFY_PG<major>_BIN`` or a system install. Raises ConfigError when there is
    none: a physical backup recovers only into a server of its own major."""
    ours = tool_version("postgres").split(".")[0]
    if major == ours:
        return None
    override = os.environ.get(BIN_ENV.format(major=major))
    for candidate in ([override] if override else []) + [d.format(major=major) for d in _BIN_DIRS]:
        if (Path(candidate) / "postgres").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    raise ConfigError(f"The backup is of PostgreSQL {major}; a physical backup recovers only into a server of its own "
                      f"major, and no PostgreSQL {major} server was found here (this suite embeds {ours}; looked in "
                      f"${BIN_ENV.format(major=major)} and {', '.join(d.format(major=major) for d in _BIN_DIRS)}). "
                      f"Install one (Debian/Ubuntu: apt install postgresql-{major}; RHEL: postgresql{major}-server) "
                      f"or set ${BIN_ENV.format(major=major)} to its bin directory. Nothing was restored.")


def major_of(version_file_text: str) -> str:
    return version_file_text.strip().split(".")[0]


def prepare_recovery(datadir: Path) -> None:
    """What every restored data directory needs before its server starts in recovery."""
    if not (datadir / "PG_VERSION").exists():
        raise ArchiveUnreadable(f"The restored files in {datadir} are not a data directory (no PG_VERSION): the "
                                "backup is empty or of another kind.")
    (datadir / "postmaster.pid").unlink(missing_ok=True)
    (datadir / "recovery.signal").touch()
    (datadir / "pg_wal").mkdir(exist_ok=True)
    (datadir / "pg_wal" / "archive_status").mkdir(exist_ok=True)


@dataclass(frozen=True)
class BaseBackup:
    """``basebackup:PATH?wal=DIR``: a pg_basebackup directory (plain or tar; a full one and its incremental ones)."""

    path: Path
    wal: Path | None
    incrementals: tuple[Path, ...]
    target: RecoveryTarget
    format: str = "basebackup"

    @property
    def label(self) -> str:
        return str(self.path)

    @property
    def archive(self) -> str:
        return f"the WAL archive {self.wal}" if self.wal else "the WAL archive (no wal=DIR given)"

    def major(self) -> str:
        return self._major

    @functools.cached_property
    def _major(self) -> str:
        """Read once: in a tar backup, PG_VERSION is found by reading the archive up to it (stopping there, not
        indexing every member of a large base.tar.gz)."""
        version = self.path / "PG_VERSION"
        if version.exists():
            return major_of(version.read_text())
        for archive in sorted(self.path.glob("base.tar*")):
            with tarfile.open(archive, "r|*") as tar:
                for member in tar:
                    if member.name in ("PG_VERSION", "./PG_VERSION"):
                        found = tar.extractfile(member)
                        if found is not None:
                            return major_of(found.read().decode())
        raise ArchiveUnreadable(f"{self.path} is not a base backup: no PG_VERSION (a pg_basebackup -Fp directory, "
                                "or one holding base.tar / base.tar.gz, is expected).")

    @functools.cached_property
    def _tools(self) -> Path:
        """The backup's own major's tools: pg_verifybackup reads its WAL, pg_combinebackup its manifests."""
        return server_binaries(self.major()) or pg_tool("pg_verifybackup").parent

    def verify(self) -> list[str]:
        chain = (self.path, *self.incrementals)
        tools = self._tools
        # The WAL the newest one needs is in the archive; the older ones' WAL is not needed.
        return [line for backup in chain for line in (
            f"$ pg_verifybackup {backup}", verify(backup, self.wal if backup == chain[-1] else None, tools))]

    def fill(self, datadir: Path, run: RunAsOwner) -> dict[str, str]:
        unpack(self.path, datadir, self.incrementals, self._tools)
        # No archive: recovery replays the WAL the backup holds (-X stream / fetch) and ends there; a server before
        # PostgreSQL 16 refuses recovery without a restore_command, so one that finds nothing is given.
        fetch = f'cp "{self.wal}/%f" "%p"' if self.wal else "false"
        return recovery_settings(fetch, self.target)


def verify(base: Path, wal_dir: Path | None, tools: Path | None = None) -> str:
    """``pg_verifybackup``: every file against the backup's manifest, and the WAL the backup needs (from the
    archive). Returns what was verified; raises ArchiveUnreadable naming what is wrong."""
    if not (base / "backup_manifest").exists():
        return "not verified: the backup has no backup_manifest (pg_basebackup --no-manifest?)"
    wal = [f"--wal-directory={wal_dir}"] if wal_dir else ["--no-parse-wal"]
    done = subprocess.run([str((tools or pg_tool("pg_verifybackup").parent) / "pg_verifybackup"), *wal, str(base)],
                          capture_output=True, text=True, env=clean_env())
    if done.returncode != 0:
        raise ArchiveUnreadable(f"pg_verifybackup rejects the base backup {base}: "
                                f"{(done.stderr or done.stdout).strip().splitlines()[0]}. A file of the backup, or a "
                                "WAL segment it needs, is missing or damaged; take a new base backup, or find the "
                                "segment named in the archive.", detail=done.stderr or done.stdout)
    return "pg_verifybackup: files and WAL verified" if wal_dir else "pg_verifybackup: files verified"


def combine(full: Path, incrementals: tuple[Path, ...], datadir: Path, tools: Path | None = None) -> None:
    """``pg_combinebackup``: a full backup and its incremental ones (oldest first) as one, in ``datadir``."""
    combiner = (tools or pg_tool("pg_combinebackup").parent) / "pg_combinebackup"
    done = subprocess.run([str(combiner), str(full), *map(str, incrementals), "-o", str(datadir)],
                          capture_output=True, text=True, env=clean_env())
    if done.returncode != 0:
        raise ArchiveUnreadable(f"pg_combinebackup cannot combine {full} with its incremental backups "
                                f"({', '.join(map(str, incrementals))}): {done.stderr.strip().splitlines()[-1]}. "
                                "Each incremental backup must follow the one before it (pg_basebackup "
                                "--incremental=<previous>/backup_manifest); pass them oldest first.",
                                detail=done.stderr)


def unpack(base: Path, datadir: Path, incrementals: tuple[Path, ...] = (), tools: Path | None = None) -> None:
    """A plain backup's files, or a tar backup's base.tar(.gz) and pg_wal.tar(.gz), into ``datadir``; a full backup
    and its incremental ones are combined there."""
    tars = sorted(base.glob("base.tar*"))
    if incrementals:
        combine(base, incrementals, datadir, tools)
    elif tars:
        for archive in [*tars, *sorted(base.glob("pg_wal.tar*"))]:
            into = datadir / "pg_wal" if archive.name.startswith("pg_wal") else datadir
            into.mkdir(exist_ok=True)
            with tarfile.open(archive) as tar:
                tar.extractall(into, filter="data")
    else:
        shutil.copytree(base, datadir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("backup_manifest"))
    prepare_recovery(datadir)


def recovery_settings(restore_command: str | None, target: RecoveryTarget) -> dict[str, str]:
    """What every recovery needs, the target, and the command that fetches a WAL segment (None: the backup tool
    wrote its own into postgresql.auto.conf)."""
    settings = {"archive_mode": "off", "hot_standby": "on", "recovery_target_action": "'promote'",
                "recovery_target_timeline": "'latest'", "primary_conninfo": "''", "lc_messages": "C"}
    if restore_command is not None:
        settings["restore_command"] = "'" + restore_command.replace("'", "''") + "'"
    return settings | target.settings()


def explain(log: str, archive: str, target: RecoveryTarget) -> RecoveryFailed:
    """A server that stopped during recovery (``log``: its log), in a DBA's words: the WAL segment that was
    missing, when it was. ``archive``: where the WAL comes from ("the WAL archive /x")."""
    denied = re.search(r"cp: cannot open '([^']+)' for reading: Permission denied", log)
    if denied:
        return RecoveryFailed(f"The server cannot read the WAL archive: {denied.group(1)} is not readable by the "
                              "server's own user (embedded_postgres when the suite runs as root). Make the archive "
                              "readable to it (chmod -R o+rX, or chown), then run again. Nothing was restored.")
    if "recovery ended before configured recovery target was reached" in log:
        restored = _SEGMENT.findall(log)
        missing = _next_segment(restored[-1]) if restored else None
        named = (f"WAL segment {missing} is missing from {archive} (the last one restored was {restored[-1]})"
                 if missing else f"{archive} ends before it")
        return RecoveryFailed(f"Recovery ended before its target ({target}) was reached: {named}. Without that "
                              "segment the backup cannot be recovered to the target: find it (the archiver's log, "
                              "another copy of the archive) or choose an earlier target. Nothing usable was restored.")
    other = re.search(r"WAL file is from different database system: WAL file database system identifier is "
                      r"(\d+), pg_control database system identifier is (\d+)", log)
    if other:
        return RecoveryFailed(f"{archive[0].upper()}{archive[1:]} holds WAL of another cluster (system identifier "
                              f"{other.group(1)}; the backup's is {other.group(2)}): the backup and the WAL given do "
                              "not belong together. Point the suite at this backup's own archive (the "
                              "archive_command of the server it was taken from). Nothing usable was restored.")
    if "requested recovery stop point is before consistent recovery point" in log:
        return RecoveryFailed(f"The recovery target {target} is before the end of the backup: a backup recovers only "
                              "to moments after it finished (its files are consistent from then on). Choose a later "
                              "target, or an older backup. Nothing was restored.")
    if "could not locate required checkpoint record" in log or "could not find redo location" in log:
        return RecoveryFailed(f"The backup cannot start recovery: the WAL from its own start is missing from "
                              f"{archive}. Every backup needs the WAL written while it ran; take a new backup, or "
                              "find that WAL. Nothing usable was restored.")
    err = RecoveryFailed("The recovery of the backup failed; the server's log follows.")
    err.add_note(log[-4000:])
    return err


def _next_segment(name: str) -> str:
    """The WAL segment after ``name`` (16 MB segments: 256 per "log" of the name's middle part)."""
    timeline, log, seg = int(name[:8], 16), int(name[8:16], 16), int(name[16:], 16)
    log, seg = (log + 1, 0) if seg == 0xFF else (log, seg + 1)
    return f"{timeline:08X}{log:08X}{seg:08X}"


def wait_promoted(conninfo: str, timeout_s: float) -> None:
    """Until recovery has reached its target and the server was promoted (read-write)."""
    def promoted() -> bool | None:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        return True if row and not row[0] else None

    wait_until(promoted, timeout_s=timeout_s, interval_s=0.2, on_timeout=lambda s: RecoveryFailed(
        f"The server was still recovering after {s:.0f} s: the WAL to replay is longer than that, or recovery is "
        "waiting for a segment the archive does not have."))


def backup_started(datadir: Path) -> datetime | None:
    """When the (newest) base backup started, from its backup_label: the data is at least that recent."""
    label = datadir / "backup_label"
    found = re.search(r"^START TIME: (.+)$", label.read_text(), re.M) if label.exists() else None
    if not found:
        return None
    try:
        return datetime.strptime(found.group(1).strip().replace("UTC", "+0000"), "%Y-%m-%d %H:%M:%S %z")
    except ValueError:
        return None


def segments_restored(log: str) -> int:
    """How many WAL segments recovery took from the archive (its log says each)."""
    return len(_SEGMENT.findall(log))


def replayed_until(conninfo: str) -> datetime | None:
    """The commit time of the last transaction recovery replayed (it stays after promotion)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT pg_last_xact_replay_timestamp()").fetchone()
    return row[0] if row else None
