"""Aurora PostgreSQL clusters and AWS Backup recovery points (issue #29).

Aurora runs against moto's RDS in server mode over HTTP, as RDS does: the restored cluster's writer endpoint is given a
real database (a copy of the restored sample on the tests' own server, through ``connect_via``), so every check runs
for real. AWS Backup creates ``awsbackup`` snapshots itself, which moto cannot: the choice among snapshot types, the
recovery point's resolution and a KMS key the role may not use are tested on the API's own response shapes with
botocore's Stubber.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from restore.backups.retention import RetentionPolicy, RetentionRule, check_rule, list_snapshots
from restore.backups.snapshots import snapshot_kind
from restore.backups.sources import RdsSource, parse_rds
from restore.cloud import CloudError
from restore.errors import ConfigError
from restore.targets import rds as aws_module
from restore.targets.rds import RdsError, RdsRestore, RdsTargetConfig, cleanup_expired, latest_snapshot
from tests.conftest import ALL_PASSED, FaultServer, Sample, SuiteRun

CLUSTER = "ecommerce-aurora"
SECRET = "production/aurora/config"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def _client(service: str, env: dict[str, str]) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="module")
def aurora(moto_env: dict[str, str], fault_server: FaultServer) -> dict[str, Any]:
    """The production cluster (encrypted), a manual cluster snapshot, the secret, and the database behind every
    cluster restored here."""
    rds = _client("rds", moto_env)
    rds.create_db_cluster(DBClusterIdentifier=CLUSTER, Engine="aurora-postgresql", EngineVersion="16.4",
                          MasterUsername="admin", MasterUserPassword="x" * 12, StorageEncrypted=True, KmsKeyId=KEY,
                          BackupRetentionPeriod=7)
    rds.create_db_cluster_snapshot(DBClusterSnapshotIdentifier="aurora-manual-1", DBClusterIdentifier=CLUSTER)
    behind = fault_server.copy("aurora_restored")
    from psycopg import connect

    with connect(fault_server.server.conninfo(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'aurora_verifier'").fetchone():
            conn.execute("CREATE ROLE aurora_verifier LOGIN SUPERUSER PASSWORD 'aurora-pw'")
    _client("secretsmanager", moto_env).create_secret(Name=SECRET, SecretString=json.dumps({
        "DB_NAME": "aurora_restored", "DB_USERNAME": "aurora_verifier", "DB_PASSWORD": "aurora-pw"}))
    return {"rds": rds, "port": fault_server.server.port, "behind": behind}


def _targets(tmp_path: Path, aurora: dict[str, Any], *, extra: str = "") -> Path:
    path = tmp_path / "targets.toml"
    path.write_text(f'[targets.aurora-verify]\nkind = "rds"\ninstance_class = "db.r6g.large"\nsecret = "{SECRET}"\n'
                    f'connect_via = "127.0.0.1:{aurora["port"]}"\n{extra}')
    return path


def _ours(aurora: dict[str, Any]) -> tuple[set[str], set[str]]:
    rds = aurora["rds"]
    return ({c["DBClusterIdentifier"] for c in rds.describe_db_clusters()["DBClusters"]},
            {i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]})


@pytest.mark.parametrize("spec", [f"aurora-snapshot:latest?cluster={CLUSTER}", "aurora-snapshot:aurora-manual-1",
                                  f"aurora-pitr:{CLUSTER}@latest"])
def test_aurora_restore_into_a_new_cluster_runs_every_check_and_deletes_it(
    spec: str, aurora: dict[str, Any], moto_env: dict[str, str], sample: Sample, tmp_path: Path,
    run_suite: Callable[..., SuiteRun],
) -> None:
    before = _ours(aurora)
    run = run_suite(f"--targets-file={_targets(tmp_path, aurora)}", "--target=aurora-verify", f"--backup={spec}",
                    f"--manifest={sample.manifest}", f"--expectations={sample.expectations}", "--rpo=1d",
                    env=moto_env)
    assert run.returncode == 0, run.explain()
    assert run.result["checklist"] == ALL_PASSED, run.explain()
    backup = run.result["backup"]
    assert backup["format"] == ("aurora-pitr" if "pitr" in spec else "aurora-snapshot")
    facts = backup["rds"]
    assert facts["cluster"].startswith(f"{CLUSTER}-verify-")
    assert facts["instance"] == f"{facts['cluster']}-1"
    assert facts["encrypted"] is True
    assert facts["kms_key_id"] == KEY  # restored with the source's own key (no kms_key_id in targets.toml)
    log = (run.run_dir / "restore.log").read_text()
    for action in ("rds:RestoreDBCluster", "rds:CreateDBInstance", "rds:DeleteDBInstance", "rds:DeleteDBCluster"):
        assert f"$ {action}" in log, action
    assert log.index("$ rds:DeleteDBInstance") < log.index("$ rds:DeleteDBCluster")
    assert "aurora-pw" not in log
    assert _ours(aurora) == before, "the restored cluster and its instance must be deleted at the end"


def test_a_missing_cluster_snapshot_is_a_failed_restore_not_an_internal_error(
    aurora: dict[str, Any], moto_env: dict[str, str], sample: Sample, tmp_path: Path,
    run_suite: Callable[..., SuiteRun],
) -> None:
    run = run_suite(f"--targets-file={_targets(tmp_path, aurora)}", "--target=aurora-verify",
                    "--backup=aurora-snapshot:no-such-snapshot", f"--expectations={sample.expectations}",
                    env=moto_env)
    assert run.returncode == 1, run.explain()
    assert run.failed_items() == {"restore_succeeded"}, run.explain()
    refused = run.result["restore"]["refused"]
    assert "'no-such-snapshot' does not exist" in refused, refused
    assert "rds:DescribeDBClusterSnapshots" in refused
    assert "INTERNALERROR" not in run.output


@pytest.fixture
def moto_process_env(moto_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process's boto3 pointed at moto's server (for RdsRestore and cleanup called in-process)."""
    for key, value in moto_env.items():
        monkeypatch.setenv(key, value)
    return moto_env


class _Slow:
    """The RDS client, but an instance never becomes available: the run waits (as for a real 10-minute restore)."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def describe_db_instances(self, **params: Any) -> Any:
        answer = self.real.describe_db_instances(**params)
        for instance in answer["DBInstances"]:
            instance["DBInstanceStatus"] = "creating"
        return answer


def test_ctrl_c_while_waiting_deletes_the_instance_then_the_cluster(
    aurora: dict[str, Any], moto_process_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3

    monkeypatch.setattr(aws_module, "_client", lambda service: _Slow(boto3.client(service)))
    before = _ours(aurora)

    def interrupt(line: str) -> None:
        if "Aurora cluster" in line or "RDS instance" in line:  # the wait's progress: Ctrl-C now
            raise KeyboardInterrupt

    restore = RdsRestore(RdsSource("snapshot", snapshot="aurora-manual-1", cluster=True), RdsTargetConfig(),
                         "ctrlc1", progress=interrupt)
    with pytest.raises(KeyboardInterrupt):
        restore.__enter__()
    assert restore.cluster_id == f"{CLUSTER}-verify-ctrlc1"
    assert _ours(aurora) == before, "Ctrl-C during the wait must leave neither the cluster nor its instance"
    assert any("$ rds:DeleteDBCluster" in line for line in restore.log_lines)


def test_protected_and_source_names_are_refused() -> None:
    restore = RdsRestore(RdsSource("snapshot", snapshot="s", cluster=True),
                         RdsTargetConfig(protected=(f"{CLUSTER}-verify-run1",)), "run1")
    with pytest.raises(RdsError, match="protected"):
        restore._new_name(CLUSTER)


def test_cleanup_deletes_only_expired_clusters_of_ours(aurora: dict[str, Any], moto_process_env: dict[str, str]
                                                       ) -> None:
    rds = aurora["rds"]
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
    future = (datetime.now(UTC) + timedelta(hours=5)).isoformat(timespec="seconds")
    ours = [{"Key": "restore-verify", "Value": "true"}, {"Key": "restore-verify:run-id", "Value": "old"}]
    for name, tags in (("expired-verify-old", [*ours, {"Key": "restore-verify:expires-at", "Value": past}]),
                       ("running-verify-new", [*ours, {"Key": "restore-verify:expires-at", "Value": future}]),
                       ("someone-elses", [{"Key": "team", "Value": "billing"}])):
        rds.create_db_cluster(DBClusterIdentifier=name, Engine="aurora-postgresql", MasterUsername="admin",
                              MasterUserPassword="x" * 12, Tags=tags)
        rds.create_db_instance(DBInstanceIdentifier=f"{name}-1", DBClusterIdentifier=name, Engine="aurora-postgresql",
                               DBInstanceClass="db.r6g.large", Tags=tags)
    deleted = cleanup_expired()
    assert {"expired-verify-old-1", "cluster expired-verify-old"} <= set(deleted), deleted
    assert not any("running" in d or "someone" in d for d in deleted), deleted
    clusters, instances = _ours(aurora)
    assert {"running-verify-new", "someone-elses", CLUSTER} <= clusters
    assert "expired-verify-old" not in clusters
    assert {"running-verify-new-1", "someone-elses-1"} <= instances


def test_an_encrypted_rds_snapshot_restores_under_the_targets_key_and_a_key_it_cannot_use_is_said(
    aurora: dict[str, Any], moto_env: dict[str, str], sample: Sample, tmp_path: Path,
    run_suite: Callable[..., SuiteRun],
) -> None:
    rds = aurora["rds"]
    rds.create_db_instance(DBInstanceIdentifier="ecommerce-encrypted", Engine="postgres", EngineVersion="18.1",
                           DBInstanceClass="db.r5.large", MasterUsername="admin", MasterUserPassword="x" * 12,
                           AllocatedStorage=20, StorageEncrypted=True, KmsKeyId=KEY)
    rds.create_db_snapshot(DBSnapshotIdentifier="encrypted-manual-1", DBInstanceIdentifier="ecommerce-encrypted")
    key = _client("kms", moto_env).create_key(Description="restore-verify's own")["KeyMetadata"]["Arn"]
    snapshots = {s["DBSnapshotIdentifier"] for s in rds.describe_db_snapshots()["DBSnapshots"]}
    with_key = _targets(tmp_path, aurora, extra=f'kms_key_id = "{key}"\n')
    run = run_suite(f"--targets-file={with_key}",
                    "--target=aurora-verify", "--backup=rds-snapshot:encrypted-manual-1",
                    f"--manifest={sample.manifest}", f"--expectations={sample.expectations}", "--rpo=1d", env=moto_env)
    assert run.returncode == 0, run.explain()
    facts = run.result["backup"]["rds"]
    assert (facts["kms_key_id"], facts["encrypted"]) == (key, True)
    assert facts["copied_snapshot"].endswith("-key-copy")
    log = (run.run_dir / "restore.log").read_text()
    assert "$ rds:CopyDBSnapshot" in log
    assert "$ rds:DeleteDBSnapshot" in log
    assert {s["DBSnapshotIdentifier"] for s in rds.describe_db_snapshots()["DBSnapshots"]} == snapshots
    # A key that does not exist (or that the role may not use): said with the action, the snapshot and the key.
    missing = "arn:aws:kms:us-east-1:123456789012:key/no-such-key"
    with_missing = _targets(tmp_path, aurora, extra=f'kms_key_id = "{missing}"\n')
    run = run_suite(f"--targets-file={with_missing}",
                    "--target=aurora-verify", "--backup=rds-snapshot:encrypted-manual-1",
                    f"--expectations={sample.expectations}", env=moto_env)
    # The verifier's key, not the snapshot: an error of the verifier, not a failed backup test.
    assert run.returncode == 7, run.explain()
    assert not run.failed_items(), run.explain()
    refused = run.result["restore"]["refused"]
    for words in ("rds:CopyDBSnapshot", "encrypted-manual-1", missing, "kms:Decrypt"):
        assert words in refused, (words, refused)


# --- AWS Backup, on the API's own response shapes (botocore's Stubber) ----------------------------------------------

@pytest.fixture
def stubbed() -> Iterator[tuple[Any, Any]]:
    import boto3
    from botocore.stub import Stubber

    rds = boto3.client("rds", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(rds) as stub:
        yield rds, stub
        stub.assert_no_pending_responses()


def _snapshot(name: str, kind: str, hours_ago: int, *, cluster: bool = False) -> dict[str, Any]:
    when = datetime(2026, 11, 30, 12, tzinfo=UTC) - timedelta(hours=hours_ago)
    if cluster:
        return {"DBClusterSnapshotIdentifier": name, "DBClusterIdentifier": CLUSTER, "SnapshotType": kind,
                "Status": "available", "SnapshotCreateTime": when, "Engine": "aurora-postgresql",
                "StorageEncrypted": True, "KmsKeyId": KEY}
    return {"DBSnapshotIdentifier": name, "DBInstanceIdentifier": "ecommerce-production", "SnapshotType": kind,
            "Status": "available", "SnapshotCreateTime": when, "Engine": "postgres", "Encrypted": True,
            "KmsKeyId": KEY}


def test_latest_picks_the_newest_of_every_snapshot_type_and_says_which(stubbed: tuple[Any, Any]) -> None:
    rds, stub = stubbed
    instance = {"DBInstanceIdentifier": "ecommerce-production"}
    stub.add_response("describe_db_snapshots", {"DBSnapshots": [
        _snapshot("rds:ecommerce-production-2026-11-30-03-00", "automated", 9),
        _snapshot("weekly-manual", "manual", 30)]}, instance)
    stub.add_response("describe_db_snapshots", {"DBSnapshots": [
        _snapshot("awsbackup:job-11111111-2222-3333-4444-555555555555", "awsbackup", 2)]},
        {**instance, "SnapshotType": "awsbackup"})
    picked = latest_snapshot(rds, "ecommerce-production")
    assert picked["DBSnapshotIdentifier"] == "awsbackup:job-11111111-2222-3333-4444-555555555555"
    assert snapshot_kind(picked) == "taken by AWS Backup"
    # When the newest is automated, that one is picked (and said so).
    stub.add_response("describe_db_snapshots", {"DBSnapshots": [_snapshot("rds:auto", "automated", 1)]}, instance)
    stub.add_response("describe_db_snapshots", {"DBSnapshots": [_snapshot("awsbackup:job-old", "awsbackup", 50)]},
                      {**instance, "SnapshotType": "awsbackup"})
    picked = latest_snapshot(rds, "ecommerce-production")
    assert (picked["DBSnapshotIdentifier"], snapshot_kind(picked)) == ("rds:auto", "automated")


def test_a_recovery_point_arn_names_its_snapshot() -> None:
    cluster = parse_rds("awsbackup:arn:aws:rds:us-east-1:123456789012:cluster-snapshot:awsbackup:job-abc")
    assert (cluster.cluster, cluster.snapshot, cluster.label) == (True, "awsbackup:job-abc", "awsbackup")
    instance = parse_rds("awsbackup:arn:aws:rds:eu-west-1:123456789012:snapshot:awsbackup:job-def")
    assert (instance.cluster, instance.snapshot, instance.kind) == (False, "awsbackup:job-def", "snapshot")
    with pytest.raises(ConfigError, match="RDS or Aurora"):
        parse_rds("awsbackup:arn:aws:ec2:us-east-1::snapshot/snap-0123")


def test_a_recovery_point_restores_with_the_targets_key_and_a_key_the_role_cannot_use_is_said(
    stubbed: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    rds, stub = stubbed
    monkeypatch.setattr(aws_module, "_client", lambda service: rds)
    source = parse_rds("awsbackup:arn:aws:rds:us-east-1:123456789012:cluster-snapshot:awsbackup:job-abc")
    other_key = "arn:aws:kms:us-east-1:123456789012:key/other"
    stub.add_response("describe_db_cluster_snapshots",
                      {"DBClusterSnapshots": [_snapshot("awsbackup:job-abc", "awsbackup", 3, cluster=True)]},
                      {"DBClusterSnapshotIdentifier": "awsbackup:job-abc"})
    stub.add_client_error(
        "restore_db_cluster_from_snapshot", service_error_code="KMSKeyNotAccessibleFault",
        service_message=f"The specified KMS key [{other_key}] does not exist, is not enabled or you do not have "
                        "permissions to access it.",
        expected_params={"DBClusterIdentifier": f"{CLUSTER}-verify-kms1", "SnapshotIdentifier": "awsbackup:job-abc",
                         "Engine": "aurora-postgresql", "DeletionProtection": False, "KmsKeyId": other_key,
                         "Tags": _any_tags()})
    restore = RdsRestore(source, RdsTargetConfig(kms_key_id=other_key), "kms1")
    with pytest.raises(CloudError) as caught:
        restore.__enter__()
    message = str(caught.value)
    assert caught.value.kind == "kms"
    assert "rds:RestoreDBClusterFromSnapshot" in message
    assert other_key in message
    assert "kms:Decrypt" in message
    assert restore.facts["source"] == "awsbackup"
    assert restore.facts["snapshot_type"] == "awsbackup"
    assert not restore.cluster_created  # nothing was made, so nothing is deleted


def _any_tags() -> Any:
    from botocore.stub import ANY

    return ANY


def test_retention_rules_accept_aws_backup_snapshots(stubbed: tuple[Any, Any]) -> None:
    rds, stub = stubbed
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    instance = {"DBInstanceIdentifier": "ecommerce-production"}
    stub.add_response("describe_db_snapshots", {"DBSnapshots": [_snapshot("weekly-manual", "manual", 30)]}, instance)
    stub.add_response("describe_db_snapshots", {"DBSnapshots": [
        _snapshot(f"awsbackup:job-{d}", "awsbackup", 24 * d + 2) for d in range(7)]},
        {**instance, "SnapshotType": "awsbackup"})
    snapshots = list_snapshots("ecommerce-production", rds)
    daily = RetentionRule(timedelta(days=1), timedelta(days=7), "awsbackup")
    assert check_rule(daily, snapshots, RetentionPolicy("ecommerce-production", (daily,)), now) == []
    gap = [s for s in snapshots if s["id"] != "awsbackup:job-3"]
    assert check_rule(daily, gap, RetentionPolicy("ecommerce-production", (daily,)), now)


def test_the_readmes_policy_document_grants_every_action_the_code_calls() -> None:
    import re

    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## RDS and Aurora", 1)[1].split("\n## ", 1)[0]
    policy = json.loads(section.split("```json", 1)[1].split("```", 1)[0])
    granted = {action for statement in policy["Statement"] for action in statement["Action"]}
    called = set()
    for module in sorted(ROOT.glob("restore/**/*.py")):  # wherever an AWS call is made, now or later
        called |= set(re.findall(r'"((?:rds|kms|secretsmanager):[A-Z][A-Za-z]+)"', module.read_text()))
    assert called, "no AWS action found in the code"
    assert called <= granted, f"actions the code calls that the README's policy does not grant: {called - granted}"
