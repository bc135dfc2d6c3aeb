"""``python -m restore backup``: ``pg_dump -Fc`` and its manifest from one exported snapshot.

It takes a dump (what ``restore.backups`` reads) and captures a manifest (what ``restore.compare`` does): a command
that uses both wings, like ``run``, so it stands beside ``run.py`` rather than in either wing.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from restore.backups.archive import inspect
from restore.compare import inventory
from restore.compare.capture import capture, export_snapshot, position_of
from restore.compare.manifest import write
from restore.tools import clean_env, pg_tool


def _sequence_values(conn: psycopg.Connection[Any]) -> dict[str, int | None]:
    rows = conn.execute(
        "SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences"
        " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
    ).fetchall()
    return {str(name): None if value is None else int(value) for name, value in rows}


def take_backup(conninfo: str, output: Path, *, jobs: int = 2, freshness_sql: str | None = None,
                pg_dump_args: tuple[str, ...] = (), progress: Callable[[str], None] | None = None,
                ) -> tuple[Path, Path]:
    """``pg_dump -Fc`` and the manifest, both from one exported snapshot: they describe the same data to the row.

    A REPEATABLE READ transaction exports its snapshot; pg_dump (``--snapshot``) and every manifest connection
    (``SET TRANSACTION SNAPSHOT``) import it, and the exporting transaction stays open until both are done.
    ``progress`` is told, every few seconds, how far both are (the dump's size so far, the tables hashed).
    """
    hashed: list[str] = []
    started = time.monotonic()
    stop = threading.Event()

    def say(prefix: str) -> None:
        if progress is not None:
            size = output.stat().st_size / 1e6 if output.exists() else 0.0
            progress(f"{prefix}pg_dump: {size:,.1f} MB written; manifest: {len(hashed)} table(s) hashed; "
                     f"{time.monotonic() - started:.0f} s")

    def tick() -> None:
        while not stop.wait(5.0):
            say("")

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        taken = _take_backup(conninfo, output, jobs=jobs, freshness_sql=freshness_sql, pg_dump_args=pg_dump_args,
                             on_table=hashed.append)
    finally:
        stop.set()
        ticker.join()
    say("done: ")
    return taken


def _take_backup(conninfo: str, output: Path, *, jobs: int, freshness_sql: str | None,
                 pg_dump_args: tuple[str, ...], on_table: Callable[[str], None]) -> tuple[Path, Path]:
    manifest_path = output.with_name(output.name + ".manifest.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(conninfo, autocommit=True, application_name="restore-verify backup") as leader:
        # Sequences are not transactional: pg_dump reads each one when it gets to it. Reading them before
        # pg_dump starts and after it ends brackets the values it dumped (for sequences that only move forward).
        before = _sequence_values(leader)
        row = export_snapshot(leader)
        snapshot, position = str(row["s"]), position_of(row)
        dump = subprocess.Popen(
            [str(pg_tool("pg_dump")), "-Fc", f"--snapshot={snapshot}", "-f", str(output), *pg_dump_args,
             "-d", conninfo],
            env=clean_env(), stderr=subprocess.PIPE, text=True,
        )
        try:
            manifest = capture(conninfo, jobs=jobs, snapshot=snapshot, freshness_sql=freshness_sql,
                               progress=on_table, objects=False)
        finally:
            _, stderr = dump.communicate()
        leader.execute("ROLLBACK")
        after = _sequence_values(leader)
    for name, entry in manifest["sequences"].items():
        entry["last_value"], entry["last_value_max"] = before.get(name), after.get(name)
    if position:
        manifest["position"] = position
    if dump.returncode != 0:
        raise RuntimeError(f"pg_dump failed (exit {dump.returncode}): {stderr.strip()}")
    # Identity: the run refuses this manifest beside any other backup (compared before restoring).
    manifest["backup"] = {"file": output.name, "size_bytes": output.stat().st_size,
                          "toc_digest": inspect(output).toc_digest()}
    manifest["inventory"] = inventory.of_archive(output)  # the dump's own list of objects: the same snapshot
    write(manifest, manifest_path)
    return output, manifest_path
