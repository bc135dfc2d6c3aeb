"""The object inventory: every schema-level entry pg_dump writes for a database, and the comparison of two.

pg_dump knows every object kind a database can hold and how to write it; this module keeps no list of kinds. An
inventory is the archive's table of contents — of the dump that was restored, or of a ``pg_dump --schema-only`` of
a live database — reduced to what identifies an object: its kind (pg_dump's ``desc``), schema, name (``tag``),
owner and a digest of its definition. The definitions themselves are kept, compressed, so that a missing object's
fix is the statement that recreates it and a changed one is shown as a diff.

Data entries (table data, sequence values, large object contents, statistics, materialized view contents) are not
objects: the content, sequence and corruption checks compare them. Large objects are listed per owner with their
ids (a schema-only dump does not write them, so the live side reads ``pg_largeobject_metadata``).

The catalog comparisons (restore/compare/comparison.py, restore/compare/fidelity.py) word the differences they know
precisely; the inventory is the net under them: a difference none of them explains still fails ``schema_matches`` with
the entry's diff (see :func:`compare`).
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import json
import re
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from typing_extensions import TypedDict

from restore.backups.toc import RawEntry, RawToc, read_toc
from restore.hints import listed
from restore.tools import clean_env, pg_tool, tool_version

# Entries that hold data, not definitions: compared by the content, sequence and corruption checks.
DATA_KINDS = frozenset({"TABLE DATA", "SEQUENCE SET", "BLOBS", "BLOB DATA", "LARGE OBJECTS", "STATISTICS DATA",
                        "MATERIALIZED VIEW DATA"})
# How pg_dump writes large objects' metadata: one entry per object (up to 16) or per group of objects (17+).
_LARGE_OBJECT_KINDS = frozenset({"BLOB", "BLOB METADATA"})
# Entries about other entries: they belong where their object belongs.
_ABOUT = frozenset({"ACL", "COMMENT", "SECURITY LABEL"})
# Relations: entries that depend on one (indexes, constraints, rules, triggers, policies, statistics, …) belong to it.
RELATION_KINDS = frozenset({"TABLE", "FOREIGN TABLE", "MATERIALIZED VIEW", "VIEW"})
LARGE_OBJECTS = "LARGE OBJECTS"
VERIFIER_EXTENSIONS = ("amcheck",)  # the verifier's tools: extra in a restore, never a finding
_SEP = "\x00"  # between a key's parts: the one character no identifier can hold


class Entry(TypedDict):
    kind: str
    schema: str
    name: str
    owner: str
    digest: str
    subject: str  # the key of the object this entry belongs to (an ACL's object, an index's table); "" for itself
    deps: list[str]  # the keys of the entries it depends on (pg_dump's own dependencies)


class Inventory(TypedDict):
    """A manifest's ``inventory`` section (manifest version 3)."""

    source: str  # how it was taken: "archive" (a dump's own TOC) or "pg_dump --schema-only"
    pg_dump: str | None  # the version of pg_dump that wrote the definitions
    server: str | None  # the version of the server they describe
    entries: dict[str, Entry]
    definitions: str  # base64(zlib(JSON {key: definition}))
    captured_by: str | None  # the role pg_dump ran as (its own grants are the verifier's, not the database's)


def key_of(kind: str, schema: str | None, name: str) -> str:
    return _SEP.join((kind, schema or "", name))


def label(entry: Entry) -> str:
    """The entry as pg_dump names it: ``RULE app.parent r1``, ``CAST (integer AS app.t)``, ``COMMENT ON
    AGGREGATE int_total(integer) (schema app)``."""
    if entry["kind"] in _ABOUT:
        return f"{entry['kind']} ON {entry['name']}" + (f" (schema {entry['schema']})" if entry["schema"] else "")
    where = f"{entry['schema']}." if entry["schema"] else ""
    return f"{entry['kind']} {where}{entry['name']}"


def _major(version: str | None) -> str | None:
    return version.split(".")[0].split(" ")[0] if version else None


def _normal_definition(entry: RawEntry, dbname: str | None) -> str:
    """The definition as compared: the database's own name (which a restore may change) read as a placeholder."""
    text = entry.defn.rstrip()
    if entry.desc == "DATABASE":
        return ""  # CREATE DATABASE carries the server's locale defaults: the database category compares what matters
    if dbname and ("DATABASE" in entry.desc or entry.tag.startswith("DATABASE ")):
        text = text.replace(f"DATABASE {_quoted(dbname)}", "DATABASE :dbname")
    return text


def _quoted(name: str) -> str:
    """A name as pg_dump writes it (fmtId: quoted unless a plain lower-case identifier)."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else sql.Identifier(name).as_string()


def _normal_tag(entry: RawEntry, dbname: str | None) -> str:
    if dbname and entry.desc in ("DATABASE", "DATABASE PROPERTIES") and entry.tag == dbname:
        return ":dbname"
    if dbname and entry.tag == f"DATABASE {dbname}":
        return "DATABASE :dbname"
    return entry.tag


def _pack(definitions: dict[str, str]) -> str:
    return base64.b64encode(zlib.compress(json.dumps(definitions, sort_keys=True).encode(), 6)).decode()


def definitions(inventory: Inventory) -> dict[str, str]:
    """Every entry's definition (as pg_dump wrote it), by key."""
    data: dict[str, str] = json.loads(zlib.decompress(base64.b64decode(inventory["definitions"])))
    return data


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def from_toc(toc: RawToc, *, source: str = "archive",
             large_objects: list[tuple[int, str]] | None = None) -> Inventory:
    """The inventory of an archive's table of contents. ``large_objects``: (oid, owner) read from the database,
    for a schema-only dump (which writes none)."""
    by_id = {e.dump_id: e for e in toc.entries}
    keys: dict[int, str] = {}
    entries: dict[str, Entry] = {}
    defs: dict[str, str] = {}
    lo_owned: dict[str, set[int]] = {}
    for e in toc.entries:
        if e.desc in _LARGE_OBJECT_KINDS:  # up to 16: tag is the oid; 17+: one oid per line of the definition
            oids = [int(x) for x in (e.defn.split() if e.desc == "BLOB METADATA" else [e.tag]) if x.isdigit()]
            lo_owned.setdefault(e.owner or "", set()).update(oids)
            continue
        if e.desc in DATA_KINDS or e.tag.startswith(("LARGE OBJECT ", "LARGE OBJECTS ")):
            continue  # large objects' ACLs and comments: the manifest's large_objects section compares them
        keys[e.dump_id] = key_of(e.desc, e.namespace, _normal_tag(e, toc.dbname))
    for oid, owner in large_objects or []:
        lo_owned.setdefault(owner, set()).add(oid)
    for e in toc.entries:
        key = keys.get(e.dump_id)
        if key is None:
            continue
        subject = ""
        deps = [by_id[d] for d in e.deps if d in by_id and d in keys]
        if e.desc in _ABOUT and deps:
            subject = keys[deps[0].dump_id]
        elif e.desc not in RELATION_KINDS:
            relation = next((d for d in deps if d.desc in RELATION_KINDS), None)
            if relation is not None:
                subject = keys[relation.dump_id]
        definition = _normal_definition(e, toc.dbname)
        if key in entries:  # the same name twice (never seen from pg_dump): keep both, told apart by definition
            key = f"{key}{_SEP}{_digest(definition)}"
        entries[key] = {"kind": e.desc, "schema": e.namespace or "", "name": _normal_tag(e, toc.dbname),
                        "owner": e.owner or "", "digest": _digest(definition), "subject": subject,
                        "deps": [keys[d.dump_id] for d in deps]}
        defs[key] = definition
    for owner in lo_owned:
        key = key_of(LARGE_OBJECTS, None, owner)
        text = "\n".join(str(o) for o in sorted(lo_owned[owner]))
        entries[key] = {"kind": LARGE_OBJECTS, "schema": "", "name": f"owned by {owner}", "owner": owner,
                        "digest": _digest(text), "subject": "", "deps": []}
        defs[key] = text
    return {"source": source, "pg_dump": toc.dump_version, "server": toc.server_version, "entries": entries,
            "definitions": _pack(defs), "captured_by": None}


def of_archive(path: Path) -> Inventory:
    """The inventory of a custom, directory or tar archive: its own table of contents."""
    return from_toc(read_toc(path))


LARGE_OBJECTS_SQL = "SELECT oid::bigint, pg_get_userbyid(lomowner) FROM pg_largeobject_metadata ORDER BY 1"


def of_database(conninfo: str, *, snapshot: str | None = None) -> Inventory:
    """The inventory of a live database: ``pg_dump --schema-only`` (on ``snapshot`` when given: the caller's
    exporting transaction must stay open until this returns), and its large objects' ids and owners."""
    with tempfile.TemporaryDirectory(prefix="restore-verify-inventory-") as tmp:
        out = Path(tmp) / "schema.dump"
        command = [str(pg_tool("pg_dump")), "--schema-only", "-Fc", "--compress=0", "-f", str(out)]
        if snapshot:
            command.append(f"--snapshot={snapshot}")
        done = subprocess.run([*command, "-d", conninfo], env=clean_env(), capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise InventoryUnavailable(f"pg_dump --schema-only failed (exit {done.returncode}): "
                                       f"{done.stderr.strip()[:2000]}")
        toc = read_toc(out)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if snapshot:
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        rows = conn.execute(LARGE_OBJECTS_SQL).fetchall()
        user = conn.execute("SELECT current_user").fetchone()
        conn.execute("ROLLBACK")
    inventory = from_toc(toc, source="pg_dump --schema-only", large_objects=[(int(o), str(w)) for o, w in rows])
    inventory["pg_dump"] = inventory["pg_dump"] or tool_version("pg_dump")
    inventory["captured_by"] = str(user[0]) if user else None
    return inventory


class InventoryUnavailable(RuntimeError):
    """pg_dump could not list the database's objects."""


# --- comparison ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Difference:
    """One entry that differs, in words: what, how, and the statement that restores the backup's definition."""

    key: str
    kind: str
    subject: str  # the key of the object it belongs to, or its own key
    change: str  # "missing" | "extra" | "changed" | "owner" | "layout" (LAYOUT_ONLY: a note unless --strict)
    name: str  # the object's own name, for explanations that name it
    text: str

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "kind": self.kind, "subject": self.subject, "change": self.change,
                "name": self.name, "text": self.text}


@dataclass(frozen=True)
class Result:
    exact: bool  # definitions compared (same pg_dump and server majors), or only objects and owners
    how: str  # which comparison applied and why, for the item's reason
    compared: int  # entries in the backup's inventory
    differences: list[Difference]


DIFF_LINES = 24
FIX_CHARS = 600

# Layout-only statements: how a table's rows are placed on disk, never what a query returns, who may read it or how
# the server maintains it (docs/checks.md "Layout-only differences"). pg_dump writes each as a statement of its own:
# a column's storage strategy (TOAST placement), its compression method (how new values are compressed; old ones
# are read either way), and the index a table was last CLUSTERed on (the order of its pages is not data). A
# difference made only of these is a note, not a failure (``--strict-layout`` makes it one). Identifiers are matched as
# pg_dump writes them (quoted or plain), so a name holding a newline or ";" cannot end a statement early.
_IDENT = r'(?:"(?:[^"]|"")*"|[A-Za-z_][A-Za-z0-9_$]*)'
_REL = rf"{_IDENT}(?:\.{_IDENT})?"
LAYOUT_ONLY = {
    "column storage strategy": rf"ALTER TABLE ONLY {_REL} ALTER COLUMN {_IDENT} SET STORAGE "
                               r"(?:PLAIN|EXTERNAL|EXTENDED|MAIN|DEFAULT);",
    "column compression method": rf"ALTER TABLE ONLY {_REL} ALTER COLUMN {_IDENT} SET COMPRESSION {_IDENT};",
    "clustered-index mark": rf"ALTER TABLE {_REL} CLUSTER ON {_IDENT};",
}
_LAYOUT = re.compile("|".join(f"^(?:{p})$" for p in LAYOUT_ONLY.values()), re.M)
_LAYOUT_KINDS = frozenset({"TABLE", "INDEX"})  # where pg_dump writes them (a column's, an index's entry)


def _without_layout(text: str) -> str:
    return "\n".join(line for line in _LAYOUT.sub("", text).splitlines() if line.strip())


def _cut(text: str, limit: int = FIX_CHARS) -> str:
    """A definition as a fix: at most ``limit`` characters, its lines indented under the difference."""
    text = text if len(text) <= limit else text[:limit] + " …"
    return text.strip().replace("\n", "\n      ")


def compare(src: Inventory, dst: Inventory, *, suite_extensions: tuple[str, ...] = (),
            dbname: str | None = None) -> Result:
    """Entry by entry: missing from the restore, extra in it, defined differently, owned by another role.

    Definitions are compared when both inventories were written by the same pg_dump major from servers of the same
    major: pg_dump writes some definitions differently per version. Otherwise objects and owners are compared, and
    ``how`` says so. ``suite_extensions``: extensions this run installed into its own copy (amcheck); ``dbname``:
    the restored database's name, for the words.
    """
    same_dump = _major(src["pg_dump"]) == _major(dst["pg_dump"]) and _major(src["server"]) == _major(dst["server"])
    exact = bool(same_dump and src["pg_dump"] and src["server"])
    if exact:
        how = (f"pg_dump's inventory: {len(src['entries'])} objects of the backup compared with the restore by name, "
               f"owner and definition (both written by pg_dump {_major(src['pg_dump'])} from PostgreSQL "
               f"{_major(src['server'])})")
    else:
        how = (f"pg_dump's inventory: {len(src['entries'])} objects of the backup compared with the restore by name "
               f"and owner; definitions not compared, because the backup's were written by pg_dump "
               f"{_major(src['pg_dump']) or 'unknown'} from PostgreSQL {_major(src['server']) or 'unknown'} and the "
               f"restore's by pg_dump {_major(dst['pg_dump'])} from PostgreSQL {_major(dst['server'])}, which write "
               "some definitions differently")
    a, b = src["entries"], dst["entries"]
    a_defs: dict[str, str] | None = None
    b_defs: dict[str, str] | None = None

    def defs() -> tuple[dict[str, str], dict[str, str]]:
        nonlocal a_defs, b_defs
        if a_defs is None or b_defs is None:  # unpacked only when something differs: a faithful restore pays nothing
            a_defs, b_defs = definitions(src), definitions(dst)
        return a_defs, b_defs

    verifier = dst.get("captured_by")
    if verifier and verifier != src.get("captured_by"):
        mine: re.Pattern[str] | None = re.compile(
            rf"^(GRANT|REVOKE) .* (TO|FROM) {re.escape(_quoted(verifier))}( WITH GRANT OPTION)?;$")
    else:
        mine = None

    def without_verifier(key: str) -> str:
        """The restore's definition without the grants to the role that verifies it (README: least privileges)."""
        text = defs()[1].get(key, "")
        return "\n".join(line for line in text.splitlines() if not (mine and mine.match(line))).strip()

    ours = {key_of("EXTENSION", None, x) for x in suite_extensions}
    ours |= {key_of("COMMENT", None, f"EXTENSION {x}") for x in suite_extensions}
    out: list[Difference] = []
    # An object missing because what it depends on is missing (a dropped table's indexes, comments, sequence) is
    # said once, with that object: one cause, one difference.
    missing = {key for key in a if key not in b}
    followers: dict[str, list[str]] = {}
    for key in missing:
        cause = next((dep for dep in a[key].get("deps", []) if dep in missing and dep != key), None)
        if cause is not None:
            followers.setdefault(cause, []).append(key)

    def with_followers(key: str) -> list[str]:
        found, todo = [], list(followers.get(key, []))
        while todo:
            follower = todo.pop()
            if follower not in found:
                found.append(follower)
                todo += followers.get(follower, [])
        return found

    caused = {k for keys in followers.values() for k in keys}
    for key, s in a.items():
        d = b.get(key)
        subject = s["subject"] or key
        if d is None and key in caused:
            continue
        if d is None:
            fix = defs()[0].get(key, "")
            gone = with_followers(key)
            also = (f" With it, {len(gone)} object(s) that depend on it: "
                    f"{', '.join(label(a[k]) for k in gone[:5])}{' …' if len(gone) > 5 else ''}." if gone else "")
            if s["kind"] == LARGE_OBJECTS:
                out.append(Difference(key, s["kind"], subject, "missing", s["name"],
                                      f"{_lo_words(fix, '')} Fix: restore the large objects from the backup "
                                      f"(pg_restore restores them with the data; --no-blobs / -s leave them out)."))
                continue
            out.append(Difference(key, s["kind"], subject, "missing", _own_name(s),
                                  f"{label(s)} is missing from the restore.{also}"
                                  + (f" Fix: {_cut(fix)}" if fix else "")))
        elif s["kind"] == LARGE_OBJECTS and s["digest"] != d["digest"]:
            a_text, b_text = defs()[0].get(key, ""), defs()[1].get(key, "")
            out.append(Difference(key, s["kind"], subject, "changed", s["name"], _lo_words(a_text, b_text)))
        elif exact and s["digest"] != d["digest"] and not (
                mine and s["kind"] == "ACL" and without_verifier(key) == defs()[0].get(key, "").strip()):
            a_text, b_text = defs()[0].get(key, ""), defs()[1].get(key, "")
            diff = list(difflib.unified_diff(a_text.splitlines(), b_text.splitlines(), "backup", "restore",
                                             lineterm="", n=1))[2:]
            shown = "\n".join(f"      {line}" for line in diff[:DIFF_LINES])
            more = f"\n      … and {len(diff) - DIFF_LINES} more line(s)" if len(diff) > DIFF_LINES else ""
            if s["kind"] in _LAYOUT_KINDS and _without_layout(a_text) == _without_layout(b_text):
                kinds = [what for what, pattern in LAYOUT_ONLY.items()
                         if sorted(re.findall(f"(?m)^{pattern}$", a_text))
                         != sorted(re.findall(f"(?m)^{pattern}$", b_text))]
                out.append(Difference(key, s["kind"], subject, "layout", _own_name(s),
                                      f"{label(s)} differs in layout only ({', '.join(kinds)}):\n{shown}{more}"))
                continue
            out.append(Difference(key, s["kind"], subject, "changed", _own_name(s),
                                  f"{label(s)} is defined differently in the restore:\n{shown}{more}\n"
                                  f"    Fix (the backup's definition): {_cut(a_text)}"))
        elif s["owner"] != d["owner"]:
            out.append(Difference(key, s["kind"], subject, "owner", _own_name(s),
                                  f"{label(s)} is owned by {d['owner'] or 'nobody'} in the restore, by "
                                  f"{s['owner']} in the backup. Fix: ALTER … OWNER TO "
                                  f"{sql.Identifier(s['owner']).as_string() if s['owner'] else '…'};"))
    for key, d in b.items():
        if key in a or key in ours or (mine and d["kind"] == "ACL" and not without_verifier(key)):
            continue
        out.append(Difference(key, d["kind"], d["subject"] or key, "extra", _own_name(d),
                              f"{label(d)} is in the restore but not in the backup." if d["kind"] != LARGE_OBJECTS
                              else _lo_words("", defs()[1].get(key, ""))))
    if dbname:  # the database's own name was read as a placeholder to compare; the words and fixes name it
        out = [Difference(d.key, d.kind, d.subject, d.change, d.name,
                          d.text.replace(":dbname", _quoted(dbname))) for d in out]
    return Result(exact=exact, how=how, compared=len(a), differences=out)


def _own_name(entry: Entry) -> str:
    """The object's own name, as a catalog comparison would mention it (``r1`` of ``parent r1``)."""
    return entry["name"].rsplit(" ", 1)[-1].split("(", 1)[0] or entry["name"]


def _lo_words(backup: str, restore: str) -> str:
    a, b = set(backup.split()), set(restore.split())
    missing, extra = sorted(a - b, key=int), sorted(b - a, key=int)
    parts = []
    if missing:
        parts.append(f"{len(missing)} large object(s) of the backup are missing from the restore (ids "
                     f"{listed(missing)})")
    if extra:
        parts.append(f"{len(extra)} large object(s) are in the restore but not in the backup (ids {listed(extra)})")
    return "; ".join(parts) + "." if parts else "large objects differ."


# Where the catalog comparisons of schema_matches word a kind's differences (its tests by category). A kind not
# listed here is not missed: it gets a test of its own, named after it ("aggregate", "cast", "rule" …).
CATEGORY_OF = {
    "FUNCTION": "functions", "PROCEDURE": "functions", "VIEW": "views", "TYPE": "types", "DOMAIN": "types",
    "SCHEMA": "schemas", "EXTENSION": "extensions", "SEQUENCE": "sequences", "SEQUENCE OWNED BY": "sequences",
    "DEFAULT ACL": "default_privileges", "EVENT TRIGGER": "event_triggers", "PUBLICATION": "publications",
    "PUBLICATION TABLE": "publications", "PUBLICATION TABLES IN SCHEMA": "publications", "DATABASE": "database",
    "DATABASE PROPERTIES": "database", LARGE_OBJECTS: "large_objects",
}


def route(key: str, entries: dict[str, Entry], tables: set[str]) -> str:
    """The schema_matches test that reports an entry: its table's (``schema.name``), its category's, or its
    kind's. An entry about another object (an ACL, a comment, an index, a rule) goes where that object goes."""
    seen: set[str] = set()
    while key in entries and entries[key]["subject"] and key not in seen:
        seen.add(key)
        key = entries[key]["subject"]
    entry = entries.get(key)
    if entry is None:
        return "objects"
    kind = entry["kind"]
    qualified = f"{entry['schema']}.{entry['name']}"
    if kind in RELATION_KINDS and kind != "VIEW" and (qualified in tables or not tables):
        return qualified
    return CATEGORY_OF.get(kind) or kind.lower()


def load_result(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def write_result(result: Result, routes: dict[str, str], path: Path, *, source: str) -> None:
    """The comparison as the checks read it: each difference with the test (``route``) that reports it."""
    path.write_text(json.dumps({
        "exact": result.exact, "how": result.how, "compared": result.compared, "source": source,
        "routes": sorted(set(routes.values())),
        "differences": [d.as_dict() | {"route": routes[d.key]} for d in result.differences],
    }, indent=1, sort_keys=True))
