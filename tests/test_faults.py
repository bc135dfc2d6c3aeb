"""Each check goes red on the fault it exists for, and only that check.

Faults are injected into a copy of a restored sample database (our own server), which the suite then verifies
as an existing target (``--target DSN``), the way ``pytest --target=prod-restored`` runs after the runbook's
manual restore. Faults in the backup itself (truncated, flipped bytes) go through ``--backup``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from restore.tools import pg_tool
from tests.conftest import (
    ALL_ITEMS,
    ROOT,
    SKIPPED_FOR_EXISTING_TARGET,
    SKIPPED_WITHOUT_MANIFEST,
    FaultServer,
    Sample,
    SuiteRun,
)


@dataclass(frozen=True)
class Fault:
    name: str
    item: str
    statements: tuple[str, ...]
    reason_contains: str
    # Items whose proof cannot run completely because of the fault (not failed: another item owns the fault).
    incomplete: tuple[str, ...] = ()


FAULTS = (
    # app.toml lists INSERT on the dropped table: that privilege cannot be held or checked.
    Fault("dropped_table", "tables_present", ("DROP TABLE audit.order_events",), "audit.order_events is missing",
          incomplete=("app_connect",)),
    Fault("deleted_rows", "row_counts", ("DELETE FROM audit.order_events WHERE id % 10 = 0",),
          "rows; expected exactly"),
    Fault("orphans", "orphaned_records", (
        # What a data-only restore with --disable-triggers, or a bad manual fix, leaves behind.
        "ALTER TABLE audit.order_events DISABLE TRIGGER ALL",
        "UPDATE audit.order_events SET order_id = 999999 WHERE id = 3",
        "ALTER TABLE audit.order_events ENABLE TRIGGER ALL",
    ), "have no parent"),
    Fault("not_valid_foreign_key", "unvalidated_constraints", (
        "ALTER TABLE audit.order_events DROP CONSTRAINT order_events_order_id_fkey",
        "ALTER TABLE audit.order_events ADD CONSTRAINT order_events_order_id_fkey FOREIGN KEY (order_id)"
        " REFERENCES public.orders (id) NOT VALID",
    ), "is NOT VALID"),
    Fault("duplicate_pk_behind_dropped_constraint", "duplicate_primary_keys", (
        "ALTER TABLE audit.order_events DROP CONSTRAINT order_events_pkey",
        "UPDATE audit.order_events SET id = 3 WHERE id = 6",
    ), "duplicated key value"),
    Fault("sequence_reset", "sequences", ("SELECT setval('public.orders_id_seq', 5)",), "would hand out 6 next"),
    Fault("invalid_index", "no_corruption", (
        # A CREATE INDEX CONCURRENTLY that failed half-way leaves an INVALID index behind.
        "CREATE INDEX CONCURRENTLY products_broken_idx ON public.products ((1 / (stock - stock)))",
    ), "INVALID"),
    Fault("index_misses_heap_rows", "no_corruption", (
        # Rows updated while the index was not maintained: the index no longer has every heap tuple.
        "UPDATE pg_index SET indisready = false WHERE indexrelid = 'public.order_items_product_idx'::regclass",
        "UPDATE public.order_items SET product_id = product_id % 500 + 1 WHERE order_id <= 3",
        "UPDATE pg_index SET indisready = true WHERE indexrelid = 'public.order_items_product_idx'::regclass",
    ), "lacks matching index tuple"),
    Fault("business_rule_violation", "business_rules", ("UPDATE public.orders SET total = total + 0.01 WHERE id = 8",),
          "order_total_matches_items"),
    Fault("failing_critical_query", "critical_queries", ("DROP FUNCTION public.order_item_total(bigint)",),
          "order_page_total", incomplete=("app_connect",)),
    Fault("app_role_lacks_privilege", "app_connect", ("REVOKE UPDATE ON public.orders FROM ecommerce_app",),
          "lacks UPDATE on table public.orders"),
)


def _existing_target_args(dsn: str, sample: Sample) -> tuple[str, ...]:
    # An existing target has no archive to date it: say when "the backup" was taken, as a user would.
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return (f"--target={dsn}", f"--expectations={sample.expectations}", f"--backup-time={now}", "--rpo=1d")


def _inject(conninfo: str, statements: tuple[str, ...]) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for statement in statements:
            try:
                conn.execute(statement.encode())
            except psycopg.Error:
                if "CONCURRENTLY" not in statement:  # the failing concurrent build is the fault itself
                    raise


def _expected_for_existing(item: str | None) -> dict[str, str]:
    skipped = SKIPPED_FOR_EXISTING_TARGET | SKIPPED_WITHOUT_MANIFEST
    expected = {i: ("skipped" if i in skipped else "passed") for i in ALL_ITEMS}
    if item is not None:
        expected[item] = "failed"
    return expected


def test_clean_copy_passes_as_existing_target(
    fault_server: FaultServer, sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    dsn = fault_server.copy("clean_copy")
    run = run_suite(*_existing_target_args(dsn, sample))
    assert run.returncode == 0, run.explain()
    assert run.result["checklist"] == _expected_for_existing(None), run.explain()
    assert run.result["restore"]["performed"] is False
    assert "existing target" in run.result["checklist_reasons"]["restore_succeeded"]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault_fails_exactly_its_item(
    fault: Fault, fault_server: FaultServer, sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    dsn = fault_server.copy(f"fault_{fault.name}")
    _inject(dsn, fault.statements)
    run = run_suite(*_existing_target_args(dsn, sample))
    assert run.returncode == 1, run.explain()
    expected = _expected_for_existing(fault.item) | dict.fromkeys(fault.incomplete, "incomplete")
    assert run.result["checklist"] == expected, run.explain()
    messages = " ".join(f["message"] for f in run.result["failures"])
    assert fault.reason_contains in messages, messages
    assert all(f["checklist"] == fault.item for f in run.result["failures"])


def _corrupt_copy(sample: Sample, tmp_path: Path, how: str) -> Path:
    data = bytearray(sample.dump.read_bytes())
    target = tmp_path / f"{how}.dump"
    if how == "truncated":
        target.write_bytes(bytes(data[: len(data) * 2 // 3]))
    else:  # flip bytes in the middle of the data blocks (the TOC is at the start and stays intact)
        for offset in range(len(data) * 2 // 3, len(data) * 2 // 3 + 64):
            data[offset] ^= 0xFF
        target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize(("how", "start_fails"), [("truncated", False), ("flipped_bytes", False), ("truncated", True)],
                         ids=["truncated", "flipped_bytes", "truncated-and-the-start-fails-too"])
def test_damaged_dump_fails_restore_succeeded_and_restores_nothing(
    how: str, start_fails: bool, sample: Sample, tmp_path: Path,  # noqa: FBT001
    run_suite: Callable[..., SuiteRun],
) -> None:
    """The archive is read end to end beside the target's start: unreadable, it is the finding (a failed backup
    test), also when the start failed too — never the start's error."""
    dump = _corrupt_copy(sample, tmp_path, how)
    injected = ("-p", "tests.raise_in_step") if start_fails else ()
    run = run_suite(*injected, f"--backup={dump}", f"--globals={sample.globals_sql}",
                    f"--expectations={sample.expectations}", env={"RV_RAISE_IN": "start"} if start_fails else None)
    assert run.returncode == 1, run.explain()
    checklist = run.result["checklist"]
    assert checklist["restore_succeeded"] == "failed", run.explain()
    # Nothing was restored, so nothing else can pass or fail: every other item says why it was skipped.
    assert {i: s for i, s in checklist.items() if i != "restore_succeeded"} == dict.fromkeys(
        [i for i in ALL_ITEMS if i != "restore_succeeded"], "skipped"), run.explain()
    assert "cannot be read end to end" in run.result["checklist_reasons"]["restore_succeeded"]
    assert "pg_restore -f /dev/null" in run.result["restore"]["refused"]
    # No data was loaded: at most the schema, which comes from the table of contents (read whole before) and may
    # load while the archive is still being read end to end.
    runs = re.findall(r"^\$ pg_restore .*$", (run.run_dir / "restore.log").read_text(), flags=re.M)
    assert all("--section=pre-data" in r for r in runs), runs


def test_existing_target_with_its_dump_expects_the_dumps_tables(
    fault_server: FaultServer, sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """After a manual restore, --backup names the dump it came from: its TOC says what must be there."""
    dsn = fault_server.copy("manual_restore")
    _inject(dsn, ("DROP TABLE audit.order_events",))
    empty = tmp_path / "no-expectations"
    empty.mkdir()
    run = run_suite(f"--target={dsn}", f"--backup={sample.dump}", f"--expectations={empty}")
    assert run.result["restore"]["performed"] is False
    assert run.failed_items() == {"tables_present"}, run.explain()
    # The manifest next to the dump is found and used; without one, the dump's table of contents would be.
    assert "the backup's manifest" in run.result["checklist_reasons"]["tables_present"]
    # No rpo.toml here, but the manifest kept the freshness python -m restore backup --freshness read.
    assert run.result["checklist"]["rpo"] == "passed", run.explain()
    assert run.result["backup"]["dumped_from"]


def test_existing_target_with_a_dump_without_manifest_uses_its_table_of_contents(
    fault_server: FaultServer, sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    dump = tmp_path / "plain-copy.dump"
    dump.write_bytes(sample.dump.read_bytes())  # no manifest next to this one
    dsn = fault_server.copy("manual_restore_toc")
    _inject(dsn, ("DROP TABLE audit.order_events",))
    empty = tmp_path / "no-expectations"
    empty.mkdir()
    run = run_suite(f"--target={dsn}", f"--backup={dump}", f"--expectations={empty}")
    assert run.failed_items() == {"tables_present"}, run.explain()
    assert "the dump's table of contents" in run.result["checklist_reasons"]["tables_present"]


def test_a_damaged_heap_is_named_as_the_tables_not_the_indexs(
    tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """An invalid page in a table's file makes amcheck fail while it checks the table's index against the heap: the
    words must send a DBA to the table (restore it), not to REINDEX, which cannot repair a heap."""
    from restore.targets.embedded import EmbeddedServer

    with EmbeddedServer(jobs=1) as server:
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE damaged")
        with psycopg.connect(server.conninfo("damaged"), autocommit=True) as conn:
            conn.execute("CREATE TABLE public.t (id int PRIMARY KEY, v text)")
            conn.execute("INSERT INTO public.t SELECT g, repeat('x', 100) FROM generate_series(1, 2000) g")
            conn.execute("CREATE EXTENSION amcheck")
            conn.execute("CHECKPOINT")
            row = conn.execute("SELECT pg_relation_filepath('public.t')").fetchone()
        assert row is not None
        pg_ctl = str(server.bin_dir / "pg_ctl") if server.bin_dir else str(pg_tool("pg_ctl"))
        server.run_as_owner([pg_ctl, "-D", str(server.datadir), "-m", "fast", "-w", "stop"])
        heap = server.datadir / str(row[0])
        with heap.open("r+b") as fh:  # block 1's page header: an invalid page
            fh.seek(8192)
            fh.write(b"\xff" * 24)
        started = server.run_as_owner([pg_ctl, "-D", str(server.datadir), "-l", str(server.logfile), "-w", "start"])
        assert started.returncode == 0, started.stderr
        now = datetime.now(UTC).isoformat(timespec="seconds")
        empty = tmp_path / "empty"
        empty.mkdir()
        run = run_suite(f"--target={server.conninfo('damaged')}", f"--expectations={empty}", f"--backup-time={now}",
                        "--rpo=1d")
    assert run.result["checklist"]["no_corruption"] == "failed", run.explain()
    index_failures = [f["message"] for f in run.result["failures"] if "test_index[" in f["nodeid"]]
    assert index_failures, run.explain()
    assert all(m.startswith("The table public.t is damaged") for m in index_failures), index_failures
    assert not any("REINDEX INDEX" in m for m in index_failures), index_failures  # no fix that cannot fix it


def _readme_role_sql() -> str:
    """The SQL block of the README's "A verifying role with the least privileges", as a DBA copies it."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### 1. A verifying role with the least privileges", 1)[1]
    return section.split("```sql\n", 1)[1].split("```", 1)[0]


def test_the_readmes_verifying_role_runs_green_on_a_faithful_restore(
    fault_server: FaultServer, sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    """Following the README literally must not turn a faithful restore red: the grants are the verifier's."""
    dsn = fault_server.copy("readme_role")
    block = _readme_role_sql().replace("PASSWORD '…'", "PASSWORD 'readme-pw'").replace(
        "ecommerce_production", "readme_role")
    with psycopg.connect(fault_server.server.conninfo(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS restore_verify")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP EXTENSION IF EXISTS amcheck")  # the README creates it
        conn.execute(block.encode())
    verifier = (f"host=127.0.0.1 port={fault_server.server.port} dbname=readme_role user=restore_verify "
                "password=readme-pw")
    # No --backup-time: the manifest says when its snapshot was taken (rpo is judged from it, not skipped).
    run = run_suite(f"--target={verifier}", f"--manifest={sample.manifest}", f"--expectations={sample.expectations}",
                    "--rpo=1d")
    assert run.returncode == 0, run.explain()
    assert run.result["checklist"]["rpo"] == "passed", run.explain()
    assert not run.result["failures"], run.explain()
    assert "incomplete" not in run.result["checklist"].values(), run.explain()
    assert run.result["checklist"]["schema_matches"] == "passed", run.explain()
    assert run.result["checklist"]["no_corruption"] == "passed", run.explain()


def test_an_expired_application_password_is_said_as_expiry_over_tcp(
    fault_server: FaultServer, sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    """The verifier comes in over the server's socket; the application logs in over TCP with its password, as the
    application would: an expired password (VALID UNTIL) fails app_connect saying so, naming the role."""
    dsn = fault_server.copy("expired_app")
    with psycopg.connect(fault_server.server.conninfo(), autocommit=True) as conn:
        conn.execute("ALTER ROLE ecommerce_app VALID UNTIL '2001-01-01'")  # roles are the server's: put back below
    try:
        run = run_suite(*_existing_target_args(dsn, sample))
    finally:
        with psycopg.connect(fault_server.server.conninfo(), autocommit=True) as conn:
            conn.execute("ALTER ROLE ecommerce_app VALID UNTIL 'infinity'")
    assert run.result["checklist"]["app_connect"] == "failed", run.explain()
    messages = " ".join(f["message"] for f in run.result["failures"] if f["checklist"] == "app_connect")
    assert "password expired at 2001-01-01" in messages, messages
    assert "as ecommerce_app" in messages, messages
    assert "user=postgres" not in messages, messages


def test_a_server_without_tcp_leaves_the_application_password_unproven_not_blamed(
    sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    """A server that listens on its Unix socket only: the application's TCP login is refused by the machine, not
    by the role. app_connect is incomplete (the role logged in over the verifier's socket, the password unproven)
    and says how to prove it (host in app.toml); never "check that the role exists with LOGIN"."""
    from restore.targets.embedded import EmbeddedServer
    from tests.conftest import restore_sample_into

    with EmbeddedServer(jobs=1, settings={"listen_addresses": "''"}) as server:
        restore_sample_into(server, sample, "socket_only")
        run = run_suite(*_existing_target_args(server.conninfo("socket_only"), sample))
    assert run.result["checklist"]["app_connect"] == "incomplete", run.explain()
    reason = run.result["checklist_reasons"]["app_connect"]
    assert "password is not proven" in reason, reason
    assert "was refused" in reason, reason
    assert 'set host = "…"' in reason, reason
    assert "LOGIN" not in reason, reason
    assert not run.result["failures"], run.explain()


def test_a_broken_restore_reads_in_thirty_lines_each_failure_once(
    fault_server: FaultServer, sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    """Five lost rows and a dropped index, verified against the manifest: each failure said once (no FAILURES
    section repeating the checklist), in at most 30 lines after pytest's progress."""
    dsn = fault_server.copy("broken_restore")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM public.order_items WHERE (order_id, line_no) IN (SELECT order_id, line_no "
                     "FROM public.order_items ORDER BY 1, 2 LIMIT 5)")
        conn.execute("DROP INDEX public.order_items_product_idx")
    # As on a DBA's terminal: on CI (CI=true) pytest prints every failure's whole message in its short summary.
    run = run_suite(*_existing_target_args(dsn, sample), f"--manifest={sample.manifest}",
                    env={"CI": None, "BUILD_NUMBER": None})
    assert run.result["outcome"] == "failed", run.explain()
    assert {"row_counts", "schema_matches"} <= run.failed_items(), run.explain()
    assert "= FAILURES =" not in run.output, run.output[-4000:]
    progress_end = run.output.rfind("[100%]")
    after = run.output[progress_end:].splitlines()[1:]
    assert len(after) <= 30, "\n".join(after)


def test_the_schema_loads_while_the_archive_is_read_and_the_data_only_after(sample: Sample, tmp_path: Path) -> None:
    """With --jobs, pg_restore's first run loads the schema (from the table of contents, read whole before), and the
    data waits for the archive's end-to-end read: ``before_data`` is called after the schema run, before the data."""
    import io

    import psycopg

    from restore.backups.archive import inspect
    from restore.backups.pgrestore import run_pg_restore
    from restore.targets.embedded import EmbeddedServer

    info = inspect(sample.dump)
    log = io.StringIO()
    seen: list[list[str]] = []
    with EmbeddedServer(jobs=2, base_dir=tmp_path) as server:
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE shop")
        run = run_pg_restore(info, server.conninfo("shop"), jobs=2, log=log,
                             before_data=lambda: seen.append(re.findall(r"^\$ pg_restore .*$", log.getvalue(), re.M)))
    assert len(seen) == 1, seen
    assert len(seen[0]) == 1, seen  # called once, after the schema run alone
    assert "--section=pre-data" in seen[0][0]
    assert run.data_processed  # and the data came after it
    assert re.findall(r"^\$ pg_restore .*$", log.getvalue(), re.M)[1].count("--section=data --section=post-data")
