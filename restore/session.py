"""One restore, start to finish: the pipeline over a :class:`~restore.backups.sources.Source` and a
:class:`~restore.targets.base.Target`.

fetch the backup → read and verify it (and its manifest) → start the target → load the dump (:func:`load_dump`:
roles, database, pg_restore or psql, statistics) → ready. A base backup or an RDS snapshot is restored by its
target when it starts; an existing database is only described.

:func:`prepare` is a context manager yielding a :class:`PreparedDatabase` and tearing the target down on exit
(unless kept). A wrong configuration raises ConfigError before anything starts; anything else that goes wrong is
not raised: the outcome records it as ``refused``, so that ``restore_succeeded`` fails with the reason and every
other check skips, naming it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psycopg
from psycopg import sql

from restore.backups.archive import ArchiveInfo, inspect, verify_readable
from restore.backups.outcome import PreparedDatabase, RestoreOutcome
from restore.backups.pgrestore import (
    RestoreProgress,
    ToolRun,
    accept,
    apply_database_entries,
    create_roles,
    data_seen,
    diagnose,
    run_psql_file,
)
from restore.backups.sources import Source
from restore.compare import manifest
from restore.conninfo import get_param
from restore.errors import ConfigError, ManifestMismatch, RestoreError, VerifierFault
from restore.targets.base import Target, TargetSpec, open_target
from restore.tools import clean_env, pg_tool, tool_version

__all__ = ["PreparedDatabase", "RestoreOutcome", "RestorePlan", "prepare", "refused"]

DEFAULT_RESTORED_DBNAME = "restored"  # a dump that does not say its database's name


class Clock:
    """Times the phases of a restore into ``outcome.phases_s``."""

    def __init__(self, outcome: RestoreOutcome) -> None:
        self.outcome = outcome

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.outcome.phases_s[name] = round(time.monotonic() - start, 3)


def unforeseen(step: str, exc: BaseException) -> str:
    """An error nothing anticipated, in words: the step, the error, and that the backup is not judged by it."""
    return (f"The restore failed while {step}: {type(exc).__name__}: {exc}. This error was not anticipated by "
            "restore-verify, so nothing was verified and the backup is not proven either way; the traceback is in "
            "restore.log. Run again; if it repeats, report it with that log.")


def restore_dbname(info: ArchiveInfo) -> str:
    database_entry = next((e.tag for e in info.entries if e.desc == "DATABASE"), None)
    return info.dbname or database_entry or DEFAULT_RESTORED_DBNAME


@dataclass(frozen=True)
class RestorePlan:
    """Everything a restore needs, resolved from options before anything starts."""

    target: TargetSpec
    source: Source | None
    jobs: int
    log_path: Path
    globals_file: Path | None = None
    allowed_errors: tuple[str, ...] = ()
    keep_target: bool = False
    progress: Callable[[str], None] | None = None  # told how the restore stands, about once a second
    manifest: Path | None = None  # the backup's manifest, checked against the backup before anything is restored
    server_dir: Path | None = None  # --server-dir: where an embedded server writes (default: TMPDIR)


def refused(target: TargetSpec, reason: str, *, log_path: Path, write_log: bool = True,
            verifier_fault: bool = False) -> PreparedDatabase:
    """A run that restored nothing because something before the restore failed: restore_succeeded fails with
    ``reason`` (or, the verifier's own fault, does not run) and every other item is skipped naming it."""
    outcome = RestoreOutcome(performed=target.needs_restore, refused=reason, log_path=str(log_path), duration_s=0.0,
                             verifier_fault=verifier_fault)
    if write_log:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as log:
            log.write(f"# refused: {reason}\n")
    return PreparedDatabase(target_name=target.name, target_kind=target.kind, target_display=target.redacted(),
                            conninfo=None, dbname=None, app_host=None, app_port=None, owned=target.needs_restore,
                            archive=None, restore=outcome)


def _check_manifest(path: Path | None, info: ArchiveInfo) -> int | None:
    """A truncated manifest, or one of another backup, is refused before the restore spends its time. Returns the
    database's size on disk when the manifest was taken (newer manifests record it)."""
    if path is None:
        return None
    try:
        data = manifest.load(path, keep=True)  # compared with the restore afterwards: parsed once
    except (OSError, ValueError) as exc:
        raise ManifestMismatch.unreadable(path, str(exc)) from exc
    manifest.check_belongs_to(data, path, info)
    size = data.get("database", {}).get("size_bytes")
    return int(size) if isinstance(size, int) else None


# Room a restore needs beyond the database itself: a new cluster (about 40 MB) and some WAL.
CLUSTER_OVERHEAD_BYTES = 64 * 1024 * 1024
# The restored database is never smaller than its compressed archive, and rarely bigger than three times it (a
# guess, stated); a manifest's size is the source's on disk, bloat included, so a restore may well need less.
LIKELY_ARCHIVE_FACTOR = 3.0


def space_needed(info: ArchiveInfo, database_bytes: int | None) -> tuple[int, int, str]:
    """Bytes a restore of ``info`` needs where the server writes: at least (below it, it cannot fit), likely (below
    it, it may not), and how that was estimated."""
    size = info.path.stat().st_size if info.path.is_file() else sum(
        p.stat().st_size for p in info.path.rglob("*") if p.is_file())
    if database_bytes:
        return (max(size, database_bytes // 2) + CLUSTER_OVERHEAD_BYTES,
                int(database_bytes * 1.1) + CLUSTER_OVERHEAD_BYTES,
                f"the database was {database_bytes / 1e6:,.0f} MB on disk when its manifest was taken (a restore "
                f"without its bloat needs at least half of that), plus {CLUSTER_OVERHEAD_BYTES // 2**20} MB for a "
                "new cluster")
    return (size + CLUSTER_OVERHEAD_BYTES, int(size * LIKELY_ARCHIVE_FACTOR) + CLUSTER_OVERHEAD_BYTES,
            f"no manifest records the database's size: at least the {info.format} archive's {size / 1e6:,.0f} MB, "
            f"likely up to {LIKELY_ARCHIVE_FACTOR:g} times it, plus {CLUSTER_OVERHEAD_BYTES // 2**20} MB for a new "
            "cluster")


def _check_room(target: Target, info: ArchiveInfo, database_bytes: int | None, log: IO[str],
                progress: Callable[[str], None] | None, outcome: RestoreOutcome) -> None:
    """Choose where the server writes (in memory when the restore is small), refuse early, as the verifier's own
    fault, a restore that cannot fit there; say when it may not."""
    least, likely, how = space_needed(info, database_bytes)
    if (placed := target.place(likely)) is not None:
        log.write(f"# {placed}\n")
        outcome.server_placement = placed
    room = target.room()
    if room is None:
        return
    where, free = room
    fix = "--server-dir=PATH (ini server_dir) on a larger volume, or free space there"
    if free < least:
        raise VerifierFault(
            f"Not enough disk space to restore: the restore needs at least about {least / 1e6:,.0f} MB ({how}), and "
            f"{where} has {free / 1e6:,.0f} MB free. Nothing was restored. Give it more space: {fix}.")
    said = (f"room: {where} has {free / 1e6:,.0f} MB free; the restore needs at least {least / 1e6:,.0f} MB, likely "
            f"{likely / 1e6:,.0f} MB ({how})")
    log.write(f"# {said}\n")
    if free < likely and progress is not None:
        progress(f"warning: the restore may not fit: {said}. If it runs out, give it more space: {fix}")


class _Beside:
    """A step run in a thread beside the next ones (the archive's end-to-end read beside the server's start): its
    own duration, and what it raised, re-raised by :meth:`wait`."""

    def __init__(self, work: Callable[[], None]) -> None:
        self.seconds = 0.0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name="restore-verify-beside", daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], None]) -> None:
        started = time.monotonic()
        try:
            work()
        except BaseException as exc:  # handed to the caller's thread by wait()
            self.error = exc
        finally:
            self.seconds = time.monotonic() - started

    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self) -> None:
        self._thread.join()
        if self.error is not None:
            raise self.error


def _read_backup(plan: RestorePlan, source: Source, outcome: RestoreOutcome, clock: Clock,
                 stack: contextlib.ExitStack) -> tuple[ArchiveInfo, int | None, _Beside]:
    """Fetch the dump (an S3 object into a temporary directory removed at the end), read its table of contents,
    check that its manifest is its own, and start proving it readable end to end (``pg_restore -f /dev/null``) in
    a thread: the caller starts the target meanwhile and waits for the proof before it loads anything."""
    with clock.phase("fetch"):
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="restore-verify-fetch-")))
        fetched = source.fetch(scratch, progress=plan.progress)
        outcome.backup_spec, outcome.fetched_checksum = fetched.spec, fetched.checksum
        if fetched.manifest is not None:  # keep it as evidence: the temporary copy goes at the end
            kept = plan.log_path.parent / fetched.manifest.name
            shutil.copy(fetched.manifest, kept)
            outcome.fetched_manifest = str(kept)
    with clock.phase("verify_archive"):
        info = inspect(fetched.path)
        size = _check_manifest(plan.manifest or (Path(outcome.fetched_manifest) if outcome.fetched_manifest else None),
                               info)
    return info, size, _Beside(lambda: verify_readable(info))


def _describe_backup(plan: RestorePlan, source: Source) -> ArchiveInfo:
    """An existing target: the dump it was restored from says which tables and keys must exist, and when the
    backup was taken. It is only read, and a dump that cannot be read is a configuration error."""
    assert source.path is not None  # a local dump (a remote one is not fetched for an existing target)
    try:
        info = inspect(source.path)
        _check_manifest(plan.manifest, info)
    except ManifestMismatch as exc:
        raise ConfigError(str(exc)) from exc
    except RestoreError as exc:
        raise ConfigError(f"--backup names the dump this existing target was restored from, so that its table of "
                          f"contents says what must be there; it cannot be read: {exc}") from exc
    return info


@contextlib.contextmanager
def prepare(plan: RestorePlan, *, run_id: str = "run") -> Iterator[PreparedDatabase]:
    """Restore the backup into the target (for an existing target, only describe it) and yield the database."""
    target = open_target(plan.target, jobs=plan.jobs, keep=plan.keep_target, run_id=run_id, progress=plan.progress,
                         server_dir=plan.server_dir)
    target.check(plan.source)
    source = plan.source
    info: ArchiveInfo | None = None
    if not target.restores:
        info = _describe_backup(plan, source) if source is not None and source.path is not None else None
        yield _prepared(target, RestoreOutcome(), info, target.conninfo(), plan)
        return

    outcome = RestoreOutcome(performed=True, log_path=str(plan.log_path),
                             backup_spec=source.spec if source else None)
    clock = Clock(outcome)
    started = time.monotonic()
    plan.log_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        log: IO[str] = stack.enter_context(plan.log_path.open("a"))
        info = None
        dbname: str | None = None
        step = "reading the backup"
        readable: _Beside | None = None  # the archive's end-to-end read, beside the target's start
        try:
            if source is not None and source.logical:
                outcome.jobs, outcome.pg_restore_version = plan.jobs, tool_version("pg_restore")
                info, database_bytes, readable = _read_backup(plan, source, outcome, clock, stack)
            step = "starting the target" + (" and recovering the backup" if source and source.physical else "")
            try:
                if info is not None and target.loads_dumps:
                    _check_room(target, info, database_bytes, log, plan.progress, outcome)
                with clock.phase("start_target"):
                    stack.callback(target.stop)
                    target.start(source=source, info=info, log=log)
                if (room := target.room()) is not None:
                    outcome.server_dir = str(room[0])
            except Exception:
                if readable is not None:
                    readable.wait()  # an unreadable archive is the finding, whatever else stopped the start
                raise
            read: list[bool] = []

            def finish_reading() -> None:
                """No data is loaded from an archive not read to its end (the schema comes from its table of
                contents, read whole before: it may load meanwhile)."""
                if readable is None or read:
                    return
                read.append(True)
                readable.wait()
                outcome.phases_s["verify_archive"] = round(outcome.phases_s["verify_archive"] + readable.seconds, 3)

            if readable is not None and readable.done():
                finish_reading()  # already over: an unreadable archive stops the restore before anything is loaded
            step = "loading the dump"
            if info is not None and target.loads_dumps:
                dbname = load_dump(target, info, outcome, clock, log, jobs=plan.jobs, globals_file=plan.globals_file,
                                   allowed_errors=plan.allowed_errors, progress=plan.progress,
                                   before_data=finish_reading)
            else:
                finish_reading()
                dbname = get_param(target.conninfo(), "dbname")
                outcome.exit_code = 0
        except ConfigError:
            raise
        except RestoreError as exc:
            outcome.refused = "\n".join([str(exc), *getattr(exc, "__notes__", [])])
            outcome.verifier_fault = exc.blame == "verifier"
            detail = getattr(exc, "detail", "")
            log.write(f"# refused ({'the verifier' if outcome.verifier_fault else 'the backup'}): {exc}\n{detail}\n")
            if detail:
                outcome.refused += f"\n{detail}"
            dbname = None
        except Exception as exc:  # what no one foresaw (a tool, a cloud SDK, a full disk, a bug): never a crash,
            # and no evidence against the backup either: the run is an error, not a failed backup test
            why = target.trouble()  # the server's own account, when it went away (killed, out of disk)
            outcome.refused = (f"The restore was stopped by the verifier's own world while {step}, not by the "
                               f"backup: {why} ({type(exc).__name__}: {exc})." if why else unforeseen(step, exc))
            outcome.verifier_fault = True
            log.write(f"# refused (the verifier): {outcome.refused}\n{''.join(traceback.format_exception(exc))}\n")
            dbname = None
        outcome.duration_s = round(time.monotonic() - started, 3)
        log.flush()
        usable = dbname is not None and outcome.refused is None
        yield _prepared(target, outcome, info, target.conninfo(dbname) if usable else None, plan, dbname=dbname)


def _prepared(target: Target, outcome: RestoreOutcome, info: ArchiveInfo | None, conninfo: str | None,
              plan: RestorePlan, *, dbname: str | None = None) -> PreparedDatabase:
    usable = conninfo is not None
    host, port = target.app_address() if usable else (None, None)
    return PreparedDatabase(
        target_name=plan.target.name, target_kind=plan.target.kind,
        target_display=target.display(dbname) if usable else plan.target.redacted(),
        conninfo=conninfo, dbname=dbname or (get_param(conninfo, "dbname") if conninfo else None),
        app_host=host, app_port=port, owned=target.loads_dumps,
        archive=info.summary() if info is not None else target.backup_summary(),
        restore=outcome, kept=target.kept(dbname) if usable and plan.keep_target else (),
        server_log=str(log) if (log := target.server_log()) is not None else None,
        server_log_from=log.stat().st_size if log is not None and log.exists() else 0,
        fetched_manifest=outcome.fetched_manifest,
    )


def load_dump(target: Target, info: ArchiveInfo, outcome: RestoreOutcome, clock: Clock, log: IO[str], *,
              jobs: int, globals_file: Path | None, allowed_errors: tuple[str, ...],
              progress: Callable[[str], None] | None, before_data: Callable[[], None] = lambda: None) -> str:
    """Restore ``info`` into a new database of ``target``; returns the database's name. ``before_data`` (it may
    raise) is called before anything but the schema is loaded: the archive's end-to-end read, still running."""
    dbname = restore_dbname(info)
    plain = info.format in ("plain", "plain-gzip")
    creates_itself = plain and any(e.desc == "DATABASE" for e in info.entries)
    outcome.logical = True
    with clock.phase("roles"):
        create_roles(target.conninfo(), info, outcome, log, globals_file=globals_file, allowed_errors=allowed_errors)
    if not creates_itself:
        with psycopg.connect(target.conninfo(), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(dbname)))
    with clock.phase("restore"):
        run: ToolRun
        if plain:
            before_data()  # psql runs the schema and the data as one script
            run = run_psql_file(info.path, target.conninfo("postgres" if creates_itself else dbname), log=log,
                                plain_dump=True)
        else:
            with RestoreProgress(progress, target.conninfo(dbname), len(info.tables_with_data())) as ticker:
                run = target.restore_dump(info, dbname, jobs=jobs, log=log, on_line=ticker.on_line,
                                          before_data=before_data)
            before_data()  # once, whatever the restore's runs were
            outcome.pg_restore_where = run.where
            outcome.jobs_used, outcome.jobs_reason = run.jobs, run.jobs_reason
            outcome.pg_restore_version = run.version or outcome.pg_restore_version
    if run.exit_code != 0 or run.errors:
        # A server that went away or filled its disk under the restore: the verifier's world, not the backup's
        # (its errors are no evidence, and --allow-restore-error must never be the fix for them).
        if (why := target.trouble()) is not None:
            raise VerifierFault(f"The restore was stopped by the verifier's own world while loading the dump, not "
                                f"by the backup: {why}.")
    outcome.exit_code = run.exit_code
    outcome.command = run.command
    outcome.data_processed, outcome.data_failed = (data_seen(run.output, info.entries) if run.output and not plain
                                                   else (run.data_processed, run.data_failed))
    accept(run.errors, allowed_errors, outcome)
    outcome.diagnosis = diagnose(outcome.errors, dumped_from=info.dumped_from, server=target.server_label())
    with clock.phase("ready"):
        with psycopg.connect(target.conninfo(dbname), autocommit=True) as conn:
            # Our own throwaway copy: amcheck may be installed here (never on an existing target).
            if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'").fetchone() is None:
                conn.execute("CREATE EXTENSION amcheck")
                outcome.installed_extensions.append("amcheck")
        # Statistics, as a DBA would gather before letting the application in: critical-query budgets and
        # check plans are meaningless on a never-analyzed database.
        subprocess.run(
            [str(pg_tool("vacuumdb")), "--analyze-only", f"--jobs={max(jobs, 1)}", "--quiet",
             "--dbname", target.conninfo(dbname)],
            check=False, capture_output=True, env=clean_env(),
        )
    if not plain:  # last: a database set read-only by the backup would refuse the steps above
        with clock.phase("database"):
            accept(apply_database_entries(target.conninfo(dbname), info, dbname, log=log), allowed_errors, outcome)
    return dbname
