"""The fleet: an Indexed Job rendered from the CronJob (validated offline), each index verifying its database into
the shared record on S3 (moto's server), and record --overdue failing on a database overdue or never tested.

Not run here: a live cluster. The rendered Job is checked against the Kubernetes 1.30 schema, and each pod's work
(``python -m restore fleet run`` with the ``JOB_COMPLETION_INDEX`` Kubernetes sets) runs as a subprocess.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import restore
from tests.conftest import ROOT, Sample

BUCKET = "fleet-records"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "restore", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=600)


def test_the_fleet_renders_an_indexed_job_that_validates(tmp_path: Path) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    out = tmp_path / "fleet-job.yaml"
    done = _cli("fleet", "render", f"--fleet={ROOT / 'examples/fleet.toml'}",
                f"--cronjob={ROOT / 'deploy/kubernetes/restore-verify.yaml'}", f"--output={out}")
    assert done.returncode == 0, done.stderr
    documents = [d for d in yaml.safe_load_all(out.read_text()) if d]
    for document in documents:
        kubernetes_validate.validate(document, "1.30", strict=True)
    job = next(d for d in documents if d["kind"] == "Job")
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    container = spec["template"]["spec"]["containers"][0]
    assert container["args"] == ["python", "-m", "restore", "fleet", "run", "--fleet=/fleet/fleet.toml"]
    assert container["image"] == f"restore-verify:{restore.__version__}"  # the CronJob's: the Dockerfile's tag
    config = next(d for d in documents if d["kind"] == "ConfigMap")
    assert "[databases.billing]" in config["data"]["fleet.toml"]
    # The image from one setting: the fleet file's image, and --image over it.
    fleet = tmp_path / "fleet.toml"
    fleet.write_text((ROOT / "examples/fleet.toml").read_text().replace(
        "[fleet]\n", '[fleet]\nimage = "registry.example.com/restore-verify:7"\n', 1))
    for extra, image in (((), "registry.example.com/restore-verify:7"),
                         (("--image=registry.example.com/restore-verify:8",), "registry.example.com/restore-verify:8")):
        done = _cli("fleet", "render", f"--fleet={fleet}",
                    f"--cronjob={ROOT / 'deploy/kubernetes/restore-verify.yaml'}", f"--output={out}", *extra)
        assert done.returncode == 0, done.stderr
        job = next(d for d in yaml.safe_load_all(out.read_text()) if d and d["kind"] == "Job")
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == image


def test_each_index_verifies_its_database_and_overdue_fails_on_the_missing_ones(
    sample: Sample, moto_env: dict[str, str], tmp_path: Path
) -> None:
    import boto3

    boto3.client("s3", endpoint_url=moto_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
    broken = tmp_path / "broken-expectations"
    shutil.copytree(sample.expectations, broken)
    (broken / "business_rules" / "orders_are_free.sql").write_text(
        "SELECT id FROM public.orders WHERE total > 0\n")
    fleet = tmp_path / "fleet.toml"
    history = f"s3://{BUCKET}/record.jsonl"
    common = f'args = ["--globals={sample.globals_sql}", "--reports-dir={tmp_path / "runs"}"]\n'
    fleet.write_text(
        f'[fleet]\nrecord = "{history}"\nparallelism = 2\noverdue_after_days = 35\n\n'
        f'[databases.shop]\nbackup = "{sample.dump}"\nexpectations = "{sample.expectations}"\n{common}\n'
        f'[databases.billing]\nbackup = "{sample.dump}"\nexpectations = "{broken}"\n{common}\n'
        f'[databases.archive]\nbackup = "{sample.dump}"\n')
    env = {**os.environ, **moto_env, "TMPDIR": str(tmp_path)}
    for index in (0, 1):  # what the Indexed Job's pods do; index 2 (archive) never ran
        done = _cli("fleet", "run", f"--fleet={fleet}", env={**env, "JOB_COMPLETION_INDEX": str(index)})
        assert done.returncode == (0 if index == 0 else 1), done.stdout[-3000:] + done.stderr[-2000:]
    overdue = _cli("record", f"--history={history}", "--overdue", f"--fleet={fleet}", env=env)
    assert overdue.returncode == 1, overdue.stdout + overdue.stderr
    table = {line.split()[0] if not line.startswith("OVERDUE") else line.split()[1]: line
             for line in overdue.stdout.splitlines()[1:]}
    assert not table["shop"].startswith("OVERDUE"), overdue.stdout
    assert table["billing"].startswith("OVERDUE"), overdue.stdout  # it ran, and failed: no passing run
    assert table["archive"].startswith("OVERDUE"), overdue.stdout  # never ran: no data is a failure
    assert "never" in table["archive"]
    assert "OVERDUE: billing, archive" in overdue.stderr
    # The record page has the fleet view: each database, its last complete passing run, overdue ones marked.
    assert _cli("record", f"--history={history}", f"--output={tmp_path / 'page'}", env=env).returncode == 0
    page = (tmp_path / "page" / "record.html").read_text()
    assert '<tr class="current"><td>shop</td>' in page
    assert '<tr class="overdue"><td>billing</td>' in page
    # With only the database that passed, nothing is overdue.
    fleet.write_text(fleet.read_text().split("[databases.billing]")[0])
    assert _cli("record", f"--history={history}", "--overdue", f"--fleet={fleet}", env=env).returncode == 0
