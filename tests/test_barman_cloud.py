"""Barman Cloud backups (the format CloudNativePG writes) recovered to a point in time and verified
(barman-cloud:s3://BUCKET/PREFIX/SERVER[@TIME]).

The source is a live server this module creates, archiving its WAL with ``barman-cloud-wal-archive`` into moto's S3
server and backed up with ``barman-cloud-backup``; rows are written after the backup, the target lies between two
commits, and exactly the rows up to it must be recovered. A WAL segment taken out of (a copy of) the archive must fail
the restore, naming it.

The barman-cloud tools come from PATH or /opt/barman-cloud/bin (where .ci/run installs them into a Python every user
can run: the recovering server runs ``barman-cloud-wal-restore`` as its own user).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import SuiteRun
from tests.physical_source import BARMAN_BUCKET, BARMAN_SERVER, Archive, events_expectations

BUCKET, SERVER = BARMAN_BUCKET, BARMAN_SERVER


@pytest.fixture
def archive(barman_archive: Archive) -> Archive:
    return barman_archive


def test_a_barman_cloud_backup_recovered_to_a_time_holds_exactly_the_rows_up_to_it(
    archive: Archive, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    run = run_suite(f"--backup=barman-cloud:{archive.url}@{archive.target.isoformat()}?endpoint={archive.endpoint}"
                    "&db=shop", f"--expectations={events_expectations(tmp_path, 20)}", env=archive.env())
    for item in ("restore_succeeded", "db_accessible", "row_counts", "duplicate_primary_keys", "no_corruption",
                 "rpo", "rto"):
        assert run.result["checklist"][item] == "passed", run.explain()
    assert run.result["backup"]["format"] == "barman-cloud"
    assert run.result["backup"]["recovery"]["wal_segments"] >= 1
    assert datetime.fromisoformat(run.result["backup"]["created_at"]) <= archive.target
    log = (run.run_dir / "restore.log").read_text()
    assert "barman-cloud: backup" in log
    assert "testing" not in log  # the credentials reach the tools through the environment, never the log


def _double_slash(url: str) -> str:
    """``s3://barman/cluster-x//main``: a destination path written with a trailing slash (as CloudNativePG's plugin
    documentation writes it) joined to the server name. Barman reads it as ``cluster-x/main``."""
    head, _, server = url.rpartition("/")
    return f"{head}//{server}"


@pytest.mark.parametrize("slashes", ["single", "double"])
def test_without_a_target_the_backup_recovers_all_its_wal(
    slashes: str, archive: Archive, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """The endpoint from AWS_ENDPOINT_URL, as for any S3 source. The end of recovery is proven from a listing that
    holds every segment replayed, under either spelling of the URL."""
    url = archive.url if slashes == "single" else _double_slash(archive.url)
    run = run_suite(f"--backup=barman-cloud:{url}?db=shop",
                    f"--expectations={events_expectations(tmp_path, 30)}", env=archive.env(endpoint=True))
    assert run.result["checklist"]["restore_succeeded"] == "passed", run.explain()
    assert run.result["checklist"]["row_counts"] == "passed", run.explain()
    recovery = run.result["backup"]["recovery"]
    assert recovery["end_proven"] is True, recovery
    assert "end of recovery proven" in recovery["end"], recovery


def test_without_credentials_the_run_is_an_error_of_the_verifier_not_a_failed_backup(
    archive: Archive, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """No S3 credentials: the verifier's configuration, said in words (no raw log line), exit 7, not counted."""
    env: dict[str, str | None] = {**archive.env(endpoint=True), "AWS_ACCESS_KEY_ID": None,
                                  "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None,
                                  "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                                  "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"}
    run = run_suite(f"--backup=barman-cloud:{archive.url}?db=shop",
                    f"--expectations={events_expectations(tmp_path, 30)}", env=env)
    assert run.returncode == 7, run.explain()
    assert run.result["outcome"] == "error", run.explain()
    assert "no S3 credentials were found" in run.result["outcome_reason"], run.result["outcome_reason"]
    assert not run.failed_items(), run.explain()
    assert run.result["restore"]["verifier_fault"] is True
    assert not re.search(r"\[\d+\] ERROR", run.result["outcome_reason"]), run.result["outcome_reason"]


@pytest.mark.parametrize(("with_target", "slashes"), [(True, "single"), (False, "single"), (False, "double")],
                         ids=["to-a-time", "to-the-end", "to-the-end-double-slash"])
def test_a_missing_wal_segment_fails_the_restore_naming_it(
    with_target: bool, slashes: str, archive: Archive, tmp_path: Path,  # noqa: FBT001
    run_suite: Callable[..., SuiteRun],
) -> None:
    """A gap in the archive: with a target, recovery cannot reach it; without one, PostgreSQL would take the gap for
    the end and promote with rows lost: the suite lists the archive on S3 and fails."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=archive.endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    source_prefix = archive.url.removeprefix(f"s3://{BUCKET}/") + "/"
    damaged = f"damaged-{uuid.uuid4().hex[:8]}"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=source_prefix):
        for obj in page.get("Contents", []):
            if f"/{archive.segment}" in obj["Key"]:
                continue  # the copy lacks this one segment
            s3.copy_object(Bucket=BUCKET, Key=damaged + obj["Key"].removeprefix(source_prefix.split("/")[0]),
                           CopySource={"Bucket": BUCKET, "Key": obj["Key"]})
    target = f"@{archive.target.isoformat()}" if with_target else ""
    url = f"s3://{BUCKET}/{damaged}/{SERVER}" if slashes == "single" else f"s3://{BUCKET}/{damaged}//{SERVER}"
    run = run_suite(f"--backup=barman-cloud:{url}{target}?db=shop",
                    f"--expectations={events_expectations(tmp_path, 20 if with_target else 30)}",
                    env=archive.env(endpoint=True))
    assert run.failed_items() == {"restore_succeeded"}, run.explain()
    refused = run.result["restore"]["refused"]
    assert f"segment {archive.segment} is missing from the Barman Cloud WAL archive" in refused \
        or f"segment {archive.segment} is missing, so PostgreSQL took it" in refused, refused
    assert "newer segment(s)" in refused, refused


def test_a_named_restore_point_and_a_target_before_every_backup(
    archive: Archive, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    run = run_suite(f"--backup=barman-cloud:{archive.url}?db=shop", "--recovery-target-name=after-20",
                    f"--expectations={events_expectations(tmp_path, 20)}", env=archive.env(endpoint=True))
    for item in ("restore_succeeded", "row_counts", "rpo"):
        assert run.result["checklist"][item] == "passed", run.explain()
    assert run.result["backup"]["recovery"]["target"] == "restore point after-20"
    early = run_suite(f"--backup=barman-cloud:{archive.url}@2000-01-01T00:00:00Z?db=shop",
                      f"--expectations={tmp_path / 'expectations'}", env=archive.env(endpoint=True))
    assert early.failed_items() == {"restore_succeeded"}, early.explain()
    assert "is before the end of every backup" in early.result["restore"]["refused"]


def test_a_wal_fetch_cut_by_the_network_is_the_verifiers_world_not_a_gap(
    archive: Archive, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """The archive holds every segment, but fetching one fails as a cut connection does (barman-cloud-wal-restore's
    network error, exit 2, every time): recovery must stop, not take it for the end of the archive and promote; the
    run is the verifier's error (not a failed backup test, not counted), naming the file and the tool's words."""
    shim = Path(tempfile.mkdtemp(prefix="rv-barman-shim-", dir="/tmp"))
    try:
        shim.chmod(0o755)
        tool = shim / "barman-cloud-wal-restore"
        cut = "ERROR: Barman cloud WAL restore exception: Could not connect to the endpoint URL"
        tool.write_text(f'#!/bin/sh\ncase " $* " in *" {archive.segment} "*)\n  echo "{cut}" >&2\n  exit 2;;\n'
                        f'esac\nexec {archive.bin_dir}/barman-cloud-wal-restore "$@"\n')
        tool.chmod(0o755)
        env = archive.env(endpoint=True)
        env["PATH"] = f"{shim}:{env['PATH']}"
        run = run_suite(f"--backup=barman-cloud:{archive.url}?db=shop",
                        f"--expectations={events_expectations(tmp_path, 30)}", env=env)
    finally:
        shutil.rmtree(shim, ignore_errors=True)
    assert run.result["outcome"] == "error", run.explain()
    assert not run.failed_items(), run.explain()
    assert run.result["restore"]["verifier_fault"] is True, run.explain()
    refused = run.result["restore"]["refused"]
    assert f"could not be read when recovery asked for WAL file {archive.segment}" in refused, refused
    assert "Could not connect to the endpoint URL" in refused, refused
    assert "is missing" not in refused, refused  # never worded as a gap in the backup's archive
