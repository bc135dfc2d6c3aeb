"""The record as evidence an auditor accepts: a hash chain, optional signatures, and the controls each item evidences.

Each record line carries ``chain``: the SHA-256 of the line before it (as stored, byte for byte), the SHA-256 of its
own content (the line without ``chain.sha256`` and ``chain.signature``, serialised canonically), and optionally a
signature of that digest — by a local Ed25519 key file or by AWS KMS (``Sign``). An edit anywhere changes a line's own
digest; a deletion, an insertion or a reordering breaks the next line's link; a signature stops anyone without the
key from recomputing both. :func:`verify` names the first broken line. Lines written before chaining existed are
reported as "not chained before line N", never as broken.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restore.untrusted import md_cell

GENESIS = "0" * 64

# The checklist items mapped to the controls they evidence (restore tests, integrity and completeness of backups).
CONTROLS: dict[str, tuple[str, ...]] = {
    "restore_succeeded": ("ISO 27001 A.8.13", "SOC 2 A1.3", "DORA Art. 12", "HIPAA 164.308(a)(7)(ii)(D)"),
    "db_accessible": ("ISO 27001 A.8.13", "SOC 2 A1.3", "DORA Art. 12"),
    "tables_present": ("ISO 27001 A.8.13", "SOC 2 A1.3"),
    "row_counts": ("SOC 2 A1.3", "ISO 27001 A.8.13"),
    "foreign_keys": ("SOC 2 A1.3",),
    "orphaned_records": ("SOC 2 A1.3",),
    "unvalidated_constraints": ("SOC 2 A1.3",),
    "duplicate_primary_keys": ("SOC 2 A1.3",),
    "schema_matches": ("SOC 2 A1.3", "ISO 27001 A.8.13"),
    "sequences": ("SOC 2 A1.3",),
    "no_corruption": ("SOC 2 A1.3", "ISO 27001 A.8.13", "HIPAA 164.308(a)(7)(ii)(D)"),
    "app_connect": ("DORA Art. 12", "HIPAA 164.308(a)(7)(ii)(D)"),
    "critical_queries": ("DORA Art. 12",),
    "business_rules": ("SOC 2 A1.3", "DORA Art. 12"),
    "rto": ("DORA Art. 12", "ISO 27001 A.8.13"),
    "rpo": ("DORA Art. 12", "ISO 27001 A.8.13"),
    "retention": ("ISO 27001 A.8.13", "HIPAA 164.316(b)(2)"),
}

# --keep-target: the server outlives the run (and may be changed after it): the record says so.
KEPT = "throwaway server kept running after the run for inspection (--keep-target): it may have been changed since"
ISOLATION = {"embedded": "throwaway embedded PostgreSQL (deleted after the run)",
             "container": "throwaway container (removed after the run)",
             "rds": "new RDS instance (deleted after the run)",
             "existing": "existing database, verified read-only"}


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: Path) -> str | None:
    try:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None


def canonical(line: dict[str, Any]) -> str:
    """The line as its digest covers it: every field but the digest and the signature, keys sorted."""
    chain = {k: v for k, v in (line.get("chain") or {}).items() if k not in ("sha256", "signature")}
    return json.dumps(line | {"chain": chain}, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=str)


class Signer:
    """Signs a line's digest; ``key_id`` names the key in the line."""

    key_id: str = ""

    def sign(self, digest: str) -> str:
        raise NotImplementedError


class Ed25519Signer(Signer):
    """A local Ed25519 private key (PEM, PKCS8), kept by the team outside the record's storage."""

    def __init__(self, path: Path) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        self._key = key
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = "ed25519:" + hashlib.sha256(public).hexdigest()[:16]

    def sign(self, digest: str) -> str:
        return base64.b64encode(self._key.sign(digest.encode())).decode()


class KmsSigner(Signer):
    """AWS KMS ``Sign`` with an asymmetric SIGN_VERIFY key (ECC_NIST_P256, ECDSA_SHA_256): the key never leaves KMS."""

    ALGORITHM = "ECDSA_SHA_256"

    def __init__(self, key: str) -> None:
        import boto3

        self._kms = boto3.client("kms")
        self.key_id = "kms:" + key

    def sign(self, digest: str) -> str:
        answer = self._kms.sign(KeyId=self.key_id.removeprefix("kms:"), Message=digest.encode(),
                                MessageType="RAW", SigningAlgorithm=self.ALGORITHM)
        return base64.b64encode(answer["Signature"]).decode()


def signer_for(spec: str | None) -> Signer | None:
    """``--record-key``: a PEM file path, or ``kms:KEY-ID``."""
    if not spec:
        return None
    if spec.startswith("kms:"):
        return KmsSigner(spec.removeprefix("kms:"))
    return Ed25519Signer(Path(spec))


def last_line(text: str) -> str | None:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


def seal(previous_text: str, line: dict[str, Any], signer: Signer | None = None) -> str:
    """The line as it is appended after ``previous_text``: linked to the line before it, digested, signed."""
    before = last_line(previous_text)
    chained = line | {"chain": {"prev_sha256": sha256_text(before) if before is not None else GENESIS}}
    if signer is not None:
        chained["chain"]["key"] = signer.key_id
    digest = sha256_text(canonical(chained))
    chained["chain"]["sha256"] = digest
    if signer is not None:
        chained["chain"]["signature"] = signer.sign(digest)
    return json.dumps(chained, ensure_ascii=False, sort_keys=True, default=str)


@dataclass
class Verification:
    """What :func:`verify` found: ``broken`` lines (number, why), and where chaining began."""

    lines: int = 0
    chained_from: int | None = None
    broken: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.broken


def _verify_signature(line: dict[str, Any], digest: str, *, public_key: Path | None, kms: bool) -> str | None:
    chain = line["chain"]
    signature = chain.get("signature")
    if signature is None:
        return "it is not signed, and a signature was asked to be verified"
    key = str(chain.get("key", ""))
    if key.startswith("kms:"):
        if not kms:
            return f"it is signed by {key}: verify with --kms (AWS credentials for kms:Verify)"
        import boto3

        answer = boto3.client("kms").verify(KeyId=key.removeprefix("kms:"), Message=digest.encode(),
                                            MessageType="RAW", Signature=base64.b64decode(signature),
                                            SigningAlgorithm=KmsSigner.ALGORITHM)
        return None if answer.get("SignatureValid") else f"its signature does not verify with {key}"
    if public_key is None:
        return f"it is signed by {key}: pass the public key (--public-key PEM)"
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    loaded = serialization.load_pem_public_key(public_key.read_bytes())
    if not isinstance(loaded, Ed25519PublicKey):
        return f"{public_key} is not an Ed25519 public key"
    try:
        loaded.verify(base64.b64decode(signature), digest.encode())
    except InvalidSignature:
        return f"its signature does not verify with {public_key} (another key signed it, or the line was re-signed)"
    return None


def verify(text: str, *, public_key: Path | None = None, kms: bool = False,
           check_files: bool = True) -> Verification:
    """Check the chain (and signatures, and the files each line names); the first broken line comes first."""
    result = Verification()
    raw_lines = [line for line in text.splitlines() if line.strip()]
    result.lines = len(raw_lines)
    previous: str | None = None
    for number, raw in enumerate(raw_lines, 1):
        try:
            line = json.loads(raw)
        except ValueError:
            result.broken.append((number, "it is not valid JSON (a truncated or edited line)"))
            previous = raw
            continue
        chain = line.get("chain") if isinstance(line, dict) else None
        if not chain:
            if result.chained_from is not None:
                result.broken.append((number, "it has no chain although earlier lines do (inserted by hand?)"))
            previous = raw
            continue
        if result.chained_from is None:
            result.chained_from = number
        expected_prev = sha256_text(previous) if previous is not None else GENESIS
        digest = sha256_text(canonical(line))
        if digest != chain.get("sha256"):
            result.broken.append((number, "its content was changed after it was written (it no longer hashes to "
                                          "its recorded sha256)"))
        elif chain.get("prev_sha256") != expected_prev:
            result.broken.append((number, "the line before it is not the one it was chained to: a line was "
                                          "deleted, inserted or moved before it, or the line before it was edited"))
        elif public_key is not None or kms:
            problem = _verify_signature(line, digest, public_key=public_key, kms=kms)
            if problem:
                result.broken.append((number, problem))
        if check_files:
            for key, name in (("result_sha256", "result.json"), ("report_sha256", "report.html")):
                recorded = (line.get("evidence") or {}).get(key)
                if recorded and line.get("run_dir"):
                    actual = sha256_file(Path(line["run_dir"]) / name)
                    if actual is None:
                        result.notes.append(f"line {number}: {line['run_dir']}/{name} not found (moved or deleted)")
                    elif actual != recorded:
                        result.broken.append((number, f"its {name} was changed after the run ({line['run_dir']})"))
        previous = raw
    if result.chained_from and result.chained_from > 1:
        result.notes.append(f"not chained before line {result.chained_from} (written before the record was chained)")
    result.broken.sort()
    return result


def follow_ups(run: dict[str, Any]) -> list[str]:
    """A run's follow-up: its ticket and the remediations annotated later."""
    return [x for x in [run.get("ticket"), *(a.get("remediation") for a in run.get("annotations", []))] if x]


def _shown(value: Any) -> str:
    """A value of an exported cell: what is not known is a dash, never Python's None."""
    return "—" if value is None or value == "" else str(value)


def _seconds(value: Any) -> str:
    return "—" if value is None else f"{float(value):,.0f}"


def export(history: Iterable[dict[str, Any]], year: str, fmt: str) -> str:
    """One year of runs as evidence an auditor can file: every run's identity, scope, result and follow-up."""
    runs = [h for h in history if str(h.get("date", "")).startswith(year)]
    rows = []
    for h in runs:
        items = h.get("checklist", {})
        rows.append({
            "run_id": h.get("run_id"), "date": h.get("date"), "outcome": h.get("outcome"),
            "backup": (h.get("backup") or {}).get("id"), "backup_time": (h.get("backup") or {}).get("created_at"),
            "target": (h.get("target") or {}).get("name"),
            "isolation": h.get("isolation") or ISOLATION.get((h.get("target") or {}).get("kind", ""), "unknown"),
            "tool_version": h.get("suite_version"), "config_sha256": h.get("config_sha256"),
            "operator": h.get("operator"), "items": items,
            "rto": h.get("rto"), "rpo": h.get("rpo"), "ticket": h.get("ticket"),
            "remediation": [a.get("remediation") for a in h.get("annotations", [])], "follow_up": follow_ups(h),
            "controls": sorted({c for item, state in items.items() if state == "passed"
                                for c in CONTROLS.get(item, ())}),
            "evidence": h.get("evidence"), "chained": bool(h.get("chain")),
        })
    if fmt == "json":
        return json.dumps({"year": year, "runs": rows}, indent=1, ensure_ascii=False, default=str) + "\n"
    out = [f"# Backup-test evidence {year}", "",
           f"{len(rows)} run(s); controls evidenced by passed items: "
           f"{', '.join(sorted({c for r in rows for c in r['controls']})) or 'none'}.", "",
           "| run | date | outcome | backup (time) | target, isolation | tool, config | operator | RTO / RPO s | "
           "failed items | controls | follow-up |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        failed = ", ".join(k for k, v in r["items"].items() if v == "failed") or "—"
        rto = (r["rto"] or {}).get("measured_s")
        rpo = (r["rpo"] or {}).get("measured_s")
        follow = "; ".join(r["follow_up"]) or "—"
        backup = _shown(r["backup"]) + (f" ({r['backup_time']})" if r["backup_time"] else "")
        cells = (_shown(r["run_id"]), str(r["date"])[:16], _shown(r["outcome"]), backup,
                 f"{_shown(r['target'])}, {r['isolation']}",
                 f"{_shown(r['tool_version'])}, {_shown(r['config_sha256'] and str(r['config_sha256'])[:12])}",
                 _shown(r["operator"]), f"{_seconds(rto)} / {_seconds(rpo)}", failed, ", ".join(r["controls"]) or "—",
                 follow)
        out.append("| " + " | ".join(md_cell(c) for c in cells) + " |")  # names and notes are anyone's text
    return "\n".join(out) + "\n"
