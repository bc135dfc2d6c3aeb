"""unvalidated_constraints: no FK or CHECK constraint has convalidated = false (the runbook's second query)."""

from __future__ import annotations

from typing import Any

import pytest

from restore import hints
from restore.session import PreparedDatabase

pytestmark = pytest.mark.checklist("unvalidated_constraints")


def test_constraint_validated(constraint: dict[str, Any], restored_db: PreparedDatabase) -> None:
    """A NOT VALID constraint promises nothing about the rows that were there before it."""
    c = constraint
    kind = "foreign key" if c["type"] == "f" else "CHECK constraint"
    assert c["validated"], (
        f"{kind} {c['name']} on {c['schema']}.{c['table']} is NOT VALID ({c['definition']}): existing rows were "
        f"never checked against it. Run {hints.validate(c['schema'], c['table'], c['name'])} on a copy to see "
        "whether any row breaks it."
    )
