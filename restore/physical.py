"""Physical backups: a ``pg_basebackup`` (plain or tar) and its WAL archive, recovered to a point in time.

``--backup=basebackup:PATH?wal=DIR&db=NAME`` (``--recovery-target-time=ISO`` or ``--recovery-target-name=NAME``;
default: to the end of the archived WAL). The backup is checked with ``pg_verifybackup`` first (its manifest, and the
WAL it needs), copied into the data directory of a fresh private server (the embedded one: a backup recovers only
into its own major), recovered with ``restore_command`` reading the archive, promoted, and verified like any other
restore. Whether the recovery reached its target is read from the server: the commit time of the last transaction it
replayed (``rpo`` fails when that is older than the target by more than the RPO, or newer than the target).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg

from restore.errors import ArchiveUnreadable, RestoreError
from restore.tools import clean_env, pg_tool, tool_version
from restore.waiting import wait_until

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


def verify(base: Path, wal_dir: Path | None) -> str:
    """``pg_verifybackup``: every file against the backup's manifest, and the WAL the backup needs (from the
    archive). Returns what was verified; raises ArchiveUnreadable naming what is wrong."""
    if not (base / "backup_manifest").exists():
        return "not verified: the backup has no backup_manifest (pg_basebackup --no-manifest?)"
    wal = [f"--wal-directory={wal_dir}"] if wal_dir else ["--no-parse-wal"]
    done = subprocess.run([str(pg_tool("pg_verifybackup")), *wal, str(base)], capture_output=True, text=True,
                          env=clean_env())
    if done.returncode != 0:
        raise ArchiveUnreadable(f"pg_verifybackup rejects the base backup {base}: "
                                f"{(done.stderr or done.stdout).strip().splitlines()[0]}. A file of the backup, or a "
                                "WAL segment it needs, is missing or damaged; take a new base backup, or find the "
                                "segment named in the archive.", detail=done.stderr or done.stdout)
    return "pg_verifybackup: files and WAL verified" if wal_dir else "pg_verifybackup: files verified"


def combine(full: Path, incrementals: tuple[Path, ...], datadir: Path) -> None:
    """``pg_combinebackup``: a full backup and its incremental ones (oldest first) as one, in ``datadir``."""
    done = subprocess.run([str(pg_tool("pg_combinebackup")), str(full), *map(str, incrementals), "-o", str(datadir)],
                          capture_output=True, text=True, env=clean_env())
    if done.returncode != 0:
        raise ArchiveUnreadable(f"pg_combinebackup cannot combine {full} with its incremental backups "
                                f"({', '.join(map(str, incrementals))}): {done.stderr.strip().splitlines()[-1]}. "
                                "Each incremental backup must follow the one before it (pg_basebackup "
                                "--incremental=<previous>/backup_manifest); pass them oldest first.",
                                detail=done.stderr)


def unpack(base: Path, datadir: Path, incrementals: tuple[Path, ...] = ()) -> None:
    """A plain backup's files, or a tar backup's base.tar(.gz) and pg_wal.tar(.gz), into ``datadir``; a full backup
    and its incremental ones are combined there."""
    tars = sorted(base.glob("base.tar*"))
    if incrementals:
        combine(base, incrementals, datadir)
    elif tars:
        for archive in [*tars, *sorted(base.glob("pg_wal.tar*"))]:
            into = datadir / "pg_wal" if archive.name.startswith("pg_wal") else datadir
            into.mkdir(exist_ok=True)
            with tarfile.open(archive) as tar:
                tar.extractall(into, filter="data")
    else:
        shutil.copytree(base, datadir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("backup_manifest"))
    if not (datadir / "PG_VERSION").exists():
        raise ArchiveUnreadable(f"{base} is not a base backup: no PG_VERSION (a pg_basebackup -Fp directory, or one "
                                "holding base.tar / base.tar.gz, is expected).")
    major = (datadir / "PG_VERSION").read_text().strip()
    ours = tool_version("postgres").split(".")[0]
    if major != ours:
        raise RecoveryFailed(f"The base backup is of PostgreSQL {major}; a physical backup recovers only into a server "
                             f"of its own major, and this machine's is {ours}. Recover it with PostgreSQL {major}'s "
                             "own binaries; nothing was restored.")
    (datadir / "postmaster.pid").unlink(missing_ok=True)
    (datadir / "recovery.signal").touch()
    (datadir / "pg_wal").mkdir(exist_ok=True)
    (datadir / "pg_wal" / "archive_status").mkdir(exist_ok=True)


def recovery_settings(wal_dir: Path | None, target: RecoveryTarget) -> dict[str, str]:
    settings = {"archive_mode": "off", "hot_standby": "on", "recovery_target_action": "'promote'",
                "recovery_target_timeline": "'latest'", "primary_conninfo": "''", "lc_messages": "C"}
    if wal_dir is not None:
        settings["restore_command"] = f"'cp \"{wal_dir}/%f\" \"%p\"'"
    return settings | target.settings()


def explain(log: str, wal_dir: Path | None, target: RecoveryTarget) -> RecoveryFailed:
    """A server that stopped during recovery (``log``: its log), in a DBA's words: the WAL segment that was
    missing, when it was."""
    denied = re.search(r"cp: cannot open '([^']+)' for reading: Permission denied", log)
    if denied:
        return RecoveryFailed(f"The server cannot read the WAL archive: {denied.group(1)} is not readable by the "
                              "server's own user (embedded_postgres when the suite runs as root). Make the archive "
                              "readable to it (chmod -R o+rX, or chown), then run again. Nothing was restored.")
    if "recovery ended before configured recovery target was reached" in log:
        restored = _SEGMENT.findall(log)
        missing = _next_segment(restored[-1]) if restored else None
        where = f" {wal_dir}" if wal_dir else " (no wal=DIR given)"
        named = (f"WAL segment {missing} is missing from the archive{where} (the last one restored was "
                 f"{restored[-1]})" if missing else f"the archive{where} ends before it")
        return RecoveryFailed(f"Recovery ended before its target ({target}) was reached: {named}. Without that "
                              "segment the backup cannot be recovered to the target: find it (the archiver's log, "
                              "another copy of the archive) or choose an earlier target. Nothing usable was restored.")
    err = RecoveryFailed("The recovery of the base backup failed; the server's log follows.")
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
