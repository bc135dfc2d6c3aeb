"""critical_queries: every expectations/critical_queries/*.sql runs read-only, within its budget."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from fixtures.params import Param, parameters
from restore.backups.outcome import PreparedDatabase
from restore.compare.expectations import SqlCheck
from restore.errors import verifier_world
from restore.run import RunState
from restore.verify import run_query

pytestmark = pytest.mark.checklist("critical_queries")


@parameters('critical_query', empty="no critical queries: expectations/critical_queries/*.sql is empty",
            needs_db=False)
def critical_queries(state: RunState) -> list[Param]:
    return [pytest.param(q, id=q.name) for q in state.expectations.critical_queries]


@critical_queries
def test_critical_query(
    critical_query: SqlCheck, restored_db: PreparedDatabase, db_conn: psycopg.Connection[Any],
    record_property: Callable[[str, object], None],
) -> None:
    """The query succeeds; its header comments (-- max_ms, -- min_rows, -- max_rows) hold."""
    q = critical_query
    try:
        run, failure = run_query(db_conn, q.sql), None
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.LockNotAvailable):
        raise  # "cannot verify" (a skip naming the privilege), not a broken query
    except psycopg.Error as exc:
        if verifier_world(exc):
            raise  # a lost connection, a server out of disk: not run (fixtures/outcomes.py), not a broken query
        run, failure = None, exc.diag.message_primary or str(exc)
    if run is None:
        pytest.fail(f"Critical query {q.path} failed: {failure}. The application's query cannot run on the "
                    "restored database: a missing object, privilege or extension?", pytrace=False)
    record_property("elapsed_ms", round(run.elapsed_ms, 1))
    record_property("rows", len(run.rows))
    if q.min_rows is not None:
        assert len(run.rows) >= q.min_rows, f"{q.path} returned {len(run.rows)} row(s); needs at least {q.min_rows}"
    if q.max_rows is not None:
        assert len(run.rows) <= q.max_rows, f"{q.path} returned {len(run.rows)} row(s); at most {q.max_rows} allowed"
    if q.max_ms is not None:
        assert run.elapsed_ms <= q.max_ms, (
            f"{q.path} took {run.elapsed_ms:.0f} ms; its budget is {q.max_ms:.0f} ms. A missing index, or "
            "statistics not gathered (ANALYZE)?"
        )
