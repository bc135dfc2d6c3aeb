"""How two manifests differ, in a DBA's words: a table's schema, named objects' definitions (as what changed,
never both texts whole), the buckets of a table whose content differs, large objects."""

from __future__ import annotations

import difflib
from typing import Any

from psycopg import sql

from restore.compare import fidelity
from restore.compare.manifest import LargeObjects, TableEntry, normal
from restore.hints import listed


def compare_table(name: str, src: TableEntry, dst: TableEntry) -> list[str]:
    """Every schema difference of one table, each naming the object and both sides."""
    diffs: list[str] = []
    detached = bool(src.get("partition_of")) and not dst.get("partition_of")
    if src["kind"] != dst["kind"]:
        diffs.append(f"{name}: relation kind was {src['kind']!r}, is {dst['kind']!r}")
    src_cols = {c["name"]: c for c in src["columns"]}
    dst_cols = {c["name"]: c for c in dst["columns"]}
    for col, s in src_cols.items():
        d = dst_cols.get(col)
        if d is None:
            diffs.append(f"column {name}.{col} ({s['type']}) is missing")
            continue
        for key, label in (("type", "type"), ("not_null", "nullability"), ("default", "default"),
                           ("identity", "identity"), ("generated", "generated"), ("collation", "collation")):
            if normal(str(s.get(key))) != normal(str(d.get(key))):
                fix = ""
                if key == "default":  # the one column property with a statement that cannot lose data
                    column = f"ALTER TABLE {_table_sql(name)} ALTER COLUMN {sql.Identifier(col).as_string()}"
                    fix = (f". Fix: {column} SET DEFAULT {s['default']};" if s.get("default") else
                           f". Fix: {column} DROP DEFAULT;")
                diffs.append(f"column {name}.{col}: {label} was {_column_words(key, s.get(key))}, is "
                             f"{_column_words(key, d.get(key))}{fix}")
    diffs += [f"column {name}.{col} ({d['type']}) is not in the backup" for col, d in dst_cols.items()
              if col not in src_cols]
    if [c["name"] for c in src["columns"]] != [c["name"] for c in dst["columns"]] and set(src_cols) == set(dst_cols):
        diffs.append(f"{name}: column order changed (row checksums depend on it)")
    for kind in ("constraints", "indexes", "triggers"):
        label = kind[:-1] if kind != "indexes" else "index"
        for obj, s in src[kind].items():
            d = dst[kind].get(obj)
            if d is None:
                diffs.append(f"{label} {obj} on {name} is missing (was: {s['definition']})")
            elif normal(s["definition"]) != normal(d["definition"]):
                diffs.append(f"{label} {obj} on {name} is defined differently in the restore"
                             f"{text_change(str(s['definition']), str(d['definition']))}")
            elif kind == "triggers" and s["enabled"] != d["enabled"]:
                diffs.append(f"trigger {obj} on {name} was {fidelity.trigger_state(s['enabled'])} in the backup, is "
                             f"{fidelity.trigger_state(d['enabled'])} in the restore. Fix: ALTER TABLE "
                             f"{_table_sql(name)} {_TRIGGER_FIX.get(s['enabled'], 'ENABLE')} TRIGGER "
                             f"{sql.Identifier(obj).as_string()};")
        if detached:
            continue  # a detached partition keeps its own copies of the parent's keys and triggers: not new objects
        diffs += [f"{label} {obj} on {name} is not in the backup ({d['definition']})"
                  for obj, d in dst[kind].items() if obj not in src[kind]]
    if src["kind"] == "m" and src.get("populated") is False and dst.get("populated"):
        # (the opposite, rows lost, is row_counts' finding)
        diffs.append(f"materialized view {name} was not populated (WITH NO DATA) in the backup, is populated in the "
                     f"restore: it answers queries the backup's refused. Fix: REFRESH MATERIALIZED VIEW "
                     f"{_table_sql(name)} WITH NO DATA;")
    for part in src["partitions"]:
        if part not in dst["partitions"]:
            diffs.append(f"partition {part} of {name} is missing (dropped, or detached from {name})")
    parent = src.get("partition_of")
    if parent and not dst.get("partition_of"):
        diffs.append(f"{name} is detached from {parent}: its rows no longer show in {parent}"
                     f" (was {src.get('partition_bound')}). Fix: ALTER TABLE {_table_sql(parent)} ATTACH "
                     f"PARTITION {_table_sql(name)} {src.get('partition_bound')};")
    elif src.get("partition_bound") != dst.get("partition_bound"):
        diffs.append(f"{name}: partition bound was {src.get('partition_bound')!r}, is {dst.get('partition_bound')!r}")
    return diffs


_TRIGGER_FIX = {"O": "ENABLE", "D": "DISABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}


def _table_sql(name: str) -> str:
    schema, _, table = name.partition(".")
    return sql.Identifier(schema, table).as_string()


def _column_words(key: str, value: Any) -> str:
    """A column property as a DBA says it ("the database default", not None)."""
    if key == "collation":
        return "the type's default collation" if value is None else repr(value)
    if key == "default":
        return "no default" if value is None else repr(value)
    if key == "identity":
        return {"": "not an identity", "a": "GENERATED ALWAYS AS IDENTITY", "d": "GENERATED BY DEFAULT AS IDENTITY"
                }.get(value or "", repr(value))
    if key == "generated":
        return {"": "not generated", "s": "GENERATED ALWAYS AS (…) STORED", "v": "GENERATED ALWAYS AS (…) VIRTUAL"
                }.get(value or "", repr(value))
    if key == "not_null":
        return "NOT NULL" if value else "nullable"
    return repr(value)


CHANGE_CONTEXT_WORDS = 8


CHANGE_LINES = 12


def text_change(before: str, after: str) -> str:
    """What changed between two definitions, not both whole: the lines that differ (a unified diff) for texts of
    several lines, else the words that differ with a little context, as ``…ctx [-old-] {+new+} ctx…``."""
    a, b = before.splitlines(), after.splitlines()
    if len(a) > 1 or len(b) > 1:
        diff = list(difflib.unified_diff(a, b, "backup", "restore", lineterm="", n=1))[2:]
        shown = diff[:CHANGE_LINES] + ([f"… and {len(diff) - CHANGE_LINES} more line(s)"]
                                       if len(diff) > CHANGE_LINES else [])
        return ":\n" + "\n".join(f"      {line}" for line in shown)
    wa, wb = before.split(), after.split()
    p = 0
    while p < min(len(wa), len(wb)) and wa[p] == wb[p]:
        p += 1
    s = 0
    while s < min(len(wa), len(wb)) - p and wa[len(wa) - 1 - s] == wb[len(wb) - 1 - s]:
        s += 1
    pre = " ".join(wa[max(0, p - CHANGE_CONTEXT_WORDS):p])
    post = " ".join(wa[len(wa) - s:len(wa) - s + CHANGE_CONTEXT_WORDS])
    old, new = " ".join(wa[p:len(wa) - s]), " ".join(wb[p:len(wb) - s])
    return (f": {'…' if p > CHANGE_CONTEXT_WORDS else ''}{pre} [-{old}-] {{+{new}+}} {post}"
            f"{'…' if s > CHANGE_CONTEXT_WORDS else ''}").replace("  ", " ")


def compare_named(kind: str, src: dict[str, Any], dst: dict[str, Any], *, definitions: bool = True) -> list[str]:
    """Views, functions, types: missing, extra or redefined (by normalized definition). ``definitions``: False
    between servers of different majors, which print some definitions differently (PostgreSQL 15 qualifies a
    view's columns, 16 does not): pg_dump's inventory says which comparison applied."""
    diffs = [f"{kind} {name} is missing" for name in src if name not in dst]
    for name, s in src.items():
        d = dst.get(name)
        if definitions and d is not None and s["definition_md5"] != d["definition_md5"]:
            # What changed, not both texts whole (a function's body runs to thousands of characters); the backup's
            # definition is in its manifest.
            diffs.append(f"{kind} {name} is defined differently in the restore"
                         f"{text_change(str(s['definition']), str(d['definition']))}")
    diffs += [f"{kind} {name} is not in the backup" for name in dst if name not in src]
    return diffs


def bucket_differences(src: TableEntry, dst: TableEntry, *, limit: int = 5) -> list[str]:
    """Where two tables' contents differ: the buckets whose count or checksum differ, as key ranges or hashes."""
    a, b = src.get("buckets"), dst.get("buckets")
    if not a or not b:
        return []
    spec = {k: v for k, v in a.items() if k not in ("counts", "sums")}
    if spec != {k: v for k, v in b.items() if k not in ("counts", "sums")}:
        return []
    n, cols = int(a["n"]), ", ".join(a["columns"])
    out = []
    for i in range(n + 1):
        if a["counts"][i] == b["counts"][i] and a["sums"][i] == b["sums"][i]:
            continue
        if i == n:
            where = f"rows whose {cols} is NULL"
        elif a["by"] == "range":
            lo, span = int(a["lo"]), int(a["hi"]) - int(a["lo"]) + 1
            first, last = lo + -(-i * span // n), lo + -(-(i + 1) * span // n) - 1
            where = f"rows with {cols} from {first} to {last}" + (" (and below)" if i == 0 else "") + (
                " (and above)" if i == n - 1 else "")
        else:
            what = "primary key" if a["by"] == "key" else "first column"
            where = f"rows whose {what} ({cols}) hashes to bucket {i} of {n}"
        change = ("different content" if a["counts"][i] == b["counts"][i]
                  else f"{b['counts'][i]} rows instead of {a['counts'][i]}")
        out.append(f"{where}: {change}")
    return out[:limit] + ([f"and {len(out) - limit} more bucket(s)"] if len(out) > limit else [])


def large_object_differences(src: LargeObjects, dst: LargeObjects, *, limit: int = 10) -> tuple[list[str], int]:
    """Large objects whose content differs or is gone (named by oid), and how many were compared."""
    a, b = src["objects"], dst["objects"]
    missing = sorted((o for o in a if o not in b), key=int)
    changed = sorted((o for o, e in a.items() if o in b and e["md5"] and b[o]["md5"] and e["md5"] != b[o]["md5"]),
                     key=int)
    out = []
    if missing:
        out.append(f"{len(missing)} large object(s) of the backup are gone from the restore, with their content: "
                   f"ids {listed(missing, limit=limit)}")
    if changed:
        out.append(f"{len(changed)} large object(s) hold other bytes than in the backup: ids "
                   f"{listed(changed, limit=limit)}. Fix: restore them from the backup (pg_restore restores large "
                   "objects with the data)")
    compared = sum(1 for o, e in a.items() if e["md5"] and o in b and b[o]["md5"])
    return out, compared
