"""The container target: a throwaway PostgreSQL container matched to the backup's server version.

These tests need a Docker engine and the local images that scripts/docker-ci.sh builds (no registry needed);
without them they skip, saying why — they never pass.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from restore import janitor
from restore.take_backup import take_backup
from restore.targets.container import ContainerServer
from restore.tools import clean_env, pg_tool
from tests.conftest import ALL_PASSED, ROOT, Sample, SuiteRun, restorable_into_18

IMAGES = ("local/postgres:15", "local/postgres:18")
# /.dockerenv on these machines makes testcontainers think it runs inside a container; the engine is local.
TC_ENV = {"TC_HOST": "127.0.0.1", "TESTCONTAINERS_CONNECTION_MODE": "docker_host"}


def _engine_problem() -> str | None:
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False) if _has_docker() else None
    if info is None or info.returncode != 0:
        return "no Docker engine reachable (run scripts/docker-ci.sh as root, or start dockerd)"
    missing = [i for i in IMAGES if subprocess.run(["docker", "image", "inspect", i], capture_output=True,
                                                   check=False).returncode != 0]
    return f"images {missing} not built (run scripts/docker-ci.sh)" if missing else None


def _has_docker() -> bool:
    return subprocess.run(["sh", "-c", "command -v docker"], capture_output=True, check=False).returncode == 0


pytestmark = pytest.mark.skipif(bool(problem := _engine_problem()), reason=str(problem))


@pytest.fixture
def targets(tmp_path: Path) -> Path:
    path = tmp_path / "targets.toml"
    path.write_text('[targets.same-major]\nkind = "container"\nimage = "local/postgres:{major}"\n'
                    '[targets.pg15]\nkind = "container"\nimage = "local/postgres:15"\n')
    return path


def _containers_of(run_id: str) -> set[str]:
    """The containers a run made: the suite labels each with its run id."""
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={janitor.LABEL_RUN}={run_id}"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.fixture
def no_container_left(tmp_path: Path) -> Iterator[None]:
    """After the test, no container of the runs it made is left, told by their run ids (run_suite keeps each run's
    result.json in tmp_path): another test's or another pytest session's containers are none of its business, so
    nothing needs to wait for a lock."""
    yield
    for result in sorted(tmp_path.glob("result*.json")):
        run_id = json.loads(result.read_text())["run_id"]
        assert not _containers_of(run_id), f"the run {run_id} left its container behind"


def test_sample_restores_into_a_container_of_its_major_and_passes(
    sample: Sample, targets: Path, run_suite: Callable[..., SuiteRun], no_container_left: None
) -> None:
    run = run_suite("-n", "2", f"--targets-file={targets}", "--target=same-major", *sample.restore_args(),
                    env=TC_ENV)
    assert run.returncode == 0, run.explain()
    assert run.result["checklist"] == ALL_PASSED, run.explain()
    assert run.result["target"]["kind"] == "container"
    assert "local/postgres:18" in run.result["target"]["display"]
    assert run.result["restore"]["pg_restore_where"].startswith("host")


def test_pg18_dump_into_a_pg15_container_is_refused_with_the_version(
    sample: Sample, targets: Path, run_suite: Callable[..., SuiteRun], no_container_left: None
) -> None:
    run = run_suite(f"--targets-file={targets}", "--target=pg15", *sample.restore_args(), env=TC_ENV)
    assert run.failed_items() == {"restore_succeeded"}, run.explain()
    assert set(run.result["checklist"].values()) == {"failed", "skipped"}  # nothing half-restored passes
    refused = run.result["restore"]["refused"]
    assert "cannot read archive format 1.16" in refused
    assert "Nothing was restored" in refused


@pytest.fixture(scope="module")
def pg15_source() -> Iterator[ContainerServer]:
    """The sample database in a PostgreSQL 15 container (the 'production' of an older major)."""
    from testcontainers.core.config import testcontainers_config

    testcontainers_config.tc_host_override = TC_ENV["TC_HOST"]
    server = ContainerServer(image="local/postgres:15", jobs=2)
    server.start()
    try:
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE ecommerce_production")
        subprocess.run([str(pg_tool("psql")), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d",
                        server.conninfo("ecommerce_production"), "-f", str(ROOT / "examples" / "sample.sql")],
                       check=True, env=clean_env(), capture_output=True)
        restorable_into_18(server.conninfo("ecommerce_production"))  # whatever minor the image's 15 is
        yield server
    finally:
        server.stop()


def test_dump_of_a_pg15_container_restores_into_embedded_pg18(
    pg15_source: ContainerServer, sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    dump, _ = take_backup(pg15_source.conninfo("ecommerce_production"), tmp_path / "from15.dump")
    globals_sql = tmp_path / "globals.sql"
    globals_sql.write_text(subprocess.run(
        [str(pg_tool("pg_dumpall")), "--globals-only", "-d", pg15_source.conninfo()], check=True, env=clean_env(),
        capture_output=True, text=True).stdout)
    run = run_suite(f"--backup={dump}", f"--globals={globals_sql}", f"--expectations={sample.expectations}")
    assert run.returncode == 0, run.explain()
    assert run.result["backup"]["dumped_from"].startswith("15")
    assert run.result["checklist"] == ALL_PASSED, run.explain()


def test_pg15_dump_restores_with_the_containers_own_pg_restore(
    pg15_source: ContainerServer, sample: Sample, targets: Path, tmp_path: Path,
    run_suite: Callable[..., SuiteRun], no_container_left: None,
) -> None:
    """A dump by pg_dump 15 into a PostgreSQL 15 container: the host's pg_restore 18 would trip over
    transaction_timeout, so the container's pg_restore restores it, and the report says so."""
    code, output = pg15_source.exec(["pg_dump", "-Fc", "-f", "/tmp/by15.dump", pg15_source.inner_conninfo(
        "ecommerce_production")])
    assert code == 0, output
    bits, _ = pg15_source._container.get_wrapped_container().get_archive("/tmp/by15.dump")
    with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as tar:
        member = tar.extractfile("by15.dump")
        assert member is not None
        dump = tmp_path / "by15.dump"
        dump.write_bytes(member.read())
    globals_sql = tmp_path / "globals.sql"
    globals_sql.write_text(subprocess.run(
        [str(pg_tool("pg_dumpall")), "--globals-only", "-d", pg15_source.conninfo()], check=True, env=clean_env(),
        capture_output=True, text=True).stdout)
    run = run_suite(f"--targets-file={targets}", "--target=pg15", f"--backup={dump}", f"--globals={globals_sql}",
                    f"--expectations={sample.expectations}", env=TC_ENV)
    assert run.result["restore"]["pg_restore_where"].startswith("container local/postgres:15"), run.explain()
    assert run.result["target"]["server_version"].startswith("15")
    assert run.result["checklist"] == ALL_PASSED, run.explain()
    # Without a manifest, the archive's own table of contents; pg_dump 15 wrote it, pg_dump 18 lists the restore.
    assert "definitions not compared" in run.result["checklist_reasons"]["schema_matches"], run.explain()


def test_container_is_removed_when_a_failing_check_stops_the_run(
    sample: Sample, targets: Path, tmp_path: Path, run_suite: Callable[..., SuiteRun], no_container_left: None
) -> None:
    expectations = tmp_path / "expectations"
    (expectations / "critical_queries").mkdir(parents=True)
    (expectations / "critical_queries" / "broken.sql").write_text("SELECT * FROM no_such_table;\n")
    run = run_suite("-x", f"--targets-file={targets}", "--target=same-major", f"--backup={sample.dump}",
                    f"--expectations={expectations}", "-k", "critical", env=TC_ENV)
    assert run.returncode == 1
    assert run.failed_items() == {"critical_queries"}, run.explain()


def test_an_image_neither_present_nor_pullable_is_a_failed_restore_naming_it(
    sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun], no_container_left: None
) -> None:
    targets = tmp_path / "targets.toml"
    targets.write_text('[targets.nowhere]\nkind = "container"\nimage = "local/no-such-postgres:{major}"\n')
    run = run_suite(f"--targets-file={targets}", "--target=nowhere", *sample.restore_args(), env=TC_ENV)
    assert "INTERNALERROR" not in run.output
    assert run.failed_items() == {"restore_succeeded"}, run.explain()
    assert "local/no-such-postgres:18" in run.result["restore"]["refused"]
