"""A run of the suite without pytest: everything that happens once, before any check.

:func:`begin` names the run and makes its folder; :meth:`Run.start` sweeps what killed runs left, stops the
application (``--stop-app``), restores (restore/session.py), brings the application back and observes it, lists
the retention snapshots, reads the record's history, reads the catalog and captures the manifests to compare.
What it learns is :class:`RunFacts`: typed data, serialised by one codec (:func:`encode`/:func:`decode`) for the
xdist workers. The pytest plugin (fixtures/session.py) only adapts: options → config → run → workers → teardown.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from pydantic import TypeAdapter
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from restore import janitor
from restore.backups import retention
from restore.backups.outcome import PreparedDatabase
from restore.backups.retention import RetentionPolicy
from restore.compare import inventory, manifest
from restore.compare.capture import capture
from restore.compare.catalog import Catalog, read_catalog
from restore.compare.expectations import Expectations
from restore.config import RestoreConfig
from restore.conninfo import bounded, get_param, with_params
from restore.errors import ConfigError, RestoreError
from restore.records import record, signals
from restore.session import RestorePlan, prepare, refused, unforeseen
from restore.targets.kube import AppController
from restore.verify import describe_lock_holders

Say = Callable[[str], None]


class Snapshot(TypedDict):
    id: str
    type: str  # "automated" | "manual"
    created: str  # ISO 8601


@dataclass(frozen=True)
class RetentionListing:
    """The source instance's snapshots and point-in-time window, listed once by the controller."""

    listed_at: str  # ISO 8601
    snapshots: list[Snapshot] = field(default_factory=list)
    pitr: dict[str, str | None] = field(default_factory=dict)
    error: str | None = None  # the AWS call that failed: the retention item fails with it


@dataclass(frozen=True)
class AppObservation:
    """The application after its restart (``--stop-app``): the problems of each part, or why it could not be
    observed."""

    problems: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None


@dataclass
class RunFacts:
    """What the controller learned before any check ran; the same in every process of the run."""

    run_id: str
    started_at: str  # ISO 8601
    run_dir: Path
    prepared: PreparedDatabase | None = None
    catalog: Catalog = field(default_factory=Catalog)
    catalog_error: str | None = None
    # The database to verify could not be reached or logged into (nothing was restored by this run): the run
    # never tested a backup, and its outcome is "error" — recorded, never counted as a test (passed or failed).
    unreachable: str | None = None
    heartbeat_errors: list[str] = field(default_factory=list)  # --heartbeat calls that failed (never the verdict)
    # Manifest comparison: the source (a manifest file, or a live baseline captured at the start) and the
    # restored database captured by the same code; files, so that every worker reads the same data.
    source_kind: str | None = None  # "manifest" | "baseline"
    source_manifest_path: Path | None = None
    restored_manifest_path: Path | None = None
    manifest_error: str | None = None
    previous_counts: dict[str, int] | None = None  # the same target's previous run in the record, for trends
    retention: RetentionListing | None = None
    app_observation: AppObservation | None = None
    record_problems: list[str] = field(default_factory=list)  # record lines left out (truncated writes)
    workers_planned: dict[str, int] = field(default_factory=dict)  # per table: the checksum's planned workers
    # pg_dump's object inventory of the backup against the restore's (restore/compare/inventory.py): the comparison as a
    # file every worker reads, or why there is none (not_compared) or why it failed (inventory_error).
    inventory_path: Path | None = None
    inventory_not_compared: str | None = None
    inventory_error: str | None = None


_CODEC = TypeAdapter(RunFacts)


def encode(facts: RunFacts) -> str:
    return _CODEC.dump_json(facts).decode()


def decode(text: str) -> RunFacts:
    return _CODEC.validate_json(text)


@dataclass
class RunState:
    """The run as one process sees it: the configuration and expectations (each process resolves them from the
    same options) and the facts the controller found."""

    config: RestoreConfig
    expectations: Expectations
    # An xdist worker starts beside the controller's restore and gets its facts when they exist: a function that
    # waits for them, called on first use (collection), not before.
    _facts: RunFacts | Callable[[], RunFacts]
    _manifests: tuple[manifest.Manifest, manifest.Manifest] | None = field(default=None, repr=False)
    _inventory: dict[str, Any] | None = field(default=None, repr=False)
    # Values derived once per process from the facts and asked for by several checks' collection (fixtures/params.py).
    memo: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def facts(self) -> RunFacts:
        if not isinstance(self._facts, RunFacts):
            self._facts = self._facts()
        return self._facts

    @property
    def prepared(self) -> PreparedDatabase | None:
        return self.facts.prepared

    @property
    def catalog(self) -> Catalog:
        return self.facts.catalog

    def compares_manifests(self) -> bool:
        """Whether this run compares a source manifest with the restored copy's (both prepared without error)."""
        facts = self.facts
        return not facts.manifest_error and facts.source_manifest_path is not None \
            and facts.restored_manifest_path is not None

    def manifests(self) -> tuple[manifest.Manifest, manifest.Manifest] | None:
        """(source, restored) manifests, or None when this run compares with none (or could not prepare them)."""
        facts = self.facts
        if not self.compares_manifests():
            return None
        assert facts.source_manifest_path is not None
        assert facts.restored_manifest_path is not None
        if self._manifests is None:
            # Without pg_dump's inventory: only the controller's comparison reads it (once, see _source_inventory),
            # and it is a third of a manifest's memory in every process (~8 KB per table).
            source = manifest.load(facts.source_manifest_path)  # read while the restore ran (read_source_early)
            restored = manifest.load(facts.restored_manifest_path)
            source.pop("inventory", None)
            restored.pop("inventory", None)
            self._manifests = (source, restored)
        return self._manifests

    def read_source_early(self) -> None:
        """An xdist worker waiting for the restore reads the backup's manifest (--manifest) meanwhile: it is the
        first thing its collection needs once the facts come (30 MB at 10,000 tables). Kept for
        :meth:`manifests` only if the run compares with that very file, unchanged."""
        path = self.config.manifest
        if path is None:
            return
        with contextlib.suppress(OSError, ValueError):  # said by the controller, which reads it too
            manifest.load(path, keep=True)

    def inventory(self) -> dict[str, Any] | None:
        """The inventory comparison (restore/compare/inventory.py: write_result), or None when there is none."""
        if self.facts.inventory_path is None:
            return None
        if self._inventory is None:
            self._inventory = inventory.load_result(self.facts.inventory_path)
        return self._inventory

    def no_database_reason(self) -> str | None:
        """Why there is no database to check, or None when there is one."""
        prepared = self.prepared
        if prepared is None:
            return "restore-verify is not active in this run"
        if prepared.restore.refused and prepared.restore.verifier_fault:
            return "not run: the verifier could not restore the backup (see the verdict)"  # said once, there
        if prepared.restore.refused:
            return "no database to verify: the restore was refused (see restore_succeeded)"  # said once, there
        if self.facts.catalog_error:
            return f"the database could not be read (see db_accessible): {self.facts.catalog_error.splitlines()[0]}"
        return None


def begin(config: RestoreConfig, expectations: Expectations) -> RunState:
    """A new run: its id and its own folder (unique per run: two runs in the same second never share one)."""
    now = datetime.now(UTC)
    run_id = uuid.uuid4().hex[:12]
    safe_target = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in config.target.name)
    run_dir = config.reports_dir / f"{now:%Y%m%dT%H%M%SZ}_{safe_target}_{run_id}"
    run_dir.mkdir(parents=True)
    return RunState(config, expectations, RunFacts(run_id=run_id, started_at=now.isoformat(timespec="seconds"),
                                                   run_dir=run_dir))


def _accepted_words(accepted: list[str]) -> str:
    """What was accepted, in the errors' own first words (each with what accepted it is in the report)."""
    said = list(dict.fromkeys(e.split("  [accepted:", 1)[0].strip().splitlines()[0][:80] for e in accepted if e))
    return f": {'; '.join(said[:2])}{' …' if len(said) > 2 else ''}" if said else ""


class Run:
    """The once-per-run work of the controller; :meth:`close` tears down what it started (also on Ctrl-C)."""

    def __init__(self, state: RunState, *, say: Say, progress: Say) -> None:
        self.state, self.say, self.progress = state, say, progress
        self.stack = contextlib.ExitStack()
        self._source_tables: set[str] = set()  # the manifest compared with: its tables' names

    def announce(self) -> None:
        """The settings, the scheduler's heartbeat and the sweep of what killed runs left: before anything else,
        so that a run that hangs or dies in the restore has already said how it was configured."""
        cfg, facts, say = self.state.config, self.state.facts, self.say
        for line in cfg.header_lines():
            say(line.removeprefix("restore-verify: "))
        if cfg.heartbeat:  # the scheduler's "it started": a run that then hangs is seen as one
            failed = signals.heartbeat(cfg.heartbeat, "start")
            if failed:
                facts.heartbeat_errors.append(failed)
                say(f"warning: {failed}")
        try:  # what earlier runs killed with -9 left behind (their watchdogs normally see to it first)
            janitor.sweep(report=lambda line: say(f"janitor: {line}"))
        except Exception as exc:  # a sweep that cannot read its folder (or anything else) must not cost the run
            say(f"janitor: could not sweep ({exc}); python -m restore cleanup shows what is left")

    def start(self) -> None:
        """The restore and everything learned once before the checks (call :meth:`announce` first)."""
        cfg, facts, say = self.state.config, self.state.facts, self.say
        if cfg.target.needs_restore:
            say(f"restoring {cfg.source.spec if cfg.source else None} into {cfg.target.redacted()} with "
                f"{cfg.restore_jobs} job(s)")
        try:
            facts.prepared = self._restore_around_app()
        except ConfigError:
            raise
        except Exception as exc:  # around the restore's own steps (its plan, the application): never INTERNALERROR
            facts.prepared = refused(cfg.target, unforeseen("preparing the restore", exc),
                                     log_path=facts.run_dir / "restore.log", verifier_fault=True)
        outcome = facts.prepared.restore
        if outcome.performed:
            status = "REFUSED" if outcome.refused else f"{len(outcome.errors)} error(s)"
            say(f"restore finished in {outcome.duration_s or 0:.1f}s: {status}, {len(outcome.accepted_errors)} "
                f"accepted{_accepted_words(outcome.accepted_errors)}, roles created: {outcome.roles_created or 'none'}")
        if cfg.retention is not None:
            facts.retention = list_retention(cfg.retention)
        if cfg.record is not None:  # the trend compares a database with itself: same target, same database name
            history = record.load(cfg.record, problems=facts.record_problems)
            for problem in facts.record_problems:
                say(f"warning: {problem}")
            facts.previous_counts = record.previous_counts(history, cfg.target.name, facts.prepared.dbname)
        if facts.prepared.conninfo is not None and not facts.prepared.restore.performed:
            try:  # an existing target: reaching it and logging in is not a finding about any backup
                psycopg.connect(self._bounded(facts.prepared.conninfo)).close()
            except psycopg.OperationalError as exc:
                facts.unreachable = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
                facts.catalog_error = f"{type(exc).__name__}: {facts.unreachable}"  # not waited for twice
        if facts.prepared.conninfo is not None and facts.unreachable is None:
            try:
                facts.catalog = read_catalog(self._bounded(facts.prepared.conninfo))
            except Exception as exc:  # recorded: db_accessible fails with it, the rest skip naming it
                facts.catalog_error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
                    facts.catalog_error += (f" (waited for a lock: {describe_lock_holders(facts.prepared.conninfo)};"
                                            " let that transaction finish, or end it with pg_terminate_backend(PID))")
            else:
                self._capture_manifests()

    def close(self) -> None:
        self.stack.close()

    def _bounded(self, conninfo: str) -> str:
        cfg = self.state.config
        return bounded(conninfo, statement_timeout_s=cfg.statement_timeout_s, lock_timeout_s=cfg.lock_timeout_s,
                       parallel_workers=cfg.session_parallel_workers)

    def _restore_around_app(self) -> PreparedDatabase:
        """The restore, with the application stopped around it when asked (and brought back whatever happens)."""
        cfg, facts = self.state.config, self.state.facts
        log_path = facts.run_dir / "restore.log"
        plan = RestorePlan(target=cfg.target, source=cfg.source, jobs=cfg.restore_jobs, log_path=log_path,
                           globals_file=cfg.globals_file, allowed_errors=cfg.allowed_errors,
                           keep_target=cfg.keep_target, progress=self.progress, manifest=cfg.manifest,
                           server_dir=cfg.server_dir)
        app = None
        if cfg.stop_app and cfg.target.app is not None:
            try:
                app = AppController(cfg.target.app, progress=self.progress)
                # Registered first, so it runs last: after the target is torn down, also on failure and Ctrl-C.
                self.stack.callback(app.restart)
                self.say(f"stopping {', '.join(cfg.target.app.deployments)} in {cfg.target.app.namespace}: "
                         f"{app.stop()} replica(s) recorded")
            except RestoreError as exc:  # AppError: the application could not be stopped, so nothing is restored
                return refused(cfg.target, f"The application could not be stopped before the restore (--stop-app), "
                                           f"so nothing was restored: {exc}", log_path=log_path,
                               verifier_fault=True)
        try:
            return self.stack.enter_context(prepare(plan, run_id=facts.run_id))
        except ConfigError:
            raise
        except Exception as exc:  # outside the restore's own steps (opening or checking the target): said, not raised
            return refused(cfg.target, unforeseen("preparing the target", exc), log_path=log_path,
                           verifier_fault=True)
        finally:
            if app is not None:  # after the restore, whatever its outcome: the application comes back now
                try:
                    app.restart()
                    self.say("application restarted; observing it ...")
                    facts.app_observation = AppObservation(problems=app.observe())
                except Exception as exc:  # AppError, the client's ApiException: the app-side checks fail with it
                    facts.app_observation = AppObservation(error=f"{type(exc).__name__}: {exc}")

    def _capture_manifests(self) -> None:
        """Capture the restored database (and a live baseline) with the manifest code, when there is a source;
        meanwhile pg_dump lists the restore's objects (a process of its own) and the archive's table of contents is
        read (Python, while the capture waits on the server): neither costs wall time here."""
        facts = self.state.facts
        assert facts.prepared is not None
        assert facts.prepared.conninfo is not None
        conninfo = self._bounded(facts.prepared.conninfo)
        cfg, archive = self.state.config, facts.prepared.archive
        # Listed only when there is something to hold the list against: a dump's own table of contents, or a
        # manifest (the backup's, fetched with it, or a live baseline's).
        comparable = bool((archive is not None and archive.restored_by_pg_restore) or cfg.manifest
                          or facts.prepared.fetched_manifest or cfg.baseline)
        with ThreadPoolExecutor(max_workers=2) as pool:
            restored = pool.submit(inventory.of_database, conninfo) if comparable else None
            archived = pool.submit(inventory.of_archive, Path(archive.path)) if (
                archive is not None and archive.restored_by_pg_restore and archive.path
                and Path(archive.path).exists()) else None
            self._capture_manifest_files()
            listed: inventory.Inventory | BaseException | None = None
            if restored is not None:
                try:
                    listed = restored.result()
                except Exception as exc:  # said as the inventory's error: schema_matches fails with it
                    listed = exc
            self._compare_inventories(listed, archived)

    def _source_inventory(self, archived: Future[inventory.Inventory] | None) -> tuple[inventory.Inventory | None, str]:
        """The backup's inventory and where it came from, or None and why there is none."""
        facts = self.state.facts
        assert facts.prepared is not None
        archive = facts.prepared.archive
        if archived is not None:
            return archived.result(), "the archive's own table of contents"
        manifests = self.state.manifests()
        if manifests is not None:
            assert facts.source_manifest_path is not None
            recorded = manifest.load(facts.source_manifest_path).get("inventory")
            what = "the live baseline" if facts.source_kind == "baseline" else "the backup's manifest"
            if recorded:
                return recorded, what
            return None, (f"pg_dump's object inventory not compared: {what} was written by an older restore-verify "
                          f"(manifest version {manifests[0].get('version')}, before 3) and records none; objects of "
                          "kinds its catalog sections do not list were not verified. Take a new manifest "
                          "(python -m restore manifest or backup) to compare every object")
        if archive is not None and archive.format in ("plain", "plain-gzip"):
            return None, ("pg_dump's object inventory not compared: a plain SQL dump has no table of contents and "
                          "no manifest was given (--manifest=PATH; python -m restore backup writes a custom-format "
                          "dump with one)")
        return None, ("pg_dump's object inventory not compared: no dump archive and no manifest to compare the "
                      "restore's objects with (--manifest=PATH)")

    def _compare_inventories(self, restored: inventory.Inventory | BaseException | None,
                             archived: Future[inventory.Inventory] | None) -> None:
        facts, say = self.state.facts, self.say
        assert facts.prepared is not None
        try:
            source, where = self._source_inventory(archived)
        except Exception as exc:  # an unreadable TOC was refused before the restore; anything else is said here
            facts.inventory_error = f"the backup's inventory could not be read: {type(exc).__name__}: {exc}"
            return
        if source is None:
            facts.inventory_not_compared = where
            return
        if restored is None:  # not listed: no source was expected (never with one found; said if it happens)
            facts.inventory_error = f"the restore's objects were not listed, though {where} holds the backup's"
            return
        if isinstance(restored, BaseException):
            facts.inventory_error = f"the restore's objects could not be listed: {type(restored).__name__}: {restored}"
            say(f"inventory comparison impossible: {facts.inventory_error}")
            return
        # amcheck is the verifier's tool (this run installs it into its own copy; the README asks a DBA to create
        # it in a database verified in place): where the backup lacks it, it is not the database's.
        result = inventory.compare(source, restored, suite_extensions=(
            *facts.prepared.restore.installed_extensions, *inventory.VERIFIER_EXTENSIONS),
            dbname=facts.prepared.dbname)
        # The backup's tables, to route each object's finding: from the manifest this run already read (loading
        # both manifests again for their names took seconds at 10,000 tables).
        tables = self._source_tables if self.state.compares_manifests() else set()
        routes = {d.key: inventory.route(d.key, source["entries"] | restored["entries"], tables)
                  for d in result.differences}
        routes |= {key: inventory.route(key, source["entries"], tables) for key in source["entries"]}
        path = facts.run_dir / "inventory.json"
        inventory.write_result(result, routes, path, source=where)
        facts.inventory_path = path
        say(f"objects compared with {where}: {result.compared} in the backup, {len(result.differences)} "
            f"difference(s)")

    def _capture_manifest_files(self) -> None:
        cfg, facts, say = self.state.config, self.state.facts, self.say
        assert facts.prepared is not None
        assert facts.prepared.conninfo is not None
        freshness = self.state.expectations.freshness_sql
        compare_with: dict[str, manifest.TableEntry] | None = None
        try:
            if cfg.baseline is not None:
                say(f"capturing the live baseline {cfg.baseline.redacted()} ...")
                baseline_path = facts.run_dir / "baseline.manifest.json"
                baseline = capture(self._bounded(cfg.baseline.conninfo()), jobs=cfg.restore_jobs,
                                   freshness_sql=freshness)
                manifest.write(baseline, baseline_path)
                self._source_tables = set(baseline["tables"])
                facts.source_kind, facts.source_manifest_path = "baseline", baseline_path
            elif cfg.manifest is not None or facts.prepared.fetched_manifest is not None:
                source_path = cfg.manifest or Path(str(facts.prepared.fetched_manifest))
                source = manifest.load(source_path)  # refuse a foreign file before spending a pass on the restore
                self._source_tables = set(source["tables"])
                facts.source_kind, facts.source_manifest_path = "manifest", source_path
                # A table whose content differs is bucketed as the backup's was, so that the mismatch names where.
                compare_with = source["tables"]
            else:
                return
            restored_path = facts.run_dir / "restored.manifest.json"
            started = time.monotonic()
            manifest.write(capture(self._bounded(facts.prepared.conninfo), jobs=cfg.restore_jobs,
                                   freshness_sql=freshness, checksums=cfg.depth != "quick",
                                   compare_with=compare_with, plans=facts.workers_planned,
                                   objects=False), restored_path)
            facts.restored_manifest_path = restored_path
            say(f"restored database captured for comparison in {time.monotonic() - started:.1f}s -> {restored_path}")
        except Exception as exc:  # the manifest items fail with it; the other checks still run
            facts.manifest_error = f"{type(exc).__name__}: {exc}"
            say(f"manifest comparison impossible: {facts.manifest_error}")


def list_retention(policy: RetentionPolicy) -> RetentionListing:
    """The instance's snapshots and PITR window, listed once; an AWS failure fails the retention item."""
    listed_at = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        snapshots: list[Snapshot] = [{"id": s["id"], "type": s["type"], "created": s["created"].isoformat()}
                                     for s in retention.list_snapshots(policy.instance)]
        return RetentionListing(listed_at, snapshots, retention.pitr_window(policy.instance))
    except Exception as exc:  # botocore's errors: the check reports them with what was asked
        return RetentionListing(listed_at, error=f"{type(exc).__name__}: {exc}")


def with_caller_password(config: RestoreConfig, password: str | None) -> RestoreConfig:
    """A ``--target`` DSN without a password takes the caller's PGPASSWORD: the one place it is used, explicitly."""
    target = config.target
    if password is None or target.kind != "existing" or not target.dsn or target.password_env \
            or get_param(target.dsn, "password"):
        return config
    return replace(config, target=replace(target, dsn=with_params(target.dsn, password=password)))
