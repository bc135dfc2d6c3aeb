"""sequences: every serial/identity sequence will hand out a value beyond its column's max."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from restore.session import PreparedDatabase
from restore.verify import sequence_state

pytestmark = pytest.mark.checklist("sequences")


def test_sequence_ahead_of_column(
    sequence: dict[str, Any], restored_db: PreparedDatabase, db_conn: psycopg.Connection[Any]
) -> None:
    """Otherwise the application's first INSERT fails with a duplicate key."""
    s = sequence
    state = sequence_state(db_conn, s)
    assert state.ok, (
        f"Sequence {s['schema']}.{s['name']} ({s['kind']} of {s['table_schema']}.{s['table']}.{s['column']}) "
        f"would hand out {state.next_value} next, but the column already holds {state.column_extreme}: the next "
        f"INSERT fails with a duplicate key. Fix: SELECT setval('{s['schema']}.{s['name']}', "
        f"(SELECT max({s['column']}) FROM {s['table_schema']}.{s['table']}));"
    )
