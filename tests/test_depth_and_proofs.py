"""Scans skipped because the restore proved them never hide a fault; --depth quick and full do what they say."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from restore.tools import clean_env, pg_tool
from tests.conftest import ALL_PASSED, FaultServer, Sample, SuiteRun

FAULTY_SOURCES = [
    # A NOT VALID foreign key with orphans behind it survives pg_dump/pg_restore as NOT VALID: nothing proves it.
    ("orphans_behind_not_valid_fk", {"orphaned_records", "unvalidated_constraints"}, (
        "ALTER TABLE audit.order_events DROP CONSTRAINT order_events_order_id_fkey",
        "UPDATE audit.order_events SET order_id = 999999 WHERE id = 3",
        "ALTER TABLE audit.order_events ADD CONSTRAINT order_events_order_id_fkey FOREIGN KEY (order_id)"
        " REFERENCES public.orders (id) NOT VALID",
    )),
    # A primary key dropped at the source, duplicates added: the dump has no key to rebuild; keys.toml has one.
    ("duplicates_behind_dropped_pk", {"duplicate_primary_keys"}, (
        "ALTER TABLE audit.order_events DROP CONSTRAINT order_events_pkey",
        "UPDATE audit.order_events SET id = 3 WHERE id = 6",
    )),
]


@pytest.mark.parametrize(("name", "items", "statements"), FAULTY_SOURCES, ids=[f[0] for f in FAULTY_SOURCES])
def test_fault_in_the_backed_up_source_is_caught_after_a_clean_restore(
    name: str, items: set[str], statements: tuple[str, ...], fault_server: FaultServer, sample: Sample,
    tmp_path: Path, run_suite: Callable[..., SuiteRun],
) -> None:
    source = fault_server.copy(f"src_{name}")
    with psycopg.connect(source, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())
    dump = tmp_path / f"{name}.dump"
    subprocess.run([str(pg_tool("pg_dump")), "-Fc", "-f", str(dump), "-d", source], check=True, env=clean_env())
    run = run_suite(f"--backup={dump}", f"--globals={sample.globals_sql}", f"--expectations={sample.expectations}")
    assert run.result["restore"]["errors"] == [], run.explain()  # the restore itself is clean...
    assert run.failed_items() == items, run.explain()  # ...and the fault is still found


def test_restore_with_an_error_proves_nothing_so_every_scan_runs(
    sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    run = run_suite(*sample.restore_args())
    assert run.result["proven_by_restore"], "a clean restore proves its constraints"
    assert {p["checklist"] for p in run.result["proven_by_restore"]} == {
        "orphaned_records", "duplicate_primary_keys", "no_corruption"}
    plain = tmp_path / "with-error.sql"
    subprocess.run([str(pg_tool("pg_restore")), "-f", str(plain), str(sample.dump)], check=True, env=clean_env())
    marker = "-- PostgreSQL database dump complete"
    plain.write_text(plain.read_text().replace(marker, "SELECT no_such_function();\n\n" + marker))
    run = run_suite(f"--backup={plain}", f"--globals={sample.globals_sql}", f"--expectations={sample.expectations}",
                    "--allow-restore-error=no_such_function")  # restore errors, even accepted ones, void the proof
    assert len(run.result["restore"]["accepted_errors"]) == 2, run.explain()  # the superuser, and ours
    assert run.result["proven_by_restore"] == [], run.explain()
    assert run.result["checklist"]["orphaned_records"] == "passed", run.explain()  # scanned, for real


def test_depth_quick_counts_and_skips_scans_and_amcheck(
    sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    run = run_suite(*sample.restore_args(), "--depth=quick")
    assert run.returncode == 0, run.explain()
    assert run.result["depth"] == "quick"
    assert run.result["checklist"]["row_counts"] == "passed"
    # Only the catalog's INVALID-index check ran: amcheck did not, so the item is not proven.
    assert run.result["checklist"]["no_corruption"] == "incomplete"
    assert "--depth quick" in run.result["checklist_reasons"]["no_corruption"]
    quick_skips = [s for s in run.result["skips"] if "--depth quick" in s["reason"]]
    assert {s["checklist"] for s in quick_skips} == {"no_corruption"}


def test_depth_full_scans_everything_and_runs_parent_checks(
    sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    run = run_suite(*sample.restore_args(), "--depth=full")
    assert run.returncode == 0, run.explain()
    assert run.result["checklist"] == ALL_PASSED, run.explain()
    assert run.result["proven_by_restore"] == []
    junit = (run.run_dir / "junit.xml").read_text()
    assert 'value="bt_index_parent_check heapallindexed"' in junit
    assert "pg_toast" in junit  # TOAST tables and their indexes are checked too


def test_a_unique_keys_shared_amcheck_pass_is_read_late_not_waited_for(
    fault_server: FaultServer, run_suite: Callable[..., SuiteRun]
) -> None:
    """On a database the run did not restore no unique key is proven, so each unique index's amcheck pass is shared
    by no_corruption and duplicate_primary_keys. The keys' tests are collected after every other test: no_corruption
    (largest index first) makes each pass, and the key's test reads its result instead of waiting for it, idle, on
    its lock while another worker makes it."""
    run = run_suite(f"--target={fault_server.copy('shared_pass_order')}", "--collect-only", "-q",
                    expect_result=False)
    ids = [line.strip() for line in run.output.splitlines() if line.startswith("checks/")]
    keys = [n for n, test in enumerate(ids) if "::test_no_duplicate_keys[" in test]
    others = [n for n, test in enumerate(ids) if "::test_no_duplicate_keys[" not in test]
    assert keys, run.output[-3000:]
    assert any("::test_index[" in test for test in ids), run.output[-3000:]
    assert min(keys) > max(others), ids
