"""Honest verdicts: a green that could have gone red goes red; a faithful restore of a real-looking database stays
green; what could not be proven says so (skipped / incomplete), never "passed".

The database (tests/shapes_schema.sql) has the shapes real ones have: views, materialized views (one WITH NO DATA),
partitions, domains, enums, legacy DEFAULT nextval sequences (one shared by two tables), several schemas, a table
without keys and hostile names (spaces, quotes, semicolons, %, {}, backslashes, unicode, 63 bytes).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from restore.backups.archive import inspect
from restore.take_backup import take_backup
from restore.targets.embedded import EmbeddedServer
from restore.tools import clean_env, pg_tool
from tests.conftest import ROOT, FaultServer, SuiteRun

HERE = Path(__file__).parent
HOSTILE_TABLES = {'Reporting Area.Daily Totals; 100% {net}', 'Reporting Area.quote"d table', "public.2019",
                  "public.a_table_name_that_is_exactly_sixty_three_bytes_long_in_total_xy"}
# No expectations for this database: these items have nothing configured and say so.
NOT_CONFIGURED = {"app_connect", "critical_queries", "business_rules", "rpo", "retention"}


@dataclass(frozen=True)
class Shapes:
    server: EmbeddedServer
    dump: Path  # with shapes.dump.manifest.json beside it
    bare_dump: Path  # the same dump without a manifest: the suite has only the dump's table of contents
    pristine: str  # a database on the server restored from the dump by hand, to copy and break

    def copy(self, name: str) -> str:
        """A fresh database cloned from the pristine restored copy; returns its superuser conninfo."""
        return FaultServer(self.server, self.pristine).copy(name)


def _psql(conninfo: str, script: Path) -> None:
    subprocess.run([str(pg_tool("psql")), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-f", str(script)],
                   check=True, env=clean_env(), capture_output=True)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shapes]:
    out = tmp_path_factory.mktemp("shapes")
    with EmbeddedServer(jobs=2) as server:
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE shapes")
        _psql(server.conninfo("shapes"), HERE / "shapes_schema.sql")
        dump, _ = take_backup(server.conninfo("shapes"), out / "shapes.dump")
        (out / "bare").mkdir()
        bare = out / "bare" / "shapes.dump"
        shutil.copy(dump, bare)
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE pristine")
        subprocess.run([str(pg_tool("pg_restore")), "--exit-on-error", "-d", server.conninfo("pristine"), str(dump)],
                       check=True, env=clean_env(), capture_output=True)
        with psycopg.connect(server.conninfo("pristine"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION amcheck")
            conn.execute("ANALYZE")
        yield Shapes(server, dump, bare, "pristine")


@pytest.fixture
def no_expectations(tmp_path: Path) -> Path:
    empty = tmp_path / "no-expectations"
    empty.mkdir()
    return empty


def _statuses(run: SuiteRun, state: str) -> set[str]:
    return {i for i, s in run.result["checklist"].items() if s == state}


def _execute(conninfo: str, *statements: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())


# --- the archive is read exactly --------------------------------------------------------------------------

def test_table_of_contents_keeps_hostile_names_whole(shapes: Shapes) -> None:
    info = inspect(shapes.dump)
    assert HOSTILE_TABLES <= set(info.tables())
    fks = set(info.foreign_keys())
    assert ('Reporting Area.quote"d table', 'quote"d table_Daily Day_fkey') in fks
    keys = {(k["table"], k["name"]): k for k in info.key_definitions()}
    fk = keys[('quote"d table', 'quote"d table_Daily Day_fkey')]
    assert (fk["columns"], fk["ref_schema"], fk["ref_table"], fk["ref_columns"]) == (
        ["Daily Day"], "Reporting Area", "Daily Totals; 100% {net}", ["Day"])
    assert keys[("Daily Totals; 100% {net}", "Daily Totals; 100% {net}_pkey")]["columns"] == ["Day"]
    # A populated materialized view has its data entry; one created WITH NO DATA has none.
    assert "Reporting Area.monthly" in info.summary().materialized_views_with_data
    assert "Reporting Area.country_totals" not in info.summary().materialized_views_with_data


# --- a faithful restore is green ------------------------------------------------------------------------

@pytest.mark.parametrize("with_manifest", [True, False], ids=["manifest", "table-of-contents-only"])
def test_faithful_restore_of_real_shapes_is_green(
    with_manifest: bool, shapes: Shapes, no_expectations: Path, run_suite: Callable[..., SuiteRun]  # noqa: FBT001
) -> None:
    dump = shapes.dump if with_manifest else shapes.bare_dump
    run = run_suite("-n", "2", f"--backup={dump}", f"--expectations={no_expectations}")
    assert run.returncode == 0, run.explain()
    assert run.result["outcome"] == "passed", run.explain()
    assert _statuses(run, "failed") == set(), run.explain()
    assert _statuses(run, "incomplete") == set(), run.explain()
    skipped = set(NOT_CONFIGURED)
    if not with_manifest:
        skipped |= {"row_counts"}  # nothing says how many rows to expect: said, not passed
    assert _statuses(run, "skipped") == skipped, run.explain()
    # With or without a manifest, schema_matches compares the restore with the archive's own table of contents.
    assert "the archive's own table of contents" in run.result["checklist_reasons"]["schema_matches"], run.explain()
    # Legacy sequences are checked, not skipped as "no serial or identity columns" …
    seq_tests = [t for t in run.result["slowest_checks"] + run.result["skips"] if "test_sequences" in t["nodeid"]]
    assert run.result["checklist"]["sequences"] == "passed", run.explain()
    assert "no serial or identity" not in json.dumps(run.result["checklist_reasons"]), seq_tests
    # … and the materialized view shipped WITH NO DATA is no failure: it had no rows in the backup either.
    na = [s for s in run.result["skips"] if "country_totals" in s["nodeid"]]
    assert all("not populated in the backup either" in s["reason"] for s in na), na


def test_legacy_sequence_lagging_in_the_backup_fails_without_a_manifest(
    shapes: Shapes, tmp_path: Path, no_expectations: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """A loading script that inserted explicit ids and never called setval: the first insert would fail."""
    source = shapes.copy("lagging_source")
    _execute(source, "SELECT setval('sales.customer_seq', 10)")
    dump = tmp_path / "lagging.dump"
    subprocess.run([str(pg_tool("pg_dump")), "-Fc", "-f", str(dump), "-d", source], check=True, env=clean_env())
    run = run_suite(f"--backup={dump}", f"--expectations={no_expectations}")
    assert _statuses(run, "failed") == {"sequences"}, run.explain()
    message = next(f["message"] for f in run.result["failures"] if f["checklist"] == "sequences")
    assert "DEFAULT nextval" in message
    assert ("""SELECT setval('"sales"."customer_seq"', greatest((SELECT max("customer_id") FROM "sales"."customer"), """
            """(SELECT last_value FROM "sales"."customer_seq")));""") in message


def test_every_sequence_hint_is_valid_sql_that_fixes_it(shapes: Shapes, no_expectations: Path,
                                                        run_suite: Callable[..., SuiteRun]) -> None:
    target = shapes.copy("lagging_hint")
    _execute(target, "SELECT setval('public.\"quote\"\"d table_id_seq\"'::regclass, 1)".replace(
        "public.", '"Reporting Area".'), "SELECT setval('sales.shared_ids', 3)")
    run = run_suite(f"--target={target}", f"--expectations={no_expectations}")
    failures = [f["message"] for f in run.result["failures"] if f["checklist"] == "sequences"]
    assert len(failures) == 3, run.explain()  # the shared sequence fails for both tables it feeds
    for message in failures:
        _execute(target, message.split("Fix: ", 1)[1])
    again = run_suite(f"--target={target}", f"--expectations={no_expectations}")
    assert again.result["checklist"]["sequences"] == "passed", again.explain()


def test_table_without_its_data_in_the_backup_fails_tables_present(
    shapes: Shapes, tmp_path: Path, no_expectations: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    dump = tmp_path / "no-log-data.dump"
    subprocess.run([str(pg_tool("pg_dump")), "-Fc", "--exclude-table-data=public.import_log", "-f", str(dump),
                    "-d", shapes.server.conninfo("shapes")], check=True, env=clean_env())
    run = run_suite(f"--backup={dump}", f"--expectations={no_expectations}")
    assert _statuses(run, "failed") == {"tables_present"}, run.explain()
    assert "public.import_log is in the backup without its data" in run.result["checklist_reasons"]["tables_present"]
    # Said to be empty on purpose: green.
    (no_expectations / "row_counts.toml").write_text('[tables]\n"public.import_log" = 0\n')
    run = run_suite(f"--backup={dump}", f"--expectations={no_expectations}")
    assert _statuses(run, "failed") == set(), run.explain()


# --- keys the restore lost ------------------------------------------------------------------------------

def test_orphans_behind_a_dropped_foreign_key_are_found(
    shapes: Shapes, no_expectations: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    target = shapes.copy("dropped_fk")
    _execute(target, 'ALTER TABLE sales.refund DROP CONSTRAINT refund_order_id_fkey',
             'INSERT INTO sales.refund (order_id, amount) VALUES (987654, 1)')
    # With the dump's table of contents only (an existing target restored by hand from this dump) …
    run = run_suite(f"--target={target}", f"--backup={shapes.bare_dump}", f"--expectations={no_expectations}")
    assert {"orphaned_records", "foreign_keys"} <= _statuses(run, "failed"), run.explain()
    assert "987654" in run.result["checklist_reasons"]["orphaned_records"]
    # … and with the manifest.
    run = run_suite(f"--target={target}", f"--manifest={shapes.dump}.manifest.json",
                    f"--expectations={no_expectations}")
    assert "orphaned_records" in _statuses(run, "failed"), run.explain()
    assert "lost that foreign key" in run.result["checklist_reasons"]["orphaned_records"]


def test_duplicates_behind_a_dropped_primary_key_are_named(
    shapes: Shapes, no_expectations: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    target = shapes.copy("dropped_pk")
    _execute(target, 'ALTER TABLE public."2019" DROP CONSTRAINT "2019_pkey"',
             "INSERT INTO public.\"2019\" VALUES (7, 'again')")
    run = run_suite(f"--target={target}", f"--manifest={shapes.dump}.manifest.json",
                    f"--expectations={no_expectations}")
    assert "duplicate_primary_keys" in _statuses(run, "failed"), run.explain()
    reason = run.result["checklist_reasons"]["duplicate_primary_keys"]
    assert "duplicated key value" in reason
    assert "2019" in reason
    assert 'ALTER TABLE "public"."2019" ADD CONSTRAINT "2019_pkey" PRIMARY KEY ("overall_rank");' in reason


def test_materialized_view_populated_in_the_backup_but_not_in_the_restore_fails_row_counts(
    shapes: Shapes, no_expectations: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    target = shapes.copy("matview_emptied")
    _execute(target, 'REFRESH MATERIALIZED VIEW "Reporting Area".monthly WITH NO DATA')
    run = run_suite(f"--target={target}", f"--manifest={shapes.dump}.manifest.json",
                    f"--expectations={no_expectations}")
    assert _statuses(run, "failed") == {"row_counts"}, run.explain()
    assert 'REFRESH MATERIALIZED VIEW "Reporting Area"."monthly";' in run.result["checklist_reasons"]["row_counts"]


# --- a permission error is "cannot verify", not corruption --------------------------------------------

def test_a_verifying_role_without_privileges_is_told_not_blamed(
    shapes: Shapes, no_expectations: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    target = shapes.copy("least_privileged")
    _execute(target, "DROP ROLE IF EXISTS verifier", "CREATE ROLE verifier LOGIN PASSWORD 'verifier-pw'",
             "GRANT USAGE ON SCHEMA sales, public, \"Reporting Area\" TO verifier",
             "GRANT SELECT ON ALL TABLES IN SCHEMA public, \"Reporting Area\" TO verifier",
             "GRANT SELECT ON sales.customer, sales.\"order\", sales.payment, sales.ticket TO verifier",
             "GRANT SELECT ON ALL SEQUENCES IN SCHEMA sales, public, \"Reporting Area\" TO verifier")
    dsn = (f"host=127.0.0.1 port={shapes.server.port} dbname=least_privileged user=verifier "
           "password=verifier-pw")
    run = run_suite(f"--target={dsn}", f"--expectations={no_expectations}")
    assert run.result["outcome"] == "passed", run.explain()
    assert _statuses(run, "failed") == set(), run.explain()
    corruption = run.result["checklist"]["no_corruption"]
    assert corruption in ("skipped", "incomplete"), run.explain()
    reason = run.result["checklist_reasons"]["no_corruption"]
    assert "cannot verify" in reason, reason
    assert "GRANT EXECUTE ON FUNCTION" in reason, reason
    # sales.refund is unreadable: its scans say which privilege is missing.
    assert run.result["checklist"]["orphaned_records"] == "incomplete", run.explain()
    assert "permission denied for table refund" in run.result["checklist_reasons"]["orphaned_records"]


def test_no_corruption_is_not_passed_when_amcheck_is_missing(
    shapes: Shapes, no_expectations: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    target = shapes.copy("no_amcheck")
    _execute(target, "DROP EXTENSION amcheck")
    run = run_suite(f"--target={target}", f"--expectations={no_expectations}")
    assert run.result["checklist"]["no_corruption"] == "incomplete", run.explain()
    assert "amcheck is not installed" in run.result["checklist_reasons"]["no_corruption"]


# --- manifests that are not this backup's ---------------------------------------------------------------

def test_a_manifest_of_another_database_is_refused_before_restoring(
    shapes: Shapes, sample: object, tmp_path: Path, no_expectations: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    other = sample.manifest  # type: ignore[attr-defined]
    run = run_suite(f"--backup={shapes.bare_dump}", f"--manifest={other}", f"--expectations={no_expectations}")
    assert run.result["outcome"] == "failed"
    assert run.failed_items() == {"restore_succeeded"}, run.explain()
    reason = run.result["checklist_reasons"]["restore_succeeded"]
    assert "describes database 'ecommerce_production'" in reason
    assert "nothing was restored" in reason
    assert run.result["restore"]["phases_s"].get("restore") is None  # refused before the restore started
    truncated = tmp_path / "truncated.manifest.json"
    text = (shapes.dump.parent / "shapes.dump.manifest.json").read_text()
    truncated.write_text(text[: len(text) // 2])
    run = run_suite(f"--backup={shapes.bare_dump}", f"--manifest={truncated}", f"--expectations={no_expectations}")
    assert run.failed_items() == {"restore_succeeded"}, run.explain()
    assert "truncated" in run.result["checklist_reasons"]["restore_succeeded"]


# --- the run's own outcome -----------------------------------------------------------------------------

def test_a_deselected_run_is_partial_and_recorded_so(
    shapes: Shapes, tmp_path: Path, no_expectations: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    record = tmp_path / "record.jsonl"
    run = run_suite(f"--backup={shapes.dump}", f"--expectations={no_expectations}", "-k", "db_accessible",
                    f"--record={record}")
    assert run.returncode == 6, run.explain()
    assert run.result["outcome"] == "partial"
    assert run.result["checklist"]["db_accessible"] == "passed"
    assert run.result["checklist"]["tables_present"] == "skipped"
    assert "-k 'db_accessible'" in run.result["checklist_reasons"]["tables_present"]
    assert json.loads(record.read_text().splitlines()[-1])["outcome"] == "partial"
    # --no-record leaves no line.
    run_suite(f"--backup={shapes.dump}", f"--expectations={no_expectations}", "-k", "db_accessible",
              f"--record={record}", "--no-record")
    assert len(record.read_text().splitlines()) == 1


def test_a_missing_backup_file_is_a_failed_run_and_recorded(
    tmp_path: Path, no_expectations: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    record = tmp_path / "record.jsonl"
    run = run_suite(f"--backup={tmp_path / 'gone.dump'}", f"--expectations={no_expectations}", f"--record={record}")
    assert run.returncode == 1, run.explain()
    assert run.result["outcome"] == "failed"
    assert json.loads(record.read_text())["outcome"] == "failed"


@pytest.mark.parametrize(("how", "workers"), [(signal.SIGTERM, "no:xdist"), (signal.SIGINT, "no:xdist"),
                                              (signal.SIGTERM, "xdist")], ids=["sigterm", "sigint", "sigterm-xdist"])
def test_an_interrupted_run_is_recorded_as_interrupted(
    how: signal.Signals, workers: str, shapes: Shapes, tmp_path: Path, no_expectations: Path
) -> None:
    """Stopped while a check runs (a CI timeout, a CronJob deadline, Ctrl-C): never "passed"."""
    target = shapes.copy(f"interrupted_{how.name.lower()}_{workers.replace(':', '_')}")
    slow = no_expectations / "critical_queries"
    slow.mkdir()
    (slow / "slow.sql").write_text("SELECT pg_sleep(120) AS restore_verify_test_marker\n")
    record, result = tmp_path / "record.jsonl", tmp_path / "result.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", *(["-p", "no:xdist"] if workers == "no:xdist" else ["-n", "2"]),
         f"--target={target}", f"--expectations={no_expectations}",
         f"--reports-dir={tmp_path / 'reports'}", f"--result-json={result}", f"--record={record}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        # Wait for the condition (the slow check running on the server), not for a time or a log line.
        deadline = time.monotonic() + 120
        with psycopg.connect(shapes.server.conninfo(), autocommit=True) as conn:
            while not conn.execute("SELECT 1 FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
                                   ("%restore_verify_test_marker%",)).fetchone():
                assert proc.poll() is None, proc.communicate()[0][-3000:]
                assert time.monotonic() < deadline, "the slow check never started"
                time.sleep(0.1)
        proc.send_signal(how)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, output[-3000:]
    data = json.loads(result.read_text())
    assert data["outcome"] == "interrupted", output[-3000:]
    assert data["checklist"]["critical_queries"] != "passed"
    line = json.loads(record.read_text())
    assert line["outcome"] == "interrupted"


# --- where a finding comes from (already in the backup / introduced by the restore / unknown) -----------

INHERITABLE_FAULTS = (
    "SELECT setval('sales.customer_seq', 10)",  # a loading script that never called setval
    "ALTER TABLE sales.refund DROP CONSTRAINT refund_order_id_fkey",
    "INSERT INTO sales.refund (order_id, amount) VALUES (987654, 1)",
    "ALTER TABLE sales.refund ADD CONSTRAINT refund_order_id_fkey FOREIGN KEY (order_id) REFERENCES sales.\"order\""
    " NOT VALID",
)
ATTRIBUTED = {"sequences", "orphaned_records", "unvalidated_constraints"}


def _origins(run: SuiteRun) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for failure in run.result["failures"]:
        found.setdefault(failure["checklist"], set()).add(failure["origin"])
    return found


def test_findings_already_in_the_backup_say_so_and_can_be_accepted(
    shapes: Shapes, tmp_path: Path, no_expectations: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    source = shapes.copy("inherited_source")
    _execute(source, *INHERITABLE_FAULTS)
    dump, _ = take_backup(source, tmp_path / "inherited.dump")
    record = tmp_path / "record.jsonl"
    run = run_suite(f"--backup={dump}", f"--expectations={no_expectations}", f"--record={record}")
    assert _statuses(run, "failed") == ATTRIBUTED, run.explain()
    assert {item: _origins(run)[item] for item in ATTRIBUTED} == dict.fromkeys(ATTRIBUTED, {"backup"}), run.explain()
    assert all("already in the backup" in f["message"] for f in run.result["failures"]), run.explain()
    assert json.loads(record.read_text())["failure_origins"] == {"backup": 3, "restore": 0, "unknown": 0}
    # Accepted for one item: that item passes, the finding is listed, the others still fail.
    accepted = run_suite(f"--backup={dump}", f"--expectations={no_expectations}", "--accept-inherited=sequences")
    assert accepted.result["checklist"]["sequences"] == "passed", accepted.explain()
    assert [a["checklist"] for a in accepted.result["accepted_findings"]] == ["sequences"]
    assert _statuses(accepted, "failed") == ATTRIBUTED - {"sequences"}


def test_the_same_findings_introduced_by_a_restore_say_so(
    shapes: Shapes, no_expectations: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    target = shapes.copy("introduced")
    _execute(target, *INHERITABLE_FAULTS)
    run = run_suite(f"--target={target}", f"--manifest={shapes.dump}.manifest.json",
                    f"--expectations={no_expectations}")
    origins = _origins(run)
    assert {item: origins.get(item) for item in ATTRIBUTED} == dict.fromkeys(ATTRIBUTED, {"restore"}), run.explain()
    assert "introduced by the restore" in run.result["checklist_reasons"]["orphaned_records"]
    without = run_suite(f"--target={target}", f"--expectations={no_expectations}")
    origins = _origins(without)
    assert {item: origins.get(item) for item in ATTRIBUTED} == dict.fromkeys(ATTRIBUTED, {"unknown"}), \
        without.explain()


def test_without_expectations_nothing_of_the_sample_is_applied(
    shapes: Shapes, run_suite: Callable[..., SuiteRun]
) -> None:
    """No --expectations: the suite proves what the backup itself allows and says which file would add more."""
    run = run_suite(f"--backup={shapes.bare_dump}")
    assert _statuses(run, "failed") == set(), run.explain()
    assert run.result["outcome"] == "passed", run.explain()
    assert "app.toml" in run.result["checklist_reasons"]["app_connect"]
    assert "row_counts.toml" in run.result["checklist_reasons"]["row_counts"]


def test_the_state_handed_to_workers_is_the_state_the_controller_found(shapes: Shapes, tmp_path: Path) -> None:
    """The one codec: every catalog row and the backup's summary survive the trip to an xdist worker whole (a
    typed row missing a column the query returns would lose it on the workers only)."""
    from restore import run
    from restore.backups.outcome import PreparedDatabase, RestoreOutcome
    from restore.compare.catalog import read_catalog

    catalog = read_catalog(shapes.server.conninfo(shapes.pristine))
    assert catalog.tables
    assert catalog.foreign_keys
    assert catalog.unique_keys
    assert catalog.sequences
    assert catalog.indexes
    assert catalog.toast
    facts = run.RunFacts(run_id="r", started_at="2026-11-25T00:00:00+00:00", run_dir=tmp_path, catalog=catalog,
                         prepared=PreparedDatabase(
                             target_name="local", target_kind="embedded", target_display="d", conninfo="dbname=x",
                             dbname="x", app_host="127.0.0.1", app_port=5432, owned=True,
                             archive=inspect(shapes.dump).summary(), restore=RestoreOutcome(performed=True)))
    assert run.decode(run.encode(facts)) == facts
