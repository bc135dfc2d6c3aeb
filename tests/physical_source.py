"""What the physical-backup self-tests share: the source's table, the WAL switch that ends a test's writes, and the
expectations a recovered copy is held to (rows 1-10 before the backup, 11-20 and 21-30 after it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import wait_for


def create_events(server: Any) -> None:
    """Database shop, table public.events, rows 1-10 (each row's commit time in ``at``)."""
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE shop")
    with psycopg.connect(server.conninfo("shop"), autocommit=True) as conn:
        conn.execute("CREATE TABLE public.events (id int PRIMARY KEY, at timestamptz NOT NULL "
                     "DEFAULT clock_timestamp())")
        conn.execute("INSERT INTO public.events (id) SELECT generate_series(1, 10)")


def switch_and_wait_archived(conn: psycopg.Connection[Any], *, seconds: float, where: str) -> str:
    """End the current WAL segment and wait until the archiver has it; returns the segment's name."""
    switched = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
    assert switched is not None
    segment = str(switched[0])

    def archived() -> bool:
        got = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
        return bool(got and got[0] and got[0] >= segment)

    wait_for(archived, seconds=seconds, what=f"WAL segment {segment} archived to {where}")
    return segment


def events_expectations(tmp_path: Path, rows: int) -> Path:
    expectations = tmp_path / "expectations"
    expectations.mkdir()
    (expectations / "row_counts.toml").write_text(f'[tables]\n"public.events" = {rows}\n')
    (expectations / "rpo.toml").write_text('query = "SELECT max(at) FROM public.events"\n')
    return expectations
