"""Backup formats, options, usage errors, the allow-list, read-only verification and teardown."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from examples.build_sample import build
from restore.targets.embedded import SYSTEM_USER_AS_ROOT
from restore.tools import clean_env, pg_tool
from tests.conftest import (
    ALL_ITEMS,
    ALL_PASSED,
    ROOT,
    SKIPPED_FOR_EXISTING_TARGET,
    SKIPPED_WITHOUT_MANIFEST,
    FaultServer,
    Sample,
    SuiteRun,
    postgres_processes_in,
    wait_for_running_check,
)


@pytest.fixture(scope="module")
def other_formats(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("formats")
    # The custom dump brings a manifest; the other formats are dumped right after from the same, idle database.
    written = build(out, None, ["custom", "directory", "tar", "plain"])
    gz = out / "sample.sql.gz"
    with written["plain"].open("rb") as src, gzip.open(gz, "wb") as dst:
        dst.write(src.read())
    written["plain-gzip"] = gz
    return written


@pytest.mark.parametrize("fmt", ["directory", "tar", "plain", "plain-gzip"])
def test_every_dump_format_restores_and_passes(
    fmt: str, other_formats: dict[str, Path], sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    run = run_suite(f"--backup={other_formats[fmt]}", f"--globals={other_formats['globals']}",
                    f"--expectations={sample.expectations}", f"--manifest={other_formats['manifest']}")
    assert run.returncode == 0, run.explain()
    assert run.result["checklist"] == ALL_PASSED, run.explain()
    assert run.result["backup"]["format"] == fmt


def _plain_with_bad_statement(other_formats: dict[str, Path], tmp_path: Path) -> Path:
    text = other_formats["plain"].read_text()
    marker = "-- PostgreSQL database dump complete"
    bad = tmp_path / "bad.sql"
    bad.write_text(text.replace(marker, "CREATE TABLE public.uses_missing_type (x nosuchtype);\n\n" + marker))
    return bad


def test_restore_error_fails_restore_succeeded_and_is_named(
    other_formats: dict[str, Path], sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    bad = _plain_with_bad_statement(other_formats, tmp_path)
    run = run_suite(f"--backup={bad}", f"--globals={other_formats['globals']}", f"--expectations={sample.expectations}")
    assert run.returncode == 1
    assert run.failed_items() == {"restore_succeeded"}, run.explain()
    assert 'type "nosuchtype" does not exist' in run.result["restore"]["errors"][0]
    assert "--allow-restore-error" in run.result["checklist_reasons"]["restore_succeeded"]


def test_allow_listed_error_is_accepted_counted_and_shown(
    other_formats: dict[str, Path], sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    bad = _plain_with_bad_statement(other_formats, tmp_path)
    run = run_suite(f"--backup={bad}", f"--globals={other_formats['globals']}", f"--expectations={sample.expectations}",
                    '--allow-restore-error=type "nosuchtype" does not exist')
    assert run.returncode == 0, run.explain()
    assert run.result["restore"]["errors"] == []
    accepted = [e for e in run.result["restore"]["accepted_errors"] if "nosuchtype" in e]
    assert len(accepted) == 1
    assert "accepted: --allow-restore-error" in accepted[0]
    assert "nosuchtype" in (run.run_dir / "report.html").read_text()


def test_no_backup_and_no_existing_target_is_a_usage_error(run_suite: Callable[..., SuiteRun]) -> None:
    run = run_suite(expect_result=False)
    assert run.returncode == 4, run.output
    assert "pass --backup=PATH" in run.output
    assert "--target" in run.output


def test_bare_path_after_backup_is_refused_with_the_fix(sample: Sample, run_suite: Callable[..., SuiteRun]) -> None:
    run = run_suite("--backup", str(sample.dump), expect_result=False)
    assert run.returncode == 4
    assert f"Write --backup={sample.dump}" in run.output


def test_targets_file_rejects_passwords_and_names_missing_env(
    tmp_path: Path, fault_server: FaultServer, sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    dsn = fault_server.copy("named_target")
    targets = tmp_path / "targets.toml"
    targets.write_text(f'[targets.bad]\ndsn = "{dsn}"\npassword = "hunter2"\n')
    run = run_suite(f"--targets-file={targets}", "--target=bad", expect_result=False)
    assert run.returncode == 4
    assert "Passwords never live in the targets file" in run.output
    assert "hunter2" not in run.output
    targets.write_text(f'[targets.prod-restored]\ndsn = "{dsn}"\npassword_env = "RV_TEST_PASSWORD"\n')
    run = run_suite(f"--targets-file={targets}", "--target=prod-restored", expect_result=False)
    assert run.returncode == 4
    assert "$RV_TEST_PASSWORD, which is not set" in run.output
    run = run_suite(f"--targets-file={targets}", "--target=prod-restored", f"--expectations={sample.expectations}",
                    env={"RV_TEST_PASSWORD": "s3cret-value"})
    assert run.result["target"]["name"] == "prod-restored"
    assert run.result["checklist"]["db_accessible"] == "passed", run.explain()
    assert "s3cret-value" not in run.output
    assert "s3cret-value" not in (run.run_dir / "result.json").read_text()


def _write_counters(conninfo: str, dbname: str) -> tuple[int, int, int]:
    time.sleep(1.2)  # cumulative statistics are flushed about once a second
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT tup_inserted, tup_updated, tup_deleted FROM pg_stat_database WHERE datname = %s",
                           (dbname,)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def test_verifies_a_read_only_database_and_writes_nothing(
    fault_server: FaultServer, sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    dsn = fault_server.copy("read_only_copy")
    admin = fault_server.server.conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("ALTER DATABASE read_only_copy SET default_transaction_read_only = on")
    before = _write_counters(admin, "read_only_copy")
    run = run_suite(f"--target={dsn}", f"--expectations={sample.expectations}", "-n", "2")
    after = _write_counters(admin, "read_only_copy")
    skipped = SKIPPED_FOR_EXISTING_TARGET | SKIPPED_WITHOUT_MANIFEST | {"rpo"}
    expected = {i: "skipped" if i in skipped else "passed" for i in ALL_ITEMS}
    assert run.result["checklist"] == expected, run.explain()
    assert after == before, f"the suite wrote to the database it verified: {before} -> {after}"


def test_keep_target_keeps_the_server_and_says_how_to_connect(
    sample: Sample, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", f"--backup={sample.dump}", "--keep-target", f"--reports-dir={tmp_path}",
         "-k", "db_accessible", f"--record={tmp_path / 'record.jsonl'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("connect:"))
    conninfo = line.split("'")[1]
    stop = next(ln for ln in proc.stdout.splitlines() if ln.startswith("stop:"))
    # The record says the server was kept (and may change), not "deleted after the run".
    isolation = json.loads((tmp_path / "record.jsonl").read_text().splitlines()[-1])["isolation"]
    assert "kept running after the run for inspection" in isolation, isolation
    datadir = stop.split()[3]
    try:
        with psycopg.connect(conninfo) as conn:
            assert conn.execute("SELECT count(*) FROM public.orders").fetchone() == (10000,)
    finally:
        subprocess.run([str(pg_tool("pg_ctl")), "-D", datadir, "-m", "immediate", "stop"],
                       user=SYSTEM_USER_AS_ROOT if os.geteuid() == 0 else None, check=False, capture_output=True)
        shutil.rmtree(Path(datadir).parent, ignore_errors=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_run_tears_the_server_down(sig: int, sample: Sample, tmp_path: Path, server_tmp: Path) -> None:
    expectations = tmp_path / "expectations"
    (expectations / "critical_queries").mkdir(parents=True)
    (expectations / "critical_queries" / "slow.sql").write_text("SELECT pg_sleep(60) AS interrupted_marker;\n")
    run_tmp = server_tmp
    log = (tmp_path / "out.txt").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", f"--backup={sample.dump}", f"--expectations={expectations}",
         f"--reports-dir={tmp_path / 'reports'}", "-k", "critical_query"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(run_tmp)},
    )
    try:
        tag = wait_for_running_check(run_tmp, "interrupted_marker")  # inside the slow check now
        proc.send_signal(sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = (tmp_path / "out.txt").read_text()
    assert tag.base_dir
    assert not Path(tag.base_dir).exists(), f"server left behind after {sig!r}:\n{output[-3000:]}"
    assert not postgres_processes_in(tag.base_dir), "a postgres process of the run is still alive"


def test_archive_newer_than_pg_restore_is_refused_with_a_clear_message(
    sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    data = bytearray(sample.dump.read_bytes())
    assert data[:5] == b"PGDMP"
    data[6] = 99  # archive format 1.99: what a future pg_dump would write
    future = tmp_path / "future.dump"
    future.write_bytes(bytes(data))
    run = run_suite(f"--backup={future}", f"--expectations={sample.expectations}")
    assert run.returncode == 1
    assert run.failed_items() == {"restore_succeeded"}, run.explain()
    reason = run.result["restore"]["refused"]
    assert "cannot read archive format 1.99" in reason
    assert "A pg_restore at least as new as the pg_dump" in reason


def test_a_column_option_this_server_does_not_know_is_diagnosed_once(
    other_formats: dict[str, Path], sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """What Debian's PostgreSQL 15.20 does to every column (pg_attver), made by hand: one clear diagnosis."""
    text = other_formats["plain"].read_text()
    marker = "-- PostgreSQL database dump complete"
    options = "".join(f"ALTER TABLE ONLY public.{t} ALTER COLUMN id SET (pg_attver=1);\n"
                      for t in ("customers", "orders", "products"))
    dump = tmp_path / "attver.sql"
    dump.write_text(text.replace(marker, options + "\n" + marker))
    run = run_suite(f"--backup={dump}", f"--globals={other_formats['globals']}",
                    f"--expectations={sample.expectations}")
    assert "restore_succeeded" in run.failed_items(), run.explain()
    reason = run.result["checklist_reasons"]["restore_succeeded"]
    assert reason.startswith("3 error(s) come from table or column options this server"), reason
    assert "pg_attver" in reason
    assert "--target=docker" in reason


def test_a_file_that_is_not_a_dump_says_so(tmp_path: Path, run_suite: Callable[..., SuiteRun]) -> None:
    run = run_suite(f"--backup={ROOT / 'README.md'}", f"--expectations={tmp_path}")
    assert run.failed_items() == {"restore_succeeded"}, run.explain()
    refused = run.result["restore"]["refused"]
    assert "is not a PostgreSQL dump: no PGDMP header" in refused
    assert "truncated" not in refused
    # The settings are printed before the restore starts, so a run that dies there has said how it was set up.
    assert run.output.index("restore-verify: backup=") < run.output.index("restore-verify: restoring")


def test_the_command_line_says_what_it_is_and_what_is_missing(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "restore", *args], cwd=ROOT, capture_output=True, text=True)

    version = cli("--version")
    assert version.returncode == 0
    assert "restore-verify" in version.stdout
    assert "pytest" in version.stdout
    missing = cli("record", f"--history={tmp_path / 'nope.jsonl'}", f"--output={tmp_path / 'out'}")
    assert missing.returncode == 1
    assert "was not found" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_help_is_plain_and_a_typo_names_the_flag_meant(tmp_path: Path, run_suite: Callable[..., SuiteRun]) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "restore", *args], cwd=ROOT, capture_output=True, text=True)

    top = cli("--help")
    assert top.returncode == 0
    assert "``" not in top.stdout  # no reST markup
    assert "pytest --backup=PATH" in top.stdout  # where verification happens
    backup = cli("backup", "--help").stdout
    manifest_help = cli("manifest", "--help").stdout
    assert "FILE.dump.manifest.json" in backup
    assert "(manifest) or" not in backup + manifest_help  # each sub-command describes its own --output
    typo = cli("cleanup", "--dryrun")
    assert typo.returncode == 2
    assert "did you mean --dry-run?" in typo.stderr
    assert "did you mean 'record'?" in cli("recrd").stderr
    run = run_suite("--bakup=x.dump", expect_result=False)
    assert run.returncode == 4, run.output
    assert "did you mean --backup=VALUE?" in run.output
    run = run_suite("--keep-targt", expect_result=False)
    assert "did you mean --keep-target?" in run.output


@pytest.mark.parametrize("with_manifest", [True, False], ids=["manifest", "no-manifest"])
def test_database_settings_comment_and_grants_come_back_as_pg_restore_create_would(
    with_manifest: bool, tmp_path: Path, run_suite: Callable[..., SuiteRun]  # noqa: FBT001
) -> None:
    """ALTER DATABASE … SET, a role's settings in the database, its comment and a grant: the backup holds them, and
    the suite's own restore (pg_restore into a database it created, without --create) applies them, as a restore
    with --create would: schema_matches stays green with and without the manifest."""
    from restore.take_backup import take_backup
    from restore.targets.embedded import EmbeddedServer

    with EmbeddedServer(jobs=1) as source:
        with psycopg.connect(source.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE tenant_db")
            conn.execute("DROP ROLE IF EXISTS tenant_app")
            conn.execute("CREATE ROLE tenant_app LOGIN")
            conn.execute("ALTER DATABASE tenant_db SET search_path TO app, public")
            conn.execute("ALTER DATABASE tenant_db SET app.tenant TO 'acme'")
            conn.execute("ALTER ROLE tenant_app IN DATABASE tenant_db SET work_mem TO '8MB'")
            conn.execute("COMMENT ON DATABASE tenant_db IS 'tenant acme'")
            conn.execute("GRANT CONNECT ON DATABASE tenant_db TO tenant_app")
        with psycopg.connect(source.conninfo("tenant_db"), autocommit=True) as conn:
            conn.execute("CREATE SCHEMA app")
            conn.execute("CREATE TABLE app.accounts (id int PRIMARY KEY, name text)")
            conn.execute("INSERT INTO app.accounts SELECT g, 'a' || g FROM generate_series(1, 50) g")
        dump, manifest_path = take_backup(source.conninfo("tenant_db"), tmp_path / "tenant.dump")
        globals_sql = tmp_path / "globals.sql"
        globals_sql.write_text(subprocess.run(
            [str(pg_tool("pg_dumpall")), "--globals-only", "-d", source.conninfo()], check=True,
            env=clean_env(), capture_output=True, text=True).stdout)
    if not with_manifest:
        manifest_path.unlink()
    empty = tmp_path / "no-expectations"
    empty.mkdir()
    run = run_suite(f"--backup={dump}", f"--globals={globals_sql}", f"--expectations={empty}")
    assert run.result["checklist"]["schema_matches"] == "passed", run.explain()
    assert run.result["checklist"]["restore_succeeded"] == "passed", run.explain()
    assert not run.failed_items(), run.explain()
    log = (run.run_dir / "restore.log").read_text()
    assert "as pg_restore --create would: DATABASE PROPERTIES tenant_db" in log, log[-3000:]
    if not with_manifest:
        return
    # The same backup restored by hand the usual way (pg_restore into a database made for it, no --create), then
    # verified as an existing target against its manifest: the restore procedure's gap, said as such.
    with EmbeddedServer(jobs=1) as by_hand:
        subprocess.run([str(pg_tool("psql")), "-X", "-q", "-d", by_hand.conninfo(), "-f", str(globals_sql)],
                       env=clean_env(), capture_output=True, check=False)  # "role postgres already exists"
        with psycopg.connect(by_hand.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE tenant_db")
        subprocess.run([str(pg_tool("pg_restore")), "--exit-on-error", "-d", by_hand.conninfo("tenant_db"),
                        str(dump)], env=clean_env(), check=True, capture_output=True)
        existing = run_suite(f"--target={by_hand.conninfo('tenant_db')}", f"--manifest={manifest_path}",
                             f"--expectations={empty}")
    assert existing.failed_items() == {"schema_matches"}, existing.explain()
    failure = next(f for f in existing.result["failures"] if f["checklist"] == "schema_matches")
    assert failure["origin"] == "restore", failure
    for said in ("A gap in the restore procedure: pg_restore without --create", "setting app.tenant = 'acme' is "
                 "in the backup, not in the restore", 'ALTER DATABASE "tenant_db" SET search_path',
                 "its comment is in the backup, not in the restore", 'ALTER ROLE "tenant_app" IN DATABASE '
                 '"tenant_db" SET work_mem'):
        assert said in failure["message"], failure["message"]
    assert "COMMENT ON DATABASE tenant_db is missing" not in failure["message"]  # said once, by the catalog


BROKEN_NAMES = ["a\rb", "c\nd", "e\tf ", "trailing "]


@pytest.mark.parametrize("fmt", ["custom", "tar"])
def test_names_with_line_breaks_tabs_and_trailing_spaces_load_and_pass(
    fmt: str, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """Legal names that span lines in pg_restore's output: which TABLE DATA entries were loaded is decided from the
    archive's own entries, not cut out of pg_restore's lines (custom with its manifest: a parallel restore; tar
    without one: a serial restore)."""
    from restore.take_backup import take_backup
    from restore.targets.embedded import EmbeddedServer

    with EmbeddedServer(jobs=1) as source:
        with psycopg.connect(source.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE line_breaks")
        with psycopg.connect(source.conninfo("line_breaks"), autocommit=True) as conn:
            for n, name in enumerate(BROKEN_NAMES):
                table = sql.Identifier("public", name)
                conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text)").format(table))
                conn.execute(sql.SQL("INSERT INTO {} SELECT g, 'v' || g FROM generate_series(1, {}) g").format(
                    table, sql.Literal(10 + n)))
        if fmt == "custom":
            dump, _ = take_backup(source.conninfo("line_breaks"), tmp_path / "line_breaks.dump")
        else:
            dump = tmp_path / "line_breaks.tar"
            subprocess.run([str(pg_tool("pg_dump")), "-Ft", "-f", str(dump), "-d", source.conninfo("line_breaks")],
                           check=True, env=clean_env(), capture_output=True)
    empty = tmp_path / "no-expectations"
    empty.mkdir()
    run = run_suite(f"--backup={dump}", f"--expectations={empty}", "--restore-jobs=2")
    assert not run.failed_items(), run.explain()
    for item in ("restore_succeeded", "tables_present", "schema_matches", "no_corruption"):
        assert run.result["checklist"][item] == "passed", run.explain()
    if fmt == "custom":  # counted against the manifest
        assert run.result["checklist"]["row_counts"] == "passed", run.explain()
        assert len(run.result["row_counts"]) == len(BROKEN_NAMES), run.result["row_counts"]
