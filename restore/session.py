"""One restore, start to finish: verify the backup, start the target, create roles, restore, get ready.

:func:`prepare` is a context manager yielding a :class:`PreparedDatabase` — plain, JSON-able data that the
pytest plugin hands to every xdist worker — and tears the target down on exit (unless asked to keep it).
A backup that fails verification, or a target that does not start, is not raised: the outcome records it as
``refused`` so that ``restore_succeeded`` fails with the reason and every other check skips, naming it.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from restore import manifest
from restore.archive import ArchiveInfo, inspect, referenced_roles, verify_readable
from restore.aws import RdsRestore, is_rds, parse_rds
from restore.conninfo import get_param, redact
from restore.container import ContainerServer, image_for
from restore.embedded import SUPERUSER, EmbeddedServer
from restore.errors import ArchiveUnreadable, ConfigError, DumpNotFound, ManifestMismatch, RestoreError, ToolTooOld
from restore.pgrestore import ToolRun, parse_pg_restore_log, run_pg_restore, run_psql_file, table_done
from restore.sources import fetch_s3
from restore.targets import TargetSpec
from restore.tools import clean_env, pg_tool, tool_version

DEFAULT_RESTORED_DBNAME = "restored"


@dataclass(frozen=True)
class RestorePlan:
    """Everything a restore needs, resolved from options before anything starts."""

    target: TargetSpec
    backup: Path | None
    jobs: int
    log_path: Path
    globals_file: Path | None = None
    allowed_errors: tuple[str, ...] = ()
    keep_target: bool = False
    backup_url: str | None = None
    backup_pick: str | None = None
    progress: Callable[[str], None] | None = None  # called about once a second while pg_restore runs
    manifest: Path | None = None  # the backup's manifest, checked against the backup before anything is restored


@dataclass
class RestoreOutcome:
    """What happened; ``performed`` is False for an existing target (nothing restored, only verified)."""

    performed: bool = False
    refused: str | None = None
    exit_code: int | None = None
    errors: list[str] = field(default_factory=list)
    accepted_errors: list[str] = field(default_factory=list)
    phases_s: dict[str, float] = field(default_factory=dict)
    duration_s: float | None = None
    roles_created: list[str] = field(default_factory=list)
    globals_file: str | None = None
    jobs: int | None = None
    pg_restore_version: str | None = None
    pg_restore_where: str | None = None  # "host (…)" or "container <image> (…)"
    command: str | None = None
    data_processed: list[str] = field(default_factory=list)
    data_failed: list[str] = field(default_factory=list)
    installed_extensions: list[str] = field(default_factory=list)
    log_path: str | None = None
    backup_spec: str | None = None
    fetched_checksum: str | None = None
    fetched_manifest: str | None = None
    diagnosis: list[str] = field(default_factory=list)  # what recognisable errors mean, in a DBA's words

    @property
    def clean_logical_restore(self) -> bool:
        """An error-free logical restore into a fresh cluster: every constraint and unique index it created
        was checked against all restored rows as it was created (ADD CONSTRAINT, CREATE UNIQUE INDEX)."""
        return (self.performed and self.refused is None and self.exit_code == 0 and not self.errors
                and not self.accepted_errors_in_restore)

    @property
    def accepted_errors_in_restore(self) -> list[str]:
        # Errors accepted while applying --globals (the bootstrap superuser already existing) create no object.
        return [e for e in self.accepted_errors if not e.startswith("[globals] ")]


@dataclass(frozen=True)
class PreparedDatabase:
    """The database the checks verify, as plain data (it crosses to xdist workers as JSON)."""

    target_name: str
    target_kind: str
    target_display: str
    conninfo: str | None  # may carry a password: never print it, print target_display
    dbname: str | None
    app_host: str | None
    app_port: int | None
    owned: bool
    archive: dict[str, Any] | None
    restore: dict[str, Any]
    kept_dir: str | None = None
    fetched_manifest: str | None = None  # the manifest that came with a remote backup (kept in the run folder)

    @property
    def usable(self) -> bool:
        return self.conninfo is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PreparedDatabase:
        return cls(**data)


def _accept(errors: list[str], patterns: tuple[str, ...], outcome: RestoreOutcome, *, prefix: str = "",
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


class _Clock:
    def __init__(self, outcome: RestoreOutcome) -> None:
        self.outcome = outcome

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.outcome.phases_s[name] = round(time.monotonic() - start, 3)


class _RestoreProgress:
    """Tables done / total, bytes written and elapsed time, reported while pg_restore runs."""

    def __init__(self, report: Callable[[str], None] | None, conninfo: str, total: int) -> None:
        self.report, self.conninfo, self.total = report, conninfo, total
        self.done = 0
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)

    def on_line(self, line: str) -> None:
        if table_done(line):
            self.done += 1

    def _tick(self) -> None:
        assert self.report is not None
        with contextlib.suppress(psycopg.Error), psycopg.connect(self.conninfo, autocommit=True) as conn:
            while not self._stop.wait(1.0):
                row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
                size_mb = int(row[0]) / 1e6 if row else 0
                self.report(f"restoring: {min(self.done, self.total)}/{self.total} tables' data, "
                            f"{size_mb:,.0f} MB written, {time.monotonic() - self.started:.0f} s")

    def __enter__(self) -> _RestoreProgress:
        if self.report is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _create_roles(server: EmbeddedServer | ContainerServer, plan: RestorePlan, info: ArchiveInfo,
                  outcome: RestoreOutcome, log: Any) -> None:
    """Owners and grantees must exist before the restore, or ownership and grants are lost with an error.

    With ``--globals`` the real roles (with their password hashes and memberships) come from
    ``pg_dumpall --globals-only``; without it every role the archive names is created NOLOGIN, and listed.
    """
    if plan.globals_file is not None:
        outcome.globals_file = str(plan.globals_file)
        # The target's own superuser keeps its password: a production ALTER ROLE would lock the suite out.
        own_role = re.compile(rf'^ALTER ROLE "?{SUPERUSER}"? ', re.IGNORECASE)
        run = run_psql_file(plan.globals_file, server.conninfo(), log=log, plain_dump=False,
                            skip_line=lambda line: bool(own_role.match(line)))
        # The run's own bootstrap superuser always exists already; that one error is expected.
        own = f'role "{SUPERUSER}" already exists'
        _accept(run.errors, (re.escape(own), *plan.allowed_errors), outcome, prefix="[globals] ",
                why="the target's own bootstrap superuser; as a flag: ")
    needed = referenced_roles(info)
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
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


def _restore_dbname(info: ArchiveInfo) -> str:
    database_entry = next((e.tag for e in info.entries if e.desc == "DATABASE"), None)
    return info.dbname or database_entry or DEFAULT_RESTORED_DBNAME


def _client_major() -> int:
    return int(tool_version("pg_restore").split(".")[0])


def _server_major(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()
    return int(row[0]) if row else 0


def _restore_in_container(server: ContainerServer, info: ArchiveInfo, dbname: str, plan: RestorePlan,
                          outcome: RestoreOutcome, log: Any) -> ToolRun:
    """pg_restore inside the container, when its server is older than the host's client.

    pg_restore 18 issues ``SET transaction_timeout`` that older servers reject, so every restore into them would
    report an error; the server's own pg_restore is the right tool — if it can read the archive at all.
    """
    inner_path = server.copy_in(info.path)
    _, version = server.exec(["pg_restore", "--version"])
    found = re.search(r"(\d+(?:\.\d+)?)", version)
    outcome.pg_restore_version = found.group(1) if found else None
    outcome.pg_restore_where = f"container {server.image} (pg_restore {outcome.pg_restore_version})"
    code, listing = server.exec(["pg_restore", "--list", inner_path])
    if code != 0:
        if "unsupported version" in listing:
            raise ToolTooOld(
                f"The server in {server.image} is PostgreSQL {outcome.pg_restore_version}, older than the host's "
                f"pg_restore (which it rejects), and its own pg_restore cannot read archive format "
                f"{info.archive_version} ({listing.strip()}): a dump made by pg_dump {info.dumped_by} restores "
                f"only into a server at least that new. Use an image of that major version (image = "
                f"\"postgres:{{major}}\" restores into the dump's own version), or take the dump with the "
                "older server's pg_dump. Nothing was restored."
            )
        raise ArchiveUnreadable.from_read(info.path, f"pg_restore --list (in {server.image})", listing)
    jobs = 1 if info.format == "tar" else max(plan.jobs, 1)
    command = ["pg_restore", "--verbose", f"--jobs={jobs}", "--dbname", server.inner_conninfo(dbname), inner_path]
    shown = f"docker exec {server.container_id} pg_restore --verbose --jobs={jobs} --dbname <target> {inner_path}"
    log.write(f"$ {shown}\n")
    run = ToolRun(command=shown)
    run.exit_code, output = server.exec(command)
    log.write(output + f"# exit code {run.exit_code}\n")
    parse_pg_restore_log(output.splitlines(keepends=True), run)
    if run.exit_code != 0 and not run.errors:
        run.errors.append(f"pg_restore exited with code {run.exit_code} without naming an error; see the restore log")
    return run


def _restore_into(server: EmbeddedServer | ContainerServer, plan: RestorePlan, info: ArchiveInfo,
                  outcome: RestoreOutcome, clock: _Clock, log: Any) -> str:
    dbname = _restore_dbname(info)
    creates_itself = info.format in ("plain", "plain-gzip") and any(e.desc == "DATABASE" for e in info.entries)
    with clock.phase("roles"):
        _create_roles(server, plan, info, outcome, log)
    if not creates_itself:
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(dbname)))
    with clock.phase("restore"):
        run: ToolRun
        if info.format in ("plain", "plain-gzip"):
            target_db = "postgres" if creates_itself else dbname
            run = run_psql_file(info.path, server.conninfo(target_db), log=log, plain_dump=True)
        elif isinstance(server, ContainerServer) and _server_major(server.conninfo()) < _client_major():
            run = _restore_in_container(server, info, dbname, plan, outcome, log)
        else:
            outcome.pg_restore_where = f"host (pg_restore {tool_version('pg_restore')})"
            with _RestoreProgress(plan.progress, server.conninfo(dbname), len(info.tables_with_data())) as ticker:
                run = run_pg_restore(info, server.conninfo(dbname), jobs=plan.jobs, log=log,
                                     on_line=ticker.on_line)
    outcome.exit_code = run.exit_code
    outcome.command = run.command
    outcome.data_processed = run.data_processed
    outcome.data_failed = run.data_failed
    _accept(run.errors, plan.allowed_errors, outcome)
    outcome.diagnosis = diagnose(outcome.errors, dumped_from=info.dumped_from, server=tool_version("postgres")
                                 if isinstance(server, EmbeddedServer) else server.image)
    with clock.phase("ready"):
        with psycopg.connect(server.conninfo(dbname), autocommit=True) as conn:
            # Our own throwaway copy: amcheck may be installed here (never on an existing target).
            if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'").fetchone() is None:
                conn.execute("CREATE EXTENSION amcheck")
                outcome.installed_extensions.append("amcheck")
        # Statistics, as a DBA would gather before letting the application in: critical-query budgets and
        # check plans are meaningless on a never-analyzed database.
        subprocess.run(
            [str(pg_tool("vacuumdb")), "--analyze-only", f"--jobs={max(plan.jobs, 1)}", "--quiet",
             "--dbname", server.conninfo(dbname)],
            check=False, capture_output=True, env=clean_env(),
        )
    return dbname


def refused(target: TargetSpec, reason: str, *, log_path: Path, write_log: bool = True) -> PreparedDatabase:
    """A run that restored nothing because something before the restore failed: restore_succeeded fails with
    ``reason`` and every other item is skipped naming it."""
    outcome = RestoreOutcome(performed=target.needs_restore, refused=reason, log_path=str(log_path), duration_s=0.0)
    if write_log:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as log:
            log.write(f"# refused: {reason}\n")
    return PreparedDatabase(target_name=target.name, target_kind=target.kind, target_display=target.redacted(),
                            conninfo=None, dbname=None, app_host=None, app_port=None, owned=target.needs_restore,
                            archive=None, restore=asdict(outcome) | {"clean_logical_restore": False})


def _check_manifest(path: Path | None, info: ArchiveInfo) -> None:
    """A truncated manifest, or one of another backup, is refused before the restore spends its time."""
    if path is None:
        return
    try:
        data = manifest.load(path)
    except (OSError, ValueError) as exc:
        raise ManifestMismatch.unreadable(path, str(exc)) from exc
    manifest.check_belongs_to(data, path, info)


def _fetch(plan: RestorePlan, outcome: RestoreOutcome, stack: contextlib.ExitStack) -> Path:
    """The backup as a local path: an S3 object is downloaded into a temporary directory removed at the end."""
    if plan.backup_url is not None:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="restore-verify-fetch-")))
        fetched = fetch_s3(plan.backup_url, scratch, pick=plan.backup_pick, progress=plan.progress)
        outcome.backup_spec, outcome.fetched_checksum = fetched.spec, fetched.checksum
        if fetched.manifest is not None:  # keep it as evidence: the temporary copy goes at the end
            kept = plan.log_path.parent / fetched.manifest.name
            shutil.copy(fetched.manifest, kept)
            outcome.fetched_manifest = str(kept)
        return fetched.path
    if plan.backup is None:
        raise DumpNotFound("No backup given: pass --backup PATH (ini: backup).")
    if not plan.backup.exists():
        raise DumpNotFound.at(plan.backup)
    outcome.backup_spec = str(plan.backup)
    return plan.backup


def _prepare_rds(plan: RestorePlan, run_id: str) -> Iterator[PreparedDatabase]:
    """A physical restore: the snapshot or point in time becomes a new RDS instance, deleted at the end."""
    target = plan.target
    assert target.rds is not None
    outcome = RestoreOutcome(performed=True, jobs=None, log_path=str(plan.log_path), backup_spec=plan.backup_url)
    started = time.monotonic()
    restore: RdsRestore | None = None
    with contextlib.ExitStack() as stack:
        conninfo = None
        try:
            if plan.backup_url is None or not is_rds(plan.backup_url):
                raise ConfigError(f"Target {target.name!r} is an RDS instance to restore into: pass an RDS source, "
                                  "--backup=rds-snapshot:ID, rds-snapshot:latest?instance=NAME or rds-pitr:NAME@TIME.")
            restore = RdsRestore(parse_rds(plan.backup_url), target.rds, run_id, keep=plan.keep_target,
                                 progress=plan.progress)
            stack.enter_context(restore)
            conninfo = restore.conninfo()
            outcome.exit_code = 0
        except ConfigError:
            raise
        except RestoreError as exc:  # RdsError, and CloudError for any failed AWS call: a failed restore
            outcome.refused = str(exc)
        outcome.duration_s = round(time.monotonic() - started, 3)
        facts = restore.facts if restore else {}
        plan.log_path.parent.mkdir(parents=True, exist_ok=True)
        # What was called and what came back, readable like pg_restore's log; the facts last, as JSON.
        plan.log_path.write_text("".join(f"{line}\n" for line in (restore.log_lines if restore else []))
                                 + (f"# refused: {outcome.refused}\n" if outcome.refused else "")
                                 + "# facts: " + json.dumps(facts, default=str) + "\n")
        archive: dict[str, Any] = {"format": facts.get("source"), "created_at": facts.get("backup_time"),
                   "created_at_source": "RDS snapshot time" if facts.get("source") == "rds-snapshot"
                   else "requested point in time", "dumped_from": facts.get("engine_version"), "dumped_by": None,
                   "size_bytes": None, "archive_version": None, "tables": [], "tables_with_data": [],
                   "foreign_keys": [], "constraints": [], "indexes": [], "rds": facts}
        yield PreparedDatabase(
            target_name=target.name, target_kind=target.kind,
            target_display=(f"RDS instance {restore.instance_id}" if restore and restore.instance_id
                            else target.redacted()),
            conninfo=conninfo, dbname=get_param(conninfo, "dbname") if conninfo else None,
            app_host=get_param(conninfo, "hostaddr") or get_param(conninfo, "host") if conninfo else None,
            app_port=int(get_param(conninfo, "port") or 5432) if conninfo else None, owned=False,
            archive=archive, restore=asdict(outcome) | {"clean_logical_restore": False},
            kept_dir=f"rds:{restore.instance_id}" if restore and plan.keep_target else None,
        )


@contextlib.contextmanager
def prepare(plan: RestorePlan, *, run_id: str = "run") -> Iterator[PreparedDatabase]:
    """Restore (or, for an existing target, only describe) the database to verify."""
    target = plan.target
    if target.kind == "rds":
        yield from _prepare_rds(plan, run_id)
        return
    if plan.backup_url is not None and is_rds(plan.backup_url):
        raise ConfigError(f"{plan.backup_url} is an RDS snapshot or point in time: it restores only into a new RDS "
                          "instance. Pass --target NAME of a target with kind = \"rds\" in targets.toml.")
    if not target.needs_restore:
        # Nothing is restored. A backup given alongside (the dump the DBA restored by hand) still says which
        # tables and foreign keys must exist, and when the backup was taken.
        conninfo = target.conninfo()
        existing_outcome = RestoreOutcome()
        toc: ArchiveInfo | None = None
        if plan.backup is not None:
            try:
                toc = inspect(plan.backup)
            except RestoreError as exc:
                raise ConfigError(
                    f"--backup names the dump this existing target was restored from, so that its table of "
                    f"contents says what must be there; it cannot be read: {exc}"
                ) from exc
            try:
                _check_manifest(plan.manifest, toc)
            except ManifestMismatch as exc:
                raise ConfigError(str(exc)) from exc
        yield PreparedDatabase(
            target_name=target.name, target_kind=target.kind, target_display=target.redacted(),
            conninfo=conninfo, dbname=get_param(conninfo, "dbname"), app_host=get_param(conninfo, "host"),
            app_port=int(get_param(conninfo, "port") or 5432), owned=False,
            archive=toc.to_json() if toc else None,
            restore=asdict(existing_outcome) | {"clean_logical_restore": False},
        )
        return

    outcome = RestoreOutcome(performed=True, jobs=plan.jobs, log_path=str(plan.log_path))
    clock = _Clock(outcome)
    started = time.monotonic()
    info: ArchiveInfo | None = None
    plan.log_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(plan.log_path.open("a"))
        server: EmbeddedServer | ContainerServer | None = None
        dbname: str | None = None
        try:
            outcome.pg_restore_version = tool_version("pg_restore")
            with clock.phase("fetch"):
                backup = _fetch(plan, outcome, stack)
            with clock.phase("verify_archive"):
                info = inspect(backup)
                verify_readable(info)
                _check_manifest(plan.manifest or (Path(outcome.fetched_manifest) if outcome.fetched_manifest
                                                  else None), info)
            with clock.phase("start_target"):
                if target.kind == "container":
                    server = ContainerServer(image=image_for(target.image, info.dumped_from), jobs=plan.jobs,
                                             keep=plan.keep_target, run_id=run_id)
                else:
                    server = EmbeddedServer(jobs=plan.jobs, keep=plan.keep_target, run_id=run_id)
                stack.enter_context(server)
            dbname = _restore_into(server, plan, info, outcome, clock, log)
        except RestoreError as exc:
            outcome.refused = "\n".join([str(exc), *getattr(exc, "__notes__", [])])
            detail = getattr(exc, "detail", "")
            log.write(f"# refused: {exc}\n{detail}\n")
            if detail:
                outcome.refused += f"\n{detail}"
        outcome.duration_s = round(time.monotonic() - started, 3)
        usable = server is not None and dbname is not None and outcome.refused is None
        display = target.redacted()
        if usable and server is not None and dbname is not None:
            kind = (f"container {server.image} {server.container_id}" if isinstance(server, ContainerServer)
                    else f"embedded PostgreSQL {tool_version('postgres')}")
            display = f"{kind} ({redact(server.conninfo(dbname))})"
        app_host = (server.host if isinstance(server, ContainerServer) else "127.0.0.1") if server else None
        kept = None
        if server is not None and plan.keep_target:
            kept = (f"container:{server.container_id}" if isinstance(server, ContainerServer)
                    else str(server.base_dir))
        yield PreparedDatabase(
            target_name=target.name, target_kind=target.kind, target_display=display,
            conninfo=server.conninfo(dbname) if usable and server is not None and dbname else None,
            dbname=dbname, app_host=app_host, app_port=server.port if server else None,
            owned=True, archive=info.to_json() if info else None,
            restore=asdict(outcome) | {"clean_logical_restore": outcome.clean_logical_restore},
            kept_dir=kept, fetched_manifest=outcome.fetched_manifest,
        )
