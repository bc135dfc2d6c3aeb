"""The monthly backup-test record: one JSON line per run, rendered as an auditor-friendly history.

``append`` adds a run (derived from its ``result.json``) to a JSONL history; ``render`` writes ``record.html``
(self-contained: inline SVG charts, no JavaScript, no network) and ``record.md``. Months without a run are
shown as missing: a skipped monthly test is itself a finding.
"""

from __future__ import annotations

import fcntl
import html
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from restore import evidence

FIELDS_VERSION = 1


def operator_name(explicit: str | None) -> str:
    return explicit or os.environ.get("RESTORE_VERIFY_OPERATOR") or os.environ.get("USER") or os.environ.get(
        "LOGNAME") or "unknown"


def _age_s(later: str | None, earlier: str | None) -> float | None:
    if not later or not earlier:
        return None
    return round((datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds(), 1)


def record_line(result: dict[str, Any], *, operator: str, rto_s: float, rpo_s: float,
                ticket: str | None = None) -> dict[str, Any]:
    """One history line from a run's result.json (plain data; no connection strings, no secrets)."""
    measurements = result.get("measurements", {})
    counts: dict[str, int] = result.get("row_counts", {})
    backup = result["backup"]
    return {
        "record_version": FIELDS_VERSION,
        "date": result["finished_at"],
        "run_id": result.get("run_id"),
        "target": {"name": result["target"]["name"], "kind": result["target"]["kind"],
                   "database": result["target"].get("database"),
                   "server_version": result["target"].get("server_version")},
        "backup": {"spec": backup.get("spec"), "id": Path(backup["spec"]).name if backup.get("spec") else None,
                   "format": backup.get("format"), "created_at": backup.get("created_at"),
                   "age_s": _age_s(result["finished_at"], backup.get("created_at"))},
        "restore": {"performed": result["restore"].get("performed"), "duration_s": result["restore"]["duration_s"],
                    "errors": len(result["restore"]["errors"]),
                    "accepted_errors": len(result["restore"]["accepted_errors"])},
        "rto": {"target_s": rto_s, "measured_s": result["restore"]["duration_s"],
                "status": result["checklist"].get("rto")},
        "rpo": {"target_s": rpo_s, "measured_s": measurements.get("data_age_at_backup_s"),
                "status": result["checklist"].get("rpo")},
        "checklist": result["checklist"],
        "tests": result["tests"],
        "failures": [{"checklist": f["checklist"], "message": f["message"][:300], "origin": f.get("origin", "unknown")}
                     for f in result["failures"]],
        # Is the backup bad, or did the restore break it? Counted per origin (see restore/origin.py).
        "failure_origins": {o: sum(1 for f in result["failures"] if f.get("origin", "unknown") == o)
                            for o in ("backup", "restore", "unknown")},
        "accepted_findings": len(result.get("accepted_findings", [])),
        "counts": counts,
        "total_rows": sum(counts.values()) if counts else None,
        # passed | failed | interrupted | partial; result.json files older than the field: as they were judged
        "outcome": result.get("outcome") or ("failed" if result["tests"]["failed"] else "passed"),
        "depth": result.get("depth"),
        "suite_version": result.get("suite_version"),
        "operator": operator,
        "run_dir": result.get("run_dir"),
        # For auditors: how the restore was isolated, which configuration judged it, the follow-up of a failure,
        # and the digests of the files that hold the evidence (checked by python -m restore record --verify).
        "isolation": evidence.ISOLATION.get(result["target"]["kind"], result["target"]["kind"]),
        "config_sha256": result.get("config_sha256"),
        "ticket": ticket,
        "evidence": {"result_sha256": _digest(result, "result.json"), "report_sha256": _digest(result, "report.html")},
    }


def _digest(result: dict[str, Any], name: str) -> str | None:
    return evidence.sha256_file(Path(result["run_dir"]) / name) if result.get("run_dir") else None


def _s3_get(bucket: str, key: str) -> tuple[str, str | None]:
    """The object's text and ETag; ("", None) when it does not exist yet."""
    import boto3
    from botocore.exceptions import ClientError

    try:
        obj = boto3.client("s3").get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return "", None
        raise
    return str(obj["Body"].read().decode()), str(obj["ETag"])


S3_ATTEMPTS = 20


def append(path: Path | str, line: dict[str, Any], *, on_read: Callable[[], None] | None = None,
           signer: evidence.Signer | None = None) -> None:
    """Append one run. A file is appended under an exclusive lock (two runs never interleave a line). An
    ``s3://bucket/key`` object is read and written back with a conditional write (If-Match on the ETag read, or
    If-None-Match for a new object), retried when another writer got there first, so no line is ever lost.
    ``on_read`` runs between reading and writing (the self-tests put a second writer there). Each line is sealed
    into the hash chain (and signed with ``signer``) against the line it follows (see restore/evidence.py)."""
    if isinstance(path, str) and path.startswith("s3://"):
        import boto3
        from botocore.exceptions import ClientError

        bucket, _, key = path.removeprefix("s3://").partition("/")
        client = boto3.client("s3")
        for attempt in range(S3_ATTEMPTS):
            current, etag = _s3_get(bucket, key)
            if on_read is not None:
                on_read()
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            text = evidence.seal(current, line, signer) + "\n"
            if current and not current.endswith("\n"):
                current += "\n"
            try:
                client.put_object(Bucket=bucket, Key=key, Body=(current + text).encode(), **condition)
                return
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "412",
                                                                     "ConditionalRequestConflict"):
                    raise
                time.sleep(min(2.0, 0.05 * 2 ** attempt))  # another writer won: read its line, try again
        raise RuntimeError(f"Could not append to the record {path}: {S3_ATTEMPTS} conditional writes in a row "
                           "lost to other writers. Run again; nothing was overwritten.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes
        fh.seek(0)
        current = fh.read()  # the line it follows, read under the same lock the write holds
        prefix = "\n" if current and not current.endswith("\n") else ""  # after a truncated write
        fh.write(prefix + evidence.seal(current, line, signer) + "\n")
        fh.flush()


def annotate(path: Path | str, run_id: str, *, remediation: str, operator: str,
             signer: evidence.Signer | None = None) -> None:
    """A follow-up to an earlier run (a failed test's remediation), chained like any run."""
    append(path, {"type": "annotation", "date": datetime.now(UTC).isoformat(timespec="seconds"), "run_id": run_id,
                  "remediation": remediation, "operator": operator}, signer=signer)


def raw_text(path: Path | str) -> str:
    """The record exactly as stored (what the hash chain covers)."""
    if isinstance(path, str) and path.startswith("s3://"):
        bucket, _, key = path.removeprefix("s3://").partition("/")
        return _s3_get(bucket, key)[0]
    path = Path(path)
    return path.read_text() if path.exists() else ""


def load(path: Path | str, *, problems: list[str] | None = None) -> list[dict[str, Any]]:
    """The record's runs. A line that is not a complete run (a truncated write, a hand edit) is left out and
    named in ``problems`` — one bad line never costs the rest of the history."""
    text = raw_text(path)
    runs = []
    annotations: list[dict[str, Any]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            run = json.loads(raw)
            if isinstance(run, dict) and run.get("type") == "annotation":
                annotations.append(run)
                continue
            if not isinstance(run, dict) or not {"date", "target", "checklist", "outcome"} <= set(run):
                raise ValueError("not a run")
        except ValueError as exc:
            if problems is not None:
                problems.append(f"record {path} line {number} is not a complete run ({exc}: "
                                f"{raw[:60]!r}…): left out")
            continue
        runs.append(run)
    by_id = {r.get("run_id"): r for r in runs}
    for note in annotations:  # a remediation belongs with the run it follows up
        if note.get("run_id") in by_id:
            by_id[note["run_id"]].setdefault("annotations", []).append(note)
    return runs


def previous_counts(history: list[dict[str, Any]], target: str, database: str | None) -> dict[str, int] | None:
    """The table counts of the newest earlier run of the same target and database that recorded any."""
    for line in reversed(history):
        if line["target"]["name"] == target and line["target"].get("database") == database and line.get("counts"):
            return dict(line["counts"])
    return None


# --- rendering --------------------------------------------------------------------------------------------

def _month(date: str) -> str:
    return date[:7]


def months_between(first: str, last: str) -> list[str]:
    year, month = int(first[:4]), int(first[5:7])
    end = (int(last[:4]), int(last[5:7]))
    months = []
    while (year, month) <= end:
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


@dataclass(frozen=True)
class Series:
    """One chart: points (date, value) with an optional limit line."""

    chart_id: str
    title: str
    unit: str
    points: list[tuple[str, float]]
    limit: float | None = None
    limit_label: str = ""


def svg_chart(series: Series, *, width: int = 720, height: int = 220) -> str:
    """An inline SVG line chart; every point carries data-date/data-value so that it can be checked."""
    pad_l, pad_r, pad_t, pad_b = 60, 20, 30, 40
    values = [v for _, v in series.points] + ([series.limit] if series.limit is not None else [])
    top = max(values) * 1.15 if values and max(values) > 0 else 1.0
    stamps = [datetime.fromisoformat(d).timestamp() for d, _ in series.points]
    lo, hi = (min(stamps), max(stamps)) if stamps else (0.0, 1.0)
    span = (hi - lo) or 1.0

    def x(stamp: float) -> float:
        return pad_l + (stamp - lo) / span * (width - pad_l - pad_r) if len(stamps) > 1 else width / 2

    def y(value: float) -> float:
        return pad_t + (1 - value / top) * (height - pad_t - pad_b)

    esc = html.escape
    parts = [f'<svg id="{esc(series.chart_id)}" class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{esc(series.title)}">',
             f'<text x="{pad_l}" y="18" font-size="14" font-weight="bold">{esc(series.title)}</text>',
             f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - pad_r}" y2="{height - pad_b}" stroke="#888"/>',
             f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{height - pad_b}" stroke="#888"/>',
             f'<text x="4" y="{pad_t + 10}" font-size="11">{top:,.0f} {esc(series.unit)}</text>',
             f'<text x="4" y="{height - pad_b}" font-size="11">0</text>']
    if series.limit is not None:
        ly = y(series.limit)
        parts.append(f'<line class="limit" data-value="{series.limit}" x1="{pad_l}" y1="{ly:.1f}" '
                     f'x2="{width - pad_r}" y2="{ly:.1f}" stroke="#c00" stroke-dasharray="6 4"/>')
        parts.append(f'<text x="{width - pad_r - 4}" y="{ly - 4:.1f}" font-size="11" fill="#c00" '
                     f'text-anchor="end">{esc(series.limit_label)}</text>')
    coords = [(x(s), y(v)) for s, (_, v) in zip(stamps, series.points, strict=True)]
    if len(coords) > 1:
        path = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#36c" stroke-width="1.5"/>')
    for (cx, cy), (date, value) in zip(coords, series.points, strict=True):
        over = series.limit is not None and value > series.limit
        parts.append(f'<circle class="point{" over" if over else ""}" data-date="{esc(date)}" data-value="{value}" '
                     f'cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="{"#c00" if over else "#36c"}">'
                     f'<title>{esc(date[:10])}: {value:,.1f} {esc(series.unit)}</title></circle>')
    if series.points:
        parts.append(f'<text x="{pad_l}" y="{height - 12}" font-size="11">{esc(series.points[0][0][:10])}</text>')
        parts.append(f'<text x="{width - pad_r}" y="{height - 12}" font-size="11" text-anchor="end">'
                     f'{esc(series.points[-1][0][:10])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _audit(h: dict[str, Any]) -> str:
    """What an auditor asks of a run, in one cell: run id, isolation, operator, tool and configuration, follow-up."""
    follow = "; ".join(evidence.follow_ups(h))
    parts = [f"run {h.get('run_id')}", h.get("isolation"), f"by {h.get('operator')}", f"tool {h.get('suite_version')}",
             f"config {str(h.get('config_sha256'))[:12]}" if h.get("config_sha256") else None,
             "chained" if h.get("chain") else "not chained", f"follow-up: {follow}" if follow else None]
    return ", ".join(str(p) for p in parts if p)


COMPLETE = ("passed", "failed")  # outcomes of a complete run; partial and interrupted runs prove nothing


def _series(history: list[dict[str, Any]]) -> list[Series]:
    """Charts of complete, passed runs only: a partial or failed run's figures are not a backup test's."""
    history = [h for h in history if h.get("outcome") == "passed"]
    rto = next((h["rto"]["target_s"] for h in reversed(history) if h["rto"].get("target_s")), None)
    rpo = next((h["rpo"]["target_s"] for h in reversed(history) if h["rpo"].get("target_s")), None)
    monthly_rows: dict[str, tuple[str, float]] = {}
    for h in history:
        if h.get("total_rows") is not None:
            monthly_rows[_month(h["date"])] = (h["date"], float(h["total_rows"]))  # the month's last run
    return [
        Series("chart-rto", "Restore duration against the RTO", "s",
               [(h["date"], float(h["restore"]["duration_s"])) for h in history
                if h["restore"].get("performed") and h["restore"].get("duration_s") is not None],
               rto, f"RTO {rto:g} s" if rto else ""),
        Series("chart-rpo", "Data age at backup time against the RPO", "s",
               [(h["date"], float(h["rpo"]["measured_s"])) for h in history if h["rpo"].get("measured_s") is not None],
               rpo, f"RPO {rpo:g} s" if rpo else ""),
        Series("chart-rows", "Total rows per month (a sudden drop is as alarming as a failed check)", "rows",
               sorted(monthly_rows.values())),
    ]


def render(history: list[dict[str, Any]], out_dir: Path, *, until: str | None = None,
           problems: list[str] | None = None) -> tuple[Path, Path]:
    """Write record.html and record.md for the history; ``until`` (YYYY-MM) extends the months shown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    history = sorted(history, key=lambda h: h["date"])
    esc = html.escape
    now_month = until or datetime.now(UTC).strftime("%Y-%m")
    months = months_between(_month(history[0]["date"]), max(now_month, _month(history[-1]["date"]))) if history else []
    by_month: dict[str, list[dict[str, Any]]] = {m: [] for m in months}
    for h in history:
        by_month.setdefault(_month(h["date"]), []).append(h)
    rows, md = [], ["# Backup-test record", "", "| month | date | target | backup | outcome | restore s | "
                    "failed items | report | audit |", "|---|---|---|---|---|---|---|---|---|"]
    for month in months:
        runs = by_month[month]
        if not runs and month == now_month:  # the month is not over: the test is due, not yet missing
            rows.append(f'<tr class="due" data-month="{month}"><td>{month}</td><td colspan="8">due: no backup test '
                        "has run yet this month</td></tr>")
            md.append(f"| {month} | — | — | — | due: no test yet this month | | | | |")
            continue
        if not runs:
            rows.append(f'<tr class="missing" data-month="{month}"><td>{month}</td><td colspan="8">missing: no '
                        "backup test ran this month</td></tr>")
            md.append(f"| {month} | — | — | — | **MISSING: no backup test this month** | | | | |")
            continue
        if not any(h.get("outcome") in COMPLETE for h in runs) and month != now_month:
            rows.append(f'<tr class="missing" data-month="{month}"><td>{month}</td><td colspan="8">missing: only '
                        "partial or interrupted runs this month, no complete backup test</td></tr>")
            md.append(f"| {month} | — | — | — | **MISSING: no complete backup test this month** | | | | |")
        for h in runs:
            failed = [k for k, v in h["checklist"].items() if v == "failed"]
            report = f"{h['run_dir']}/report.html" if h.get("run_dir") else ""
            link = f'<a href="{esc(report)}">report</a>' if report else ""
            duration = h["restore"].get("duration_s")
            duration_text = f"{duration:.1f}" if duration is not None and h["restore"].get("performed") else "—"
            rows.append(
                f'<tr class="run {h["outcome"]}" data-month="{month}"><td>{month}</td><td>{esc(h["date"][:16])}</td>'
                f'<td>{esc(h["target"]["name"])}</td><td>{esc(str(h["backup"].get("id") or "—"))}</td>'
                f'<td class="outcome">{h["outcome"]}</td><td>{duration_text}</td>'
                f'<td>{esc(", ".join(failed))}</td><td>{link}</td><td class="audit">{esc(_audit(h))}</td></tr>')
            md.append(f"| {month} | {h['date'][:16]} | {h['target']['name']} | {h['backup'].get('id') or '—'} | "
                      f"{h['outcome']} | {duration_text} | {', '.join(failed)} | {report} | {_audit(h)} |")
    charts = "".join(svg_chart(s) for s in _series(history))
    missing = [m for m in months if not any(h.get("outcome") in COMPLETE for h in by_month[m]) and m != now_month]
    failed_runs = sum(1 for h in history if h["outcome"] == "failed")
    not_complete = sum(1 for h in history if h["outcome"] not in COMPLETE)
    last_pass = next((h["date"][:16] for h in reversed(history) if h["outcome"] == "passed"), None)
    summary = (f"{len(history)} run(s) over {len(months)} month(s); {failed_runs} failed; {not_complete} partial or "
               f"interrupted (not counted as tests); last complete passing run: {last_pass or 'none'}; "
               f"{len(missing)} month(s) without a complete test{': ' + ', '.join(missing) if missing else ''}.")
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Backup-test record</title><style>"
        "body{font-family:sans-serif;margin:24px} table{border-collapse:collapse} td,th{border:1px solid #ccc;"
        "padding:3px 8px} tr.failed td.outcome{color:#b00;font-weight:bold} tr.passed td.outcome{color:#070}"
        "tr.missing td{background:#fff3cd;color:#8a6d00;font-weight:bold} tr.due td{color:#666;font-style:italic}"
        ".chart{display:block;margin:12px 0}"
        f"</style></head><body><h1>Backup-test record</h1><p id='summary'>{esc(summary)}</p>"
        + "".join(f"<p class='problem'>warning: {esc(p)}</p>" for p in problems or []) + f"{charts}"
        "<table id='runs'><tr><th>month</th><th>date (UTC)</th><th>target</th><th>backup</th><th>outcome</th>"
        f"<th>restore s</th><th>failed items</th><th>report</th><th>audit</th></tr>{''.join(rows)}</table>"
        + "<h2>Controls each item evidences</h2><table id='controls'><tr><th>item</th><th>controls</th></tr>"
        + "".join(f"<tr><td>{esc(item)}</td><td>{esc(', '.join(controls))}</td></tr>"
                  for item, controls in evidence.CONTROLS.items())
        + "</table></body></html>"
    )
    html_path, md_path = out_dir / "record.html", out_dir / "record.md"
    html_path.write_text(page)
    md_path.write_text("\n".join([*md, "", summary, *(f"warning: {p}" for p in problems or [])]) + "\n")
    return html_path, md_path
