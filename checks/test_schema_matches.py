"""schema_matches: every object the backup's manifest records is in the restore, defined the same.

Tables (columns with type, NOT NULL, default, identity, generated, collation; constraints; indexes; triggers;
partitions), views and materialized views, functions, types, extensions, schemas and the database's encoding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fixtures.connections import Comparison
from fixtures.outcomes import not_applicable
from restore.manifest import compare_named, compare_table

pytestmark = pytest.mark.checklist("schema_matches")


def _fail(diffs: list[str], what: str, comparison: Comparison,
          record_property: Callable[[str, object], None]) -> None:
    if diffs:
        record_property("offending", diffs)
        shown = "\n".join(f"  - {d}" for d in diffs[:30])
        more = f"\n  ... and {len(diffs) - 30} more" if len(diffs) > 30 else ""
        pytest.fail(f"{what} differs from {comparison.label} ({comparison.source_path}):\n{shown}{more}",
                    pytrace=False)


def _globals(category: str, src: dict[str, Any], dst: dict[str, Any]) -> list[str]:
    if category == "database":
        return [f"database {key} was {src['database'].get(key)!r}, is {dst['database'].get(key)!r} (row checksums "
                "depend on it)" for key in ("encoding",) if src["database"].get(key) != dst["database"].get(key)]
    if category == "extensions":
        # Missing ones fail; the restore may carry more (amcheck, installed by this suite into its own copy).
        return [f"extension {name} (version {version}) is missing" for name, version in src["extensions"].items()
                if name not in dst["extensions"]]
    if category == "schemas":
        return [f"schema {name} is missing" for name in src["schemas"] if name not in dst["schemas"]]
    kind = {"views": "view", "functions": "function", "types": "type"}[category]
    return compare_named(kind, src[category], dst[category])


def test_schema_matches(
    schema_object: dict[str, Any], comparison: Comparison, record_property: Callable[[str, object], None]
) -> None:
    """Compare one table, or one category of database-wide objects, naming each difference and both sides."""
    src, dst = comparison.source, comparison.restored
    if "category" in schema_object:
        category = schema_object["category"]
        if category == "extensions":
            extra = sorted(set(dst["extensions"]) - set(src["extensions"]))
            record_property("extra_extensions", ", ".join(extra))
        _fail(_globals(category, src, dst), category.capitalize(), comparison, record_property)
        return
    table = schema_object["table"]
    if table not in dst["tables"]:
        not_applicable(f"{table} is missing altogether (see tables_present)")
    _fail(compare_table(table, src["tables"][table], dst["tables"][table]), f"Table {table}", comparison,
          record_property)
