"""Operations (issue #28): the alert rules shipped in deploy/prometheus, and the record's view as metrics.

promtool (Debian's ``prometheus`` package) checks the rules and runs their unit tests
(tests/prometheus/restore-verify.test.yaml: each alert fires on its history and stays quiet on a healthy one); the
rules may only name metrics the suite writes; ``python -m restore record --metrics`` lists every database of a
fleet, the never-tested one included.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, Sample, SuiteRun

RULES = ROOT / "deploy" / "prometheus" / "restore-verify.rules.yaml"
OPERATOR_RULE = ROOT / "deploy" / "prometheus" / "prometheusrule.yaml"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("no promtool: apt-get install prometheus (.ci/run does)")
    return found


def test_the_rules_pass_promtool_check_and_their_unit_tests() -> None:
    promtool = _promtool()
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 5 rules found" in check.stdout
    tests = ROOT / "tests" / "prometheus" / "restore-verify.test.yaml"
    run = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True, check=False,
                         cwd=tests.parent)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_prometheus_operator_rule_holds_the_same_groups() -> None:
    operator = yaml.safe_load(OPERATOR_RULE.read_text())
    assert (operator["apiVersion"], operator["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert operator["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def _names(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


def test_the_rules_name_only_metrics_the_suite_writes_and_the_record_lists_every_database(
    sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun],
) -> None:
    history, metrics = tmp_path / "record.jsonl", tmp_path / "run.prom"
    passed = run_suite(*sample.restore_args(), f"--record={history}", "--label=orders", f"--metrics={metrics}")
    assert passed.result["outcome"] == "passed", passed.explain()
    run = run_suite(*sample.restore_args(), f"--record={history}", "--label=orders", f"--metrics={metrics}",
                    "--rto=1ms")  # no restore is that fast (one in memory takes under 1 s): both figures are written
    assert run.result["checklist"]["rto"] == "failed", run.explain()
    fleet = tmp_path / "prod.toml"
    fleet.write_text(f'[fleet]\nrecord = "{history}"\n\n[databases.orders]\nbackup = "{sample.dump}"\n\n'
                     f'[databases.billing]\nbackup = "s3://backups/billing/"\n')
    exported = tmp_path / "textfile" / "record.prom"
    done = subprocess.run([sys.executable, "-m", "restore", "record", f"--history={history}", f"--fleet={fleet}",
                           f"--metrics={exported}"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 database(s), 1 overdue" in done.stdout  # orders passed once (then failed its RTO); billing never ran
    samples = {(s.name, s.labels.get("database")): s.value
               for family in text_string_to_metric_families(exported.read_text()) for s in family.samples}
    assert samples[("restore_verify_record_database", "billing")] == 1.0
    assert samples[("restore_verify_record_overdue", "billing")] == 1.0
    assert ("restore_verify_record_last_success_timestamp_seconds", "billing") not in samples
    assert samples[("restore_verify_record_overdue", "orders")] == 0.0
    assert samples[("restore_verify_record_last_run_timestamp_seconds", "orders")] > samples[
        ("restore_verify_record_last_success_timestamp_seconds", "orders")]
    written = _names(metrics.read_text()) | _names(exported.read_text())
    used = set(re.findall(r"\b(restore_verify_[a-z_]+)", RULES.read_text()))
    assert used
    assert used <= written, used - written
