"""row_counts: each table holds the number of rows expected in expectations/row_counts.toml."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from restore.expectations import Expectations
from restore.session import PreparedDatabase
from restore.verify import count_rows, relation_exists, split_qualified

pytestmark = pytest.mark.checklist("row_counts")


def test_row_count(
    counted_table: dict[str, Any], restored_db: PreparedDatabase, db_conn: psycopg.Connection[Any],
    expectations: Expectations, record_property: Callable[[str, object], None],
) -> None:
    """Exact count(*) of the table against its expectation; a table without one is reported as not checked."""
    name = counted_table["table"]
    schema, table = split_qualified(name)
    if not relation_exists(db_conn, schema, table):
        pytest.skip(f"{name} does not exist, so it has no rows to count (see tables_present)")
    count = count_rows(db_conn, schema, table)
    record_property("rows", count)
    rule = expectations.row_counts.get(name)
    if rule is None:
        pytest.skip(f"not checked: {name} has {count} rows, but {expectations.directory / 'row_counts.toml'} "
                    "has no expectation for it")
    assert rule.accepts(count), (
        f"{name} has {count} rows; expected {rule.describe()} ({expectations.directory / 'row_counts.toml'}). "
        f"{'Rows are missing' if (rule.exact or rule.minimum or 0) > count else 'There are more rows than expected'}: "
        "compare with the source, or update the expectation if the data legitimately changed."
    )
