"""Manifests: what a database holds — schema, exact counts, content checksums, sequences — as one JSON document.

A manifest captured from the source (ideally from the very snapshot the dump was taken from, see
:func:`restore.take_backup.take_backup`) and one captured, by the same code (:mod:`restore.compare.capture`), from
the restored copy are compared object by object (:mod:`restore.compare.comparison`). This module is the format: its
shape, its version, how it is written and read, and whether it can describe a given dump.

Content checksum: per table, in one scan, ``count(*)`` and ``sum(hashtextextended(t::text, 0))`` — an
order-independent sum of 64-bit hashes of each row's text form (sum of bigint is numeric: no overflow; a sum,
unlike XOR, does not cancel duplicate rows). A row's text form depends on session settings, which are pinned
(:data:`PINNED_SETTINGS`) so that the checksum is the same on any server of any supported major version;
the database encoding, column order and column types must match too (compared in the schema part).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, cast

from typing_extensions import TypedDict

from restore.backups.archive import ArchiveInfo
from restore.compare import fidelity, inventory
from restore.errors import ManifestMismatch

FORMAT = "restore-verify-manifest"


# 2: adds "behaviour" (privileges, ownership, row-level security, persistence, … see restore/compare/fidelity.py) and
# backup.toc_digest. 3: adds "inventory" (pg_dump's list of every object, restore/compare/inventory.py) and
# "large_objects" (each one's owner, privileges and content digest). Older manifests still verify; what they lack
# is reported as not recorded.
VERSION = 3


READABLE_VERSIONS = (1, 2, 3)


# Every setting that changes a value's text form, pinned per session. Measured: unpinned, 4 of 5 tables of a
# test database hashed differently between two servers whose defaults differed (TimeZone, DateStyle,
# extra_float_digits, bytea_output, IntervalStyle).
PINNED_SETTINGS: dict[str, str] = {
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "lc_monetary": "C",
    "xmlbinary": "base64",
    "xmloption": "content",
    # Definitions (pg_get_*def) qualify every name they print when no user schema is on the path.
    "search_path": "pg_catalog",
}


CHECKSUM_EXPRESSION = "count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text"


COUNT_ONLY_EXPRESSION = "count(*), NULL::text"  # --depth quick: counting costs a fraction of hashing


# The manifest document (JSON, format restore-verify-manifest; versions 1 and 2 read), typed as it is read: the
# keys a version-1 manifest lacks are optional (total=False), and every reader checks for them.

class DatabaseFacts(TypedDict, total=False):
    name: str
    encoding: str
    collate: str
    ctype: str
    server_version: str
    server_version_num: int
    size_bytes: int  # on disk when captured: what a restore needs room for (restore/session.py space_needed)


class TableEntry(TypedDict, total=False):
    kind: str
    owner: str | None
    partition_of: str | None
    partition_bound: str | None
    partition_key: str | None
    columns: list[dict[str, Any]]
    constraints: dict[str, dict[str, Any]]
    indexes: dict[str, dict[str, Any]]
    triggers: dict[str, dict[str, Any]]
    partitions: list[str]
    populated: bool  # materialized views
    row_count: int
    checksum: str | None
    buckets: dict[str, Any]


class SequenceEntry(TypedDict, total=False):
    last_value: int | None
    last_value_max: int | None  # read after pg_dump ended (python -m restore backup)
    increment: int
    owned_by: str | None
    column_max: int | None


class Freshness(TypedDict):
    query: str
    value: Any  # ISO 8601 text for a timestamp


class Position(TypedDict, total=False):
    """Where in the WAL, and when, the manifest's snapshot was taken."""

    lsn: str
    time: str  # ISO 8601
    exact: bool  # the snapshot sees exactly the commits before ``lsn`` (see :func:`export_snapshot`)


class LargeObject(TypedDict):
    owner: str
    acl: Any  # [[grantee, privilege, grantable], …]
    md5: str | None  # None: the capturing role could not read it


class LargeObjects(TypedDict):
    objects: dict[str, LargeObject]  # by oid
    unreadable: str | None  # why some contents could not be read (the fix: a GRANT)


class Manifest(TypedDict, total=False):
    format: str
    version: int
    captured_at: str
    snapshot: str | None
    database: DatabaseFacts
    settings: dict[str, str]
    checksum: dict[str, str]
    extensions: dict[str, str]
    schemas: list[str]
    roles: list[str]
    tables: dict[str, TableEntry]
    sequences: dict[str, SequenceEntry]
    views: dict[str, dict[str, Any]]
    functions: dict[str, dict[str, Any]]
    types: dict[str, dict[str, Any]]
    freshness: Freshness | None
    behaviour: fidelity.Behaviour
    backup: dict[str, Any]  # python -m restore backup: the dump it describes (file, size, toc_digest)
    position: Position  # the snapshot's place in the WAL and its time
    inventory: inventory.Inventory  # version 3: every object pg_dump writes (restore/compare/inventory.py)
    large_objects: LargeObjects  # version 3


def md5_of(text: str | None) -> str | None:
    return None if text is None else hashlib.md5(text.encode()).hexdigest()


def normal(text: str | None) -> str | None:
    return None if text is None else re.sub(r"\s+", " ", text).strip()


def write(manifest: Manifest, path: Path) -> None:
    """The manifest as JSON, one line per table (sequence, view …): streamed, so that the text of a 10,000-table
    manifest (~40 MB) is never held whole, and each line encoded by json's C encoder (``json.dump`` and any
    ``indent`` use its Python one, 5× slower)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def encoded(value: Any) -> str:
        return json.dumps(value, sort_keys=True, default=str)

    with path.open("w") as out:
        for i, key in enumerate(sorted(manifest)):
            value = manifest[key]  # type: ignore[literal-required]
            out.write(f"{'{' if i == 0 else ','}\n{encoded(key)}: ")
            if isinstance(value, dict) and value:
                for j, name in enumerate(sorted(value)):
                    out.write(f"{'{' if j == 0 else ','}\n {encoded(name)}: {encoded(value[name])}")
                out.write("\n}")
            else:
                out.write(encoded(value))
        out.write("\n}\n" if manifest else "{}\n")


# A parse this process will ask for again (load(..., keep=True)), with the file's identity when it was read.
_KEPT: dict[str, tuple[tuple[int, int, int], Manifest]] = {}


def _identity(path: Path) -> tuple[str, tuple[int, int, int]]:
    st = path.stat()
    return str(path.resolve()), (st.st_size, st.st_mtime_ns, st.st_ino)


def load(path: Path, *, keep: bool = False) -> Manifest:
    """The manifest at ``path``, checked. ``keep``: this process reads the same file again later (the controller
    checks a backup's manifest before its restore and compares with it after; a worker reads it while it waits
    for the restore): the next load takes this parse instead of parsing again (30 MB, 2.6 s at 10,000 tables),
    once, and only if the file is unchanged. That load owns it (it may change it); nothing else keeps it."""
    key, identity = _identity(path)
    kept = _KEPT.pop(key, None)
    data = kept[1] if kept is not None and kept[0] == identity else _parse(path)
    if keep:
        _KEPT[key] = (identity, data)
    return data


def _parse(path: Path) -> Manifest:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not complete JSON ({exc.msg} at line {exc.lineno}): truncated?") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"{path} is not a restore-verify manifest (versions {READABLE_VERSIONS} are read)")
    for key in ("tables", "sequences", "database"):
        if not isinstance(data.get(key), dict):
            raise ValueError(f"{path} has no {key!r} section: cut short or edited by hand")
    return cast(Manifest, data)  # its sections checked above; optional keys are checked where they are read


def check_belongs_to(manifest: Manifest, path: Path, archive: ArchiveInfo) -> None:
    """Raise :class:`ManifestMismatch` unless the manifest can describe this backup.

    A manifest from ``python -m restore backup`` carries its dump's table-of-contents digest: equal, it is the
    same schema. Otherwise (another format of the same database, an older manifest) the database names must
    agree where both are known, and most tables must be common to both: a restore that lost or gained a few
    tables is what the checks are for; two databases that share almost nothing are a mix-up.
    """
    recorded = (manifest.get("backup") or {}).get("toc_digest")
    if recorded and recorded == archive.toc_digest():
        return
    name = manifest["database"].get("name")
    described = f"database {name!r}" + (f" as dumped to {manifest['backup']['file']!r}"
                                        if (manifest.get("backup") or {}).get("file") else "")
    if name and archive.dbname and name != archive.dbname:
        raise ManifestMismatch.other_backup(path, described, f"database {archive.dbname!r}",
                                            "the database names differ")
    in_backup = set(archive.tables())
    in_manifest = {t for t, e in manifest["tables"].items() if e.get("kind") in ("r", "p", "f", None)}
    if in_backup and in_manifest:
        common = len(in_backup & in_manifest)
        if common * 2 < max(len(in_backup), len(in_manifest)):
            raise ManifestMismatch.other_backup(
                path, described, str(archive.path),
                f"only {common} of its {len(in_manifest)} tables are among the backup's {len(in_backup)}")


def sequence_bounds(entry: SequenceEntry) -> tuple[int | None, int | None]:
    """The range a restored sequence's last value may take: exact for a manifest read once, bracketed for one
    taken with ``take_backup`` (read before pg_dump started and after it ended)."""
    low, high = entry.get("last_value"), entry.get("last_value_max", entry.get("last_value"))
    return (low, high) if entry.get("increment", 1) > 0 else (high, low)
