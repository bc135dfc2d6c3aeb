"""sequences: every serial/identity sequence will hand out a value beyond its column's max."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from fixtures.connections import Comparison
from fixtures.findings import Attribution
from fixtures.outcomes import not_applicable
from fixtures.params import Param, manifest_params, parameters
from restore import hints
from restore.backups.outcome import PreparedDatabase
from restore.compare.catalog import SequenceRow
from restore.compare.manifest import sequence_bounds
from restore.run import RunState
from restore.verify import sequence_state

pytestmark = pytest.mark.checklist("sequences")


@parameters('sequence', empty="no sequence feeds a column (no serial, identity or DEFAULT nextval(...) column)",
            needs_db=True)
def sequences(state: RunState) -> list[Param]:
    """One test per (sequence, column it feeds); a sequence shared by several columns is named with each."""
    uses: dict[tuple[str, str], int] = {}
    for s in state.catalog.sequences:
        uses[(s["schema"], s["name"])] = uses.get((s["schema"], s["name"]), 0) + 1

    def test_id(s: SequenceRow) -> str:
        seq = f"{s['schema']}.{s['name']}"
        return seq if uses[(s["schema"], s["name"])] == 1 else f"{seq}->{s['table_schema']}.{s['table']}.{s['column']}"

    return [pytest.param(s, id=test_id(s)) for s in state.catalog.sequences]


@parameters('manifest_sequence', empty="the manifest records no sequences", needs_db=True)
def manifest_sequences(state: RunState) -> list[Param] | str:
    return manifest_params(state, lambda src: [pytest.param({"sequence": s}, id=s) for s in src["sequences"]])


# PostgreSQL writes a sequence to the WAL this many fetches ahead (SEQ_LOG_VALS): a recovery resumes it there.
SEQUENCE_LOGGED_AHEAD = 32


@manifest_sequences
def test_sequence_matches_manifest(manifest_sequence: dict[str, Any], comparison: Comparison,
                                   restored_db: PreparedDatabase,
                                   record_property: Callable[[str, object], None]) -> None:
    """The sequence resumes where the backup left it (a reset or a lost setval shows here). A physical copy resumes
    an ascending sequence where its last WAL record left it: up to 32 increments past the value the manifest read
    (PostgreSQL logs a sequence 32 fetches ahead, and crash recovery skips them), never short of its column's max."""
    name = manifest_sequence["sequence"]
    src = comparison.source["sequences"][name]
    dst = comparison.restored["sequences"].get(name)
    owner_table = src["owned_by"].rsplit(".", 1)[0] if src["owned_by"] else None
    if dst is None and owner_table and owner_table not in comparison.restored["tables"]:
        not_applicable(f"{name} belongs to {owner_table}, which is missing altogether (see tables_present)")
    assert dst is not None, f"Sequence {name} is missing from the restored database ({comparison.label} has it)."
    if comparison.kind == "baseline":
        # A live source moves on: the restore may only be behind it, never ahead.
        assert (dst["last_value"] or 0) <= (src["last_value"] or 0) or src["increment"] < 0, (
            f"Sequence {name} is at {dst['last_value']} in the restore, ahead of the live baseline "
            f"({src['last_value']}): the restore did not come from this source."
        )
        return
    low, high = sequence_bounds(src)
    archive = restored_db.archive
    was_words = "while the dump ran"
    if (archive is not None and archive.recovery_target is not None and low is not None and high is not None
            and src["increment"] > 0):
        used = src.get("column_max")
        low = min(low, int(used)) if used is not None else low
        high += SEQUENCE_LOGGED_AHEAD * src["increment"]
        was_words = "its column's max to the value logged 32 fetches ahead, where a recovery resumes it"
    value = dst["last_value"]
    if low is None or high is None:  # never called in the backup: it must not have been called since
        within = value is None
    else:
        within = value is not None and low <= value <= high
    was = f"{low}" if low == high else f"between {low} and {high} ({was_words})"
    schema, _, seq = name.partition(".")
    fix = hints.setval_to(schema, seq, high) if high is not None else "restore the sequence from the backup"
    if not within:
        record_property("origin", "restore")  # the backup's manifest says where the sequence was
    now = "has handed out no value in the restore (restarted)" if value is None else f"is at {value} in the restore"
    assert within, (
        f"Sequence {name} {now} but was at {was} in the backup ({comparison.source_path}): "
        f"it was reset or its setval was lost. Fix: {fix}"
    )


@sequences
def test_sequence_ahead_of_column(
    sequence: dict[str, Any], restored_db: PreparedDatabase, db_conn: psycopg.Connection[Any],
    attribution: Attribution,
) -> None:
    """Otherwise the application's first INSERT fails with a duplicate key."""
    s = sequence
    state = sequence_state(db_conn, s)
    how = {"identity": "identity", "serial": "serial (OWNED BY)",
           "default": "named in the column's DEFAULT nextval(...), not OWNED BY it"}.get(s["kind"], s["kind"])
    fix = hints.setval(s["schema"], s["name"], s["column"], s["table_schema"], s["table"],
                       ascending=int(s["increment"]) > 0)
    note = "" if state.ok else attribution.settle(attribution.sequence(
        f"{s['schema']}.{s['name']}", f"{s['table_schema']}.{s['table']}"))
    if note is None:
        return  # inherited from the backup and accepted (--accept-inherited=sequences): listed, not hidden
    assert state.ok, (
        f"Sequence {s['schema']}.{s['name']} ({how}; feeds {s['table_schema']}.{s['table']}.{s['column']}) "
        f"would hand out {state.next_value} next, but the column already holds {state.column_extreme}: the next "
        f"INSERT that takes the default fails with a duplicate key (or breaks a key).{note} Fix: {fix}"
    )
