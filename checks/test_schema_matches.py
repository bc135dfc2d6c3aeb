"""schema_matches: every object the backup's manifest records is in the restore, defined and behaving the same.

Tables (columns with type, NOT NULL, default, identity, generated, collation; constraints; indexes; triggers and
whether they fire; partitions), and how each relation behaves: owner, privileges (table and column), row-level
security and its policies, persistence, replica identity, storage options, statistics targets, tablespace,
comments. Views and materialized views, functions (with SECURITY DEFINER, SET options, owner, privileges), types,
schemas, sequences (parameters, OWNED BY), extensions, the database's privileges and settings, default privileges,
event triggers, publications, and the roles the database references.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fixtures.connections import Comparison
from fixtures.outcomes import not_applicable
from fixtures.params import Param, manifest_params, parameters
from restore import fidelity
from restore.manifest import Manifest, compare_named, compare_table
from restore.outcome import PreparedDatabase
from restore.run import RunState

pytestmark = pytest.mark.checklist("schema_matches")


SCHEMA_CATEGORIES = ("database", "extensions", "schemas", "views", "functions", "types", "sequences",
                     "default_privileges", "event_triggers", "publications", "roles")


@parameters('schema_object', empty="the manifest records no objects", needs_db=True)
def schema_objects(state: RunState) -> list[Param] | str:
    return manifest_params(state, lambda src: [
        *(pytest.param({"category": c}, id=c) for c in SCHEMA_CATEGORIES),
        *(pytest.param({"table": t}, id=t) for t in src["tables"]),
    ])


def _fail(diffs: list[str], what: str, comparison: Comparison,
          record_property: Callable[[str, object], None]) -> None:
    if diffs:
        # Every difference from the backup's own manifest is the restore's (a live baseline moves on: unknown).
        record_property("origin", "restore" if comparison.kind == "manifest" else "unknown")
        record_property("offending", {"columns": ["difference"], "rows": [[d] for d in diffs], "total": len(diffs)})
        shown = "\n".join(f"  - {d}" for d in diffs[:30])
        more = f"\n  ... and {len(diffs) - 30} more" if len(diffs) > 30 else ""
        pytest.fail(f"{what} differs from {comparison.label} ({comparison.source_path}):\n{shown}{more}",
                    pytrace=False)


def _relations(src: Manifest, dst: Manifest, kinds: str, ignore: frozenset[str]) -> list[str]:
    """Security and behaviour of the relations of ``kinds`` present on both sides."""
    s, d = src["behaviour"]["relations"], dst["behaviour"]["relations"]
    return [diff for name, entry in s.items() if entry["kind"] in kinds and name in d
            for diff in fidelity.compare_relation(name, entry, d[name], ignore=ignore)]


# category -> whether it needs the manifest's "behaviour" section (manifest version 2)
NEEDS_BEHAVIOUR = {"sequences", "default_privileges", "event_triggers", "publications", "roles"}


def _category(category: str, src: Manifest, dst: Manifest, restored_db: PreparedDatabase,
              ignore: frozenset[str]) -> list[str]:
    behaviour = "behaviour" in src
    if category == "database":
        diffs = [f"database {key} was {src['database'].get(key)!r}, is {dst['database'].get(key)!r} (row checksums "
                 "depend on it)" for key in ("encoding",) if src["database"].get(key) != dst["database"].get(key)]
        if behaviour:
            diffs += fidelity.compare_database(src["behaviour"]["database_details"],
                                               dst["behaviour"]["database_details"],
                                               dbname=str(dst["database"].get("name") or restored_db.dbname),
                                               ignore=ignore)
        return diffs
    if category == "extensions":
        # Missing ones fail; the restore may carry more (amcheck, installed by this suite into its own copy).
        diffs = [f"extension {name} (version {version}) is missing" for name, version in src["extensions"].items()
                 if name not in dst["extensions"]]
        same_major = (src["database"].get("server_version_num", 0) // 10000
                      == dst["database"].get("server_version_num", 0) // 10000)
        if same_major:  # a newer server installs its own default version: only the same major must match
            diffs += [f"extension {name} was version {version} in the backup, is {dst['extensions'][name]} in the "
                      f"restore. Fix: ALTER EXTENSION \"{name}\" UPDATE TO '{version}';"
                      for name, version in src["extensions"].items()
                      if name in dst["extensions"] and dst["extensions"][name] != version]
        return diffs
    if category == "schemas":
        diffs = [f"schema {name} is missing" for name in src["schemas"] if name not in dst["schemas"]]
        if behaviour:
            diffs += fidelity.compare_owned_objects("SCHEMA", src["behaviour"]["schema_details"],
                                                    dst["behaviour"]["schema_details"], ignore=ignore)
        return diffs
    if category == "views":
        diffs = compare_named("view", src["views"], dst["views"])
        return diffs + (_relations(src, dst, "vm", ignore) if behaviour else [])
    if category == "functions":
        diffs = compare_named("function", src["functions"], dst["functions"])
        if behaviour:
            diffs += fidelity.compare_functions(src["behaviour"]["function_details"],
                                                dst["behaviour"]["function_details"], ignore=ignore)
        return diffs
    if category == "types":
        diffs = compare_named("type", src["types"], dst["types"])
        if behaviour:
            diffs += fidelity.compare_owned_objects("TYPE", src["behaviour"]["type_details"],
                                                    dst["behaviour"]["type_details"], ignore=ignore)
        return diffs
    s, d = src["behaviour"], dst["behaviour"]
    if category == "sequences":
        return fidelity.compare_sequence_parameters(s["sequence_parameters"], d["sequence_parameters"]) + \
            _relations(src, dst, "S", ignore)
    if category == "default_privileges":
        return fidelity.compare_default_privileges(s["default_privileges"], d["default_privileges"], ignore=ignore)
    if category == "event_triggers":
        return fidelity.compare_named_facts("event trigger", s["event_triggers"], d["event_triggers"],
                                            {"enabled": fidelity.TRIGGER_STATES})
    if category == "publications":
        return fidelity.compare_named_facts("publication", s["publications"], d["publications"])
    assert category == "roles"
    if restored_db.restore.performed and not restored_db.restore.globals_file:
        not_applicable("the roles were created by this run (NOLOGIN, no --globals), not restored: their attributes "
                       "and memberships are not the backup's to compare (pass --globals=FILE to compare them)")
    return fidelity.compare_roles(s["role_details"], d["role_details"],
                                  skip={user for user in (s.get("current_user"), d.get("current_user")) if user})


@schema_objects
def test_schema_matches(
    schema_object: dict[str, Any], comparison: Comparison, restored_db: PreparedDatabase,
    record_property: Callable[[str, object], None],
) -> None:
    """Compare one table, or one category of database-wide objects, naming each difference and both sides."""
    src, dst = comparison.source, comparison.restored
    tolerated = fidelity.tolerated_privileges(int(src["database"].get("server_version_num") or 0),
                                              int(dst["database"].get("server_version_num") or 0))
    if tolerated:
        record_property("tolerated", f"privileges the backup's server did not have: {', '.join(sorted(tolerated))}")
    if "category" in schema_object:
        category = schema_object["category"]
        if category in NEEDS_BEHAVIOUR and "behaviour" not in src:
            not_applicable(fidelity.NOT_RECORDED.format(what=category.replace("_", " ")))
        if category == "extensions":
            extra = sorted(set(dst["extensions"]) - set(src["extensions"]))
            record_property("extra_extensions", ", ".join(extra))
        if "behaviour" not in src:
            record_property("not_recorded", fidelity.NOT_RECORDED.format(what="privileges, ownership and behaviour"))
        label = category.replace("_", " ").capitalize()
        _fail(_category(category, src, dst, restored_db, tolerated), label, comparison, record_property)
        return
    table = schema_object["table"]
    if table not in dst["tables"]:
        not_applicable(f"{table} is missing altogether (see tables_present)")
    diffs = compare_table(table, src["tables"][table], dst["tables"][table])
    if "behaviour" in src:
        s, d = src["behaviour"]["relations"].get(table), dst["behaviour"]["relations"].get(table)
        if s is not None and d is not None:
            diffs += fidelity.compare_relation(table, s, d, ignore=tolerated)
    else:
        record_property("not_recorded", fidelity.NOT_RECORDED.format(what="privileges, ownership and behaviour"))
    _fail(diffs, f"Table {table}", comparison, record_property)
