"""The run's effective configuration: what the options resolved to, before anything starts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from restore.backups.retention import RetentionPolicy
from restore.backups.sources import Source
from restore.errors import ConfigError
from restore.targets.base import TargetSpec

DEPTHS = ("quick", "standard", "full")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h|hr|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400, None: 1}


def parse_duration(value: str, where: str) -> float:
    m = _DURATION.match(value)
    if not m:
        raise ConfigError.invalid("duration", value, where, "Write it as 90s, 15min, 1h or a number of seconds.")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


@dataclass(frozen=True)
class Tolerance:
    """How far a live baseline's row count may be from the restored one: a share, or a number of rows."""

    share: float = 0.0
    rows: int = 0

    def accepts(self, expected: int, actual: int) -> bool:
        return abs(actual - expected) <= max(self.rows, int(expected * self.share))

    def __str__(self) -> str:
        return f"{self.share:.2%}" if self.share else f"{self.rows} rows"


def parse_tolerance(value: str, where: str) -> Tolerance:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", value)
    if not m:
        raise ConfigError.invalid("tolerance", value, where, "Write it as a share (1%) or a number of rows (500).")
    return Tolerance(share=float(m.group(1)) / 100) if m.group(2) else Tolerance(rows=int(float(m.group(1))))


@dataclass(frozen=True)
class RestoreConfig:
    """The run's effective configuration, resolved once from flags, environment and ini (fixtures/options.py)."""

    source: Source | None  # --backup, classified once
    target: TargetSpec
    targets_file: Path
    expectations: Path
    keep_target: bool
    allowed_errors: tuple[str, ...]
    restore_jobs: int
    globals_file: Path | None
    rto_s: float
    rpo_s: float
    backup_time: datetime | None
    reports_dir: Path
    result_json: Path | None
    statement_timeout_s: float
    manifest: Path | None = None
    baseline: TargetSpec | None = None
    baseline_tolerance: Tolerance = Tolerance(share=0.01)
    depth: str = "standard"
    retention: RetentionPolicy | None = None
    stop_app: bool = False
    record: Path | str | None = None  # a path, or s3://bucket/key; None: --no-record
    operator: str | None = None
    max_count_drop: float = 0.05
    accept_inherited: tuple[str, ...] = ()
    lock_timeout_s: float = 30.0
    record_key: str | None = None
    ticket: str | None = None
    metrics: Path | None = None  # --metrics: the Prometheus textfile to write
    heartbeat: str | None = None  # --heartbeat: a healthchecks.io-style URL (may hold a token: never printed)
    pushgateway: str | None = None  # --pushgateway: a Prometheus Pushgateway's URL (its host only is ever printed)
    parallel_workers: int | None = None  # --parallel-workers: per verification session
    label: str | None = None  # --label: what this run verifies, by name (a fleet's database)
    batch_size: int = 100  # --batch-size: objects per test where a check has more (0: one test per object)
    strict: bool = False  # --strict-layout: layout-only differences fail schema_matches (otherwise a note)
    server_dir: Path | None = None  # --server-dir: where the embedded server writes its cluster (default: TMPDIR)

    def _recovery_note(self) -> str:
        return f" recovery_target={self.source.recovery}" if self.source and self.source.physical else ""

    @property
    def session_parallel_workers(self) -> int | None:
        """max_parallel_workers_per_gather of every verification session: --parallel-workers, else the cores of a
        server this run owns; None leaves an existing database's own setting (PostgreSQL's default: 2)."""
        return self.parallel_workers if self.parallel_workers is not None else self.target.verification_workers

    def header_lines(self) -> list[str]:
        return [
            f"restore-verify: target={self.target.name} ({self.target.kind}: {self.target.redacted()})",
            f"restore-verify: backup={self.source.spec if self.source else None}{self._recovery_note()} "
            f"globals={self.globals_file} "
            f"jobs={self.restore_jobs} expectations={self.expectations}",
            f"restore-verify: rto={self.rto_s:g}s rpo={self.rpo_s:g}s statement_timeout={self.statement_timeout_s:g}s "
            f"lock_timeout={self.lock_timeout_s:g}s "
            f"parallel_workers={_or_default(self.session_parallel_workers)} "
            f"allowed_errors={list(self.allowed_errors)}",
            f"restore-verify: depth={self.depth}{' strict_layout' if self.strict else ''} manifest={self.manifest} "
            "baseline="
            f"{self.baseline.redacted() if self.baseline else None} baseline_tolerance={self.baseline_tolerance}",
        ]




def _or_default(workers: int | None) -> str:
    return "the server's default" if workers is None else str(workers)
