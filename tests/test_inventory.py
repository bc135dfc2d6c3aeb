"""Completeness by construction: every object pg_dump writes is compared, whatever its kind.

A database of many object kinds (tests/kinds_schema.sql) is backed up with ``python -m restore backup``'s code
(dump and manifest from one snapshot) and restored by hand into a server of the test's own; copies of that restore,
with faults, are verified as existing targets. The walk test takes its faults from pg_dump's own table of contents
(one object of every kind that has a DROP statement), so it holds no list of kinds either.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from restore.backups.toc import read_toc
from restore.compare import inventory
from restore.take_backup import take_backup
from restore.targets.embedded import EmbeddedServer
from restore.tools import clean_env, pg_tool
from tests.conftest import PG15_BIN, SuiteRun, restorable_into_18

SCHEMA = Path(__file__).with_name("kinds_schema.sql")


@dataclass(frozen=True)
class Kinds:
    server: EmbeddedServer
    dump: Path  # with its manifest beside it
    bare_dump: Path  # the same dump, no manifest beside it
    empty_expectations: Path

    def copy(self, name: str) -> str:
        with psycopg.connect(self.server.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE pristine").format(sql.Identifier(name)))
        return self.server.conninfo(name)


def _build(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SCHEMA.read_text().encode())


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kinds]:
    base = tmp_path_factory.mktemp("kinds")
    with EmbeddedServer(jobs=2) as server:
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE kinds")
            conn.execute("CREATE DATABASE pristine")
        _build(server.conninfo("kinds"))
        dump, _ = take_backup(server.conninfo("kinds"), base / "kinds.dump")
        bare = base / "bare" / "kinds.dump"
        bare.parent.mkdir()
        shutil.copy(dump, bare)
        subprocess.run([str(pg_tool("pg_restore")), "--exit-on-error", "-d", server.conninfo("pristine"), str(dump)],
                       env=clean_env(), check=True, capture_output=True)
        with psycopg.connect(server.conninfo("pristine"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION amcheck")  # as the README asks of a database verified in place
        empty = base / "no-expectations"
        empty.mkdir()
        yield Kinds(server, dump, bare, empty)


def _verify(kinds: Kinds, dsn: str, run_suite: Callable[..., SuiteRun], *, dump: Path | None = None) -> SuiteRun:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return run_suite(f"--target={dsn}", f"--backup={dump or kinds.dump}", f"--expectations={kinds.empty_expectations}",
                     f"--backup-time={now}", "--rpo=1d")


def _messages(run: SuiteRun, item: str) -> str:
    return "\n".join(f["message"] for f in run.result["failures"] if f["checklist"] == item)


def _inject(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())


def test_faithful_copy_of_every_kind_is_green(kinds: Kinds, run_suite: Callable[..., SuiteRun]) -> None:
    run = _verify(kinds, kinds.copy("clean"), run_suite)
    checklist = run.result["checklist"]
    assert checklist["schema_matches"] == "passed", run.explain()
    assert checklist["no_corruption"] == "passed", run.explain()
    assert not run.result["failures"], run.explain()
    # The verdict counts what ran: an existing target's skipped items are said, not hidden behind "every item".
    assert re.match(r"\d+ of 17 items ran, none failed; \d+ skipped: ", run.result["outcome_reason"]), run.explain()
    reason = run.result["checklist_reasons"]["schema_matches"]
    assert "pg_dump's inventory" in reason, reason
    assert "owner and definition" in reason, reason


# The faults of the issue, each as a DBA would cause it, and the words that must name it.
ISSUE_FAULTS = (
    ("DROP RULE route_to_child ON app.parent", "schema_matches", "RULE app.parent route_to_child is missing"),
    ("ALTER TABLE app.child1 NO INHERIT app.parent", "schema_matches", "TABLE app.child1 is defined differently"),
    ("DROP AGGREGATE app.int_total(int)", "schema_matches", "AGGREGATE app.int_total(integer) is missing"),
    ("DROP STATISTICS app.st_ab", "schema_matches", "STATISTICS app.st_ab is missing"),
    ("DROP COLLATION app.c_order", "schema_matches", "COLLATION app.c_order is missing"),
    ("DROP TEXT SEARCH CONFIGURATION app.doc_search", "schema_matches",
     "TEXT SEARCH CONFIGURATION app.doc_search is missing"),
    ("DROP CAST (int AS app.pair)", "schema_matches", "CAST CAST (integer AS app.pair) is missing"),
    ("DROP OPERATOR app.<<< (int, int)", "schema_matches", "OPERATOR app.<<< is missing"),
    ("ALTER SERVER remote_db OPTIONS (SET host 'elsewhere.example')", "schema_matches",
     "SERVER remote_db is defined differently"),
    ("REFRESH MATERIALIZED VIEW app.doc_names", "schema_matches", "was not populated (WITH NO DATA) in the backup"),
    ("SELECT lo_unlink(body) FROM app.doc WHERE name = 'doc 1'", "no_corruption", "gone from the restore"),
    ("SELECT lo_put(body, 0, '\\x58'::bytea) FROM app.doc WHERE name = 'doc 2'", "no_corruption",
     "hold other bytes"),
)


def test_each_fault_of_the_issue_is_named(kinds: Kinds, run_suite: Callable[..., SuiteRun]) -> None:
    dsn = kinds.copy("issue_faults")
    _inject(dsn, *(statement for statement, _, _ in ISSUE_FAULTS))
    run = _verify(kinds, dsn, run_suite)
    assert run.returncode == 1, run.explain()
    for statement, item, words in ISSUE_FAULTS:
        assert run.result["checklist"][item] == "failed", run.explain()
        assert words in _messages(run, item), f"{statement!r} not named ({words!r}):\n{_messages(run, item)}"
    # A lost large object is also missing from the inventory (its owner's list of ids).
    assert "large object(s) of the backup are missing from the restore" in _messages(run, "schema_matches")
    # The fix of a missing object is the statement that recreates it.
    assert "Fix: CREATE AGGREGATE app.int_total(integer)" in _messages(run, "schema_matches")


def test_all_large_objects_unlinked_fails(kinds: Kinds, run_suite: Callable[..., SuiteRun]) -> None:
    dsn = kinds.copy("no_large_objects")
    _inject(dsn, "SELECT lo_unlink(body) FROM app.doc")
    run = _verify(kinds, dsn, run_suite)
    assert run.result["checklist"]["no_corruption"] == "failed", run.explain()
    assert "3 large object(s) of the backup are gone" in _messages(run, "no_corruption")
    assert "LARGE OBJECTS" not in _messages(run, "no_corruption")
    assert run.result["checklist"]["schema_matches"] == "failed", run.explain()


def test_walk_pg_dumps_entry_kinds_drop_one_of_each(kinds: Kinds, run_suite: Callable[..., SuiteRun]) -> None:
    """No list of kinds: one object of every kind pg_dump wrote with a DROP statement is dropped, and each named."""
    toc = read_toc(kinds.dump)
    skip = {"TABLE", "SCHEMA", "EXTENSION", "DATABASE", "SEQUENCE"}  # would take others with them
    dsn = kinds.copy("walk")
    dropped: dict[str, str] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for entry in toc.entries:
            if entry.desc in dropped or entry.desc in skip or entry.desc in inventory.DATA_KINDS \
                    or not entry.drop or entry.drop.startswith("--"):
                continue
            try:
                conn.execute(entry.drop.encode())
            except psycopg.Error:
                continue  # something depends on it: another object of the kind will do
            # Its own name (an index's, a constraint's, a large object's id): the catalog comparisons name an object
            # in their own words, the inventory as pg_dump does; either way, the name is in the failure.
            dropped[entry.desc] = entry.tag.rsplit(" ", 1)[-1].split("(")[0]
    assert len(dropped) >= 15, sorted(dropped)  # the schema holds many kinds; the walk must have found them
    run = _verify(kinds, dsn, run_suite)
    assert run.result["checklist"]["schema_matches"] == "failed", run.explain()
    messages = "\n".join(f["message"] for f in run.result["failures"])
    unnamed = {kind: name for kind, name in dropped.items() if name not in messages}
    assert not unnamed, f"{unnamed}\n{messages[-6000:]}"
    # Kinds no catalog comparison knows are named as pg_dump names them.
    for kind in ("AGGREGATE", "CAST", "COLLATION", "CONVERSION", "OPERATOR", "TEXT SEARCH CONFIGURATION", "RULE"):
        assert kind not in dropped or f"{kind} " in messages, kind


def test_dump_without_manifest_compares_with_its_own_table_of_contents(
    kinds: Kinds, run_suite: Callable[..., SuiteRun]
) -> None:
    clean = _verify(kinds, kinds.copy("bare_clean"), run_suite, dump=kinds.bare_dump)
    assert clean.result["checklist"]["schema_matches"] == "passed", clean.explain()
    assert "the archive's own table of contents" in clean.result["checklist_reasons"]["schema_matches"]
    dsn = kinds.copy("bare_faults")
    _inject(dsn, "DROP RULE route_to_child ON app.parent", "DROP AGGREGATE app.int_total(int)",
            "DROP CAST (int AS app.pair)")
    run = _verify(kinds, dsn, run_suite, dump=kinds.bare_dump)
    assert run.result["checklist"]["schema_matches"] == "failed", run.explain()
    messages = _messages(run, "schema_matches")
    for words in ("RULE app.parent route_to_child is missing", "AGGREGATE app.int_total(integer) is missing",
                  "CAST CAST (integer AS app.pair) is missing"):
        assert words in messages, messages


@pytest.mark.skipif(not (PG15_BIN / "postgres").exists(),
                    reason="needs PostgreSQL 15's server (apt-get install postgresql-15) for a 15 → 18 restore")
def test_restore_from_15_into_18_compares_names_and_says_so(
    tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    with EmbeddedServer(jobs=2, bin_dir=PG15_BIN) as old:
        with psycopg.connect(old.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE kinds")
        _build(old.conninfo("kinds"))
        restorable_into_18(old.conninfo("kinds"))  # Debian's 15.20 pg_attver: see the helper
        dump, _ = take_backup(old.conninfo("kinds"), tmp_path / "from15.dump")
    empty = tmp_path / "no-expectations"
    empty.mkdir()
    run = run_suite(f"--backup={dump}", f"--expectations={empty}")
    assert run.result["checklist"]["schema_matches"] == "passed", run.explain()
    reason = run.result["checklist_reasons"]["schema_matches"]
    assert "definitions not compared" in reason, reason
    assert "PostgreSQL 15" in reason, reason
    assert not run.result["failures"], run.explain()


def test_a_verifier_that_may_not_read_every_table_cannot_verify_objects_and_is_not_blamed(
    kinds: Kinds, run_suite: Callable[..., SuiteRun]
) -> None:
    """pg_dump locks every table it lists: a role without SELECT on one cannot list the objects. That is a gap in
    schema_matches' proof (incomplete, saying which GRANT), never a finding about the restore."""
    dsn = kinds.copy("limited")
    with psycopg.connect(kinds.server.conninfo(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS limited_verifier")
        conn.execute("CREATE ROLE limited_verifier LOGIN PASSWORD 'limited-pw'")
    _inject(dsn, "GRANT USAGE ON SCHEMA app, \"My Schema\" TO limited_verifier",
            "GRANT SELECT ON ALL TABLES IN SCHEMA app TO limited_verifier")  # not the table in "My Schema"
    verifier = (f"host=127.0.0.1 port={kinds.server.port} dbname=limited user=limited_verifier "
                "password=limited-pw")
    run = _verify(kinds, verifier, run_suite)
    assert run.result["checklist"]["schema_matches"] in ("incomplete", "skipped"), run.explain()
    assert not [f for f in run.result["failures"] if f["checklist"] == "schema_matches"], run.explain()
    assert "cannot verify" in run.result["checklist_reasons"]["schema_matches"], run.explain()
