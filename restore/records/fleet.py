"""Many databases, one monthly backup test: ``fleet.toml``, a Kubernetes Indexed Job, and who is overdue.

``fleet.toml``::

    [fleet]
    record = "s3://ecommerce-backups/restore-verify/record.jsonl"   # the shared record every run appends to
    parallelism = 4                 # databases verified at once (pods of the Indexed Job)
    overdue_after_days = 35         # a database without a complete passing run for this long is overdue
    targets_file = "/config/targets.toml"
    image = "registry.example.com/restore-verify:0.1.0"   # optional: the pods' image (default: the CronJob's)

    [databases.orders]              # one completion index per database, in the file's order
    backup = "s3://backups/orders/"
    backup_pick = "latest"
    target = "local"                # a name from the targets file, or local / docker
    expectations = "/app/expectations/orders"
    manifest = "/backups/orders.manifest.json"   # optional: else the one that comes with the backup
    args = ["--depth=standard"]     # optional: further pytest flags

Kubernetes schedules the work: ``python -m restore fleet render`` turns the CronJob of deploy/kubernetes into an
Indexed Job (one completion index per database, ``parallelism`` bounded) whose pods each run ``python -m restore
fleet run``: the ordinary suite for the database of their ``JOB_COMPLETION_INDEX``, labelled with its name
(``--label``) and recorded in the shared record (conditional writes keep concurrent appends whole).
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from restore.errors import ConfigError

FLEET_MOUNT = "/fleet"
JOB_NAME = "restore-verify-fleet"


@dataclass(frozen=True)
class FleetDatabase:
    name: str
    backup: str
    target: str = "local"
    backup_pick: str | None = None
    expectations: str | None = None
    manifest: str | None = None
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fleet:
    databases: tuple[FleetDatabase, ...]
    record: str
    parallelism: int = 2
    overdue_after_days: float = 35.0
    targets_file: str | None = None
    image: str | None = None  # the pods' image (default: the CronJob's, deploy/kubernetes: the Dockerfile's tag)

    def pytest_args(self, index: int) -> list[str]:
        """The suite's command line for the database at ``index`` (options written with ``=``)."""
        if not 0 <= index < len(self.databases):
            raise ConfigError(f"Completion index {index} is outside the fleet (0 to {len(self.databases) - 1}).")
        db = self.databases[index]
        args = ["-n", "auto", f"--backup={db.backup}", f"--target={db.target}", f"--record={self.record}",
                f"--label={db.name}"]
        args += [f"--backup-pick={db.backup_pick}"] if db.backup_pick else []
        args += [f"--targets-file={self.targets_file}"] if self.targets_file else []
        args += [f"--expectations={db.expectations}"] if db.expectations else []
        args += [f"--manifest={db.manifest}"] if db.manifest else []
        return [*args, *db.args]


def load(path: Path) -> Fleet:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"The fleet file {path} was not found.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}.") from exc
    head = data.get("fleet") or {}
    if not head.get("record"):
        raise ConfigError(f"{path} [fleet] needs record = \"s3://…/record.jsonl\": the record every run appends to "
                          "(and the one record --overdue reads).")
    databases = []
    for name, raw in (data.get("databases") or {}).items():
        where = f"{path} [databases.{name}]"
        if not raw.get("backup"):
            raise ConfigError(f"{where} needs backup = \"…\" (a path, s3://… or rds-snapshot:…).")
        databases.append(FleetDatabase(
            name=name, backup=str(raw["backup"]), target=str(raw.get("target", "local")),
            backup_pick=raw.get("backup_pick"), expectations=raw.get("expectations"), manifest=raw.get("manifest"),
            args=tuple(str(a) for a in raw.get("args", ()))))
    if not databases:
        raise ConfigError(f"{path} lists no [databases.NAME].")
    parallelism = int(head.get("parallelism", 2))
    if parallelism < 1:
        raise ConfigError.invalid("parallelism", parallelism, f"{path} [fleet]", "Use 1 or more.")
    return Fleet(tuple(databases), str(head["record"]), parallelism, float(head.get("overdue_after_days", 35)),
                 head.get("targets_file"), head.get("image"))


def indexed_job(fleet: Fleet, fleet_text: str, cronjob: dict[str, Any], *,
                image: str | None = None) -> list[dict[str, Any]]:
    """A ConfigMap holding fleet.toml and an Indexed Job made from the CronJob's job template: same service account,
    security context, secrets and volumes; one completion index per database. The image: ``image`` (--image), else
    the fleet file's, else the CronJob's."""
    namespace = cronjob["metadata"].get("namespace", "default")
    job_spec = copy.deepcopy(cronjob["spec"]["jobTemplate"]["spec"])
    pod = job_spec["template"]["spec"]
    container = pod["containers"][0]
    container.pop("command", None)
    container["image"] = image or fleet.image or container["image"]
    container["args"] = ["python", "-m", "restore", "fleet", "run", f"--fleet={FLEET_MOUNT}/fleet.toml"]
    container.setdefault("volumeMounts", []).append({"name": "fleet", "mountPath": FLEET_MOUNT, "readOnly": True})
    pod.setdefault("volumes", []).append({"name": "fleet", "configMap": {"name": JOB_NAME}})
    waves = -(-len(fleet.databases) // fleet.parallelism)
    job_spec |= {"completionMode": "Indexed", "completions": len(fleet.databases), "parallelism": fleet.parallelism,
                 # each database has its own retries; one failing database does not stop the others
                 "backoffLimitPerIndex": 1}
    job_spec.pop("backoffLimit", None)
    if "activeDeadlineSeconds" in job_spec:
        job_spec["activeDeadlineSeconds"] = int(job_spec["activeDeadlineSeconds"]) * waves
    labels = {"app.kubernetes.io/name": "restore-verify", "app.kubernetes.io/component": "fleet"}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": JOB_NAME, "namespace": namespace},
         "data": {"fleet.toml": fleet_text}},
        {"apiVersion": "batch/v1", "kind": "Job",
         "metadata": {"name": JOB_NAME, "namespace": namespace, "labels": labels}, "spec": job_spec},
    ]


@dataclass(frozen=True)
class DatabaseStatus:
    """One database of the record: its last complete passing run, and whether it is overdue."""

    name: str
    last_passed: str | None  # date (UTC) of the last complete passing run
    rto_s: float | None  # of that run
    rpo_s: float | None
    last_run: str | None
    last_outcome: str | None
    overdue: bool


def member(line: dict[str, Any]) -> str:
    """Which database a record line is about: its --label, else target and database (or, when the run never knew
    the database — a missing backup —, the backup's file name)."""
    database = line["target"].get("database") or (line.get("backup") or {}).get("id") or "unknown database"
    return str(line.get("label") or f"{line['target']['name']}/{database}")


def tested(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lines of runs that tested a backup: an ``error`` (a target that could not be reached, a login that
    failed) tested nothing, names no database of the fleet, and is neither a passed nor a failed test."""
    return [h for h in history if h.get("outcome") != "error"]


def tracked(history: list[dict[str, Any]]) -> list[str]:
    """The databases a record follows without a fleet file: those with a complete run (passed or failed) that
    reached a database, and those named with --label. A mistyped --backup path stays a failed run in the history
    (a missing backup is a finding) but does not become a database that is overdue forever; a partial or
    interrupted run names none."""
    return list(dict.fromkeys(member(h) for h in history if h.get("label") or (
        h.get("outcome") in ("passed", "failed") and (h.get("target") or {}).get("database"))))


def status(history: list[dict[str, Any]], *, now: datetime, within_days: float,
           expected: list[str] | None = None) -> list[DatabaseStatus]:
    """Every ``expected`` database, run or not (without a fleet: every database the record follows, see
    :func:`tracked`): overdue when it has no complete passing run in the last ``within_days`` days ("no data" is
    overdue too)."""
    history = tested(history)
    names = list(expected) if expected is not None else tracked(history)
    cutoff = now - timedelta(days=within_days)
    result = []
    for name in names:
        runs = sorted((h for h in history if member(h) == name), key=lambda h: h["date"])
        passed = [h for h in runs if h.get("outcome") == "passed"]
        last_pass = passed[-1] if passed else None
        result.append(DatabaseStatus(
            name=name, last_passed=last_pass["date"] if last_pass else None,
            rto_s=last_pass["rto"].get("measured_s") if last_pass else None,
            rpo_s=last_pass["rpo"].get("measured_s") if last_pass else None,
            last_run=runs[-1]["date"] if runs else None, last_outcome=runs[-1].get("outcome") if runs else None,
            overdue=last_pass is None or datetime.fromisoformat(last_pass["date"]) < cutoff))
    return result
