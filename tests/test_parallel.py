"""One big table on a big server: verification sessions use the cores the target has, and say so in result.json.

A server this run owns is sized for its cores (``cores = N`` in targets.toml, default this machine's): parallel
query may use them all, per query. An existing database keeps its own settings unless ``--parallel-workers`` sets a
per-session value. What the planner made of it is recorded per table (``parallel.planned``, from EXPLAIN).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from restore.take_backup import take_backup
from restore.targets.embedded import EmbeddedServer
from tests.conftest import SuiteRun


@dataclass(frozen=True)
class BigTable:
    server: EmbeddedServer
    dump: Path
    manifest: Path


@pytest.fixture(scope="module")
def big_table(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigTable]:
    """About 90 MB in one table: past the size (3 x 3 x 8 MB) at which the planner plans a third worker."""
    out = tmp_path_factory.mktemp("big")
    with EmbeddedServer(jobs=2, cores=2) as server:  # 2 per query, whatever this machine has
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE big")
        with psycopg.connect(server.conninfo("big"), autocommit=True) as conn:
            conn.execute("CREATE TABLE public.events (id bigint PRIMARY KEY, payload text NOT NULL)")
            conn.execute("INSERT INTO public.events SELECT g, repeat(md5(g::text), 6) "
                         "FROM generate_series(1, 400000) g")
            conn.execute("CREATE TABLE public.small (id int PRIMARY KEY)")
            conn.execute("INSERT INTO public.small SELECT generate_series(1, 10)")
            conn.execute("ANALYZE")
        dump, manifest = take_backup(server.conninfo("big"), out / "big.dump")
        yield BigTable(server, dump, manifest)


def test_a_target_declared_with_cores_plans_more_than_two_workers_on_the_big_table(
    big_table: BigTable, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    targets = tmp_path / "targets.toml"
    targets.write_text('[targets.big-server]\nkind = "embedded"\ncores = 6\n')
    empty = tmp_path / "empty"
    empty.mkdir()
    run = run_suite(f"--targets-file={targets}", "--target=big-server", f"--backup={big_table.dump}",
                    f"--expectations={empty}")
    assert run.result["checklist"]["no_corruption"] == "passed", run.explain()
    parallel = run.result["parallel"]
    assert parallel["workers_per_query"] == 6
    # PostgreSQL's defaults cap one query at 2 workers, whatever the server has: the suite's settings do not.
    assert parallel["planned"]["public.events"] > 2, parallel
    assert parallel["planned"]["public.small"] == 0  # a small table is read by one process, as it should be


def test_an_existing_database_keeps_its_own_settings_unless_asked(
    big_table: BigTable, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    dsn = big_table.server.conninfo("big")
    run = run_suite(f"--target={dsn}", f"--manifest={big_table.manifest}", f"--expectations={empty}")
    assert run.result["checklist"]["row_counts"] == "passed", run.explain()
    assert run.result["parallel"]["workers_per_query"] is None  # nothing set: the server's own default stands
    assert 0 < run.result["parallel"]["planned"]["public.events"] <= 2
    run = run_suite(f"--target={dsn}", f"--manifest={big_table.manifest}", f"--expectations={empty}",
                    "--parallel-workers=0")
    assert run.result["parallel"]["workers_per_query"] == 0
    assert set(run.result["parallel"]["planned"].values()) == {0}
