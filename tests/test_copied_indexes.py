"""What standard depth proves of a physical copy's non-unique indexes, and what only --depth full proves.

A physical copy's indexes are the source's pages, not rebuilt. On a cluster with data checksums, amcheck's structure
check reads every page of an index and each read verifies the page's checksum: a damaged page is found at standard
depth. An index that lacks rows of its table (here the source's own fault, copied faithfully) passes its structure
check: standard depth says it did not prove that, --depth full (heapallindexed) finds it. Without data checksums,
standard depth reads every index with heapallindexed, as before.

The sources are live servers this module creates (one with data checksums, one without), each backed up with
``pg_basebackup -X stream`` (self-contained: no archive needed).
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from restore.targets.embedded import EmbeddedServer
from restore.tools import clean_env, pg_tool
from tests.conftest import SuiteRun

# The fault the existing-target self-test injects too (tests/test_faults.py): rows updated while the index was not
# maintained, as PostgreSQL 14.0-14.3's CREATE INDEX CONCURRENTLY left such indexes behind.
LACKS_ROWS = (
    "UPDATE pg_index SET indisready = false WHERE indexrelid = 'public.items_tag_idx'::regclass",
    "UPDATE public.items SET tag = tag + 100000 WHERE id <= 5",
    "UPDATE pg_index SET indisready = true WHERE indexrelid = 'public.items_tag_idx'::regclass",
)


@dataclass(frozen=True)
class Copies:
    checksummed: Path  # base backup of a cluster with data checksums: databases "lacks" and "damaged"
    plain: Path  # of a cluster without: database "lacks"


def _make_items(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.items (id int PRIMARY KEY, tag int NOT NULL, note text)")
        conn.execute("INSERT INTO public.items SELECT g, g % 97, repeat('n', 40) FROM generate_series(1, 20000) g")
        conn.execute("CREATE INDEX items_tag_idx ON public.items (tag)")
        conn.execute("VACUUM ANALYZE public.items")


def _source(server: EmbeddedServer, base: Path, *, damaged: bool) -> None:
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE lacks")
        if damaged:
            conn.execute("CREATE DATABASE damaged")
    _make_items(server.conninfo("lacks"))
    with psycopg.connect(server.conninfo("lacks"), autocommit=True) as conn:
        for statement in LACKS_ROWS:
            conn.execute(statement.encode())
    if damaged:
        _make_items(server.conninfo("damaged"))
        with psycopg.connect(server.conninfo("damaged"), autocommit=True) as conn:
            conn.execute("CHECKPOINT")
            row = conn.execute("SELECT pg_relation_filepath('public.items_tag_idx')").fetchone()
        assert row is not None
        pg_ctl = str(server.bin_dir / "pg_ctl") if server.bin_dir else str(pg_tool("pg_ctl"))
        server.run_as_owner([pg_ctl, "-D", str(server.datadir), "-m", "fast", "-w", "stop"])
        with (server.datadir / str(row[0])).open("r+b") as fh:  # inside block 1's tuples: header intact
            fh.seek(8192 + 6000)
            fh.write(b"\x00\x01\x02\x03")
        started = server.run_as_owner([pg_ctl, "-D", str(server.datadir), "-l", str(server.logfile), "-w",
                                       "start"])
        assert started.returncode == 0, started.stderr
    # --no-verify-checksums: the damaged page is the source's, copied as it is (pg_basebackup would refuse it).
    subprocess.run([str(pg_tool("pg_basebackup")), "-D", str(base), "-Fp", "-X", "stream", "-c", "fast",
                    "--no-verify-checksums", "-d", server.conninfo()], check=True, env=clean_env(),
                   capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> Copies:
    out = tmp_path_factory.mktemp("copied-indexes")
    settings = {"wal_level": "replica", "max_wal_senders": "4"}
    with EmbeddedServer(jobs=1, tuned=False, settings=settings, data_checksums=True) as server:
        _source(server, out / "checksummed", damaged=True)
    with EmbeddedServer(jobs=1, tuned=False, settings=settings) as server:
        _source(server, out / "plain", damaged=False)
    return Copies(out / "checksummed", out / "plain")


def _empty(tmp_path: Path) -> Path:
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    return empty


def _amcheck(run: SuiteRun, index: str) -> str:
    junit = ET.parse(run.run_dir / "junit.xml")
    for case in junit.iter("testcase"):
        if case.get("name") == f"test_index[{index}]":
            return next(p.get("value") or "" for p in case.iter("property") if p.get("name") == "amcheck")
    raise AssertionError(f"no test_index[{index}] in junit.xml")


def _failures(run: SuiteRun) -> str:
    return " ".join(f["message"] for f in run.result["failures"] if f["checklist"] == "no_corruption")


def test_a_checksummed_copy_proves_pages_at_standard_depth_and_every_row_at_full_depth(
    copies: Copies, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    standard = run_suite(f"--backup=basebackup:{copies.checksummed}?db=lacks", f"--expectations={_empty(tmp_path)}")
    assert standard.result["checklist"]["no_corruption"] == "passed", standard.explain()
    assert _amcheck(standard, "public.items_tag_idx") == "bt_index_check"  # pages and structure
    assert _amcheck(standard, "public.items_pkey") == "bt_index_check heapallindexed"  # a unique one: every row
    proofs = [p for p in standard.result["proofs"] if p["checklist"] == "no_corruption"]
    assert [p["nodeid"].rsplit("[", 1)[1] for p in proofs] == ["public.items_tag_idx]"], proofs
    assert "--depth full proves it" in proofs[0]["reason"], proofs
    assert "not proven at this depth" in standard.result["checklist_reasons"]["no_corruption"].lower(), (
        standard.result["checklist_reasons"])

    full = run_suite(f"--backup=basebackup:{copies.checksummed}?db=lacks", f"--expectations={_empty(tmp_path)}",
                     "--depth=full")
    assert full.returncode == 1, full.explain()
    assert full.result["checklist"]["no_corruption"] == "failed", full.explain()
    assert "lacks matching index tuple" in _failures(full), full.explain()
    assert "public.items_tag_idx" in _failures(full), full.explain()


def test_a_damaged_page_of_a_copied_index_fails_no_corruption_at_standard_depth(
    copies: Copies, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    run = run_suite(f"--backup=basebackup:{copies.checksummed}?db=damaged", f"--expectations={_empty(tmp_path)}")
    assert run.returncode == 1, run.explain()
    assert run.result["checklist"]["no_corruption"] == "failed", run.explain()
    failures = _failures(run)
    assert "amcheck found corruption in index public.items_tag_idx" in failures, run.explain()
    assert {f["checklist"] for f in run.result["failures"]} == {"no_corruption"}, run.explain()


def test_without_data_checksums_standard_depth_reads_every_row_of_a_copied_index(
    copies: Copies, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    run = run_suite(f"--backup=basebackup:{copies.plain}?db=lacks", f"--expectations={_empty(tmp_path)}")
    assert run.returncode == 1, run.explain()
    assert run.result["checklist"]["no_corruption"] == "failed", run.explain()
    assert "lacks matching index tuple" in _failures(run), run.explain()
    assert _amcheck(run, "public.items_tag_idx") == "bt_index_check heapallindexed"
