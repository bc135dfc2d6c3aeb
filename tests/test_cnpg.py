"""CloudNativePG by name (``cnpg:NAMESPACE/CLUSTER``) and a namespace as a fleet (``fleet discover --cnpg``).

The Kubernetes API is the suite's stand-in (tests/k8s_standin.py) holding CloudNativePG's objects as the operator
writes them: Clusters in the in-tree form (``spec.backup.barmanObjectStore``) and the Barman Cloud plugin's form
(``spec.plugins`` + an ObjectStore of barmancloud.cnpg.io), Backup objects, Secrets. Behind them, the real Barman
Cloud archive of tests/physical_source.py in moto's S3 and the real ``barman-cloud-*`` tools.

The runs have no S3 identity of their own (no AWS_* variables, no profile): the Secret's keys are the only way in,
so a green run proves they were read and used; and no output of a run may hold them.

Not proven here, needs a live cluster: the operator's own objects as a given CloudNativePG version writes them
(field names are those of CloudNativePG 1.25 and plugin-barman-cloud 0.5), in-cluster ServiceAccount tokens, and
the rendered Role applied by a real API server (it is validated against the Kubernetes 1.30 schema only).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from restore.backups import cnpg
from restore.backups.sources import Source
from restore.errors import ConfigError
from tests.conftest import ROOT, SuiteRun
from tests.k8s_standin import Cluster, StandIn
from tests.physical_source import Archive, events_expectations

NS = "prod"
NAME = "ecommerce-db"
ACCESS = f"AKIACNPG{uuid.uuid4().hex[:12].upper()}"  # unique: found in no output unless leaked
SECRET = f"cnpg-secret-{uuid.uuid4().hex}"
IMAGE = "ghcr.io/cloudnative-pg/postgresql:18.1-system-trixie"


def _s3_credentials(secret: str = "ecommerce-db-s3", key: str = "ACCESS_SECRET_KEY") -> dict[str, Any]:
    return {"accessKeyId": {"name": secret, "key": "ACCESS_KEY_ID"},
            "secretAccessKey": {"name": secret, "key": key},
            "region": {"name": secret, "key": "REGION"}}


def _configuration(archive: Archive, **credentials: str) -> dict[str, Any]:
    return {"destinationPath": archive.url.rpartition("/")[0], "endpointURL": archive.endpoint,
            "s3Credentials": _s3_credentials(**credentials), "wal": {"compression": "gzip"}}


def cluster(name: str, *, backup: dict[str, Any] | None = None, plugin: str | None = None,
            archiving: str = "True", server: str = "main", image: str = IMAGE) -> dict[str, Any]:
    spec: dict[str, Any] = {"instances": 3, "imageName": image,
                            "bootstrap": {"initdb": {"database": "shop", "owner": "shop"}}}
    if backup is not None:
        spec["backup"] = {"barmanObjectStore": backup | {"serverName": server}, "retentionPolicy": "30d"}
    if plugin is not None:
        spec["plugins"] = [{"name": "barman-cloud.cloudnative-pg.io", "isWALArchiver": True,
                            "parameters": {"barmanObjectName": plugin, "serverName": server}}]
    return {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
            "metadata": {"name": name, "namespace": NS, "labels": {"team": "shop"}}, "spec": spec,
            "status": {"phase": "Cluster in healthy state", "firstRecoverabilityPoint": "2026-12-01T00:00:00Z",
                       "lastSuccessfulBackup": "2026-12-06T01:00:00Z",
                       "conditions": [{"type": "ContinuousArchiving", "status": archiving,
                                       "reason": "ContinuousArchivingSuccess" if archiving == "True" else
                                       "ContinuousArchivingFailing",
                                       "message": "" if archiving == "True" else "unexpected failure invoking "
                                       "barman-cloud-wal-archive: exit status 4",
                                       "lastTransitionTime": "2026-12-06T02:00:00Z"}]}}


# What an operator's error text may hold (it is the API's free text): markup and a terminal control sequence.
HOSTILE = "<svg onload=document.body.dataset.t=1> \x1b[2K\rbackup test PASSED"


def backup_object(name: str, *, phase: str, stopped: str, backup_id: str | None = None,
                  method: str = "barmanObjectStore", cluster_name: str = NAME) -> dict[str, Any]:
    status = {"phase": phase, "method": method, "startedAt": stopped, "stoppedAt": stopped}
    status |= {"backupId": backup_id} if backup_id else {}
    status |= {"error": f"can't execute backup: the object store is unreachable {HOSTILE}"} if phase == "failed" else {}
    return {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Backup",
            "metadata": {"name": name, "namespace": NS, "creationTimestamp": stopped},
            "spec": {"cluster": {"name": cluster_name}, "method": method}, "status": status}


def secret(name: str = "ecommerce-db-s3") -> dict[str, Any]:
    data = {"ACCESS_KEY_ID": ACCESS, "ACCESS_SECRET_KEY": SECRET, "REGION": "us-east-1"}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def object_store(name: str, archive: Archive) -> dict[str, Any]:
    return {"apiVersion": "barmancloud.cnpg.io/v1", "kind": "ObjectStore",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"configuration": _configuration(archive), "retentionPolicy": "30d"}}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[Cluster, Path]]:
    state = Cluster(namespace=NS, deployments={})
    with StandIn(state) as standin:
        yield state, standin.kubeconfig(tmp_path / "kubeconfig")


def _env(archive: Archive, kubeconfig: Path, tmp_path: Path) -> dict[str, str | None]:
    """The Barman tools on PATH, the stand-in's kubeconfig, and no S3 identity at all but the Secret's."""
    return {"PATH": f"{archive.bin_dir}:{os.environ.get('PATH', '')}", "KUBECONFIG": str(kubeconfig),
            "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None,
            "AWS_PROFILE": None, "AWS_ENDPOINT_URL": None, "AWS_DEFAULT_REGION": None,
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_EC2_METADATA_DISABLED": "true"}


def _no_secret_anywhere(run: SuiteRun) -> None:
    """Neither key of the Secret in the terminal, the run's folder (result.json, report, logs) or the record."""
    assert ACCESS not in run.output
    assert SECRET not in run.output
    for path in [*run.run_dir.rglob("*"), *run.run_dir.parent.parent.glob("record*.jsonl")]:
        if path.is_file():
            text = path.read_text(errors="replace")
            assert ACCESS not in text, f"a credential in {path}"
            assert SECRET not in text, f"a credential in {path}"


def test_a_cluster_by_name_restores_its_newest_completed_backup_with_its_secrets_keys(
    barman_archive: Archive, api: tuple[Cluster, Path], tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """The in-tree form, @latest, the database from the Cluster's bootstrap (no ?db=): green, the Backup object
    used named; a newer volume-snapshot Backup is said, and the object-store one verified instead."""
    state, kubeconfig = api
    state.put(cluster(NAME, backup=_configuration(barman_archive)))
    state.put(secret())
    state.put(backup_object("ecommerce-db-old", phase="completed", stopped="2026-11-01T01:00:00Z",
                            backup_id="20261101T010000"))  # listed by CNPG, gone from the store: not the newest
    state.put(backup_object("ecommerce-db-daily", phase="completed", stopped="2026-12-06T01:00:00Z",
                            backup_id=barman_archive.backup_id))
    state.put(backup_object("ecommerce-db-snap", phase="completed", stopped="2026-12-06T03:00:00Z",
                            method="volumeSnapshot"))
    state.put(backup_object("other-db-daily", phase="failed", stopped="2026-12-06T04:00:00Z",
                            cluster_name="other-db"))  # another cluster's: not this one's newest
    run = run_suite(f"--backup=cnpg:{NS}/{NAME}@latest", f"--expectations={events_expectations(tmp_path, 30)}",
                    env=_env(barman_archive, kubeconfig, tmp_path))
    assert run.result["outcome"] == "passed", run.explain()
    assert run.result["target"]["database"] == "shop"
    about = run.result["backup"]["cnpg"]
    assert about["backup_object"] == "ecommerce-db-daily", about
    assert about["backup_id"] == barman_archive.backup_id
    assert about["form"] == "spec.backup.barmanObjectStore"
    assert about["credentials"] == "from Secret ecommerce-db-s3 (keys ACCESS_KEY_ID, ACCESS_SECRET_KEY, REGION)"
    assert any("ecommerce-db-snap is a volume snapshot" in n and "ecommerce-db-daily" in n
               for n in about["notes"]), about["notes"]
    assert run.result["backup"]["recovery"]["end_proven"] is True
    log = (run.run_dir / "restore.log").read_text()
    assert f"the backup restored is Backup ecommerce-db-daily (backupId {barman_archive.backup_id})" in log
    report = (run.run_dir / "report.html").read_text()
    assert f"cluster prod/ecommerce-db: Backup ecommerce-db-daily (backupId {barman_archive.backup_id})" in report
    _no_secret_anywhere(run)


def test_the_plugin_form_recovers_to_a_time_exactly(
    barman_archive: Archive, api: tuple[Cluster, Path], tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    state, kubeconfig = api
    # Upgraded since the backup (19 in its image): the backup's own major is the server's, and that is said.
    state.put(cluster(NAME, plugin="shop-store", image="ghcr.io/cloudnative-pg/postgresql:19.0"))
    state.put(object_store("shop-store", barman_archive))
    state.put(secret())
    state.put(backup_object("ecommerce-db-daily", phase="completed", stopped="2026-12-06T01:00:00Z",
                            backup_id=barman_archive.backup_id, method="plugin"))
    run = run_suite(f"--backup=cnpg:{NS}/{NAME}@{barman_archive.target.isoformat()}?db=shop",
                    f"--expectations={events_expectations(tmp_path, 20)}",
                    env=_env(barman_archive, kubeconfig, tmp_path))
    for item in ("restore_succeeded", "row_counts", "rpo"):  # rows 1-20 exactly, and the target reached
        assert run.result["checklist"][item] == "passed", run.explain()
    about = run.result["backup"]["cnpg"]
    assert about["form"] == "the Barman Cloud plugin's ObjectStore shop-store", about
    assert about["backup_object"] == "ecommerce-db-daily"
    assert run.result["backup"]["recovery"]["target"] == barman_archive.target.isoformat()
    upgraded = "the Cluster runs PostgreSQL 19 (its image) and the backup restored was taken from PostgreSQL 18"
    assert upgraded in " ".join(about["notes"]), about["notes"]
    _no_secret_anywhere(run)


def test_a_failed_newest_backup_and_failing_archiving_fail_the_items_they_concern(
    barman_archive: Archive, api: tuple[Cluster, Path], tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """Said, not stepped over: the older backup is restored and verified, restore_succeeded fails with the failed
    Backup, rpo with the archiving condition; the data's own items stay green."""
    state, kubeconfig = api
    state.put(cluster(NAME, backup=_configuration(barman_archive), archiving="False"))
    state.put(secret())
    state.put(backup_object("ecommerce-db-daily", phase="completed", stopped="2026-12-06T01:00:00Z",
                            backup_id=barman_archive.backup_id))
    state.put(backup_object("ecommerce-db-tonight", phase="failed", stopped="2026-12-06T05:00:00Z"))
    run = run_suite(f"--backup=cnpg:{NS}/{NAME}", f"--expectations={events_expectations(tmp_path, 30)}",
                    env=_env(barman_archive, kubeconfig, tmp_path))
    assert run.failed_items() == {"restore_succeeded", "rpo"}, run.explain()
    assert run.result["checklist"]["row_counts"] == "passed", run.explain()
    messages = " ".join(f["message"] for f in run.result["failures"])
    assert "newest Backup ecommerce-db-tonight" in messages, messages
    assert "the older ecommerce-db-daily" in messages, messages
    assert "WAL archiving of prod/ecommerce-db is failing" in messages, messages
    assert "barman-cloud-wal-archive: exit status 4" in messages, messages
    assert run.result["backup"]["cnpg"]["backup_object"] == "ecommerce-db-daily"
    # The operator's words are shown as text: no markup in the report, no control sequence on the terminal.
    assert "\x1b" not in run.output, run.output[-2000:]
    assert "\x1b" not in (run.run_dir / "restore.log").read_text()
    assert "\\x1b[2K" in (run.run_dir / "restore.log").read_text()  # said, as an escape
    assert "<svg onload" not in (run.run_dir / "report.html").read_text()
    _no_secret_anywhere(run)


@pytest.mark.parametrize("case", ["no-secret", "wrong-key", "forbidden", "no-backups", "no-cluster"])
def test_a_cluster_that_cannot_be_restored_is_said_in_words(
    case: str, barman_archive: Archive, api: tuple[Cluster, Path], tmp_path: Path,
    run_suite: Callable[..., SuiteRun],
) -> None:
    """Before anything is downloaded: the verifier's own world (a missing Secret or key, no permission) is an error
    never counted; a Cluster with no backup outside it is a failed backup test; a name that does not exist is a
    usage error. No traceback, no credential."""
    state, kubeconfig = api
    configuration = _configuration(barman_archive, key="SECRET_KEY" if case == "wrong-key" else "ACCESS_SECRET_KEY")
    if case != "no-cluster":
        state.put(cluster(NAME, backup=None if case == "no-backups" else configuration))
    if case != "no-secret":
        state.put(secret())
    if case == "forbidden":
        state.forbidden.add(f"/api/v1/namespaces/{NS}/secrets/ecommerce-db-s3")
    run = run_suite(f"--backup=cnpg:{NS}/{NAME}", f"--expectations={events_expectations(tmp_path, 30)}",
                    env=_env(barman_archive, kubeconfig, tmp_path), expect_result=case != "no-cluster")
    assert "INTERNALERROR" not in run.output, run.output[-3000:]
    assert "Traceback" not in run.output, run.output[-3000:]
    assert ACCESS not in run.output
    assert SECRET not in run.output
    if case == "no-cluster":
        assert run.returncode == 4, run.output[-3000:]
        assert "There is no CloudNativePG Cluster prod/ecommerce-db" in run.output, run.output[-3000:]
        return
    said = run.result["outcome_reason"] + " " + str(run.result["restore"]["refused"])
    expected = {"no-secret": "has no such Secret", "wrong-key": "which has no such key (it has: ACCESS_KEY_ID, "
                "ACCESS_SECRET_KEY, REGION)", "forbidden": "The verifier may not get Secret prod/ecommerce-db-s3 (403",
                "no-backups": "has no object-store backup"}[case]
    assert expected in said, said
    if case == "no-backups":
        assert run.result["outcome"] == "failed", run.explain()
        assert run.failed_items() == {"restore_succeeded"}, run.explain()
    else:
        assert run.returncode == 7, run.explain()
        assert run.result["outcome"] == "error", run.explain()
        assert not run.failed_items(), run.explain()
    _no_secret_anywhere(run)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "restore", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=300)


def test_a_namespace_becomes_a_fleet_whose_job_and_role_validate(
    barman_archive: Archive, api: tuple[Cluster, Path], tmp_path: Path
) -> None:
    """Three Clusters, one without backups: two databases and the third skipped with why; the rendered Role grants
    exactly what a cnpg: run reads (get on the Clusters, ObjectStores and Secrets named, list on Backups)."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    state, kubeconfig = api
    state.put(cluster(NAME, backup=_configuration(barman_archive)))
    state.put(cluster("billing-db", plugin="billing-store"))
    state.put(object_store("billing-store", barman_archive))
    state.put(cluster("scratch-db"))
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    fleet_file = tmp_path / "fleet.toml"
    done = _cli("fleet", "discover", f"--cnpg={NS}", "--record=s3://records/record.jsonl", f"--output={fleet_file}",
                env=env)
    assert done.returncode == 0, done.stderr
    assert "skipped prod/scratch-db: no object-store backup" in done.stderr, done.stderr
    text = fleet_file.read_text()
    assert "# Skipped prod/scratch-db: no object-store backup" in text, text
    import tomllib

    databases = tomllib.loads(text)["databases"]
    assert databases == {
        "prod/billing-db": {"backup": "cnpg:prod/billing-db@latest", "target": "local",
                            "reads_secrets": ["ecommerce-db-s3"], "reads_object_stores": ["billing-store"]},
        "prod/ecommerce-db": {"backup": "cnpg:prod/ecommerce-db@latest", "target": "local",
                              "reads_secrets": ["ecommerce-db-s3"], "reads_object_stores": []}}
    out = tmp_path / "job.yaml"
    done = _cli("fleet", "render", f"--fleet={fleet_file}",
                f"--cronjob={ROOT / 'deploy/kubernetes/restore-verify.yaml'}", f"--output={out}", env=env)
    assert done.returncode == 0, done.stderr
    documents = [d for d in yaml.safe_load_all(out.read_text()) if d]
    for document in documents:
        kubernetes_validate.validate(document, "1.30", strict=True)
    job = next(d for d in documents if d["kind"] == "Job")
    assert job["spec"]["completions"] == 2
    role = next(d for d in documents if d["kind"] == "Role")
    assert role["metadata"]["namespace"] == NS
    assert role["rules"] == [
        {"apiGroups": ["postgresql.cnpg.io"], "resources": ["clusters"], "resourceNames": ["billing-db", NAME],
         "verbs": ["get"]},
        {"apiGroups": ["postgresql.cnpg.io"], "resources": ["backups"], "verbs": ["list"]},
        {"apiGroups": ["barmancloud.cnpg.io"], "resources": ["objectstores"], "resourceNames": ["billing-store"],
         "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["ecommerce-db-s3"], "verbs": ["get"]}]
    binding = next(d for d in documents if d["kind"] == "RoleBinding")
    pod = job["spec"]["template"]["spec"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod.get("serviceAccountName", "default"),
                                    "namespace": job["metadata"]["namespace"]}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    # What the pod runs for index 0: the suite on that cluster, by name.
    members = json.dumps(databases)
    assert "cnpg:prod/billing-db@latest" in members


def test_the_source_and_the_clusters_words_are_read_as_cloudnativepg_writes_them() -> None:
    """No API, no S3: the parsing of the spec and of a Cluster, and what is judged a finding."""
    source = Source.parse("cnpg:prod/ecommerce-db@2026-12-06T10:00:00Z?db=app", base=Path())
    assert (source.kind, source.repository, source.database) == ("cnpg", "prod/ecommerce-db", "app")
    assert source.recovery.time is not None
    assert source.physical
    assert Source.parse("cnpg:prod/ecommerce-db", base=Path()).database == ""  # the Cluster's own
    for wrong in ("cnpg:ecommerce-db", "cnpg:Prod/x", "cnpg:prod/x?endpoint=http://x", "cnpg:prod/"):
        with pytest.raises(ConfigError, match="cnpg:NAMESPACE/CLUSTER"):
            Source.parse(wrong, base=Path())
    plain = cluster("x", backup={"destinationPath": "s3://b/p/", "s3Credentials": {"inheritFromIAMRole": True}})
    store = cnpg.store_of(plain, lambda _: None)
    assert store is not None
    assert store.url == "s3://b/p//main"
    assert store.from_role
    assert not store.keys
    assert "the pod's own role" in store.credentials_words()
    azure = cluster("x", backup={"destinationPath": "https://acct.blob.core.windows.net/c",
                                 "azureCredentials": {"storageAccount": {"name": "a", "key": "b"}}})
    with pytest.raises(ConfigError, match="S3 and S3-compatible stores only"):
        cnpg.store_of(azure, lambda _: None)
    with pytest.raises(ConfigError, match="names ObjectStore gone"):
        cnpg.store_of(cluster("x", plugin="gone"), lambda _: None)
    assert cnpg.image_major(plain) == "18"
    assert cnpg.app_database(plain) == "shop"
    # A running newest Backup is not judged; the newest finished one is.
    running = [backup_object("a", phase="completed", stopped="2026-12-01T00:00:00Z", cluster_name="x"),
               backup_object("b", phase="running", stopped="2026-12-02T00:00:00Z", cluster_name="x")]
    judged = cnpg.judge(plain, running, store)
    assert judged["findings"] == {"restore_succeeded": [], "rpo": []}
    assert judged["newest_completed"] == "a"
    failed = [*running, backup_object("c", phase="failed", stopped="2026-12-03T00:00:00Z", cluster_name="x")]
    assert "newest Backup c of prod/x failed" in cnpg.judge(plain, failed, store)["findings"]["restore_succeeded"][0]


def test_the_role_is_per_namespace_and_grants_no_secret_to_a_cluster_that_names_none(tmp_path: Path) -> None:
    """A hand-written fleet across two namespaces, one cluster on its pod's own role (inheritFromIAMRole: no
    Secret): a Role and a RoleBinding per namespace, each with only its own clusters; no secrets rule where no
    Secret is named; other databases of the fleet grant nothing."""
    from restore.records import fleet

    path = tmp_path / "fleet.toml"
    path.write_text('[fleet]\nrecord = "s3://r/record.jsonl"\n\n'
                    '[databases."prod/a"]\nbackup = "cnpg:prod/a@latest"\nreads_secrets = ["a-s3"]\n\n'
                    '[databases."billing/b"]\nbackup = "cnpg:billing/b@latest"\n\n'
                    '[databases.orders]\nbackup = "s3://backups/orders/"\n')
    cronjob = next(d for d in yaml.safe_load_all((ROOT / "deploy/kubernetes/restore-verify.yaml").read_text())
                   if d and d["kind"] == "CronJob")
    rendered = fleet.indexed_job(fleet.load(path), path.read_text(), cronjob)
    roles = {d["metadata"]["namespace"]: d for d in rendered if d["kind"] == "Role"}
    assert set(roles) == {"prod", "billing"}
    assert roles["prod"]["rules"][0]["resourceNames"] == ["a"]
    assert roles["prod"]["rules"][-1] == {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a-s3"],
                                          "verbs": ["get"]}
    assert [r["resources"] for r in roles["billing"]["rules"]] == [["clusters"], ["backups"]]
    assert sum(1 for d in rendered if d["kind"] == "RoleBinding") == 2
