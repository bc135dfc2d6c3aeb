"""What a restore produced, as typed data: the outcome of the restore and the database the checks verify.

Both cross to xdist workers (restore/run.py serialises them with one codec); nothing here reads a string key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from restore.backups.archive import BackupSummary


@dataclass
class RestoreOutcome:
    """What happened; ``performed`` is False for an existing target (nothing restored, only verified)."""

    performed: bool = False
    logical: bool = False  # a dump was loaded with pg_restore or psql (not an RDS restore)
    refused: str | None = None  # why nothing usable was restored
    verifier_fault: bool = False  # ``refused`` is the verifier's own fault, not the backup's (the run is an error)
    exit_code: int | None = None
    errors: list[str] = field(default_factory=list)
    accepted_errors: list[str] = field(default_factory=list)
    phases_s: dict[str, float] = field(default_factory=dict)
    duration_s: float | None = None
    roles_created: list[str] = field(default_factory=list)
    globals_file: str | None = None
    jobs: int | None = None  # as configured (--restore-jobs)
    jobs_used: int | None = None  # pg_restore's --jobs (fewer for a tar archive or many small objects)
    jobs_reason: str | None = None  # why jobs_used is fewer than jobs
    pg_restore_version: str | None = None
    pg_restore_where: str | None = None  # "host (…)" or "container <image> (…)"
    command: str | None = None
    data_processed: list[str] = field(default_factory=list)
    data_failed: list[str] = field(default_factory=list)
    installed_extensions: list[str] = field(default_factory=list)
    log_path: str | None = None
    backup_spec: str | None = None
    fetched_checksum: str | None = None
    fetched_manifest: str | None = None
    diagnosis: list[str] = field(default_factory=list)  # what recognisable errors mean, in a DBA's words
    server_dir: str | None = None  # where a server of this run on this machine wrote the restored copy
    server_placement: str | None = None  # why there (in memory when small, else on disk), in words

    @property
    def clean_logical_restore(self) -> bool:
        """An error-free logical restore into a fresh cluster: every constraint and unique index it created
        was checked against all restored rows as it was created (ADD CONSTRAINT, CREATE UNIQUE INDEX)."""
        return (self.performed and self.logical and self.refused is None and self.exit_code == 0
                and not self.errors and not self.accepted_errors_in_restore)

    @property
    def accepted_errors_in_restore(self) -> list[str]:
        # Errors accepted while applying --globals (the bootstrap superuser already existing) create no object.
        return [e for e in self.accepted_errors if not e.startswith("[globals] ")]


@dataclass(frozen=True)
class PreparedDatabase:
    """The database the checks verify, and how it came to be."""

    target_name: str
    target_kind: str
    target_display: str
    conninfo: str | None  # may carry a password: never print it, print target_display
    dbname: str | None
    app_host: str | None
    app_port: int | None
    owned: bool  # a throwaway server of this run (the suite is its superuser)
    archive: BackupSummary | None
    restore: RestoreOutcome
    kept: tuple[str, ...] = ()  # with --keep-target: how to connect to the target, and how to remove it
    fetched_manifest: str | None = None  # the manifest that came with a remote backup (kept in the run folder)
    server_log: str | None = None  # the run's own server's log: a crash while the checks read is told from it
    server_log_from: int = 0  # its size when the restore ended: what the checks did is written after it

    @property
    def usable(self) -> bool:
        return self.conninfo is not None

    @cached_property
    def data_processed(self) -> frozenset[str]:
        """The TABLE DATA entries pg_restore processed, as a set built once (asked once per table)."""
        return frozenset(self.restore.data_processed)
