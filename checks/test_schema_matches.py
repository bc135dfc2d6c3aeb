"""schema_matches: every object the backup holds is in the restore, defined and behaving the same.

The net is pg_dump's own inventory (restore/compare/inventory.py): every entry of the backup's table of contents — of
the archive restored, or recorded in the manifest — against a ``pg_dump --schema-only`` of the restore, by name, owner
and definition, whatever the object's kind. The catalog comparisons below word the differences they know precisely; an
inventory difference none of them explains fails with its own diff and fix. Catalog comparisons:

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
from fixtures.params import NO_MANIFEST, Param, parameters
from restore.backups.outcome import PreparedDatabase
from restore.compare import fidelity, inventory
from restore.compare.comparison import compare_named, compare_table
from restore.compare.manifest import Manifest
from restore.hints import ident
from restore.run import RunState

pytestmark = pytest.mark.checklist("schema_matches")


SCHEMA_CATEGORIES = ("database", "extensions", "schemas", "views", "functions", "types", "sequences",
                     "default_privileges", "event_triggers", "publications", "roles")


@parameters('schema_object', empty="the manifest records no objects", needs_db=True)
def schema_objects(state: RunState) -> list[Param] | str:
    """A test per table and category the manifest compares, and per place pg_dump's inventory routes its
    entries to (a table, a category, or an object kind no catalog comparison knows: "aggregate", "cast" …)."""
    params: list[Param] = []
    facts = state.facts
    if facts.manifest_error:
        params.append(pytest.param({"error": facts.manifest_error}, id="manifest"))
    manifests = state.manifests()
    ids: set[str] = set()
    if manifests is not None:
        src = manifests[0]
        holds_large_objects = bool(src.get("large_objects", {"objects": {}, "unreadable": None})["objects"])
        categories = [*SCHEMA_CATEGORIES, *(["large_objects"] if holds_large_objects else [])]
        params += [pytest.param({"category": c}, id=c) for c in categories]
        params += [pytest.param({"table": t}, id=t) for t in src["tables"]]
        ids = set(categories) | set(src["tables"])
    if facts.inventory_error:
        params.append(pytest.param({"inventory_error": facts.inventory_error}, id="objects"))
    found = state.inventory()
    if found is not None:
        params += [pytest.param({"route": r}, id=r) for r in found["routes"] if r not in ids]
    if not params:
        return f"{NO_MANIFEST}; {facts.inventory_not_compared or 'and no object inventory to compare with'}"
    return params


def _fail(diffs: list[str], what: str, comparison: Comparison,
          record_property: Callable[[str, object], None]) -> None:
    if diffs:
        # Every difference from the backup's own manifest is the restore's (a live baseline moves on: unknown).
        record_property("origin", "restore" if comparison.kind == "manifest" else "unknown")
        record_property("offending", {"columns": ["difference"], "rows": [[d] for d in diffs], "total": len(diffs)})
        shown = "\n".join(f"  - {d}" for d in diffs[:30])
        more = f"\n  ... and {len(diffs) - 30} more" if len(diffs) > 30 else ""
        verb = "differs" if what.startswith("Table ") else "differ"  # "Table x differs", "Roles differ"
        pytest.fail(f"{what} {verb} from {comparison.label}:\n{shown}{more}", pytrace=False)


def _relations(src: Manifest, dst: Manifest, kinds: str, ignore: frozenset[str]) -> list[str]:
    """Security and behaviour of the relations of ``kinds`` present on both sides."""
    s, d = src["behaviour"]["relations"], dst["behaviour"]["relations"]
    owned_by = {name: str(p["owned_by"]).rpartition(".")[0]
                for name, p in src["behaviour"].get("sequence_parameters", {}).items() if p.get("owned_by")}

    def follows(name: str, entry: dict[str, Any]) -> str | None:
        """A sequence OWNED BY a column whose table changed owner the same way: ALTER TABLE … OWNER moves it."""
        table = owned_by.get(name) if entry["kind"] == "S" else None
        if table is None or table not in s or table not in d:
            return None
        same = (s[table].get("owner"), d[table].get("owner")) == (entry.get("owner"), d[name].get("owner"))
        return table if same else None

    return [diff for name, entry in s.items() if entry["kind"] in kinds and name in d
            for diff in fidelity.compare_relation(name, entry, d[name], ignore=ignore, follows=follows(name, entry))]


# category -> whether it needs the manifest's "behaviour" section (manifest version 2)
NEEDS_BEHAVIOUR = {"sequences", "default_privileges", "event_triggers", "publications", "roles"}


def _category(category: str, src: Manifest, dst: Manifest, restored_db: PreparedDatabase,
              ignore: frozenset[str]) -> list[str]:
    behaviour = "behaviour" in src
    same_major = (src["database"].get("server_version_num", 0) // 10000
                  == dst["database"].get("server_version_num", 0) // 10000)
    if category == "database":
        diffs = [f"database {key} was {src['database'].get(key)!r}, is {dst['database'].get(key)!r} (row checksums "
                 "depend on it)" for key in ("encoding",) if src["database"].get(key) != dst["database"].get(key)]
        if behaviour:
            diffs += fidelity.compare_database(src["behaviour"]["database_details"],
                                               dst["behaviour"]["database_details"],
                                               dbname=str(dst["database"].get("name") or restored_db.dbname),
                                               ignore=ignore, verifier=dst["behaviour"].get("current_user"))
        return diffs
    if category == "extensions":
        # Missing ones fail; the restore may carry more (amcheck, installed by this suite into its own copy).
        diffs = [f"extension {name} (version {version}) is missing" for name, version in src["extensions"].items()
                 if name not in dst["extensions"]]
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
        diffs = compare_named("view", src["views"], dst["views"], definitions=same_major)
        return diffs + (_relations(src, dst, "vm", ignore) if behaviour else [])
    if category == "functions":
        diffs = compare_named("function", src["functions"], dst["functions"], definitions=same_major)
        if behaviour:
            diffs += fidelity.compare_functions(src["behaviour"]["function_details"],
                                                dst["behaviour"]["function_details"], ignore=ignore)
        return diffs
    if category == "types":
        diffs = compare_named("type", src["types"], dst["types"], definitions=same_major)
        if behaviour:
            diffs += fidelity.compare_owned_objects("TYPE", src["behaviour"]["type_details"],
                                                    dst["behaviour"]["type_details"], ignore=ignore)
        return diffs
    if category == "large_objects":
        a, b = src["large_objects"]["objects"], (dst.get("large_objects") or {"objects": {}})["objects"]
        diffs = []
        for oid, entry in a.items():
            got = b.get(oid)
            if got is not None and got["owner"] != entry["owner"]:
                diffs.append(f"large object {oid} is owned by {got['owner']} in the restore, by {entry['owner']} in "
                             f"the backup. Fix: ALTER LARGE OBJECT {oid} OWNER TO {ident(entry['owner'])};")
            if got is not None and sorted(map(tuple, got["acl"])) != sorted(map(tuple, entry["acl"])):
                diffs.append(f"large object {oid}: privileges were {_acl_words(entry['acl'])}, are "
                             f"{_acl_words(got['acl'])}. Fix: GRANT/REVOKE … ON LARGE OBJECT {oid} …;")
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


def _acl_words(acl: list[list[Any]]) -> str:
    return ", ".join(f"{p} to {who}" + (" WITH GRANT OPTION" if grant else "") for who, p, grant in acl) or "none"


# Differences the catalog comparisons decide, with their tolerances (privileges a newer server adds, extensions
# this suite installs, a newer server's default extension versions): where a manifest was compared, the inventory
# does not repeat them.
CATALOG_DECIDES = frozenset({"ACL", "DATABASE", "DATABASE PROPERTIES", "EXTENSION"})
# What the table comparison reads itself (columns, constraints, indexes, triggers, partitions): where it found a
# difference, it has worded the change (a detached partition's constraints and indexes become its own, …).
TABLE_PARTS = frozenset({"TABLE", "CONSTRAINT", "FK CONSTRAINT", "CHECK CONSTRAINT", "INDEX", "TRIGGER",
                         "TABLE ATTACH", "INDEX ATTACH", "DEFAULT"})


def _inventory_differences(object_id: str, state: RunState, catalog_diffs: list[str], *,
                           catalog_compared: bool) -> list[str]:
    """The inventory's differences routed to this test that no catalog difference explains."""
    found = state.inventory()
    if found is None:
        return []
    out = []
    for d in found["differences"]:
        if d["route"] != object_id or d["change"] == "layout":
            continue
        if catalog_compared and (d["kind"] in CATALOG_DECIDES or object_id == "database" and d["kind"] == "COMMENT"):
            continue  # the database's comment: compare_database words it
        behaviour = catalog_compared and "behaviour" in (state.manifests() or [{}])[0]
        if behaviour and (d["change"] == "owner" or d["change"] == "changed" and d["kind"] in ("SEQUENCE",
                                                                                                "SEQUENCE OWNED BY")):
            continue  # owners and sequences' parameters are the behaviour comparison's, each with its statement
        if catalog_diffs and (d["kind"] in TABLE_PARTS and "." in object_id
                              or any(d["name"] in text for text in catalog_diffs)):
            continue  # a catalog comparison already said it, in its own words
        out.append(d["text"])
    return out


def _layout(object_id: str, state: RunState, record_property: Callable[[str, object], None]) -> list[str]:
    """Layout-only differences (inventory.LAYOUT_ONLY): a note under the item, or differences with
    --strict-layout (pytest owns --strict)."""
    found = state.inventory()
    layout = [d["text"] for d in (found or {"differences": []})["differences"]
              if d["route"] == object_id and d["change"] == "layout"]
    if not layout or state.config.strict:
        return [f"{text}\n    (layout only; a failure because of --strict-layout)" for text in layout]
    record_property("note", f"{object_id} differs in layout only, which changes no row, result, permission or "
                            f"maintenance (not a failure; --strict-layout makes it one): "
                            + "; ".join(text.splitlines()[0].rstrip(":") for text in layout))
    return []


def _compared(state: RunState, record_property: Callable[[str, object], None]) -> None:
    found = state.inventory()
    if found is not None:
        record_property("compared", f"{found['how']}; the backup's objects from {found['source']}")
    elif state.facts.inventory_not_compared:
        record_property("compared", state.facts.inventory_not_compared)


@schema_objects
def test_schema_matches(
    schema_object: dict[str, Any], run_state_data: RunState, restored_db: PreparedDatabase,
    record_property: Callable[[str, object], None], request: pytest.FixtureRequest,
) -> None:
    """Compare one table, one category of database-wide objects, or one kind of object, naming each difference
    and both sides."""
    state = run_state_data
    _compared(state, record_property)
    if "inventory_error" in schema_object:
        if "permission denied" in schema_object["inventory_error"]:
            # pg_dump locks every table it lists (ACCESS SHARE): a verifying role that may not read one cannot list
            # the database's objects. A gap in the proof, not a finding about the restore.
            pytest.skip("cannot verify every object: pg_dump --schema-only was refused a privilege the verifying "
                        f"role lacks ({schema_object['inventory_error'].splitlines()[0]}). GRANT pg_read_all_data TO "
                        "<verifying role> (PostgreSQL 14+), or SELECT on every table and USAGE on every schema.")
        pytest.fail(f"pg_dump's inventory of the restore could not be compared with the backup's, so objects of "
                    f"kinds the manifest does not list were not verified: {schema_object['inventory_error']}",
                    pytrace=False)
    if "route" in schema_object:
        route = schema_object["route"]
        found = state.inventory()
        assert found is not None
        gone = [d for d in found["differences"] if d["route"] == route and d["change"] == "missing"
                and d["kind"] in inventory.RELATION_KINDS - {"VIEW"} and d["subject"] == d["key"]]
        if gone:
            not_applicable(f"{route} is missing altogether (see tables_present)")
        diffs = _inventory_differences(route, state, [], catalog_compared=False)
        diffs += _layout(route, state, record_property)
        label = route if "." in route else f"Objects of kind {route}" if route.upper() not in (
            k.upper() for k in SCHEMA_CATEGORIES) else route.replace("_", " ").capitalize()
        _fail_inventory(diffs, label, state, record_property)
        return
    comparison: Comparison = request.getfixturevalue("comparison")
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
        diffs = _category(category, src, dst, restored_db, tolerated)
        diffs += _inventory_differences(category, state, diffs, catalog_compared=True)
        _fail(diffs, label, comparison, record_property)
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
    diffs += _inventory_differences(table, state, diffs, catalog_compared=True)
    diffs += _layout(table, state, record_property)
    _fail(diffs, f"Table {table}", comparison, record_property)


def _fail_inventory(diffs: list[str], what: str, state: RunState,
                    record_property: Callable[[str, object], None]) -> None:
    if diffs:
        found = state.inventory()
        assert found is not None
        record_property("origin", "restore")
        record_property("offending", {"columns": ["difference"], "rows": [[d] for d in diffs], "total": len(diffs)})
        shown = "\n".join(f"  - {d}" for d in diffs[:30])
        more = f"\n  ... and {len(diffs) - 30} more" if len(diffs) > 30 else ""
        pytest.fail(f"{what} differ from {found['source']}:\n{shown}{more}", pytrace=False)
