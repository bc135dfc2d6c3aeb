"""Run pg_restore (archives) or psql (plain SQL) and account for every error they report.

Both tools report an error and carry on by default; the exit code alone hides how many objects were lost.
Every error is kept with the TOC entry or SQL line it belongs to, so that the report can name what failed.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psycopg
from psycopg import sql

from restore.backups.archive import ArchiveInfo, TocEntry, open_plain, referenced_roles
from restore.backups.outcome import RestoreOutcome
from restore.tools import SUPERUSER, clean_env, pg_tool, tool_version
from restore.untrusted import visible


@dataclass
class ToolRun:
    """What one pg_restore/psql invocation reported."""

    command: str
    exit_code: int = 0
    errors: list[str] = field(default_factory=list)
    data_processed: list[str] = field(default_factory=list)
    data_failed: list[str] = field(default_factory=list)
    reported_error_count: int = 0
    output: str = field(default="", repr=False)  # pg_restore's whole stderr, for data_seen (names may span lines)
    where: str | None = None  # "host (pg_restore 18.1)", "container postgres:15 (pg_restore 15.8)"
    version: str | None = None  # of the tool that ran
    jobs: int | None = None  # pg_restore's --jobs (None: psql)
    jobs_reason: str | None = None  # why fewer than asked for (restore_jobs)

    def merge(self, part: ToolRun) -> None:
        """Add what one of several runs reported: each reports its own errors and count, the restore's are all of
        them (a failed schema entry does not stop the data, as in one run without --exit-on-error)."""
        self.exit_code = self.exit_code or part.exit_code
        self.errors += part.errors
        self.data_processed += part.data_processed
        self.data_failed += part.data_failed
        self.reported_error_count += part.reported_error_count
        self.output += part.output


_PREFIX = re.compile(r"pg_restore: ?")
_TOC_CONTEXT = re.compile(r"from TOC entry \d+; \d+ \d+ (.*)$")
# pg_restore prints the names as they are (no quoting), so the name runs to the line's last double quote.
_PROCESSING_DATA = re.compile(r'processing data for table "(.+)"\s*$')
_FINISHED_DATA = re.compile(r"finished item \d+ TABLE DATA (.+)$")
_IGNORED = re.compile(r"warning: errors ignored on restore: (\d+)")
# pg_restore names the entry by tag only ("TABLE DATA orders owner"), without its schema.
_TABLE_DATA_ENTRY = re.compile(r"^TABLE DATA (.+) \S+$")
_PSQL_ERROR = re.compile(r"^psql:[^:]*:\d+: (ERROR|FATAL|error):\s+(.*)$")
_COPY_CONTEXT = re.compile(r"^CONTEXT:\s+COPY (\S+?),")


def _chunks(line: str) -> str:
    """A line with pg_restore's separately written prefix chunks removed.

    pg_restore writes "pg_restore: ", the level ("error: ") and the message as separate writes to an
    unbuffered stderr; with --jobs, worker processes interleave them ("pg_restore:pg_restore: processing …").
    Each message is one write, so it stays whole; only the prefixes wander.
    """
    return _PREFIX.sub("", line).strip()


def parse_pg_restore_log(lines: Iterable[str], run: ToolRun) -> None:
    """Fill ``run.errors`` / ``run.data_*`` from pg_restore ``--verbose`` stderr (``run.data_*`` by line, which a
    name holding a line break splits: :func:`data_seen` decides them from ``run.output`` and the archive)."""
    lines = list(lines)
    run.output = "".join(lines)
    current: list[str] | None = None
    pending_context: str | None = None
    for raw in lines:
        line = raw.rstrip("\n")
        text = _chunks(line)
        known = (_TOC_CONTEXT, _PROCESSING_DATA, _FINISHED_DATA, _IGNORED)
        if "pg_restore:" in line or any(p.search(text) for p in known):
            if current is not None:
                run.errors.append("\n".join(current))
                current = None
            if m := _TOC_CONTEXT.search(text):
                pending_context = m.group(1)
                if t := _TABLE_DATA_ENTRY.match(pending_context):
                    run.data_failed.append(t.group(1))
            elif m := _PROCESSING_DATA.search(text):
                run.data_processed.append(m.group(1))
            elif m := _FINISHED_DATA.search(text):  # the leader, in parallel mode: tag only
                run.data_processed.append(m.group(1))
            elif m := _IGNORED.search(text):
                run.reported_error_count = int(m.group(1))
                pending_context = None
            elif text.startswith("error: "):
                message = text.removeprefix("error: ")
                current = [f"[{pending_context}] {message}" if pending_context else message]
                pending_context = None
        elif current is not None and line.strip():
            current.append(line)
    if current is not None:
        run.errors.append("\n".join(current))
    missing = run.reported_error_count - len(run.errors)
    if missing > 0:  # interleaved output hid some; the count pg_restore printed is authoritative
        run.errors.append(f"pg_restore reported {run.reported_error_count} errors; {missing} could not be "
                          "told apart in its parallel output: see the restore log")


def _one_line_breaks(text: str) -> str:
    """Line breaks as a text-mode pipe reads them (a "\\r" in a name arrives as a line break)."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


_LONGEST_NAME = 63 + 1 + 63  # schema.table, in characters: an identifier is at most 63 bytes (NAMEDATALEN - 1)


def data_seen(output: str, entries: Iterable[TocEntry]) -> tuple[list[str], list[str]]:
    """Which TABLE DATA entries pg_restore loaded, and which it reported an error for (``schema.table``).

    Decided from the archive's own entries, each looked up by its exact words in pg_restore's whole output — never
    by cutting names out of its lines, which a name holding a line break, a tab or a trailing space would split."""
    text = _one_line_breaks(output)
    # Every text that can stand between 'processing data for table "' and a '"' ending a line: a name with a line
    # break yields more than one candidate, and the right one among them. One pass, whatever the number of tables.
    # Only within the longest name there can be (schema and table, 63 bytes each, and the dot): the last chunk runs
    # to the end of the output, and a candidate at every line of it would be quadratic in memory.
    loaded: set[str] = set()
    for chunk in text.split('processing data for table "')[1:]:
        end = chunk.find('"\n', 0, _LONGEST_NAME + len('"\n'))
        while end != -1:
            loaded.add(chunk[:end])
            end = chunk.find('"\n', end + 1, _LONGEST_NAME + len('"\n'))
    failed_ids = {int(m.group(1)) for m in re.finditer(r"from TOC entry (\d+); \d+ \d+ TABLE DATA ", text)}
    processed, failed = [], []
    for e in entries:
        if e.desc != "TABLE DATA":
            continue
        if _one_line_breaks(e.qualified) in loaded:
            processed.append(e.qualified)
        if e.dump_id is not None:  # the id tells two schemas' "orders" apart
            if e.dump_id in failed_ids:
                failed.append(e.qualified)
        elif failed_ids and re.search(rf"TABLE DATA {re.escape(_one_line_breaks(e.tag))} "
                                      rf"{re.escape(_one_line_breaks(e.owner or ''))}\n", text):
            failed.append(e.qualified)
    return processed, failed


def parse_psql_log(lines: Iterable[str], run: ToolRun) -> None:
    current: list[str] | None = None
    for raw in lines:
        line = raw.rstrip("\n")
        if m := _PSQL_ERROR.match(line):
            if current is not None:
                run.errors.append("\n".join(current))
            current = [m.group(2)]
        elif current is not None and line.strip():
            current.append(line)
            if m := _COPY_CONTEXT.match(line):
                run.data_failed.append(m.group(1))
    if current is not None:
        run.errors.append("\n".join(current))


LineHook = Callable[[str], None]


def _tee(stream: IO[str], log: IO[str], sink: list[str], on_line: LineHook | None) -> None:
    for line in stream:
        log.write(visible(line))  # names in pg_restore's messages are the database's: escapes shown, not obeyed
        log.flush()
        sink.append(line)
        if on_line is not None:
            on_line(line)


def _run_logged(
    args: list[str], *, log: IO[str], stdin_lines: Iterator[str] | None = None, shown: str,
    on_line: LineHook | None = None,
) -> tuple[int, list[str]]:
    """Run a tool, copying its stderr into the restore log as it comes (a long restore is watchable)."""
    log.write(f"$ {shown}\n")
    log.flush()
    proc = subprocess.Popen(
        args, stdin=subprocess.PIPE if stdin_lines is not None else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )
    captured: list[str] = []
    assert proc.stderr is not None
    reader = threading.Thread(target=_tee, args=(proc.stderr, log, captured, on_line), daemon=True)
    reader.start()
    if stdin_lines is not None:
        assert proc.stdin is not None
        try:
            for chunk in stdin_lines:
                proc.stdin.write(chunk)
        except BrokenPipeError:
            pass
        finally:
            proc.stdin.close()
    code = proc.wait()
    reader.join()
    log.write(f"# exit code {code}\n")
    log.flush()
    return code, captured


def _fewer_jobs(archive: ArchiveInfo, jobs: int) -> str | None:
    """Why pg_restore runs ``archive`` serially though ``jobs`` were given, or None."""
    if jobs <= 1:
        return None
    if archive.format == "tar":  # pg_restore reads a tar archive sequentially
        return "a tar archive restores serially (pg_restore cannot seek in it)"
    return None


def restore_jobs(archive: ArchiveInfo, jobs: int, log: IO[str]) -> tuple[int, str | None]:
    """The pg_restore --jobs to use for ``archive`` given ``jobs``, and why it is fewer when it is (said in the
    restore log): wherever pg_restore runs, on this host or in a container."""
    why = _fewer_jobs(archive, jobs)
    if why is None:
        return max(jobs, 1), None
    log.write(f"# --jobs=1: {why}\n")
    return 1, why


# A parallel restore in two runs of pg_restore: the schema first (pre-data, which pg_restore runs serially in any
# case), then the data and the post-data (indexes, constraints) with --jobs — pg_restore's documented way to split
# a restore. Measured on 2 cores, 1,000 tables of 50 rows, median of 4: 4.2 s in two runs against 5.5 s in one with
# --jobs=2 and 5.8 s serially; the scheduling of one run over every entry costs more than the split (docs/speed.md).
SPLIT_SECTIONS = (("--section=pre-data",), ("--section=data", "--section=post-data"))


def restore_runs(jobs: int) -> tuple[tuple[str, ...], ...]:
    """The section arguments of each pg_restore run: one run serially, two with --jobs."""
    return SPLIT_SECTIONS if jobs > 1 else ((),)


def schema_only(sections: tuple[str, ...]) -> bool:
    """Whether a run with these section arguments loads the schema only (from the table of contents, which was
    read whole before the restore: it may run while the archive's data is still being read end to end)."""
    return sections == SPLIT_SECTIONS[0]


def run_pg_restore(archive: ArchiveInfo, conninfo: str, *, jobs: int, log: IO[str],
                   on_line: LineHook | None = None, before_data: Callable[[], None] | None = None) -> ToolRun:
    """pg_restore ``archive`` (see :func:`restore_runs`); ``before_data`` is called before any run that loads more
    than the schema, and may raise to stop the restore there."""
    effective_jobs, why = restore_jobs(archive, jobs, log)
    runs = restore_runs(effective_jobs)
    shown_each = [" ".join(["pg_restore --verbose", f"--jobs={effective_jobs}", *sections, "--dbname <target>",
                            str(archive.path)]) for sections in runs]
    version = tool_version("pg_restore")
    run = ToolRun(command=" && ".join(shown_each), where=f"host (pg_restore {version})", version=version,
                  jobs=effective_jobs, jobs_reason=why)
    for sections, shown in zip(runs, shown_each, strict=True):
        if before_data is not None and not schema_only(sections):
            before_data()
        args = [str(pg_tool("pg_restore")), "--verbose", f"--jobs={effective_jobs}", *sections, "--dbname",
                conninfo, str(archive.path)]
        part = ToolRun(command=shown)
        part.exit_code, lines = _run_logged(args, log=log, shown=shown, on_line=on_line)
        parse_pg_restore_log(lines, part)
        run.merge(part)
    if run.exit_code != 0 and not run.errors:
        run.errors.append(f"pg_restore exited with code {run.exit_code} without naming an error; see the restore log")
    return run


def run_psql_file(path: Path, conninfo: str, *, log: IO[str], plain_dump: bool,
                  skip_line: Callable[[str], bool] | None = None) -> ToolRun:
    """Feed a SQL file to psql without stopping at errors, the way the runbook restores plain dumps.
    ``skip_line`` leaves out lines (and says so in the log)."""
    args = [str(pg_tool("psql")), "-X", "-q", "-v", "ON_ERROR_STOP=0", "-d", conninfo, "-f", "-"]
    shown = f"psql -X -q -v ON_ERROR_STOP=0 -d <target> -f - < {path}"
    run = ToolRun(command=shown)
    lines = open_plain(path) if plain_dump else iter(path.read_text().splitlines(keepends=True))
    if skip_line is not None:
        def kept(source: Iterator[str]) -> Iterator[str]:
            for line in source:
                if skip_line(line):
                    log.write(f"# left out: {line.split(' PASSWORD ')[0].strip()} …\n")
                else:
                    yield line
        lines = kept(lines)
    run.exit_code, captured = _run_logged(args, log=log, stdin_lines=lines, shown=shown)
    parse_psql_log(captured, run)
    if run.exit_code != 0 and not run.errors:
        run.errors.append(f"psql exited with code {run.exit_code} without naming an error; see the restore log")
    return run


def apply_database_entries(conninfo: str, info: ArchiveInfo, dbname: str, *, log: IO[str]) -> list[str]:
    """What ``pg_restore --create`` would apply to the database itself — its settings (``ALTER DATABASE … SET``,
    ``ALTER ROLE … IN DATABASE … SET``: the DATABASE PROPERTIES entry), its comment, security labels and grants —
    applied to the database this restore created (pg_restore without --create skips them all). Returns the errors,
    as pg_restore's would be."""
    created = next((e.tag for e in info.entries if e.desc == "DATABASE"), None)
    entries = [e for e in info.entries if e.defn.strip() and created is not None and (
        e.desc == "DATABASE PROPERTIES" or (e.desc in ("COMMENT", "SECURITY LABEL", "ACL")
                                            and e.tag == f"DATABASE {created}"))]
    if not entries:
        return []
    if created != dbname:  # their text names the backup's database; this one has another name
        log.write(f"# database-level entries not applied: they name database {created!r}, the restore is "
                  f"{dbname!r}\n")
        return [f"[database] the backup's settings, comment and grants for database {created} were not applied to "
                f"{dbname}: restore under the backup's own database name"]
    errors = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for entry in entries:
            log.write(f"# as pg_restore --create would: {entry.desc} {entry.tag}\n{entry.defn}")
            try:
                conn.execute(entry.defn.encode())  # pg_dump's own text, as pg_restore would run it
            except psycopg.Error as exc:
                message = (exc.diag.message_primary or str(exc)).strip()
                errors.append(f"[database] {entry.desc} {entry.tag}: {message}")
                log.write(f"# error: {message}\n")
    return errors


# --- around a restore: accepted errors, what errors mean, progress, roles -----------------------------------

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


_CREATING = re.compile(r"pg_restore: creating [A-Z]")
_FINISHED_ITEM = re.compile(r"finished item (\d+) TABLE DATA ")
_POST_DATA = re.compile(r'(?:creating|finished item \d+) (INDEX|CONSTRAINT|FK CONSTRAINT|TRIGGER) "?([^"]+?)"?\s*$')


class RestoreProgress:
    """Tables done / total, then the index and constraint builds, with bytes written and elapsed time, reported
    about once a second while pg_restore runs (a restore spends its last stretch building indexes)."""

    def __init__(self, report: Callable[[str], None] | None, conninfo: str, total: int) -> None:
        self.report, self.conninfo, self.total = report, conninfo, total
        # Tables whose data arrived: items finished (parallel: pg_restore says "launching item" first), else
        # tables started (serial). Both kinds of line name a table in parallel mode: counted once, by item number.
        self.parallel = False
        self.finished: set[str] = set()
        self.started_tables = 0
        self.created = 0  # schema objects created before the data (1,000 tables take a while)
        self.built = 0
        self.building: str | None = None
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)

    @property
    def done(self) -> int:
        return len(self.finished) if self.parallel else self.started_tables

    def on_line(self, line: str) -> None:
        if "launching item" in line:
            self.parallel = True
        if finished := _FINISHED_ITEM.search(line):
            self.finished.add(finished.group(1))
        elif _PROCESSING_DATA.search(line):
            self.started_tables += 1
        elif not self.done and self.building is None and _CREATING.search(line):
            self.created += 1
        elif found := _POST_DATA.search(line):
            if "finished item" in line:
                self.built += 1
            self.building = f"{found.group(1).lower()} {found.group(2)}"

    def status(self, size_mb: float) -> str:
        elapsed = f"{size_mb:,.0f} MB written, {time.monotonic() - self.started:.0f} s"
        data = f"{min(self.done, self.total)}/{self.total} tables' data"
        if self.building is None and not self.done and self.created:
            return f"restoring: the schema ({self.created:,} objects created), then {data}, {elapsed}"
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
