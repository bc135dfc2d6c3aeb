"""Text from the database never runs, spoofs or breaks what the suite writes (names and values are anyone's).

A database whose names and values carry HTML with event handlers, ``<script>``, ESC/CR/BEL, ``|`` and newlines is
backed up and verified so that each payload reaches every output: a failing row count on the hostile table, a
business-rule violation, an orphan, a ticket. The pages are opened in headless Chromium with JavaScript on: no
payload may run (each would mark ``<body>``), each must read as text.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from reports.pages import render_record
from restore.records import record
from restore.targets.embedded import EmbeddedServer
from restore.tools import clean_env, pg_tool
from tests.conftest import ROOT, SuiteRun

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--virtual-time-budget=3000"]

SVG_TABLE = "<svg onload=document.body.dataset.t=1>"
ESC_TABLE = "t\x1b[2K\rbackup test PASSED\x07"
PIPE_TABLE = "a|b\nc"
RULE_VALUE = "<img src=x onerror=document.body.dataset.v=1>"
ORPHAN_KEY = "<script>document.body.dataset.o=1</script>"
TICKET = "<img src=x onerror=document.body.dataset.k=1>|CHG\n42"
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _hostile_dump(tmp_path: Path) -> Path:
    dump = tmp_path / "hostile.dump"
    with EmbeddedServer(jobs=2) as server:
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE hostile")
        with psycopg.connect(server.conninfo("hostile"), autocommit=True) as conn:
            for name in (SVG_TABLE, ESC_TABLE, PIPE_TABLE):
                conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, note text)").format(
                    sql.Identifier("public", name)))
                conn.execute(sql.SQL("INSERT INTO {} VALUES (1, 'one'), (2, 'two')").format(
                    sql.Identifier("public", name)))
            conn.execute("CREATE TABLE parent (k text PRIMARY KEY)")
            conn.execute("CREATE TABLE child (id int PRIMARY KEY, k text)")
            conn.execute("INSERT INTO child VALUES (1, %s)", (ORPHAN_KEY,))
            # A key added NOT VALID over an orphan: pg_restore recreates it as it was, the orphan with it.
            conn.execute("ALTER TABLE child ADD CONSTRAINT child_k_fkey FOREIGN KEY (k) REFERENCES parent NOT VALID")
            conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
            conn.execute("INSERT INTO notes VALUES (1, %s)", (RULE_VALUE,))
        subprocess.run([str(pg_tool("pg_dump")), "-Fc", "-f", str(dump), "-d", server.conninfo("hostile")],
                       env=clean_env(), check=True)
    return dump


def _expectations(tmp_path: Path) -> Path:
    exp = tmp_path / "expectations"
    (exp / "business_rules").mkdir(parents=True)
    names = "\n".join(f'"public.{n}" = 5' for n in (SVG_TABLE.replace('"', '\\"'),
                                                    ESC_TABLE.replace("\x1b", "\\u001b").replace("\r", "\\r")
                                                    .replace("\x07", "\\u0007")))
    (exp / "row_counts.toml").write_text(f"[tables]\n{names}\n")
    (exp / "business_rules" / "notes_are_plain.sql").write_text("SELECT id, body FROM notes WHERE body LIKE '<%'\n")
    return exp


def _chromium(page: Path, profile: Path) -> str:
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=False).stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)")
# batched: every check verifies its objects in batches of one, so that each failing object's report is made by
# fixtures/batches.py (its own test id built from the hostile name) rather than by pytest
@pytest.mark.parametrize("batching", [(), ("--batch-size=1", "-n", "2")], ids=["one test per object", "batched"])
def test_hostile_names_and_values_are_text_everywhere(batching: tuple[str, ...], tmp_path: Path,
                                                      run_suite: Callable[..., SuiteRun]) -> None:
    dump = _hostile_dump(tmp_path)
    history = tmp_path / "record.jsonl"
    junit = tmp_path / "junit.xml"
    run = run_suite(f"--backup={dump}", f"--expectations={_expectations(tmp_path)}", f"--record={history}",
                    f"--ticket={TICKET}", "--operator=<b>night</b>", f"--junitxml={junit}", *batching)
    failed = run.failed_items()
    assert {"row_counts", "business_rules", "orphaned_records"} <= failed, run.explain()
    if batching:  # the failing objects really came out of batches
        assert run.result["batching"]["batch_tests"] > 0, run.result["batching"]
    # The terminal and the restore log: no control character moves a cursor; the escapes are shown instead.
    assert not CONTROL.search(run.output.replace("\n", "").replace("\t", "")), repr(run.output[-3000:])
    assert "\\x1b[2K\\rbackup test PASSED\\x07" in run.output
    log = (run.run_dir / "restore.log").read_text()
    assert not CONTROL.search(log.replace("\n", "").replace("\t", "")), repr(log[-2000:])
    # junit.xml parses, and holds the payloads as text.
    tree = ET.parse(junit)
    assert SVG_TABLE in ET.tostring(tree.getroot(), encoding="unicode").replace("&lt;", "<").replace("&gt;", ">")
    # report.html in a browser with JavaScript: nothing ran, everything shows as text.
    dom = _chromium(run.run_dir / "report.html", tmp_path / "profile-report")
    body = re.search(r"<body[^>]*>", dom)
    assert body is not None, dom[:2000]
    assert "data-" not in body.group(0), body.group(0)
    for payload in (SVG_TABLE, RULE_VALUE, ORPHAN_KEY):
        shown = payload.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert shown in dom, f"{payload!r} not shown as text"
    assert "<svg onload" not in dom
    assert "<img src=x" not in dom
    # The record page and its Markdown export.
    html_path, md_path = render_record(record.load(history), tmp_path / "rendered")
    page = _chromium(html_path, tmp_path / "profile-record")
    body = re.search(r"<body[^>]*>", page)
    assert body is not None
    assert "data-" not in body.group(0), body.group(0)
    assert "<img src=x" not in page
    year = record.load(history)[-1]["date"][:4]
    export = subprocess.run([sys.executable, "-m", "restore", "record", f"--history={history}", f"--export={year}",
                             "--format=md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for text in (export, md_path.read_text()):
        rows = [line for line in text.splitlines() if line.startswith("|")]
        columns = {len(re.findall(r"(?<!\\)\|", line)) for line in rows}
        assert len(columns) == 1, rows  # no | or newline from a name breaks the table
        assert "<img" not in text
