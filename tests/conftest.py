"""Self-test fixtures: a built sample, a server holding a pristine restored copy, and a way to run the suite.

The suite is always run as a user runs it: ``python -m pytest …`` in a subprocess from the project root,
judged by its exit code and ``result.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from examples.build_sample import APP_PASSWORD, SAMPLE_DB, build
from reports.checklist import CHECKLIST
from restore import janitor
from restore.targets.embedded import EmbeddedServer
from restore.tools import clean_env, pg_tool

ROOT = Path(__file__).resolve().parent.parent
# A PostgreSQL 15 server for the cross-version self-tests (Debian's postgresql-15, whichever minor it is today).
PG15_BIN = Path(os.environ.get("RESTORE_VERIFY_PG15_BIN", "/usr/lib/postgresql/15/bin"))


def restorable_into_18(conninfo: str) -> int:
    """Make a PostgreSQL 15 source dump into something 18 can restore, whatever its minor; returns the columns changed.

    Debian's PostgreSQL 15.20 stores an attribute option ``pg_attver=N`` on every column, and pg_dump writes it back
    as ``ALTER COLUMN … SET (pg_attver=…)``, which no 18 server accepts. The cross-version proofs are about what an
    18 server makes of a 15 database, not about that option (its own self-test keeps the diagnosis), so the source
    drops it from the catalog before it is dumped: other column options stay. A minor without it changes nothing.
    """
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cur = conn.execute(
            "UPDATE pg_catalog.pg_attribute SET attoptions = NULLIF(ARRAY(SELECT o FROM unnest(attoptions) AS o "
            "WHERE o NOT LIKE 'pg\\_attver=%'), '{}') WHERE attoptions::text LIKE '%pg\\_attver=%'")
        return cur.rowcount


RECORD_ENV = "RESTORE_VERIFY_RECORD"


def pytest_configure(config: pytest.Config) -> None:
    """Self-tests never write a record outside their temporary folders: every run of the suite they start (and
    anything it starts) records, unless told otherwise with --record, into this session's own file, never the
    checkout's reports/record.jsonl (a user's audit trail). xdist workers inherit the controller's."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        return  # a worker: the controller's setting, inherited
    folder = Path(tempfile.mkdtemp(prefix="rv-selftest-record-"))
    os.environ[RECORD_ENV] = str(folder / "record.jsonl")  # also over a user's own: a self-test is no backup test
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


@dataclass(frozen=True)
class Sample:
    dump: Path
    manifest: Path
    globals_sql: Path
    expectations: Path
    out: Path

    def restore_args(self) -> tuple[str, str, str]:
        """The main job on this sample: its dump, its roles, its expectations."""
        return (f"--backup={self.dump}", f"--globals={self.globals_sql}", f"--expectations={self.expectations}")


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    """The sample e-commerce database, dumped (-Fc), with its globals and a private copy of examples/expectations/."""
    base = tmp_path_factory.mktemp("sample")
    expectations = base / "expectations"
    shutil.copytree(ROOT / "examples" / "expectations", expectations)
    written = build(base / "out", expectations, ["custom"])
    # app.toml points at the repository's examples/out; this copy uses the one just built.
    app = expectations / "app.toml"
    app.write_text(app.read_text().replace("../out/app.pgpass", str(written["pgpass"])))
    return Sample(dump=written["custom"], manifest=written["manifest"], globals_sql=written["globals"],
                  expectations=expectations, out=base / "out")


@dataclass
class SuiteRun:
    returncode: int
    output: str
    result: dict[str, Any]
    run_dir: Path
    tmp: Path | None = None  # the run's TMPDIR (its fetches, its servers)

    def failed_items(self) -> set[str]:
        return {k for k, v in self.result["checklist"].items() if v == "failed"}

    def explain(self) -> str:
        reasons = json.dumps(self.result.get("checklist_reasons"), indent=1)
        return f"exit {self.returncode}\n{reasons}\n{self.output[-3000:]}"


@pytest.fixture
def server_tmp() -> Iterator[Path]:
    """A TMPDIR for a run of the suite whose servers must survive another pytest process starting meanwhile (it
    resets /tmp/pytest-of-<user> to 0700, locking the servers' own user out): outside pytest's temporary root."""
    folder = Path(tempfile.mkdtemp(prefix="rv-run-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def run_suite(tmp_path: Path) -> Iterator[Callable[..., SuiteRun]]:
    """Run the suite in a subprocess with its own reports dir and TMPDIR; returns its result.json."""
    counter = iter(range(100))
    temporaries: list[Path] = []

    def run(*args: str, env: dict[str, str | None] | None = None, expect_result: bool = True) -> SuiteRun:
        n = next(counter)
        reports = tmp_path / f"reports{n}"
        result_path = tmp_path / f"result{n}.json"
        # The run's servers live outside pytest's own temporary root: another pytest process starting on this
        # machine resets /tmp/pytest-of-<user> to 0700, and the servers' own user would lose their data directory.
        run_tmp = Path(tempfile.mkdtemp(prefix=f"rv-run{n}-", dir="/tmp"))
        run_tmp.chmod(0o755)
        temporaries.append(run_tmp)
        if not any(a.startswith("--record=") for a in args):  # each run its own history unless a test shares one
            args = (*args, f"--record={tmp_path / f'record{n}.jsonl'}")
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", *args, f"--reports-dir={reports}", f"--result-json={result_path}"],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
            env={k: v for k, v in {**os.environ, "TMPDIR": str(run_tmp), **(env or {})}.items()
                 if v is not None},  # None: not set in the run (as on a DBA's terminal)
        )
        output = proc.stdout + proc.stderr
        if not expect_result:
            return SuiteRun(proc.returncode, output, {}, reports)
        assert result_path.exists(), f"no result.json written (exit {proc.returncode}):\n{output[-4000:]}"
        result = json.loads(result_path.read_text())
        leftovers = [p.name for p in run_tmp.iterdir() if p.name.startswith("restore-verify-")]
        assert not leftovers, f"the run left its embedded server behind: {leftovers}"
        return SuiteRun(proc.returncode, output, result, Path(result["run_dir"]), run_tmp)

    yield run
    for folder in temporaries:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class FaultServer:
    server: EmbeddedServer
    pristine: str

    def copy(self, name: str) -> str:
        """A fresh database cloned from the pristine restored copy; returns its superuser conninfo."""
        with psycopg.connect(self.server.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                         sql.Identifier(self.pristine)))
        return self.server.conninfo(name)


def restore_sample_into(server: EmbeddedServer, sample: Sample, dbname: str) -> None:
    """Set up a restored copy the way a DBA would by hand (psql + pg_restore), outside the suite under test."""
    env = clean_env()
    subprocess.run([str(pg_tool("psql")), "-X", "-q", "-d", server.conninfo(), "-f", str(sample.globals_sql)],
                   env=env, capture_output=True, check=False)  # "role postgres already exists" is expected
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    subprocess.run([str(pg_tool("pg_restore")), "--exit-on-error", "-d", server.conninfo(dbname), str(sample.dump)],
                   env=env, check=True)
    with psycopg.connect(server.conninfo(dbname), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION amcheck")
        conn.execute("ANALYZE")


@pytest.fixture(scope="session")
def fault_server(sample: Sample) -> Iterator[FaultServer]:
    """A server of the tests' own holding the sample restored once; faults go into copies of it."""
    with EmbeddedServer(jobs=2) as server:
        restore_sample_into(server, sample, "pristine")
        yield FaultServer(server, "pristine")


FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_moto() -> tuple[subprocess.Popen[bytes], int]:
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if server is None:
        pytest.skip("moto's server is not installed (pip install 'moto[server]')")
    port = _free_port()
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            assert time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.2)


@pytest.fixture(scope="session")
def moto_env() -> Iterator[dict[str, str]]:
    """moto_server on a loopback port for this module; the environment that points boto3 at it."""
    proc, port = _start_moto()
    try:
        yield {**FAKE_AWS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def barman_archive(moto_env: dict[str, str]) -> Any:
    """A Barman Cloud archive in moto's S3 (tests/physical_source.py), made once per session: Barman Cloud's and
    CloudNativePG's self-tests read it (copies of it where they damage it)."""
    from tests.physical_source import make_barman_archive  # it imports this module

    return make_barman_archive(moto_env)


@dataclass(frozen=True)
class TlsS3:
    """moto's S3 behind TLS (a self-signed certificate): for clients that speak S3 over HTTPS only (pgBackRest)."""

    port: int  # the HTTPS port
    http_endpoint: str  # moto itself, for boto3 in the tests


@pytest.fixture(scope="session")
def moto_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsS3]:
    """moto_server behind a TLS proxy in this process. moto's own --ssl server ends each response without TLS's
    close_notify, which pgBackRest rightly treats as a truncated response; the proxy closes TLS properly."""
    import asyncio
    import ssl
    import threading

    certs = tmp_path_factory.mktemp("tls")
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                           "/CN=127.0.0.1", "-keyout", str(certs / "key.pem"), "-out", str(certs / "cert.pem")],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"openssl could not make a test certificate: {made.stderr.strip()}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs / "cert.pem", certs / "key.pem")
    proc, backend = _start_moto()
    port = _free_port()
    loop = asyncio.new_event_loop()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        moto_r, moto_w = await asyncio.open_connection("127.0.0.1", backend)
        await asyncio.gather(pipe(client_r, moto_w), pipe(moto_r, client_w))

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(
        asyncio.start_server(handle, "127.0.0.1", port, ssl=context), loop).result(timeout=30)
    try:
        yield TlsS3(port=port, http_endpoint=f"http://127.0.0.1:{backend}")
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        proc.terminate()
        proc.wait(timeout=10)


def wait_for(condition: Callable[[], object], *, seconds: float, what: str) -> object:
    """Poll a condition until it holds, failing after ``seconds`` (never a fixed sleep)."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.1)


def postgres_processes_in(folder: str) -> list[int]:
    """PIDs whose command line names ``folder`` (a cluster's processes name their data directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if folder in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def wait_for_running_check(run_tmp: Path, marker: str, *, seconds: float = 120) -> janitor.Tag:
    """Wait until a run (TMPDIR=run_tmp) has its embedded server up and a check whose SQL holds ``marker``
    running on it; returns the server's janitor tag. Conditions, not log lines or sleeps."""
    registry = run_tmp / "rv-janitor"

    def tagged() -> janitor.Tag | None:
        tags = [t for p in registry.glob("*.json") if (t := janitor.load(p)) and t.kind == "embedded"]
        return tags[0] if tags else None

    tag = wait_for(tagged, seconds=seconds, what="the run's server to be tagged")
    assert isinstance(tag, janitor.Tag)
    assert tag.base_dir

    def running() -> bool:
        current = tagged() or tag  # read afresh each time: never act on a stale copy of the tag
        for folder in [f"{current.base_dir}/sock", *current.extra_dirs]:
            for sock in Path(folder).glob(".s.PGSQL.*"):
                if sock.suffix == ".lock":
                    continue
                try:
                    with psycopg.connect(host=folder, port=sock.name.rsplit(".", 1)[1], user="postgres",
                                         dbname="postgres", connect_timeout=5) as conn:
                        return conn.execute("SELECT 1 FROM pg_stat_activity WHERE query LIKE %s AND pid <> "
                                            "pg_backend_pid()", (f"%{marker}%",)).fetchone() is not None
                except psycopg.Error:
                    return False
        return False

    wait_for(running, seconds=seconds, what=f"the check holding {marker!r} to run")
    return tag


ALL_ITEMS = tuple(CHECKLIST)
# Verifying an existing database: nothing was restored, so these have nothing to judge.
# Without a [retention] policy (the RDS users' business) that item is skipped, saying so.
SKIPPED_WITHOUT_RETENTION = {"retention"}
ALL_PASSED = {i: "skipped" if i in SKIPPED_WITHOUT_RETENTION else "passed" for i in ALL_ITEMS}
SKIPPED_FOR_EXISTING_TARGET = {"restore_succeeded", "rto"} | SKIPPED_WITHOUT_RETENTION
# Without a manifest (--manifest, or one next to the dump) there is nothing to compare the schema with.
SKIPPED_WITHOUT_MANIFEST = {"schema_matches"}

__all__ = ["ALL_ITEMS", "ALL_PASSED", "APP_PASSWORD", "SAMPLE_DB", "SKIPPED_FOR_EXISTING_TARGET",
           "SKIPPED_WITHOUT_MANIFEST", "Sample", "SuiteRun"]
