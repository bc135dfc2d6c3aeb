"""The suite's own image (the top-level Dockerfile, issue #28): the sample's main job passes inside it, as the non-root
user, with the embedded PostgreSQL server as the target — and fails when the sample's dump is truncated.

CI builds the image first (``scripts/image-ci.sh``, after ``scripts/docker-ci.sh`` started an engine); this test
runs the image built from this very commit (its ``org.opencontainers.image.revision`` label), builds it with the same
script where it is missing or older, and skips, saying why, only where no Docker engine answers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"restore-verify:{VERSION}"

# Inside the image: build the sample, run the README's main job, then the same job on a truncated copy of the dump.
JOB = """
set -u
python examples/build_sample.py >/dev/null
args="--globals=examples/out/sample.globals.sql --expectations=examples/expectations --no-record"
pytest -n auto --backup=examples/out/sample.dump $args --result-json=/reports/passed.json >/reports/passed.log 2>&1
echo "passed-run exit $?"
size=$(stat -c %s examples/out/sample.dump)
head -c $((size * 2 / 3)) examples/out/sample.dump >/tmp/truncated.dump
pytest -n auto --backup=/tmp/truncated.dump $args --result-json=/reports/truncated.json >/reports/truncated.log 2>&1
echo "truncated-run exit $?"
barman-cloud-wal-restore --version 2>&1 | sed 's/^/barman-cloud: /'
id -u
"""


def _image_revision() -> str | None:
    if shutil.which("docker") is None:
        pytest.skip("no docker client: the image is built and run where a Docker engine exists (scripts/docker-ci.sh)")
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        pytest.skip("no Docker engine answers: start one (scripts/docker-ci.sh) to build and run the image")
    found = subprocess.run(["docker", "image", "inspect", IMAGE, "--format",
                            '{{index .Config.Labels "org.opencontainers.image.revision"}}'],
                           capture_output=True, text=True, check=False)
    return found.stdout.strip() if found.returncode == 0 else None


def test_the_main_job_passes_inside_the_image_and_a_truncated_dump_fails(tmp_path: Path) -> None:
    revision = _image_revision()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=False).stdout.strip()
    if revision is None or revision != head:
        built = subprocess.run(["bash", str(ROOT / "scripts" / "image-ci.sh")], cwd=ROOT, capture_output=True,
                               text=True, timeout=1500, check=False, env={**os.environ, "PYTHON": sys.executable})
        assert built.returncode == 0, (f"no image {IMAGE} of this commit ({head[:12]}; found "
                                       f"{(revision or 'none')[:12]}) and scripts/image-ci.sh could not build it:\n"
                                       f"{built.stderr[-3000:]}")
    reports = tmp_path / "reports"
    reports.mkdir()
    reports.chmod(0o777)  # the image's user (10001) writes its results here
    labels = json.loads(subprocess.run(["docker", "image", "inspect", IMAGE, "--format", "{{json .Config.Labels}}"],
                                       capture_output=True, text=True, check=True).stdout)
    assert labels["org.opencontainers.image.version"] == VERSION
    run = subprocess.run(["docker", "run", "--rm", "--shm-size=256m", "-v", f"{reports}:/reports", IMAGE,
                          "sh", "-c", JOB], capture_output=True, text=True, timeout=900, check=False)
    output = run.stdout + run.stderr
    logs = "\n".join(p.read_text()[-3000:] for p in sorted(reports.glob("*.log")))
    assert "passed-run exit 0" in output, output + logs
    passed = json.loads((reports / "passed.json").read_text())
    assert passed["outcome"] == "passed", passed["outcome_reason"]
    assert passed["target"]["kind"] == "embedded"
    assert "truncated-run exit 1" in output, output + logs
    truncated = json.loads((reports / "truncated.json").read_text())
    assert truncated["outcome"] == "failed"
    assert truncated["checklist"]["restore_succeeded"] == "failed", truncated["checklist_reasons"]
    # Barman Cloud's tools are in the image, for barman-cloud: and cnpg: backups (a fleet Job of CloudNativePG
    # clusters runs them): the image's user, which the recovering server runs as, can run them.
    assert "barman-cloud: barman-cloud-wal-restore 3." in output, output
    assert run.stdout.strip().splitlines()[-1] == "10001"  # not root
