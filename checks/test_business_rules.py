"""business_rules: every expectations/business_rules/*.sql returns the rows that break a rule; none may."""

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
from restore.verify import SAMPLE_LIMIT, run_query

pytestmark = pytest.mark.checklist("business_rules")


@parameters('business_rule', empty="no business rules: expectations/business_rules/*.sql is empty",
            needs_db=False)
def business_rules(state: RunState) -> list[Param]:
    return [pytest.param(q, id=q.name) for q in state.expectations.business_rules]


@business_rules
def test_business_rule(
    business_rule: SqlCheck, restored_db: PreparedDatabase, db_conn: psycopg.Connection[Any],
    record_property: Callable[[str, object], None],
) -> None:
    """No violating rows; the first ones are shown when there are."""
    rule = business_rule
    try:
        run, failure = run_query(db_conn, rule.sql, max_rows=SAMPLE_LIMIT), None
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.LockNotAvailable):
        raise  # "cannot verify" (a skip naming the privilege), not a broken query
    except psycopg.Error as exc:
        if verifier_world(exc):
            raise  # a lost connection, a server out of disk: not run (fixtures/outcomes.py), not a broken query
        run, failure = None, exc.diag.message_primary or str(exc)
    if run is None:
        pytest.fail(f"Business rule {rule.path} could not run: {failure}", pytrace=False)
    if run.rows:
        record_property("offending", {"columns": run.columns, "rows": [[None if v is None else str(v) for v in row]
                                                                      for row in run.rows],
                                      "total": None})  # the first rows only: the rule is not counted in full
        header = " | ".join(run.columns)
        lines = "\n".join("  " + " | ".join(str(v) for v in row) for row in run.rows)
        pytest.fail(
            f"Business rule {rule.name} is broken ({rule.path}); first violating rows:\n  {header}\n{lines}",
            pytrace=False,
        )
