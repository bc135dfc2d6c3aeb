"""The end of a recovery to the end of its WAL is proven only by a listing that holds what recovery replayed.

PostgreSQL takes the first WAL segment its restore command cannot fetch for the end of the archive and promotes; the
suite then holds where recovery stopped against the archive's listing. A listing that is empty, of another prefix,
or cut short proves nothing: the end stays unproven (restore_succeeded incomplete), never proven. Exercised here
without a server (the server's log and its replay position are the inputs); the end-to-end runs are in
test_physical.py, test_pgbackrest.py and test_barman_cloud.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from restore.backups import barman, physical

A, B, C, D, E = (f"00000001000000000000000{n}" for n in "34567")
LOG = "".join(f'LOG:  restored log file "{n}" from archive\n' for n in (A, B, C)) + \
    "LOG:  selected new timeline ID: 2\n"
REPLAYED = "0/5000060"  # inside C
COMMIT = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


def _judge(held: set[str], log: str = LOG) -> tuple[bool, str]:
    return physical.judge_end(log, "the WAL archive /wal", held, replayed_to=REPLAYED, last_commit=COMMIT)


@pytest.mark.parametrize("held", [set(), {A, B}, {"00000001000000000000000A", "00000001000000000000000B"}],
                         ids=["empty", "lacks-the-last", "another-archive"])
def test_a_listing_without_the_replayed_segments_never_proves_the_end(held: set[str]) -> None:
    proven, words = _judge(held)
    assert not proven
    assert "could not be proven" in words, words
    assert "the WAL archive /wal" in words, words
    assert f"stopped at segment {C}" in words, words


def test_a_foreign_listing_with_newer_segments_is_not_taken_for_a_gap() -> None:
    """Newer segments in a listing that does not hold what was replayed are not evidence of a gap either."""
    proven, words = _judge({A, E})
    assert not proven, words
    assert "lacks 2 of the 3" in words, words


def test_recovery_that_took_nothing_from_the_archive_proves_nothing_about_it() -> None:
    proven, words = _judge({A, B, C}, log="LOG:  selected new timeline ID: 2\n")
    assert not proven, words
    assert "took no WAL segment" in words, words


def test_a_listing_that_holds_the_replayed_segments_proves_the_end_or_names_the_gap() -> None:
    proven, words = _judge({A, B, C})
    assert proven, words
    assert f"up to segment {C}" in words, words
    with pytest.raises(physical.RecoveryFailed, match=f"segment {D} is missing"):
        _judge({A, B, C, E})


@pytest.mark.parametrize("kind", ["directory", "pgBackRest", "Barman Cloud"])
def test_an_archive_that_cannot_be_listed_leaves_the_end_unproven(kind: str) -> None:
    """Every archive kind's listing failure (pgBackRest's repo-ls, S3, a directory gone): unproven, in words."""
    def listing() -> set[str] | None:
        raise physical.ArchiveUnreadable(f"{kind} listing failed")

    proven, words = physical.prove_end("dbname=unused", LOG, f"the {kind} archive", listing)
    assert not proven, words
    assert f"{kind} listing failed" in words, words


def test_an_empty_directory_archive_is_listed_as_empty(tmp_path: Path) -> None:
    assert physical.archived_names(tmp_path) == set()
    assert not _judge(physical.archived_names(tmp_path))[0]


@pytest.mark.parametrize(("url", "expected"), [
    ("s3://pg-backups/plugin//billing-2025", ("pg-backups", "plugin/billing-2025/wals")),
    ("s3://pg-backups/plugin/billing-2025", ("pg-backups", "plugin/billing-2025/wals")),
    ("s3://pg-backups//billing-2025", ("pg-backups", "billing-2025/wals")),
    ("s3://pg-backups/billing-2025/", ("pg-backups", "billing-2025/wals")),
])
def test_barman_cloud_prefixes_are_built_as_barman_builds_them(url: str, expected: tuple[str, str]) -> None:
    assert barman.s3_prefix(url, "wals") == expected


def test_barman_cloud_backups_are_ordered_by_when_they_ended_not_by_their_text() -> None:
    """Across a daylight-saving change: 03:10+02:00 is 01:10 UTC, before 01:30+00:00 (as text it sorts after)."""
    listed = [{"backup_id": "newer", "end_time_iso": "2026-03-29T01:30:00+00:00"},
              {"backup_id": "older", "end_time_iso": "2026-03-29T03:10:00+02:00"}]
    assert [b["backup_id"] for b in barman.by_end_time(listed)] == ["older", "newer"]
