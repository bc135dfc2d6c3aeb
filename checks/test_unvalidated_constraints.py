"""unvalidated_constraints: no FK or CHECK constraint has convalidated = false (the runbook's second query)."""

from __future__ import annotations

from typing import Any

import pytest

from fixtures.findings import Attribution
from fixtures.params import Param, parameters
from restore import hints
from restore.backups.outcome import PreparedDatabase
from restore.compare.origin import constraint_origin
from restore.run import RunState

pytestmark = pytest.mark.checklist("unvalidated_constraints")


@parameters('constraint', empty="the database has no foreign key or CHECK constraints", needs_db=True)
def constraints(state: RunState) -> list[Param]:
    return [pytest.param(c, id=f"{c['schema']}.{c['table']}.{c['name']}") for c in state.catalog.constraints]


@constraints
def test_constraint_validated(constraint: dict[str, Any], restored_db: PreparedDatabase,
                              attribution: Attribution) -> None:
    """A NOT VALID constraint promises nothing about the rows that were there before it."""
    c = constraint
    kind = "foreign key" if c["type"] == "f" else "CHECK constraint"
    if c["validated"]:
        return
    found, _ = constraint_origin(attribution.source, f"{c['schema']}.{c['table']}", c["name"])
    note = attribution.settle(found)
    if note is None:
        return  # NOT VALID in the source too, accepted (--accept-inherited): listed, not hidden
    pytest.fail(
        f"{kind} {c['name']} on {c['schema']}.{c['table']} is NOT VALID ({c['definition']}): existing rows were "
        f"never checked against it.{note} Run {hints.validate(c['schema'], c['table'], c['name'])} on a copy to "
        "see whether any row breaks it.", pytrace=False,
    )
