"""Backups on S3, against moto's S3 in server mode: a real HTTP endpoint on loopback, boto3 unpatched."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ALL_PASSED, Sample, SuiteRun

BUCKET = "ecommerce-backups"


@pytest.fixture(scope="module")
def bucket(moto_env: dict[str, str], sample: Sample) -> object:
    import boto3
    from boto3.s3.transfer import TransferConfig

    client = boto3.client("s3", endpoint_url=moto_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    data = sample.dump.read_bytes()
    client.put_object(Bucket=BUCKET, Key="database/backup-20261001.dump", Body=data[: len(data) // 2])  # bad upload
    time.sleep(1.1)  # LastModified has one-second resolution
    # The newest good one as a multipart upload, as `aws s3 cp` does for large files.
    client.upload_file(str(sample.dump), BUCKET, "database/backup-20261101.dump",
                       Config=TransferConfig(multipart_threshold=64 * 1024, multipart_chunksize=5 * 1024 * 1024))
    client.upload_file(str(sample.manifest), BUCKET, "database/backup-20261101.dump.manifest.json")
    time.sleep(1.1)
    client.put_object(Bucket=BUCKET, Key="database/truncated.dump", Body=data[: len(data) * 2 // 3])
    return client


def _no_fetch_left(run: SuiteRun) -> None:
    assert run.tmp is not None
    tmp = run.tmp
    assert not any(p.name.startswith("restore-verify-fetch-") for p in tmp.iterdir()), "download left behind"


def test_restore_from_s3_with_the_manifest_beside_it(
    bucket: object, moto_env: dict[str, str], sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    url = f"s3://{BUCKET}/database/backup-20261101.dump"
    run = run_suite(f"--backup={url}", f"--globals={sample.globals_sql}", f"--expectations={sample.expectations}",
                    env=moto_env)
    assert run.returncode == 0, run.explain()
    assert run.result["checklist"] == ALL_PASSED, run.explain()
    assert run.result["backup"]["spec"] == url
    assert "matches" in run.result["backup"]["checksum"]
    assert run.result["manifest"]["kind"] == "manifest"
    assert Path(run.result["manifest"]["source"]).parent == run.run_dir  # kept as evidence
    _no_fetch_left(run)


def test_prefix_with_pick_latest_restores_the_newest(
    bucket: object, moto_env: dict[str, str], sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    run = run_suite(f"--backup=s3://{BUCKET}/database/", "--backup-pick=latest", f"--globals={sample.globals_sql}",
                    f"--expectations={sample.expectations}", env=moto_env)
    assert run.result["backup"]["spec"] == f"s3://{BUCKET}/database/truncated.dump", run.explain()
    # The newest object is the truncated one uploaded last: refused, never half-restored.
    assert run.failed_items() == {"restore_succeeded"}
    assert "cannot be read end to end" in run.result["restore"]["refused"]


def test_missing_key_is_a_clear_failure(
    bucket: object, moto_env: dict[str, str], sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    run = run_suite(f"--backup=s3://{BUCKET}/database/no-such.dump", f"--expectations={sample.expectations}",
                    env=moto_env)
    assert run.failed_items() == {"restore_succeeded"}
    assert f"No object s3://{BUCKET}/database/no-such.dump" in run.result["restore"]["refused"]


def test_prefix_without_pick_is_refused_with_the_fix(
    bucket: object, moto_env: dict[str, str], run_suite: Callable[..., SuiteRun]
) -> None:
    run = run_suite(f"--backup=s3://{BUCKET}/database/", env=moto_env)
    assert "pass --backup-pick=latest" in run.result["restore"]["refused"]


def test_credentials_never_reach_the_output(
    bucket: object, moto_env: dict[str, str], sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    secret = "s3-Secret-Access-Key-" + os.urandom(4).hex()
    env = {**moto_env, "AWS_SECRET_ACCESS_KEY": secret}
    run = run_suite(f"--backup=s3://{BUCKET}/database/backup-20261101.dump", f"--expectations={sample.expectations}",
                    env=env)
    assert secret not in run.output
    for path in run.run_dir.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path


def test_the_record_can_live_on_s3(
    bucket: object, moto_env: dict[str, str], sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    history = f"s3://{BUCKET}/restore-verify/record.jsonl"
    for _ in range(2):
        run_suite(*sample.restore_args(), f"--record={history}", env=moto_env)
    proc = subprocess.run([sys.executable, "-m", "restore", "record", f"--history={history}",
                           f"--output={tmp_path / 'rendered'}"], capture_output=True, text=True,
                          env={**os.environ, **moto_env}, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("2 runs")
    assert (tmp_path / "rendered" / "record.html").exists()
