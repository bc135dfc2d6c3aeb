"""Manifests: the restore holds exactly what was backed up — schema, counts, content, sequences."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from restore.compare import manifest
from restore.compare.capture import capture
from restore.take_backup import take_backup
from restore.targets.embedded import EmbeddedServer
from restore.tools import clean_env, pg_tool
from tests.conftest import (
    ALL_ITEMS,
    ALL_PASSED,
    PG15_BIN,
    ROOT,
    SKIPPED_FOR_EXISTING_TARGET,
    FaultServer,
    Sample,
    SuiteRun,
    restorable_into_18,
)


def _expected(failed: set[str]) -> dict[str, str]:
    # rpo passes too: the manifest says when its snapshot was taken, and keeps the freshness read then.
    expected = {i: "skipped" if i in SKIPPED_FOR_EXISTING_TARGET else "passed" for i in ALL_ITEMS}
    expected.update(dict.fromkeys(failed, "failed"))
    return expected


def _inject(conninfo: str, statements: tuple[str, ...]) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())


MANIFEST_FAULTS = [
    ("row_swapped_same_count", {"no_corruption"}, (
        "DELETE FROM audit.order_events WHERE id = 3",
        "INSERT INTO audit.order_events (id, order_id, event, at) VALUES (3, 9, 'created', now())",
    ), "a value changed, or a row was replaced by another, with the same number of rows.\n  - rows with id from 1 "
       "to 105 (and below): different content"),
    ("price_changed_by_a_cent", {"no_corruption"}, ("UPDATE public.products SET price = price + 0.01 WHERE id = 7",),
     "The content of public.products is not what was backed up: a value changed, or a row was replaced by another, "
     "with the same number of rows.\n  - rows with id from 1 to"),
    ("composite_key_row_changed", {"no_corruption"},
     ("UPDATE public.order_items SET product_id = product_id % 100 + 1 WHERE order_id = 5 AND line_no = 1",),
     "\n  - rows whose primary key (order_id, line_no) hashes to bucket "),
    ("column_type_changed", {"schema_matches"},
     ("ALTER TABLE public.customers ALTER COLUMN full_name TYPE varchar(200)",),
     "column public.customers.full_name: type was 'text', is 'character varying(200)'"),
    ("not_null_dropped", {"schema_matches"}, ("ALTER TABLE public.products ALTER COLUMN stock DROP NOT NULL",),
     "column public.products.stock: nullability was NOT NULL, is nullable"),
    ("index_dropped", {"schema_matches"}, ("DROP INDEX public.orders_customer_created_idx",),
     "index orders_customer_created_idx on public.orders is missing"),
    ("trigger_dropped", {"schema_matches"}, ("DROP TRIGGER orders_touch_updated_at ON public.orders",),
     "trigger orders_touch_updated_at on public.orders is missing"),
    ("view_redefined", {"schema_matches"}, (
        "CREATE OR REPLACE VIEW public.order_summaries AS SELECT o.id, o.customer_id, o.status, o.total,"
        " count(i.*) AS lines, o.created_at FROM public.orders o LEFT JOIN public.order_items i"
        " ON i.order_id = o.id WHERE o.status <> 'cancelled' GROUP BY o.id",
    ), "view public.order_summaries is defined differently"),
    ("sequence_reset", {"sequences"}, ("SELECT setval('public.customers_id_seq', 1500)",),
     "Sequence public.customers_id_seq is at 1500 in the restore but was at 2000"),
    ("extension_missing", {"schema_matches"}, ("DROP EXTENSION pg_trgm CASCADE",), "extension pg_trgm"),
]


@pytest.mark.parametrize(("name", "items", "statements", "message"), MANIFEST_FAULTS,
                         ids=[f[0] for f in MANIFEST_FAULTS])
def test_manifest_fault_fails_its_item_naming_the_object(
    name: str, items: set[str], statements: tuple[str, ...], message: str, fault_server: FaultServer,
    sample: Sample, run_suite: Callable[..., SuiteRun],
) -> None:
    dsn = fault_server.copy(f"m_{name}")
    _inject(dsn, statements)
    run = run_suite(f"--target={dsn}", f"--manifest={sample.manifest}", f"--expectations={sample.expectations}")
    assert run.result["checklist"] == _expected(items), run.explain()
    messages = "\n".join(f["message"] for f in run.result["failures"])
    assert message in messages, messages


def test_clean_copy_matches_its_manifest(
    fault_server: FaultServer, sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    run = run_suite(f"--target={fault_server.copy('m_clean')}", f"--manifest={sample.manifest}",
                    f"--expectations={sample.expectations}")
    assert run.returncode == 0, run.explain()
    assert run.result["checklist"] == _expected(set()), run.explain()
    assert run.result["manifest"]["kind"] == "manifest"
    restored = manifest.load(Path(run.result["manifest"]["restored"]))
    assert restored["tables"]["public.orders"]["row_count"] == 10000


def test_checksum_ignores_session_defaults_but_not_a_changed_value(fault_server: FaultServer) -> None:
    """Pinned settings make the row text, hence the checksum, independent of the server's defaults."""
    plain = fault_server.copy("m_defaults_plain")
    odd = fault_server.copy("m_defaults_odd")
    with psycopg.connect(fault_server.server.conninfo(), autocommit=True) as conn:
        for setting, value in (("TimeZone", "Asia/Taipei"), ("DateStyle", "SQL, DMY"), ("extra_float_digits", "0"),
                               ("bytea_output", "escape"), ("IntervalStyle", "sql_standard")):
            conn.execute(sql.SQL("ALTER DATABASE m_defaults_odd SET {} = {}").format(
                sql.Identifier(setting), sql.Literal(value)))
    a, b = capture(plain), capture(odd)
    assert {t: e["checksum"] for t, e in a["tables"].items()} == {t: e["checksum"] for t, e in b["tables"].items()}
    _inject(odd, ("UPDATE public.orders SET created_at = created_at + interval '1 microsecond' WHERE id = 1",))
    c = capture(odd)
    assert c["tables"]["public.orders"]["checksum"] != a["tables"]["public.orders"]["checksum"]
    assert c["tables"]["public.customers"]["checksum"] == a["tables"]["public.customers"]["checksum"]


def test_backup_and_manifest_agree_on_a_busy_database(
    fault_server: FaultServer, tmp_path: Path, sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    """python -m restore backup under a steady stream of writes: dump and manifest agree to the row."""
    dsn = fault_server.copy("m_busy")
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO audit.order_events (order_id, event, at) VALUES (1, 'busy', now())")
                conn.execute("UPDATE public.products SET stock = stock + 1 WHERE id = 1")
                written[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.5)
        dump = tmp_path / "busy.dump"
        proc = subprocess.run([sys.executable, "-m", "restore", "backup", f"--dsn={dsn}", f"--output={dump}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "(pg_dump -Fc and the manifest, one snapshot) ..." in proc.stderr  # it says what it does
        assert "done: pg_dump:" in proc.stderr  # and how far it got
        time.sleep(0.5)
        # A manifest taken on its own a moment later no longer describes the dump: the run could go red.
        late = tmp_path / "late.manifest.json"
        manifest.write(capture(dsn), late)
    finally:
        stop.set()
        thread.join()
    assert written[0] > 50
    empty = tmp_path / "empty"
    empty.mkdir()
    run = run_suite(f"--backup={dump}", f"--expectations={empty}")
    assert run.result["manifest"]["source"] == str(dump) + ".manifest.json"
    for item in ("tables_present", "row_counts", "schema_matches", "sequences", "no_corruption"):
        assert run.result["checklist"][item] == "passed", run.explain()
    run = run_suite(f"--backup={dump}", f"--manifest={late}", f"--expectations={empty}")
    assert {"row_counts", "no_corruption", "sequences"} <= run.failed_items(), run.explain()


def test_live_baseline_within_and_beyond_tolerance(
    fault_server: FaultServer, sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    restored = fault_server.copy("m_restored")
    baseline = fault_server.copy("m_baseline")
    # The live source moved on a little: 10 more events (0.3 %).
    _inject(baseline, ("INSERT INTO audit.order_events (order_id, event, at)"
                       " SELECT 1, 'later', now() FROM generate_series(1, 10)",))
    empty = tmp_path / "empty"
    empty.mkdir()
    run = run_suite(f"--target={restored}", f"--baseline={baseline}", f"--expectations={empty}")
    assert run.result["manifest"]["kind"] == "baseline"
    assert run.result["checklist"]["row_counts"] == "passed", run.explain()
    assert run.result["checklist"]["schema_matches"] == "passed", run.explain()
    run = run_suite(f"--target={restored}", f"--baseline={baseline}", "--baseline-tolerance=5",
                    f"--expectations={empty}")
    assert run.failed_items() == {"row_counts"}, run.explain()
    assert "beyond the tolerance of 5 rows" in run.result["checklist_reasons"]["row_counts"]


def test_manifest_cli_writes_a_manifest(fault_server: FaultServer, tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, "-m", "restore", "manifest", f"--dsn={fault_server.copy('m_cli')}",
                           f"--output={out}", "--freshness=SELECT max(created_at) FROM public.orders"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["format"] == "restore-verify-manifest"
    assert data["tables"]["public.order_items"]["row_count"] == 25000
    assert data["freshness"]["value"]
    assert set(data["roles"]) >= {"ecommerce_app", "ecommerce_owner"}


@pytest.fixture(scope="module")
def pg15() -> Iterator[EmbeddedServer]:
    if not (PG15_BIN / "postgres").exists():
        pytest.skip(f"PostgreSQL 15 server binaries not found in {PG15_BIN} (apt-get install postgresql-15)")
    with EmbeddedServer(jobs=2, bin_dir=PG15_BIN) as server:
        yield server


def test_a_pg15_backup_restored_into_pg18_matches_its_manifest(
    pg15: EmbeddedServer, tmp_path: Path, sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    """Cross-version (the supported direction): checksums and definitions survive 15 -> 18, whatever the 15 minor.

    Debian's 15.20 stores a ``pg_attver`` option on every column that 18 rejects: the source drops it first
    (``restorable_into_18``); the diagnosis of a dump that carries it has its own self-test."""
    with psycopg.connect(pg15.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE ecommerce_production")
    source = pg15.conninfo("ecommerce_production")
    subprocess.run([str(pg_tool("psql")), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", source,
                    "-f", str(ROOT / "examples" / "sample.sql")], check=True, env=clean_env(), capture_output=True)
    restorable_into_18(source)
    dump, manifest_path = take_backup(source, tmp_path / "pg15.dump")
    assert manifest.load(manifest_path)["database"]["server_version"].startswith("15")
    globals_sql = tmp_path / "globals.sql"
    globals_sql.write_text(subprocess.run([str(pg_tool("pg_dumpall")), "--globals-only", "-d", pg15.conninfo()],
                                          check=True, env=clean_env(), capture_output=True, text=True).stdout)
    run = run_suite(f"--backup={dump}", f"--globals={globals_sql}", f"--expectations={sample.expectations}")
    assert run.returncode == 0, run.explain()
    assert run.result["checklist"] == ALL_PASSED, run.explain()
    assert run.result["backup"]["dumped_from"].startswith("15")
    assert run.result["target"]["server_version"].startswith("18")


def test_backup_creates_its_output_directory(fault_server: FaultServer, tmp_path: Path) -> None:
    dump, manifest_path = take_backup(fault_server.server.conninfo("pristine"),
                                               tmp_path / "not" / "there" / "yet.dump")
    assert dump.exists()
    assert manifest.load(manifest_path)["backup"]["toc_digest"]


def test_a_snapshot_beside_a_transaction_at_its_xmax_is_not_an_exact_position(fault_server: FaultServer) -> None:
    """A transaction whose id is the snapshot's xmax (or above) is invisible to the snapshot and not listed among its
    in-progress ones; committing, its commit record may already stand before the WAL position read. Such a position
    is not exact (a recovery to it would hold that commit), and once the transaction has ended it is."""
    from restore.compare.capture import export_snapshot

    dsn = fault_server.copy("xmax_position")
    with psycopg.connect(dsn, autocommit=True) as reader, psycopg.connect(dsn) as writer:
        writer.execute("CREATE TABLE public.held (i int)")  # an id handed out, the transaction still open
        busy = export_snapshot(reader)
        reader.execute("ROLLBACK")
        assert busy["in_progress"] == 0, busy  # not listed: its id is the snapshot's xmax
        assert busy["exact"] is False, busy
        writer.commit()
        idle = export_snapshot(reader)
        reader.execute("ROLLBACK")
        assert idle["exact"] is True, idle
