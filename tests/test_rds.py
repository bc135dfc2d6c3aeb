"""RDS: snapshot and point-in-time restores into a new, tagged instance, against moto's RDS in server mode.

moto's instances have no database behind them; the tests give the "restored instance" a real one — a copy of the
restored sample on the tests' own server — reached through ``connect_via``, so that every check runs for real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from restore.backups.retention import RetentionPolicy, RetentionRule, check_rule
from restore.targets.rds import RdsError, RdsRestore, RdsSource, RdsTargetConfig
from tests.conftest import ALL_PASSED, ROOT, FaultServer, Sample, SuiteRun

SOURCE = "ecommerce-production"
SECRET = "production/ecommerce/config"


def _client(service: str, env: dict[str, str]) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="module")
def aws(moto_env: dict[str, str], fault_server: FaultServer) -> dict[str, Any]:
    """The production instance, a manual snapshot, the runbook's secret, and the database that stands behind
    every instance restored in these tests."""
    rds = _client("rds", moto_env)
    rds.create_db_instance(DBInstanceIdentifier=SOURCE, Engine="postgres", EngineVersion="18.1",
                           DBInstanceClass="db.r5.xlarge", MasterUsername="admin", MasterUserPassword="x" * 12,
                           AllocatedStorage=20, BackupRetentionPeriod=7)
    rds.create_db_snapshot(DBSnapshotIdentifier="ecommerce-prod-manual-1", DBInstanceIdentifier=SOURCE)
    behind = fault_server.copy("rds_restored")
    with psycopg.connect(fault_server.server.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE ROLE verifier LOGIN SUPERUSER PASSWORD 'verifier-pw'")
    _client("secretsmanager", moto_env).create_secret(Name=SECRET, SecretString=json.dumps({
        "DB_HOST": f"{SOURCE}.aaaaaaaaaa.us-east-1.rds.amazonaws.com", "DB_NAME": "rds_restored",
        "DB_USERNAME": "verifier", "DB_PASSWORD": "verifier-pw"}))
    return {"rds": rds, "port": fault_server.server.port, "behind": behind}


def _targets(tmp_path: Path, aws: dict[str, Any], *, secret: str = SECRET, retention: str = "") -> Path:
    path = tmp_path / "targets.toml"
    path.write_text(f'[targets.rds-verify]\nkind = "rds"\ninstance_class = "db.t3.medium"\nsecret = "{secret}"\n'
                    f'connect_via = "127.0.0.1:{aws["port"]}"\n{retention}')
    return path


def _instances(aws: dict[str, Any]) -> set[str]:
    return {i["DBInstanceIdentifier"] for i in aws["rds"].describe_db_instances()["DBInstances"]}


@pytest.mark.parametrize("spec", [f"rds-snapshot:latest?instance={SOURCE}", "rds-snapshot:ecommerce-prod-manual-1",
                                  f"rds-pitr:{SOURCE}@latest"])
def test_rds_restore_into_a_new_instance_runs_every_check_and_deletes_it(
    spec: str, aws: dict[str, Any], moto_env: dict[str, str], sample: Sample, tmp_path: Path,
    run_suite: Callable[..., SuiteRun],
) -> None:
    before = _instances(aws)
    run = run_suite(f"--targets-file={_targets(tmp_path, aws)}", "--target=rds-verify", f"--backup={spec}",
                    f"--manifest={sample.manifest}", f"--expectations={sample.expectations}", "--rpo=1d",
                    env=moto_env)
    assert run.returncode == 0, run.explain()
    assert run.result["checklist"] == ALL_PASSED, run.explain()
    facts = run.result["backup"]
    assert facts["format"] == ("rds-pitr" if "pitr" in spec else "rds-snapshot")
    assert run.result["backup"]["rds"]["instance"].startswith(f"{SOURCE}-verify-")  # the stable field
    log = (run.run_dir / "restore.log").read_text()
    assert "$ rds:Restore" in log  # what was called, readable
    assert "-> ok" in log
    assert "verifier-pw" not in log
    assert _instances(aws) == before, "the restored instance must be deleted at the end"
    assert SOURCE in _instances(aws)  # and the source is untouched


def test_failure_after_the_instance_exists_still_deletes_it(
    aws: dict[str, Any], moto_env: dict[str, str], sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    before = _instances(aws)
    run = run_suite(f"--targets-file={_targets(tmp_path, aws, secret='no/such/secret')}", "--target=rds-verify",
                    f"--backup=rds-snapshot:latest?instance={SOURCE}", f"--expectations={sample.expectations}",
                    env=moto_env)
    assert run.failed_items() == {"restore_succeeded"}, run.explain()
    assert "no/such/secret" in run.result["restore"]["refused"]
    assert _instances(aws) == before


def test_production_names_are_refused() -> None:
    restore = RdsRestore(RdsSource("snapshot", snapshot="x"), RdsTargetConfig(protected=("prod-verify-r1",)), "r1")
    with pytest.raises(RdsError, match="protected"):
        restore._new_name("prod")


def test_cleanup_deletes_only_expired_instances_of_ours(aws: dict[str, Any], moto_env: dict[str, str]) -> None:
    rds = aws["rds"]
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
    future = (datetime.now(UTC) + timedelta(hours=5)).isoformat(timespec="seconds")
    for name, tags in (("left-by-kill-9", [("restore-verify", "true"), ("restore-verify:expires-at", past)]),
                       ("still-running", [("restore-verify", "true"), ("restore-verify:expires-at", future)]),
                       ("someone-elses", [("owner", "data-team")])):
        rds.create_db_instance(DBInstanceIdentifier=name, Engine="postgres", DBInstanceClass="db.t3.micro",
                               MasterUsername="admin", MasterUserPassword="x" * 12, AllocatedStorage=20,
                               Tags=[{"Key": k, "Value": v} for k, v in tags])
    proc = subprocess.run([sys.executable, "-m", "restore", "cleanup"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **moto_env}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "left-by-kill-9" in proc.stdout
    assert "left-by-kill-9" not in _instances(aws)
    assert {"still-running", "someone-elses", SOURCE} <= _instances(aws)


def test_retention_item_against_the_listed_snapshots(
    aws: dict[str, Any], moto_env: dict[str, str], sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    holds = (f'[retention]\ninstance = "{SOURCE}"\n'
             'rules = [{ every = "1d", keep = "1d", type = "manual" }]\n')
    run = run_suite(f"--targets-file={_targets(tmp_path, aws, retention=holds)}", f"--target={aws['behind']}",
                    f"--expectations={sample.expectations}", env=moto_env)
    assert run.result["checklist"]["retention"] == "passed", run.explain()
    breaks = (f'[retention]\ninstance = "{SOURCE}"\nrules = [{{ every = "1d", keep = "1d", type = "manual" }},\n'
              '  { every = "1h", keep = "7d", type = "automated" }]\n')
    run = run_suite(f"--targets-file={_targets(tmp_path, aws, retention=breaks)}", f"--target={aws['behind']}",
                    f"--expectations={sample.expectations}", env=moto_env)
    assert run.result["checklist"]["retention"] == "failed", run.explain()


def test_retention_rules_on_a_seeded_history() -> None:
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    hourly = RetentionRule(timedelta(hours=1), timedelta(days=7), "automated")
    weekly = RetentionRule(timedelta(days=7), timedelta(days=90), "manual")
    policy = RetentionPolicy(SOURCE, (hourly, weekly))
    snaps = [{"id": f"auto-{h}", "type": "automated", "created": now - timedelta(hours=h, minutes=5)}
             for h in range(7 * 24)]
    snaps += [{"id": f"manual-{w}", "type": "manual", "created": now - timedelta(days=7 * w, hours=1)}
              for w in range(13)]
    assert check_rule(hourly, snaps, policy, now) == []
    assert check_rule(weekly, snaps, policy, now) == []
    gap = [s for s in snaps if s["id"] not in ("auto-30", "auto-31")]
    problems = check_rule(hourly, gap, policy, now)
    assert len(problems) == 1
    assert problems[0].startswith("2 of 168 windows of 1h")
    stale = [s for s in snaps if not s["id"].startswith("auto-") or int(s["id"][5:]) > 3]
    assert any("older than its frequency" in p for p in check_rule(hourly, stale, policy, now))
    old = [*snaps, {"id": "manual-ancient", "type": "manual", "created": now - timedelta(days=200)}]
    assert any("outlive their retention of 90d: manual-ancient" in p for p in check_rule(weekly, old, policy, now))


@pytest.mark.parametrize(("spec", "named"), [
    ("rds-snapshot:no-such-snap", "snapshot 'no-such-snap' does not exist"),
    ("rds-pitr:no-such-instance@latest", "source instance 'no-such-instance' does not exist"),
])
def test_a_missing_rds_source_is_a_failed_restore_not_an_internal_error(
    spec: str, named: str, aws: dict[str, Any], moto_env: dict[str, str], sample: Sample, tmp_path: Path,
    run_suite: Callable[..., SuiteRun],
) -> None:
    before = _instances(aws)
    run = run_suite(f"--targets-file={_targets(tmp_path, aws)}", "--target=rds-verify", f"--backup={spec}",
                    f"--expectations={sample.expectations}", env=moto_env)
    assert "INTERNALERROR" not in run.output
    assert run.returncode == 1, run.explain()
    assert run.failed_items() == {"restore_succeeded"}, run.explain()
    refused = run.result["restore"]["refused"]
    assert named in refused, refused
    assert "Check the name given to --backup" in refused
    assert _instances(aws) == before


def test_new_instance_names_keep_the_run_id_whatever_the_source_length() -> None:
    long = "a-very-long-production-instance-name-that-fills-most-of-63-chars"
    first = RdsRestore(RdsSource("snapshot", snapshot="x"), RdsTargetConfig(), "0123456789ab")._new_name(long)
    second = RdsRestore(RdsSource("snapshot", snapshot="x"), RdsTargetConfig(), "ba9876543210")._new_name(long)
    assert len(first) <= 63
    assert first.endswith("-verify-0123456789ab")
    assert first != second
