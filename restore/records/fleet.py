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

    [databases."prod/ecommerce-db"]  # a CloudNativePG cluster (fleet discover --cnpg writes these)
    backup = "cnpg:prod/ecommerce-db@latest"
    reads_secrets = ["ecommerce-db-s3"]        # what its run reads: the rendered Role grants get on exactly these
    reads_object_stores = []                   # the Barman Cloud plugin's ObjectStores it names

Kubernetes schedules the work: ``python -m restore fleet render`` turns the CronJob of deploy/kubernetes into an
Indexed Job (one completion index per database, ``parallelism`` bounded) whose pods each run ``python -m restore
fleet run``: the ordinary suite for the database of their ``JOB_COMPLETION_INDEX``, labelled with its name
(``--label``) and recorded in the shared record (conditional writes keep concurrent appends whole).
"""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
    reads_secrets: tuple[str, ...] = ()  # cnpg: the Secrets its Cluster names (the Role's resourceNames)
    reads_object_stores: tuple[str, ...] = ()  # cnpg: the plugin's ObjectStores

    @property
    def cnpg(self) -> tuple[str, str] | None:
        """(namespace, cluster) of a ``cnpg:`` backup, else None."""
        if not self.backup.startswith("cnpg:"):
            return None
        namespace, _, name = self.backup.removeprefix("cnpg:").split("?")[0].split("@")[0].partition("/")
        return namespace, name


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
            args=tuple(str(a) for a in raw.get("args", ())),
            reads_secrets=tuple(str(a) for a in raw.get("reads_secrets", ())),
            reads_object_stores=tuple(str(a) for a in raw.get("reads_object_stores", ()))))
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
        *cnpg_access(fleet, service_account=str(pod.get("serviceAccountName") or "default"), namespace=namespace,
                     labels=labels),
    ]


def cnpg_access(fleet: Fleet, *, service_account: str, namespace: str,
                labels: dict[str, str]) -> list[dict[str, Any]]:
    """For the fleet's CloudNativePG clusters, per namespace, a Role with exactly what a ``cnpg:`` run reads — get
    on its Clusters, list on Backups (a list cannot be narrowed by name), get on the ObjectStores and Secrets they
    name — and a RoleBinding of it to the Job's ServiceAccount. Nothing else: no watch, no write, no other Secret."""
    by_namespace: dict[str, list[FleetDatabase]] = {}
    for db in fleet.databases:
        if db.cnpg is not None:
            by_namespace.setdefault(db.cnpg[0], []).append(db)
    documents: list[dict[str, Any]] = []
    for ns, members in by_namespace.items():
        rules: list[dict[str, Any]] = [
            {"apiGroups": ["postgresql.cnpg.io"], "resources": ["clusters"],
             "resourceNames": _names(db.cnpg[1] for db in members if db.cnpg), "verbs": ["get"]},
            {"apiGroups": ["postgresql.cnpg.io"], "resources": ["backups"], "verbs": ["list"]}]
        if stores := _names(s for db in members for s in db.reads_object_stores):
            rules.append({"apiGroups": ["barmancloud.cnpg.io"], "resources": ["objectstores"],
                          "resourceNames": stores, "verbs": ["get"]})
        if secrets := _names(s for db in members for s in db.reads_secrets):
            rules.append({"apiGroups": [""], "resources": ["secrets"], "resourceNames": secrets, "verbs": ["get"]})
        name = f"{JOB_NAME}-cnpg"
        role = {"name": name, "namespace": ns, "labels": dict(labels)}
        documents += [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": role, "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": dict(role),
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
             "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]}]
    return documents


def _names(values: Iterable[str]) -> list[str]:
    return sorted(set(values))


def discovered(members: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]], skipped: list[tuple[str, str]], *,
               record: str, parallelism: int, image: str | None, how: str) -> str:
    """A fleet file for ``members`` (name, backup, Secrets, ObjectStores), with the ``skipped`` (name, why) said
    in comments: what ``fleet discover`` writes."""
    def q(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)  # a TOML basic string

    lines = [f"# Written by {how} on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: one database per CloudNativePG",
             "# Cluster with object-store backups. Review it, then: python -m restore fleet render --fleet=THIS …"]
    lines += [f"# Skipped {name}: {' '.join(why.split())}" for name, why in skipped]
    lines += ["", "[fleet]", f"record = {q(record)}", f"parallelism = {parallelism}", "overdue_after_days = 35"]
    lines += [f"image = {q(image)}"] if image else []
    for name, backup, secrets, stores in members:
        lines += ["", f"[databases.{q(name)}]", f"backup = {q(backup)}", 'target = "local"',
                  f"reads_secrets = [{', '.join(q(s) for s in secrets)}]",
                  f"reads_object_stores = [{', '.join(q(s) for s in stores)}]"]
    return "\n".join(lines) + "\n"


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
