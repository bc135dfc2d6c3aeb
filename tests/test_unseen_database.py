"""A database this project has never seen, dumped and verified with xdist, clean and with faults."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from restore.take_backup import take_backup
from restore.targets.embedded import EmbeddedServer
from restore.tools import clean_env, pg_tool
from tests.conftest import SuiteRun

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def unseen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedServer, Path]]:
    """The unseen database on a server of the tests' own, and its -Fc dump."""
    out = tmp_path_factory.mktemp("unseen")
    with EmbeddedServer(jobs=2) as server:
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE library")
        source = server.conninfo("library")
        subprocess.run([str(pg_tool("psql")), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", source,
                        "-f", str(HERE / "unseen_schema.sql")], check=True, env=clean_env())
        dump, _ = take_backup(source, out / "library.dump")  # and library.dump.manifest.json beside it
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION amcheck")
        yield server, dump


# No expectations for this database; its manifest (next to the dump) gives exact counts and the schema.
NOT_CONFIGURED = {"app_connect", "critical_queries", "business_rules", "rpo", "retention"}


def test_unseen_dump_passes_with_xdist(
    unseen: tuple[EmbeddedServer, Path], tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    _, dump = unseen
    empty = tmp_path / "no-expectations"
    empty.mkdir()
    run = run_suite("-n", "2", f"--backup={dump}", f"--expectations={empty}")
    assert run.returncode == 0, run.explain()
    checklist = run.result["checklist"]
    assert {i for i, s in checklist.items() if s == "skipped"} == NOT_CONFIGURED, run.explain()
    assert {i for i, s in checklist.items() if s == "failed"} == set(), run.explain()
    assert "app.toml" in checklist_reason(run, "app_connect")  # not configured is said, never passed
    assert not any("book_tags" in s["nodeid"] for s in run.result["skips"])  # amcheck 1.5 checks gin too
    assert run.result["workers"] == ["gw0", "gw1"]
    assert run.result["manifest"]["kind"] == "manifest"  # found next to the dump
    assert checklist["schema_matches"] == "passed"


def _verify_changed_copy(unseen: tuple[EmbeddedServer, Path], tmp_path: Path, run_suite: Callable[..., SuiteRun],
                         name: str, *statements: str) -> SuiteRun:
    """A copy of the unseen database with ``statements`` applied, verified against its manifest."""
    server, dump = unseen
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE library").format(sql.Identifier(name)))
    with psycopg.connect(server.conninfo(name), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())
    empty = tmp_path / "no-expectations"
    empty.mkdir()
    return run_suite(f"--target={server.conninfo(name)}", f"--manifest={dump}.manifest.json",
                     f"--expectations={empty}")


def test_unseen_missing_partition_is_named(
    unseen: tuple[EmbeddedServer, Path], tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    run = _verify_changed_copy(unseen, tmp_path, run_suite, "partition_missing",
                               'ALTER TABLE "Lending".loan DETACH PARTITION "Lending".loan_2026',
                               'DROP TABLE "Lending".loan_2026')
    assert run.failed_items() == {"tables_present", "schema_matches"}, run.explain()
    messages = " ".join(f["message"] for f in run.result["failures"])
    assert "partition Lending.loan_2026 of Lending.loan is missing" in messages


def checklist_reason(run: SuiteRun, item: str) -> str:
    return str(run.result["checklist_reasons"][item])


UNSEEN_FAULTS = [
    # A composite MATCH SIMPLE key with one column set to a branch that does not exist.
    ("composite_orphan", "orphaned_records",
     ['ALTER TABLE "Lending"."Copy" DISABLE TRIGGER ALL',
      """UPDATE "Lending"."Copy" SET code = 99 WHERE id = 1""",
      'ALTER TABLE "Lending"."Copy" ENABLE TRIGGER ALL']),
    # MATCH FULL: half-NULL keys are violations, in a partition.
    ("match_full_half_null", "orphaned_records",
     ['ALTER TABLE "Lending".loan_2025 DISABLE TRIGGER ALL',
      """UPDATE "Lending".loan_2025 SET code = NULL WHERE ctid = (SELECT min(ctid) FROM "Lending".loan_2025)""",
      'ALTER TABLE "Lending".loan_2025 ENABLE TRIGGER ALL']),
    ("identity_sequence_reset", "sequences", ["""SELECT setval('"Lending"."Copy_id_seq"', 10)"""]),
    # A primary key index that stopped being maintained: the heap holds a duplicate the index never saw.
    # That is corruption (amcheck) and a duplicate key (heap scan) at once: both items must say so.
    ("duplicate_behind_stale_pk_index", "duplicate_primary_keys+no_corruption",
     ['UPDATE pg_index SET indisready = false WHERE indexrelid = \'public."Weird Table_pkey"\'::regclass',
      'UPDATE public."Weird Table" SET "Id" = 1 WHERE "Id" = 2',
      'UPDATE pg_index SET indisready = true WHERE indexrelid = \'public."Weird Table_pkey"\'::regclass']),
    ("check_not_valid", "unvalidated_constraints",
     ["""ALTER TABLE "Lending".book ADD CONSTRAINT price_positive CHECK (price > 0) NOT VALID"""]),
]


@pytest.mark.parametrize(("name", "item", "statements"), UNSEEN_FAULTS, ids=[f[0] for f in UNSEEN_FAULTS])
def test_unseen_fault_fails_its_item(
    name: str, item: str, statements: list[str], unseen: tuple[EmbeddedServer, Path], tmp_path: Path,
    run_suite: Callable[..., SuiteRun],
) -> None:
    server, _ = unseen
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE library").format(sql.Identifier(name)))
    with psycopg.connect(server.conninfo(name), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())
    empty = tmp_path / "no-expectations"
    empty.mkdir()
    run = run_suite(f"--target={server.conninfo(name)}", f"--expectations={empty}")
    assert run.returncode == 1, run.explain()
    failed = {i for i, s in run.result["checklist"].items() if s == "failed"}
    assert failed == set(item.split("+")), run.explain()


def test_unseen_detached_partition_is_named_as_detached(
    unseen: tuple[EmbeddedServer, Path], tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    run = _verify_changed_copy(unseen, tmp_path, run_suite, "partition_detached",
                               'ALTER TABLE "Lending".loan DETACH PARTITION "Lending".loan_2026')
    assert "schema_matches" in run.failed_items(), run.explain()
    messages = " ".join(f["message"] for f in run.result["failures"])
    assert "Lending.loan_2026 is detached from Lending.loan" in messages
    assert 'ALTER TABLE "Lending"."loan" ATTACH PARTITION "Lending"."loan_2026" FOR VALUES' in messages
    assert "not in the backup" not in messages
