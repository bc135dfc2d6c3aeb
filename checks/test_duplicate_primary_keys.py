"""duplicate_primary_keys: no two rows share a primary key, unique constraint or unique index value.

Read from the heap, not the index: the check matters when an index is corrupt or a constraint went missing,
which is also why keys declared in expectations/keys.toml are checked even when the constraint is gone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from fixtures.options import RestoreConfig
from restore.session import PreparedDatabase
from restore.verify import duplicates, relation_exists

pytestmark = pytest.mark.checklist("duplicate_primary_keys")


def test_no_duplicate_keys(
    unique_key: dict[str, Any], restored_db: PreparedDatabase, db_conn: psycopg.Connection[Any],
    restore_config: RestoreConfig, record_property: Callable[[str, object], None],
) -> None:
    """GROUP BY the key columns over a sequential scan: no value may appear twice."""
    k = unique_key
    table = f"{k['schema']}.{k['table']}"
    if k.get("proven"):
        assert k["valid"], "a proven unique index must be valid"  # the proof's premise
        record_property("verified_by", k["proven"])
        return
    if restore_config.depth == "quick":
        pytest.skip("--depth quick: no data scans (run --depth standard to scan for duplicates)")
    if k.get("missing") and not relation_exists(db_conn, k["schema"], k["table"]):
        pytest.skip(f"{table} does not exist (see tables_present)")
    found = duplicates(db_conn, k)
    record_property("duplicate_groups", found.count)
    if found.count:
        record_property("offending", found.sample)
    if k.get("missing"):
        assert found.count == 0, (
            f"{table} has lost its primary key ({', '.join(k['columns'])}, declared in keys.toml) and now holds "
            f"{found.count} duplicated key value(s): {', '.join(found.sample)}. Remove the duplicates, then "
            f"ALTER TABLE {table} ADD PRIMARY KEY ({', '.join(k['columns'])})."
        )
        pytest.fail(
            f"{table} has no primary key on ({', '.join(k['columns'])}) although keys.toml declares one: nothing "
            f"enforces uniqueness any more (no duplicates yet). Recreate it: ALTER TABLE {table} ADD PRIMARY KEY "
            f"({', '.join(k['columns'])}).", pytrace=False,
        )
    assert found.count == 0, (
        f"{k['kind']} {k['name']} on {table} ({', '.join(k['columns']) or 'expressions'}) has {found.count} "
        f"duplicated value(s) in the table's rows: {', '.join(found.sample)}. The index {k['index']} does not "
        f"reflect the table (corruption): REINDEX fails until the duplicates are resolved."
    )
