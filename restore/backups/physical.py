"""Physical backups recovered to a point in time: what they share, and the ``pg_basebackup`` kind.

Each kind (:class:`PhysicalBackup`: :class:`BaseBackup` here, ``restore/backups/pgbackrest.py``,
``restore/backups/barman.py``) is checked by its own tool first, laid into the data directory of a fresh private
server of the backup's own major (the embedded one, or another major's binaries found by :func:`server_binaries`),
recovered with a ``restore_command`` reading its WAL (``--recovery-target-time=ISO`` or
``--recovery-target-name=NAME``; default: to the end of the WAL), promoted, and verified like any other restore.
``--backup=basebackup:PATH?wal=DIR&db=NAME``: the backup is checked with ``pg_verifybackup`` (its manifest, and the
WAL it needs) and copied (or untarred, or combined with its incremental backups) into place.

Whether the recovery reached its target is read from the server: the commit time of the last transaction it
replayed (``rpo`` fails when that is older than the target by more than the RPO, or newer than the target).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import tarfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg

from restore.backups import walfetch
from restore.errors import ArchiveUnreadable, ConfigError, RestoreError
from restore.tools import clean_env, pg_tool, tool_version
from restore.waiting import wait_until

# Runs a command as the user the recovering server runs as (embedded_postgres when the suite runs as root): the
# files it writes are the server's, and a repository it cannot read fails here, not halfway through recovery.
RunAsOwner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]

_SEGMENT = re.compile(r'restored log file "([0-9A-F]{24})" from archive')


@dataclass(frozen=True)
class RecoveryTarget:
    """Where recovery stops: a WAL position (a manifest's snapshot: exact on a source that keeps writing), a time,
    a named restore point (pg_create_restore_point), or the end of the WAL. With ``lsn``, ``time`` says when that
    position was written (for rpo), and recovery stops at the position."""

    time: datetime | None = None
    name: str | None = None
    lsn: str | None = None

    @property
    def latest(self) -> bool:
        return self.time is None and self.name is None and self.lsn is None

    def settings(self) -> dict[str, str]:
        if self.lsn is not None:
            return {"recovery_target_lsn": f"'{self.lsn}'", "recovery_target_inclusive": "on"}
        if self.time is not None:
            return {"recovery_target_time": f"'{self.time.isoformat()}'"}
        if self.name is not None:
            return {"recovery_target_name": "'" + self.name.replace("'", "''") + "'"}
        return {}

    def __str__(self) -> str:
        if self.lsn is not None:
            return f"LSN {self.lsn}" + (f" ({self.time.isoformat()})" if self.time else "")
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

    def wal_segments(self) -> set[str] | None:
        """The names of the WAL segments (and timeline history files) the archive holds, to prove where the WAL
        ends, listed where the restore command reads them; None when there is no archive (a self-contained backup).
        Raises when the archive cannot be listed (the end of recovery then stays unproven)."""
        ...

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """The environment its tools and the recovering server (its restore_command) run with: ``base``, with the
        backup's own credentials when where it is described brings them (never written to disk or a log)."""
        ...

    def about(self) -> dict[str, Any] | None:
        """What the backup's owner says about its backups (CloudNativePG's Cluster and Backup objects), for
        result.json backup.cnpg and the checks that judge it; None when there is no such owner."""
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
            try:
                with tarfile.open(archive, "r:*") as tar:  # every gzip member (see _read_tar)
                    for member in tar:
                        if member.name in ("PG_VERSION", "./PG_VERSION"):
                            found = tar.extractfile(member)
                            if found is not None:
                                return major_of(found.read().decode())
            except _TAR_DAMAGE as exc:
                raise _damaged_tar(archive, exc, "reading it for PG_VERSION") from exc
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

    def wal_segments(self) -> set[str] | None:
        return archived_names(self.wal) if self.wal else None

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        return dict(base)

    def about(self) -> dict[str, Any] | None:
        return None

    def fill(self, datadir: Path, run: RunAsOwner) -> dict[str, str]:
        unpack(self.path, datadir, self.incrementals, self._tools)
        # No archive: recovery replays the WAL the backup holds (-X stream / fetch) and ends there; a server before
        # PostgreSQL 16 refuses recovery without a restore_command, so one that finds nothing is given.
        fetch = f'cp "{self.wal}/%f" "%p"' if self.wal else "false"
        return recovery_settings(fetch, self.target)


_WAL_NAME = re.compile(r"^([0-9A-F]{24}|[0-9A-F]{8}\.history)(\.(gz|lz4|zst|bz2|xz))?$")
_TAR_DAMAGE = (tarfile.TarError, EOFError, OSError, zlib.error)


def archived_names(wal_dir: Path) -> set[str]:
    """The WAL segments and timeline history files a WAL archive directory holds (compressed ones by their
    segment's name); .partial files and anything else left out."""
    return {m.group(1) for p in wal_dir.iterdir() if (m := _WAL_NAME.match(p.name))}


def _damaged_tar(archive: Path, exc: BaseException, doing: str, *, members: int = 0, last: str | None = None,
                 ) -> ArchiveUnreadable:
    how_far = (f"{members} file(s) were read, the last one {last}" if members else "not one file could be read")
    return ArchiveUnreadable(f"The base backup's archive {archive} is truncated or damaged ({type(exc).__name__}: "
                             f"{exc or 'unexpected end of data'}) while {doing}: {how_far}, of "
                             f"{archive.stat().st_size:,} bytes. A base backup copied or uploaded only in part, or "
                             "a damaged disk; take a new base backup, or find a complete copy. Nothing was restored.")


def _read_tar(archive: Path) -> None:
    """Read every member of a tar (every gzip member too) to its end; raises the damaged-tar error naming it."""
    members, last = 0, None
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                content = tar.extractfile(member)
                while content is not None and content.read(1 << 20):
                    pass
                members, last = members + 1, member.name
    except _TAR_DAMAGE as exc:
        raise _damaged_tar(archive, exc, "reading it", members=members, last=last) from exc


def _segment_name(timeline: int, lsn: str, segment_size: int = 16 * 1024 * 1024) -> str:
    high, low = (int(x, 16) for x in lsn.split("/"))
    segno = ((high << 32) | low) // segment_size
    per_log = 0x100000000 // segment_size
    return f"{timeline:08X}{segno // per_log:08X}{segno % per_log:08X}"


def needed_wal(base: Path) -> list[str]:
    """The WAL segments a base backup needs to be consistent, from its backup_manifest's WAL-Ranges (16 MB
    segments, the default)."""
    ranges = json.loads((base / "backup_manifest").read_text()).get("WAL-Ranges", [])
    names = []
    for r in ranges:
        first, last = _segment_name(int(r["Timeline"]), r["Start-LSN"]), _segment_name(int(r["Timeline"]), r["End-LSN"])
        name = first
        while True:
            names.append(name)
            if name >= last:
                break
            name = next_segment(name)
    return names


def _check_needed_wal(base: Path, wal_dir: Path | None) -> str:
    """A tar backup's WAL (pg_verifybackup cannot parse it there): every segment its manifest's WAL-Ranges span
    must be in the archive, or in the backup's own pg_wal.tar."""
    needed = needed_wal(base)
    held = archived_names(wal_dir) if wal_dir else set()
    if not (held >= set(needed)) and any(base.glob("pg_wal.tar*")):
        return "the WAL it needs is in its own pg_wal.tar (pg_basebackup -X stream)"
    missing = [name for name in needed if name not in held]
    if missing:
        where = f"the WAL archive {wal_dir}" if wal_dir else "no WAL archive (wal=DIR)"
        raise ArchiveUnreadable(f"The base backup {base} needs WAL segment {missing[0]}"
                                f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}, written while it "
                                f"ran, and {where} does not hold it: without it the backup is not consistent. Find "
                                "the segment (the archiver's log, another copy of the archive) or take a new base "
                                "backup.")
    return f"its {len(needed)} WAL segment(s) ({needed[0]} to {needed[-1]}) are in the archive"


def verify(base: Path, wal_dir: Path | None, tools: Path | None = None) -> str:
    """``pg_verifybackup``: every file against the backup's manifest, and the WAL the backup needs (from the
    archive). A tar backup's files are verified with ``-n`` (PostgreSQL 18 parses no WAL in a tar backup) and its
    WAL is checked against the archive by name. Returns what was verified; raises ArchiveUnreadable naming what is
    wrong."""
    if not (base / "backup_manifest").exists():
        return "not verified: the backup has no backup_manifest (pg_basebackup --no-manifest?)"
    tar = any(base.glob("base.tar*"))
    # pg_verifybackup reads tar backups from PostgreSQL 18 on: the embedded one's, whatever the backup's major.
    verifier = pg_tool("pg_verifybackup") if tar else (tools or pg_tool("pg_verifybackup").parent) / "pg_verifybackup"
    wal = ["--no-parse-wal"] if tar or not wal_dir else [f"--wal-directory={wal_dir}"]
    done = subprocess.run([str(verifier), *wal, str(base)], capture_output=True, text=True, env=clean_env())
    if done.returncode != 0:
        if tar:  # its words for a cut archive ("COPY stream ended …") do not say which: read each to name it
            for archive in sorted(base.glob("*.tar*")):
                _read_tar(archive)
        raise ArchiveUnreadable(f"pg_verifybackup rejects the base backup {base}: "
                                f"{(done.stderr or done.stdout).strip().splitlines()[0]}. A file of the backup, or a "
                                "WAL segment it needs, is missing or damaged; take a new base backup, or find the "
                                "segment named in the archive.", detail=done.stderr or done.stdout)
    if tar:
        return f"pg_verifybackup -n: files verified; {_check_needed_wal(base, wal_dir)}"
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
            members, last = 0, None
            try:
                # "r:*", not the streaming "r|*": pg_basebackup -z writes pg_wal.tar.gz as two gzip members, the
                # first empty, and a streaming reader stops after it. Read in order, a truncated archive still
                # fails where it ends. lz4 and zstd tars (pg_basebackup --compress=lz4|zstd) are not read here.
                with tarfile.open(archive, "r:*") as tar:
                    for member in tar:
                        tar.extract(member, into, filter="data")
                        members, last = members + 1, member.name
            except _TAR_DAMAGE as exc:
                raise _damaged_tar(archive, exc, "unpacking it", members=members, last=last) from exc
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


def explain(log: str, archive: str, target: RecoveryTarget,
            listing: Callable[[], set[str] | None] = lambda: None) -> RestoreError:
    """A server that stopped during recovery (``log``: its log), in a DBA's words: the WAL segment that was
    missing, when it was. ``archive``: where the WAL comes from ("the WAL archive /x"); ``listing``: what it
    holds (to tell a gap in the archive from an archive that ends before the target). An archive that could not be
    read (the restore command failed other than by "not found", walfetch.py) is the verifier's world."""
    if (unreadable := walfetch.fault(log, archive)) is not None:
        return unreadable
    denied = re.search(r"cp: cannot open '([^']+)' for reading: Permission denied", log)
    if denied:
        return RecoveryFailed(f"The server cannot read the WAL archive: {denied.group(1)} is not readable by the "
                              "server's own user (embedded_postgres when the suite runs as root). Make the archive "
                              "readable to it (chmod -R o+rX, or chown), then run again. Nothing was restored.")
    if "recovery ended before configured recovery target was reached" in log:
        restored = _SEGMENT.findall(log)
        last_commit = re.findall(r"last completed transaction was at log time ([^\n;]+)", log)
        commit = f"; the last transaction replayed committed at {last_commit[-1].strip()}" if last_commit else ""
        if not restored:
            return RecoveryFailed(f"Recovery ended before its target ({target}) was reached: {archive} gave no WAL "
                                  f"segment at all{commit}. Check that the archive is the one the backup's server "
                                  "archives into, or choose an earlier target. Nothing usable was restored.")
        missing = next_segment(restored[-1])
        try:
            held = listing()
        except Exception:  # the listing only words the message better; the failure stands without it
            held = None
        newer = sorted(n for n in held or () if len(n) == 24 and n[:8] == missing[:8] and n > missing)
        if newer:
            return RecoveryFailed(f"Recovery ended before its target ({target}) was reached: WAL segment {missing} is "
                                  f"missing from {archive}, which holds {len(newer)} newer segment(s) of the same "
                                  f"timeline (up to {newer[-1]}): a gap inside the archive (the last segment restored "
                                  f"was {restored[-1]}{commit}). Find that segment (the archiver's log, another copy "
                                  "of the archive) or choose a target before it. Nothing usable was restored.")
        ends = ("ends" if held is not None else "seems to end")
        return RecoveryFailed(f"Recovery ended before its target ({target}) was reached: {archive} {ends} at WAL "
                              f"segment {restored[-1]}{commit}; nothing after it was archived, so the target is "
                              "later than anything this archive can recover to. Choose a target at or before that "
                              "commit, or check the source's archiving (archive_command failing? "
                              "pg_stat_archiver). Nothing usable was restored.")
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


def next_segment(name: str) -> str:
    """The WAL segment after ``name`` (16 MB segments: 256 per "log" of the name's middle part)."""
    timeline, log, seg = int(name[:8], 16), int(name[8:16], 16), int(name[16:], 16)
    log, seg = (log + 1, 0) if seg == 0xFF else (log, seg + 1)
    return f"{timeline:08X}{log:08X}{seg:08X}"


def prove_end(conninfo: str, server_log: str, archive: str,
              listing: Callable[[], set[str] | None]) -> tuple[bool, str]:
    """With no target, recovery must have replayed all the archive holds on its timeline: PostgreSQL takes the first
    segment it cannot fetch as the end of the archive and promotes, so a gap would silently lose every later
    commit. Raises RecoveryFailed naming the first missing segment and what lies after it.

    Returns (proven, what was found). The proof rests on ``listing`` (what the archive holds) only when that listing
    holds every segment recovery restored from the archive: an empty listing, one of another prefix, one that a
    permission or a cut-short page left partial cannot tell the archive's end, so the end is then *not* proven
    (the item is incomplete), never taken as proven."""
    try:
        held = listing()
    except Exception as exc:  # any listing failure: the end is unproven, the recovery itself stands
        return False, (f"the end of recovery could not be proven: {archive} could not be listed "
                       f"({type(exc).__name__}: {exc}); whether it holds WAL newer than what was replayed is unknown")
    if held is None:
        return True, ("end of recovery: the backup holds all the WAL it recovers (a self-contained backup, no "
                      "archive), verified by pg_verifybackup")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp(), "
                           "current_setting('wal_segment_size')").fetchone()
    replayed_to, last_commit, segment_size = row if row else (None, None, "16MB")
    return judge_end(server_log, archive, held, replayed_to=replayed_to, last_commit=last_commit,
                     segment_size=_size_bytes(str(segment_size)))


def judge_end(server_log: str, archive: str, held: set[str], *, replayed_to: str | None,
              last_commit: datetime | None, segment_size: int = 16 * 1024 * 1024) -> tuple[bool, str]:
    """:func:`prove_end` once the archive is listed and the server asked where replay ended (``replayed_to``, an
    LSN): proven, unproven, or RecoveryFailed for a gap."""
    promoted = re.findall(r"selected new timeline ID: (\d+)", server_log)
    if replayed_to is None or not promoted:
        return False, "the end of recovery could not be proven: the server did not say where recovery ended"
    restored = _SEGMENT.findall(server_log)
    # The last segment taken from the archive (the replay position can sit on the next one's first byte).
    last = max(restored) if restored else _segment_name(int(promoted[-1]) - 1, replayed_to, segment_size)
    commit = f" (the last transaction replayed committed at {last_commit.isoformat()})" if last_commit else ""
    unlisted = sorted(set(restored) - held)
    if not restored or unlisted:
        why = (f"recovery took no WAL segment from {archive}, so its listing cannot be shown to be the archive "
               "recovery read" if not restored else
               f"the listing of {archive} lacks {len(unlisted)} of the {len(set(restored))} segment(s) recovery "
               f"restored from it ({unlisted[0]}{' …' if len(unlisted) > 1 else ''}), so it is not the whole archive "
               "recovery read")
        return False, (f"the end of recovery could not be proven: {why} (a prefix or path other than the one the "
                       "restore command reads, a permission that hides objects, a listing cut short). Recovery "
                       f"stopped at segment {last}{commit}; whether the archive holds newer WAL is unknown. Make the "
                       "archive listable as the restore command reads it, then run again.")
    timeline = int(last[:8], 16)
    newer = sorted(n for n in held if len(n) == 24 and n[:8] == last[:8] and n > last)
    later = sorted(n for n in held if n.endswith(".history") and int(n[:8], 16) > timeline)
    if newer:
        raise RecoveryFailed(f"Recovery stopped at WAL segment {last}{commit}, but {archive} holds {len(newer)} newer "
                             f"segment(s) of the same timeline, up to {newer[-1]}: segment {next_segment(last)} is "
                             "missing, so PostgreSQL took it for the end of the archive and promoted, and every "
                             f"transaction committed after it (up to {newer[-1]}) is not in this restore. Find segment "
                             f"{next_segment(last)} (the archiver's log, another copy of the archive); to verify what "
                             "can be recovered, give a recovery target before it. Nothing usable was restored.")
    if later:
        raise RecoveryFailed(f"Recovery ended on timeline {timeline} at segment {last}{commit}, but {archive} holds "
                             f"the history of a later timeline ({later[-1]}) that recovery did not follow: the WAL "
                             f"of that timeline is missing or unreadable. Find it, or recover to a target on timeline "
                             f"{timeline}. Nothing usable was restored.")
    return True, (f"end of recovery proven: it replayed up to segment {last}, the newest {archive} holds on timeline "
                  f"{timeline}; the archive's listing holds all {len(set(restored))} segment(s) recovery restored")


def _size_bytes(setting: str) -> int:
    """``wal_segment_size`` as SHOW gives it ("16MB")."""
    number, unit = re.fullmatch(r"(\d+)\s*(\w*)", setting.strip()).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3}.get(unit, 1)


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
