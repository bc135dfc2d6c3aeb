"""A clean restore of the sample passes every checklist item; the main job's promises hold."""

from __future__ import annotations

import re
from collections.abc import Callable

from tests.conftest import ALL_PASSED, Sample, SuiteRun


def test_clean_restore_passes_every_item_and_restores_once_with_xdist(
    sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    run = run_suite("-n", "2", *sample.restore_args())
    assert run.returncode == 0, run.explain()
    assert run.result["checklist"] == ALL_PASSED, run.explain()
    assert run.result["tests"]["failed"] == 0
    assert run.result["tests"]["passed"] > 50
    # Exactly one restore for the whole run, by the controller, although two workers ran the checks: with --jobs,
    # pg_restore's two runs of it (the schema, then the data and post-data).
    log = (run.run_dir / "restore.log").read_text()
    runs = re.findall(r"^\$ pg_restore .*", log, flags=re.M)
    assert [("--section=pre-data" in r, "--section=data --section=post-data" in r) for r in runs] == [
        (True, False), (False, True)], log[:2000]
    assert run.result["workers"] == ["gw0", "gw1"]
    # The run folder holds the three promised files, and result.json the promised fields.
    for name in ("report.html", "junit.xml", "result.json"):
        assert (run.run_dir / name).exists(), name
    r = run.result
    assert set(r) >= {"started_at", "finished_at", "target", "backup", "restore", "checklist", "tests", "failures"}
    assert r["target"]["kind"] == "embedded"
    assert r["target"]["server_version"].startswith("18")
    assert r["backup"]["format"] == "custom"
    assert r["backup"]["dumped_from"]
    assert r["backup"]["size_bytes"] > 0
    assert r["restore"]["errors"] == []
    assert r["restore"]["duration_s"] > 0
    # Where the throwaway cluster was written, and why (in memory when small and this machine has a tmpfs).
    assert r["restore"]["server_dir"]
    assert r["restore"]["server_placement"].startswith("the throwaway cluster is")
    assert any('role "postgres" already exists' in e for e in r["restore"]["accepted_errors"])
    html = (run.run_dir / "report.html").read_text()
    assert "id='checklist'" in html
    assert "restore_succeeded" in html
    assert "src=\"http" not in html


def test_without_globals_roles_are_created_nologin_and_listed(
    sample: Sample, run_suite: Callable[..., SuiteRun]
) -> None:
    run = run_suite(f"--backup={sample.dump}", f"--expectations={sample.expectations}")
    assert sorted(run.result["restore"]["roles_created"]) == ["ecommerce_app", "ecommerce_owner"]
    # Ownership and grants restored faithfully (no errors), but the app role cannot log in: said, not hidden.
    assert run.result["restore"]["errors"] == [], run.explain()
    assert run.failed_items() == {"app_connect"}, run.explain()
    assert "cannot log in" in run.result["checklist_reasons"]["app_connect"]
