"""Fix hints printed with failures: SQL a DBA can paste as it is, for any identifier.

Every name goes through ``psycopg.sql`` (quoted where it must be), so a hint for a table named
``2019`` or ``"; DROP TABLE x; --`` is valid SQL that touches only the object it names.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql


def ident(*parts: str) -> str:
    """A (qualified) identifier as SQL text, quoted where needed."""
    return sql.Identifier(*parts).as_string()


def literal(value: str) -> str:
    return sql.Literal(value).as_string()


def _columns(columns: Sequence[str]) -> str:
    return ", ".join(ident(c) for c in columns)


def setval(seq_schema: str, seq: str, column: str, table_schema: str, table: str, *, ascending: bool = True) -> str:
    """Move the sequence past the column's extreme, never back (a sequence may feed several tables)."""
    agg, pick = ("max", "greatest") if ascending else ("min", "least")
    name = ident(seq_schema, seq)
    return (f"SELECT setval({literal(name)}, {pick}((SELECT {agg}({ident(column)}) FROM {ident(table_schema, table)}),"
            f" (SELECT last_value FROM {name})));")


def setval_to(seq_schema: str, seq: str, value: int) -> str:
    return f"SELECT setval({literal(ident(seq_schema, seq))}, {int(value)});"


def reindex(schema: str, index: str) -> str:
    return f"REINDEX INDEX {ident(schema, index)};"


def validate(schema: str, table: str, constraint: str) -> str:
    return f"ALTER TABLE {ident(schema, table)} VALIDATE CONSTRAINT {ident(constraint)};"


def add_primary_key(schema: str, table: str, columns: Sequence[str]) -> str:
    return f"ALTER TABLE {ident(schema, table)} ADD PRIMARY KEY ({_columns(columns)});"


def add_key(schema: str, table: str, name: str, key: dict[str, object]) -> str:
    """ADD CONSTRAINT for a recorded primary key, unique constraint or foreign key."""
    cols = _columns(key["columns"])  # type: ignore[arg-type]
    head = f"ALTER TABLE {ident(schema, table)} ADD CONSTRAINT {ident(name)}"
    if key["kind"] == "primary key":
        return f"{head} PRIMARY KEY ({cols});"
    if key["kind"] == "unique constraint":
        return f"{head} UNIQUE ({cols});"
    ref = ident(str(key["ref_schema"] or schema), str(key["ref_table"]))
    match = " MATCH FULL" if key.get("match_type") == "f" else ""
    return f"{head} FOREIGN KEY ({cols}) REFERENCES {ref} ({_columns(key['ref_columns'])}){match};"  # type: ignore[arg-type]


def enable_triggers(schema: str, table: str) -> str:
    return f"ALTER TABLE {ident(schema, table)} ENABLE TRIGGER ALL;"


def enforce(schema: str, table: str, constraint: str) -> str:
    return f"ALTER TABLE {ident(schema, table)} ALTER CONSTRAINT {ident(constraint)} ENFORCED;"


def refresh(schema: str, matview: str) -> str:
    return f"REFRESH MATERIALIZED VIEW {ident(schema, matview)};"


def grant(privilege: str, kind: str, obj: str, role: str) -> str:
    """obj as app.toml writes it: ``schema.table`` (quoted here like every other hint's names) or, for a function,
    its signature (SQL text, used as written)."""
    if kind.lower() in ("table", "sequence", "schema", "database") and '"' not in obj and obj.count(".") <= 1:
        obj = ident(*obj.split("."))
    return f"GRANT {privilege} ON {kind.upper()} {obj} TO {ident(role)};"


def listed(items: Sequence[str], *, limit: int = 10) -> str:
    """The first ``limit`` items, comma-separated, and an ellipsis when there are more."""
    return ", ".join(items[:limit]) + (" …" if len(items) > limit else "")
