"""The record as evidence: a hash chain that names the first edited, deleted or moved line, signatures that verify
only with the right key (a local Ed25519 file, AWS KMS on moto), older unchained lines, and a year's export."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from restore.records import evidence, record
from tests.conftest import ROOT, Sample, SuiteRun


def _run(month: str, day: int = 1, *, failed: bool = False) -> dict[str, object]:
    checklist = {item: "passed" for item in evidence.CONTROLS}
    if failed:
        checklist["orphaned_records"] = "failed"
    return {"date": f"{month}-{day:02d}T03:00:00+00:00", "run_id": f"run-{month}-{day}", "outcome":
            "failed" if failed else "passed", "target": {"name": "prod-restored", "kind": "existing"},
            "backup": {"id": f"backup-{month}.dump", "created_at": f"{month}-{day:02d}T02:00:00+00:00"},
            "restore": {"performed": False, "duration_s": None}, "rto": {"measured_s": 1200.0, "target_s": 3600.0},
            "rpo": {"measured_s": 300.0, "target_s": 900.0}, "checklist": checklist, "suite_version": "0.1.0",
            "config_sha256": "c" * 64, "operator": "dba", "isolation": evidence.ISOLATION["existing"]}


def _verify(history: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "restore", "record", f"--history={history}", "--verify", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture
def chained(tmp_path: Path) -> Path:
    history = tmp_path / "record.jsonl"
    for month in ("2026-06", "2026-07", "2026-08", "2026-09", "2026-10"):
        record.append(history, _run(month))
    return history


def test_an_intact_chain_verifies(chained: Path) -> None:
    proc = _verify(chained)
    assert proc.returncode == 0, proc.stderr
    assert "5 line(s); chain intact" in proc.stdout


@pytest.mark.parametrize(("change", "line"), [
    ("edit", 3), ("edit-last", 5), ("delete", 2), ("reorder", 2), ("insert", 3)])
def test_any_edit_deletion_or_reordering_names_the_first_broken_line(chained: Path, change: str, line: int) -> None:
    lines = chained.read_text().splitlines()
    if change == "edit":
        lines[2] = lines[2].replace('"outcome":"passed"', '"outcome":"failed"').replace(
            '"outcome": "passed"', '"outcome": "failed"')
    elif change == "edit-last":
        lines[4] = lines[4].replace("dba", "someone-else")
    elif change == "delete":
        del lines[1]
    elif change == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    else:
        lines.insert(2, json.dumps(json.loads(lines[1]) | {"run_id": "forged"}))
    chained.write_text("\n".join(lines) + "\n")
    proc = _verify(chained)
    assert proc.returncode == 1
    assert f"BROKEN at line {line}:" in proc.stderr, proc.stderr


def test_an_older_record_without_hashes_still_renders_and_says_where_chaining_began(tmp_path: Path) -> None:
    history = tmp_path / "record.jsonl"
    history.write_text("".join(json.dumps(_run(m)) + "\n" for m in ("2026-04", "2026-05")))  # before chaining
    record.append(history, _run("2026-06"))
    record.append(history, _run("2026-07"))
    proc = _verify(history)
    assert proc.returncode == 0, proc.stderr
    assert "not chained before line 3" in proc.stdout
    rendered = subprocess.run([sys.executable, "-m", "restore", "record", f"--history={history}",
                               f"--output={tmp_path / 'out'}"], cwd=ROOT, capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr
    assert "not chained" in (tmp_path / "out" / "record.html").read_text()


def _ed25519_pair(folder: Path, name: str) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def test_a_signed_record_verifies_with_its_key_and_fails_with_another(tmp_path: Path) -> None:
    private, public = _ed25519_pair(tmp_path, "team")
    _, other = _ed25519_pair(tmp_path, "other")
    history = tmp_path / "record.jsonl"
    signer = evidence.signer_for(str(private))
    for month in ("2026-09", "2026-10"):
        record.append(history, _run(month), signer=signer)
    good = _verify(history, f"--public-key={public}")
    assert good.returncode == 0, good.stderr
    assert "chain and signatures intact" in good.stdout
    bad = _verify(history, f"--public-key={other}")
    assert bad.returncode == 1
    assert "BROKEN at line 1: its signature does not verify" in bad.stderr


def test_a_kms_signed_record_verifies_against_moto(moto_env: dict[str, str], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in moto_env.items():
        monkeypatch.setenv(key, value)
    import boto3

    key_id = boto3.client("kms").create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["KeyId"]
    history = tmp_path / "record.jsonl"
    record.append(history, _run("2026-10"), signer=evidence.signer_for(f"kms:{key_id}"))
    assert evidence.verify(history.read_text(), kms=True).ok
    forged = history.read_text().replace('"operator":"dba"', '"operator":"x"').replace('"operator": "dba"',
                                                                                      '"operator": "x"')
    history.write_text(forged)
    assert not evidence.verify(forged, kms=True).ok


def test_a_years_export_holds_what_an_auditor_asks(tmp_path: Path) -> None:
    history = tmp_path / "record.jsonl"
    for month in range(1, 13):
        record.append(history, _run(f"2026-{month:02d}", failed=month == 6))
    record.annotate(history, "run-2026-06-1", remediation="orphans removed, FK validated (CHG-1234)", operator="dba")
    assert _verify(history).returncode == 0  # the annotation is chained too
    out = tmp_path / "evidence-2026.json"
    proc = subprocess.run([sys.executable, "-m", "restore", "record", f"--history={history}", "--export=2026",
                           "--format=json", f"--output={out}"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(out.read_text())["runs"]
    assert len(runs) == 12
    june = next(r for r in runs if r["run_id"] == "run-2026-06-1")
    assert june["remediation"] == ["orphans removed, FK validated (CHG-1234)"]
    for field in ("run_id", "backup", "backup_time", "isolation", "tool_version", "config_sha256", "operator",
                  "items", "rto", "rpo", "controls", "chained"):
        assert all(r[field] is not None for r in runs), field
    assert "ISO 27001 A.8.13" in runs[0]["controls"]
    md = subprocess.run([sys.executable, "-m", "restore", "record", f"--history={history}", "--export=2026"],
                        cwd=ROOT, capture_output=True, text=True).stdout
    assert "| run-2026-06-1 |" in md
    assert "CHG-1234" in md


def test_a_real_runs_line_carries_its_evidence_and_a_changed_report_is_caught(
    sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    history = tmp_path / "record.jsonl"
    run = run_suite(*sample.restore_args(), f"--record={history}", "--ticket=https://tickets.example/BACKUP-1")
    assert run.returncode == 0, run.explain()
    line = json.loads(history.read_text())
    assert line["evidence"]["result_sha256"]
    assert line["evidence"]["report_sha256"]
    assert line["config_sha256"] == run.result["config_sha256"]
    assert line["isolation"] == evidence.ISOLATION["embedded"]
    assert line["ticket"] == "https://tickets.example/BACKUP-1"
    assert _verify(history).returncode == 0
    report = run.run_dir / "report.html"
    report.write_text(report.read_text().replace("PASSED", "PASSED (edited)"))
    proc = _verify(history)
    assert proc.returncode == 1
    assert "BROKEN at line 1: its report.html was changed after the run" in proc.stderr
