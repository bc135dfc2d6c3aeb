"""The pages a person reads: the report's summary (inside pytest-html's report.html) and the monthly record
(record.html, record.md). Jinja2 templates in reports/templates, fed with plain data; values are escaped by the
templates (HTML and SVG), never by hand."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from reports.checklist import CHECKLIST, LABELS
from restore.records import evidence, fleet
from restore.records.record import COMPLETE, month_of, months_between
from restore.untrusted import md_cell

_ENV = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), undefined=StrictUndefined,
                   autoescape=select_autoescape(enabled_extensions=("html.j2", "svg.j2"), default=False),
                   keep_trailing_newline=True)
_ENV.filters["md"] = md_cell  # record.md: database names, tickets and notes are anyone's text


def _render(template: str, **values: Any) -> str:
    return _ENV.get_template(template).render(**values)


# --- report.html ---------------------------------------------------------------------------------------------

VIEWPORT = '<meta name="viewport" content="width=device-width, initial-scale=1">'


def finish_report(path: Path) -> None:
    """The page as a phone reads it: pytest-html's <head> has no viewport; it is written into the page itself (a
    script adding it would come too late for the first layout)."""
    if not path.exists():
        return
    text = path.read_text()
    if 'name="viewport"' not in text and "<head>" in text:
        path.write_text(text.replace("<head>", f"<head>\n    {VIEWPORT}", 1))

def _size(count: int | None) -> str | None:
    if count is None:
        return None
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:,.1f} {unit}"
    return f"{count} bytes"


def _seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def run_facts(r: dict[str, Any]) -> list[tuple[str, str]]:
    """The headline's facts, in a DBA's words; what does not apply is left out (no "None" rows)."""
    backup, restore, target = r["backup"], r["restore"], r["target"]
    facts: list[tuple[str, str]] = []
    if backup.get("spec"):
        details = [backup.get("format"),
                   f"dumped from PostgreSQL {backup['dumped_from']}" if backup.get("dumped_from") else None,
                   f"by pg_dump {backup['dumped_by']}" if backup.get("dumped_by") else None,
                   _size(backup.get("size_bytes")),
                   f"taken {backup['created_at']}" if backup.get("created_at") else None]
        shown = ", ".join(d for d in details if d)
        facts.append(("Backup", f"{backup['spec']} ({shown})" if shown else str(backup["spec"])))
    if cnpg := backup.get("cnpg"):  # what CloudNativePG said, beside what the backup is
        said = [cnpg.get("restored"), cnpg.get("form"),
                f"last successful backup {cnpg['last_successful_backup']}" if cnpg.get("last_successful_backup")
                else None, *(cnpg.get("notes") or [])]
        facts.append(("CloudNativePG", f"cluster {cnpg.get('cluster')}: " + "; ".join(str(s) for s in said if s)))
    facts.append(("Target", f"{target['name']} ({target['kind']}): {target['display']}"))
    if target.get("server_version"):
        facts.append(("Server", f"PostgreSQL {target['server_version']}"))
    facts.append(("When (UTC)", f"{r['started_at']} → {r['finished_at']}"))
    total = _seconds_between(r["started_at"], r["finished_at"])
    if restore.get("performed") and restore.get("duration_s") is not None:
        duration = float(restore["duration_s"])
        facts.append(("Duration", f"{total:,.0f} s in all: restore {duration:,.1f} s, verification "
                                  f"{max(total - duration, 0):,.0f} s"))
        facts.append(("Restore errors", f"{len(restore['errors'])} unaccepted, "
                                        f"{len(restore['accepted_errors'])} accepted"))
    else:
        facts.append(("Duration", f"{total:,.0f} s (verification only: this run restored nothing)"))
    signals = _signals(r)
    if signals:
        facts.append(("Signals", signals))
    return facts


def _signals(r: dict[str, Any]) -> str:
    """What the run told the outside world (--metrics, --pushgateway, --heartbeat), and what failed to reach it."""
    said = []
    if r.get("metrics"):
        said.append(f"metrics file {r['metrics']['file']}: " + (r["metrics"]["error"] or "written"))
    if r.get("pushgateway"):
        said.append(f"Pushgateway {r['pushgateway']['host']}: " + (r["pushgateway"]["error"] or "pushed"))
    if r.get("heartbeat"):
        said.append("heartbeat: " + ("; ".join(r["heartbeat"]["errors"]) or "called"))
    return " · ".join(said)


def report_prefix(r: dict[str, Any]) -> str:
    """Above pytest-html's results: the verdict and its facts, the checklist, the restore's phases and errors."""
    phases = [(name.replace("_", " "), float(seconds)) for name, seconds in (r["restore"]["phases_s"] or {}).items()]
    failures: dict[str, list[dict[str, Any]]] = {}
    for failure in r["failures"]:
        failures.setdefault(str(failure["checklist"]), []).append(failure)
    return _render("report_prefix.html.j2", r=r, facts=run_facts(r), checklist=CHECKLIST, labels=LABELS,
                   controls=evidence.CONTROLS, phases=phases if r["restore"]["performed"] else [],
                   errors=r["restore"]["errors"] + r["restore"]["accepted_errors"], failures=failures,
                   shown=FAILURES_SHOWN, runbook=_runbook)


FAILURES_SHOWN = 10  # a failed item's failures listed in its checklist row; the results table has them all


def _runbook(text: str) -> str:
    """The runbook's wording in parentheses, once (some items' wording is already parenthesised)."""
    return text if text.startswith("(") else f"({text})"


def report_postfix(r: dict[str, Any]) -> str:
    """Below the results: the slowest checks, and the scans the restore itself proved."""
    return _render("report_postfix.html.j2", r=r)


def failure_html(message: str, offending: object, details: str) -> str:
    """A failed check in the results table: its message, the offending rows as a table, and pytest's own report
    (``details``: already escaped by pytest-html) folded away."""
    table = offending if isinstance(offending, dict) and "columns" in offending else None
    if table is None and isinstance(offending, list):
        table = {"columns": ["offending"], "rows": [[str(v)] for v in offending], "total": len(offending)}
    return _render("failure.html.j2", message=message, offending=table, details=Markup(details))  # noqa: S704


# --- record.html / record.md ---------------------------------------------------------------------------------

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
    left, right, top, bottom = 60, width - 20, 30, height - 40
    data = [v for _, v in series.points]
    # A limit far above every value would flatten the data against the axis (a 3 s restore on a 0-4,140 s scale):
    # the axis then follows the data, and the limit is named above the chart instead of drawn.
    limit_on_axis = series.limit is not None and (not data or series.limit <= 3 * max(data))
    values = data + ([series.limit] if limit_on_axis and series.limit is not None else [])
    highest = max(values) * 1.15 if values and max(values) > 0 else 1.0
    stamps = [datetime.fromisoformat(d).timestamp() for d, _ in series.points]
    lo, hi = (min(stamps), max(stamps)) if stamps else (0.0, 1.0)
    span = (hi - lo) or 1.0

    def x(stamp: float) -> float:
        return left + (stamp - lo) / span * (right - left) if len(stamps) > 1 else width / 2

    def y(value: float) -> float:
        return top + (1 - value / highest) * (bottom - top)

    points = [{"x": x(stamp), "y": y(value), "date": date, "value": value,
               "over": series.limit is not None and value > series.limit}
              for stamp, (date, value) in zip(stamps, series.points, strict=True)]
    dates = [d[:10] for d, _ in series.points]
    geometry = {"width": width, "height": height, "left": left, "right": right, "top": top, "bottom": bottom,
                "max": highest, "points": points,
                "limit_y": y(series.limit) if limit_on_axis and series.limit is not None else None,
                "limit_above": series.limit_label if series.limit is not None and not limit_on_axis else None,
                # first and last date, once each (one point, or all on one day: one label under it)
                "date_labels": ([(left, dates[0], "start"), (right, dates[-1], "end")] if len(set(dates)) > 1
                                else [(points[0]["x"], dates[0], "middle")] if points else [])}
    return _render("chart.svg.j2", s=series, g=geometry)


def _audit(h: dict[str, Any]) -> str:
    """What an auditor asks of a run, in one cell: run id, isolation, operator, tool and configuration, follow-up."""
    follow = "; ".join(evidence.follow_ups(h))
    parts = [f"run {h.get('run_id')}", h.get("isolation"), f"by {h.get('operator')}", f"tool {h.get('suite_version')}",
             f"config {str(h.get('config_sha256'))[:12]}" if h.get("config_sha256") else None,
             "chained" if h.get("chain") else "not chained", f"follow-up: {follow}" if follow else None]
    return ", ".join(str(p) for p in parts if p)


def _series(history: list[dict[str, Any]]) -> list[Series]:
    """Charts of complete, passed runs only: a partial or failed run's figures are not a backup test's."""
    history = [h for h in history if h.get("outcome") == "passed"]
    rto = next((h["rto"]["target_s"] for h in reversed(history) if h["rto"].get("target_s")), None)
    rpo = next((h["rpo"]["target_s"] for h in reversed(history) if h["rpo"].get("target_s")), None)
    monthly_rows: dict[str, tuple[str, float]] = {}
    for h in history:
        if h.get("total_rows") is not None:
            monthly_rows[month_of(h["date"])] = (h["date"], float(h["total_rows"]))  # the month's last run
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


def _run_row(month: str, h: dict[str, Any]) -> dict[str, Any]:
    duration = h["restore"].get("duration_s")
    return {"kind": "run", "month": month, "date": h["date"][:16], "target": h["target"]["name"],
            "backup": str(h["backup"].get("id") or "—"), "outcome": h["outcome"],
            "duration": f"{duration:.1f}" if duration is not None and h["restore"].get("performed") else "—",
            "failed": [k for k, v in h["checklist"].items() if v == "failed"],
            "report": f"{h['run_dir']}/report.html" if h.get("run_dir") else "", "audit": _audit(h)}


def render_record(history: list[dict[str, Any]], out_dir: Path, *, until: str | None = None,
                  problems: list[str] | None = None) -> tuple[Path, Path]:
    """Write record.html and record.md for the history; ``until`` (YYYY-MM) extends the months shown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    history = sorted(history, key=lambda h: h["date"])
    now_month = until or datetime.now(UTC).strftime("%Y-%m")
    months = (months_between(month_of(history[0]["date"]), max(now_month, month_of(history[-1]["date"])))
              if history else [])
    by_month: dict[str, list[dict[str, Any]]] = {m: [] for m in months}
    for h in history:
        by_month.setdefault(month_of(h["date"]), []).append(h)
    rows: list[dict[str, Any]] = []
    for month in months:
        runs = by_month[month]
        if not runs and month == now_month:  # the month is not over: the test is due, not yet missing
            rows.append({"kind": "due", "month": month})
            continue
        if not runs:
            rows.append({"kind": "missing", "month": month, "why": "no backup test ran this month",
                         "md_why": "no backup test this month"})
            continue
        if not any(h.get("outcome") in COMPLETE for h in runs) and month != now_month:
            rows.append({"kind": "missing", "month": month,
                         "why": "only partial, interrupted or error runs this month, no complete backup test",
                         "md_why": "no complete backup test this month"})
        rows += [_run_row(month, h) for h in runs]
    missing = [m for m in months if not any(h.get("outcome") in COMPLETE for h in by_month[m]) and m != now_month]
    failed_runs = sum(1 for h in history if h["outcome"] == "failed")
    errors = sum(1 for h in history if h["outcome"] == "error")
    not_complete = sum(1 for h in history if h["outcome"] not in COMPLETE) - errors
    last_pass = next((h["date"][:16] for h in reversed(history) if h["outcome"] == "passed"), None)
    summary = (f"{len(history)} run(s) over {len(months)} month(s); {failed_runs} failed; {not_complete} partial or "
               f"interrupted and {errors} error(s) — a target that could not be reached tested no backup — (none "
               f"counted as tests); last complete passing run: {last_pass or 'none'}; "
               f"{len(missing)} month(s) without a complete test{': ' + ', '.join(missing) if missing else ''}.")
    members = fleet.status(history, now=datetime.now(UTC), within_days=35)
    databases = members if len(members) > 1 or any(h.get("label") for h in history) else []
    values = {"rows": rows, "summary": summary, "problems": problems or [], "controls": evidence.CONTROLS,
              "databases": databases}
    html_path, md_path = out_dir / "record.html", out_dir / "record.md"
    charts = [svg_chart(s) for s in _series(history)]
    html_path.write_text(_render("record.html.j2", charts=[_markup(c) for c in charts], **values))
    md_path.write_text(_render("record.md.j2", **values))
    return html_path, md_path


def _markup(text: str) -> Markup:
    """Already-rendered (and escaped) SVG, placed as it is."""
    return Markup(text)  # noqa: S704 - rendered by the chart template, which escapes every value
