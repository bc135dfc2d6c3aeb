"""Loading a dump into a fresh server the run owns: roles, database, pg_restore or psql, statistics.

The target decides where pg_restore runs (:meth:`restore.targets.Target.restore_dump`); everything else is the
same for every server: the roles the dump names exist first, errors are split into accepted and not, and the
database is analyzed before any check runs.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import psycopg
from psycopg import sql

from restore.archive import ArchiveInfo, referenced_roles
from restore.embedded import SUPERUSER
from restore.outcome import RestoreOutcome
from restore.pgrestore import ToolRun, run_psql_file, table_done
from restore.targets import Target
from restore.tools import clean_env, pg_tool

DEFAULT_RESTORED_DBNAME = "restored"


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


def accept(errors: list[str], patterns: tuple[str, ...], outcome: RestoreOutcome, *, prefix: str = "",
           why: str = "") -> None:
    """Split errors into unaccepted and accepted; an accepted one keeps its text and says what accepted it."""
    for error in errors:
        pattern = next((p for p in patterns if re.search(p, error)), None)
        if pattern is None:
            outcome.errors.append(prefix + error)
        else:
            # Shell-quoted as the flag takes it: pasting it accepts exactly this error again.
            outcome.accepted_errors.append(f"{prefix}{error}  [accepted: {why}"
                                           f"--allow-restore-error={shlex.quote(pattern)}]")


_POST_DATA = re.compile(r'(?:creating|finished item \d+) (INDEX|CONSTRAINT|FK CONSTRAINT|TRIGGER) "?([^"]+?)"?\s*$')


class RestoreProgress:
    """Tables done / total, then the index and constraint builds, with bytes written and elapsed time, reported
    about once a second while pg_restore runs (a restore spends its last stretch building indexes)."""

    def __init__(self, report: Callable[[str], None] | None, conninfo: str, total: int) -> None:
        self.report, self.conninfo, self.total = report, conninfo, total
        self.done = 0
        self.built = 0
        self.building: str | None = None
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)

    def on_line(self, line: str) -> None:
        if table_done(line):
            self.done += 1
        elif found := _POST_DATA.search(line):
            if "finished item" in line:
                self.built += 1
            self.building = f"{found.group(1).lower()} {found.group(2)}"

    def status(self, size_mb: float) -> str:
        elapsed = f"{size_mb:,.0f} MB written, {time.monotonic() - self.started:.0f} s"
        data = f"{min(self.done, self.total)}/{self.total} tables' data"
        if self.building is None:
            return f"restoring: {data}, {elapsed}"
        built = f" ({self.built} done)" if self.built else ""
        return f"restoring: {data}; building indexes and constraints{built}: {self.building}; {elapsed}"

    def _tick(self) -> None:
        assert self.report is not None
        with contextlib.suppress(psycopg.Error), psycopg.connect(self.conninfo, autocommit=True) as conn:
            while not self._stop.wait(1.0):
                row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
                self.report(self.status(int(row[0]) / 1e6 if row else 0.0))

    def __enter__(self) -> RestoreProgress:
        if self.report is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def create_roles(conninfo: str, info: ArchiveInfo, outcome: RestoreOutcome, log: IO[str], *,
                 globals_file: Path | None, allowed_errors: tuple[str, ...]) -> None:
    """Owners and grantees must exist before the restore, or ownership and grants are lost with an error.

    With ``--globals`` the real roles (with their password hashes and memberships) come from
    ``pg_dumpall --globals-only``; without it every role the archive names is created NOLOGIN, and listed.
    """
    if globals_file is not None:
        outcome.globals_file = str(globals_file)
        # The target's own superuser keeps its password: a production ALTER ROLE would lock the suite out.
        own_role = re.compile(rf'^ALTER ROLE "?{SUPERUSER}"? ', re.IGNORECASE)
        run = run_psql_file(globals_file, conninfo, log=log, plain_dump=False,
                            skip_line=lambda line: bool(own_role.match(line)))
        # The run's own bootstrap superuser always exists already; that one error is expected.
        own = f'role "{SUPERUSER}" already exists'
        accept(run.errors, (re.escape(own), *allowed_errors), outcome, prefix="[globals] ",
               why="the target's own bootstrap superuser; as a flag: ")
    needed = referenced_roles(info)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        existing = {r for (r,) in conn.execute("SELECT rolname FROM pg_roles")}
        for role in sorted(needed - existing):
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
            outcome.roles_created.append(role)


_UNKNOWN_OPTION = re.compile(r'unrecognized parameter "([^"]+)"')


def diagnose(errors: list[str], *, dumped_from: str | None, server: str) -> list[str]:
    """Recognisable restore errors explained once, with the fix (not once per table)."""
    options = sorted({m.group(1) for e in errors for m in _UNKNOWN_OPTION.finditer(e)})
    if not options:
        return []
    affected = sum(1 for e in errors if _UNKNOWN_OPTION.search(e))
    return [f"{affected} error(s) come from table or column options this server ({server}) does not know: "
            f"{', '.join(options)}. The dump sets them because its source (PostgreSQL {dumped_from or '?'}) stores "
            "them (some minor releases add such options, e.g. Debian's PostgreSQL 15.20 writes pg_attver on "
            "every column), so every table that carries one fails to restore here. Restore into a server of the "
            "dump's own major and minor (--target=docker, or a targets.toml image of that release), or take the "
            "dump from a source whose release does not write them."]


def restore_dbname(info: ArchiveInfo) -> str:
    database_entry = next((e.tag for e in info.entries if e.desc == "DATABASE"), None)
    return info.dbname or database_entry or DEFAULT_RESTORED_DBNAME


def load_dump(target: Target, info: ArchiveInfo, outcome: RestoreOutcome, clock: Clock, log: IO[str], *,
              jobs: int, globals_file: Path | None, allowed_errors: tuple[str, ...],
              progress: Callable[[str], None] | None) -> str:
    """Restore ``info`` into a new database of ``target``; returns the database's name."""
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
            run = run_psql_file(info.path, target.conninfo("postgres" if creates_itself else dbname), log=log,
                                plain_dump=True)
        else:
            with RestoreProgress(progress, target.conninfo(dbname), len(info.tables_with_data())) as ticker:
                run = target.restore_dump(info, dbname, jobs=jobs, log=log, on_line=ticker.on_line)
            outcome.pg_restore_where = run.where
            outcome.pg_restore_version = run.version or outcome.pg_restore_version
    outcome.exit_code = run.exit_code
    outcome.command = run.command
    outcome.data_processed = run.data_processed
    outcome.data_failed = run.data_failed
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
    return dbname
