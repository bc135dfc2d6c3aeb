"""Fast tests of the library's parsers and helpers (no server)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fixtures.options import parse_duration
from restore.backups.archive import TocEntry, _parse_toc_body, roles_in_sql
from restore.backups.pgrestore import ToolRun, data_seen, parse_pg_restore_log, parse_psql_log
from restore.compare.expectations import load
from restore.conninfo import redact, with_params
from restore.errors import ConfigError
from restore.targets.base import looks_like_dsn, resolve_target
from tests.conftest import ROOT


def test_redact_hides_every_secret() -> None:
    shown = redact("host=db.example port=5432 user=app password=hunter2 sslpassword=x dbname=shop")
    assert "hunter2" not in shown
    assert "password=***" in shown
    assert "sslpassword=***" in shown
    assert "host=db.example" in shown
    assert "hunter2" not in redact("postgresql://app:hunter2@db.example/shop")
    assert redact("this is not ' a dsn") == "<unparsable connection string>"


def test_with_params_none_removes_a_parameter() -> None:
    assert "password" not in with_params("host=a user=b password=c", password=None, user="x")


@pytest.mark.parametrize(("text", "seconds"), [("1h", 3600), ("15min", 900), ("90s", 90), ("500ms", 0.5), ("42", 42)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text, "test") == seconds


def test_parse_duration_rejects_garbage_naming_its_source() -> None:
    with pytest.raises(ConfigError, match="from the ini file"):
        parse_duration("soon", "the ini file")


def test_toc_lines_with_multiword_descriptions() -> None:
    entry = _parse_toc_body("TABLE DATA public order_items owner")
    assert entry is not None
    assert (entry.desc, entry.qualified, entry.owner) == ("TABLE DATA", "public.order_items",
                                                                                  "owner")
    fk = _parse_toc_body("FK CONSTRAINT audit order_events order_events_order_id_fkey ecommerce_owner")
    assert fk is not None
    assert fk.desc == "FK CONSTRAINT"
    assert fk.tag == "order_events order_events_order_id_fkey"


def test_roles_in_sql_reads_owners_grantees_and_quoted_names_but_not_copy_data() -> None:
    sql = [
        "ALTER TABLE public.t OWNER TO owner_role;\n",
        'GRANT SELECT ON TABLE public.t TO app, "Report Reader" WITH GRANT OPTION;\n',
        "REVOKE ALL ON SCHEMA public FROM PUBLIC;\n",
        'ALTER DEFAULT PRIVILEGES FOR ROLE "Migrator" IN SCHEMA public GRANT SELECT ON TABLES TO app;\n',
        "COPY public.notes (body) FROM stdin;\n",
        "GRANT ALL ON TABLE x TO not_a_role;\n",
        "\\.\n",
    ]
    assert roles_in_sql(sql) == {"owner_role", "app", "Report Reader", "Migrator"}


def test_pg_restore_errors_keep_their_toc_entry() -> None:
    run = ToolRun(command="x")
    parse_pg_restore_log([
        'pg_restore: processing data for table "public.orders"\n',
        "pg_restore: while PROCESSING TOC:\n",
        "pg_restore: from TOC entry 3345; 0 16389 TABLE DATA order_items owner\n",
        "pg_restore: error: COPY failed for table \"order_items\": ERROR:  invalid input syntax\n",
        "CONTEXT:  COPY order_items, line 3\n",
        "pg_restore: warning: errors ignored on restore: 1\n",
    ], run)
    assert run.data_processed == ["public.orders"]
    assert run.data_failed == ["order_items"]
    assert len(run.errors) == 1
    assert run.errors[0].startswith("[TABLE DATA order_items owner] COPY failed")
    assert "CONTEXT:  COPY order_items, line 3" in run.errors[0]


def test_loaded_and_failed_table_data_are_told_by_the_archives_entries() -> None:
    """Names spanning lines (a text pipe turns "\\r" into a line break) and two schemas' "orders" told apart by
    the entry's id in pg_restore's "from TOC entry" line."""
    entries = [TocEntry("TABLE DATA", "public", "a\rb", "o", dump_id=11),
               TocEntry("TABLE DATA", "public", "orders", "o", dump_id=12),
               TocEntry("TABLE DATA", "shop", "orders", "o", dump_id=13),
               TocEntry("TABLE DATA", "public", "never", "o", dump_id=14),
               TocEntry("TABLE", "public", "orders", "o", dump_id=2)]
    output = ('pg_restore: processing data for table "public.a\nb"\n'
              'pg_restore: processing data for table "public.orders"\n'
              'pg_restore: processing data for table "shop.orders"\n'
              "pg_restore: from TOC entry 13; 0 16389 TABLE DATA orders o\n"
              'pg_restore: error: COPY failed for table "orders": ERROR:  invalid input syntax\n')
    processed, failed = data_seen(output, entries)
    assert processed == ["public.a\rb", "public.orders", "shop.orders"]
    assert failed == ["shop.orders"]


def test_reading_which_data_loaded_stays_small_after_the_last_table() -> None:
    """A serial restore of 10,000 tables prints 40,000 constraint lines after the last table's data: the names are
    looked for within the longest a name can be (63 + 1 + 63 characters), never at every line to the end (which took
    23 GB at 10,000 tables before)."""
    import tracemalloc

    longest = ("s" * 62 + "\r", "t" * 63)  # a line break in the schema's name, each part at its limit
    entries = [TocEntry("TABLE DATA", *longest, "o", dump_id=1), TocEntry("TABLE DATA", "public", "x", "o", dump_id=2)]
    output = (f'pg_restore: processing data for table "{longest[0]}.{longest[1]}"\n'.replace("\r", "\n")
              + 'pg_restore: processing data for table "public.x"\n'
              + "".join(f'pg_restore: creating FK CONSTRAINT "public.x fk_{i}"\n' for i in range(40_000)))
    tracemalloc.start()
    processed, _ = data_seen(output, entries)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert processed == [f"{longest[0]}.{longest[1]}", "public.x"]
    assert peak < 20 * len(output), f"{peak / 1e6:.0f} MB for {len(output) / 1e6:.1f} MB of output"


def test_psql_errors_are_split_and_copy_failures_named() -> None:
    run = ToolRun(command="x")
    parse_psql_log([
        'psql:<stdin>:10: ERROR:  relation "x" does not exist\n',
        "LINE 1: SELECT * FROM x;\n",
        'psql:<stdin>:20: ERROR:  invalid input syntax for type integer: "a"\n',
        'CONTEXT:  COPY orders, line 1, column id: "a"\n',
    ], run)
    assert len(run.errors) == 2
    assert run.data_failed == ["orders"]


def test_target_resolution(tmp_path: Path) -> None:
    assert resolve_target("local", tmp_path / "none.toml").kind == "embedded"
    assert looks_like_dsn("postgresql://h/db")
    assert looks_like_dsn("host=h dbname=db")
    assert not looks_like_dsn("prod")
    with pytest.raises(ConfigError, match="Unknown target 'prod'"):
        resolve_target("prod", tmp_path / "none.toml")


def test_expectations_of_the_example_set_load() -> None:
    exp = load(ROOT / "examples" / "expectations")
    assert exp.tables
    assert "public.orders" in exp.tables
    assert exp.row_counts["public.orders"].accepts(10000)
    assert not exp.row_counts["public.orders"].accepts(9999)
    assert exp.app is not None
    assert exp.app.role == "ecommerce_app"
    assert exp.app.privileges
    assert {q.name for q in exp.critical_queries} >= {"order_page_total"}
    assert exp.critical_queries[0].max_ms is not None


def test_tolerance_rule(tmp_path: Path) -> None:
    (tmp_path / "row_counts.toml").write_text('[tables]\n"public.t" = { expected = 1000, tolerance = "2%" }\n')
    rule = load(tmp_path).row_counts["public.t"]
    assert rule.accepts(980)
    assert rule.accepts(1020)
    assert not rule.accepts(979)
    assert not rule.accepts(1021)


def test_committed_expectations_match_the_sample_builder(tmp_path: Path) -> None:
    """examples/expectations/ is the sample's: rebuilding it gives the same files (the builder is deterministic)."""
    from examples.build_sample import build

    build(tmp_path / "out", tmp_path / "exp", ["custom"])
    for name in ("tables.txt", "row_counts.toml", "keys.toml"):
        assert (tmp_path / "exp" / name).read_text() == (ROOT / "examples" / "expectations" / name).read_text(), name


def test_parallel_pg_restore_output_with_interleaved_prefixes() -> None:
    """With --jobs, workers interleave their separately written prefix chunks; messages stay whole."""
    run = ToolRun(command="x")
    parse_pg_restore_log([
        "pg_restore: launching item 2634 TABLE DATA orders\n",
        'pg_restore:pg_restore: processing data for table "public.order_items"\n',
        ' processing data for table "public.orders"\n',
        "pg_restore: finished item 2636 TABLE DATA payments\n",
        "pg_restore: warning: errors ignored on restore: 2\n",
    ], run)
    assert set(run.data_processed) == {"public.order_items", "public.orders", "payments"}
    assert run.reported_error_count == 2
    assert len(run.errors) == 1
    assert "2 errors" in run.errors[0]


def test_failed_server_start_leaves_nothing_behind(tmp_path: Path) -> None:
    from restore.targets.embedded import EmbeddedServer

    server = EmbeddedServer(jobs=1, base_dir=tmp_path, bin_dir=tmp_path / "no-such-postgres")
    with pytest.raises(FileNotFoundError):
        server.start()
    assert list(tmp_path.iterdir()) == []


def test_container_image_follows_the_dumps_major() -> None:
    from restore.targets.container import ContainerError, image_for

    assert image_for(None, "15.8 (Debian 15.8-1)") == "postgres:15"
    assert image_for("local/postgres:{major}", "18.6") == "local/postgres:18"
    assert image_for("registry.example/pg:16", None) == "registry.example/pg:16"
    with pytest.raises(ContainerError, match="needs the dump's server version"):
        image_for(None, None)


def test_s3_etag_verification(tmp_path: Path) -> None:
    import hashlib

    from restore.backups.sources import check_downloaded, verify_etag
    from restore.errors import VerifierFault

    path = tmp_path / "x.dump"
    path.write_bytes(b"x" * 1000)
    assert "matches" in verify_etag(path, f'"{hashlib.md5(b"x" * 1000).hexdigest()}"')
    # A copy that differs from what S3 holds, or is shorter: damaged on its way, the verifier's network's fault.
    with pytest.raises(VerifierFault, match="damaged on its way") as damaged:
        verify_etag(path, '"0123456789abcdef0123456789abcdef"')
    assert damaged.value.blame == "verifier"
    with pytest.raises(VerifierFault, match="downloaded 1000 bytes of 4000: the download was cut short"):
        check_downloaded(path, 4000, "s3://b/x.dump")
    two_parts = hashlib.md5(hashlib.md5(b"x" * 600).digest() + hashlib.md5(b"x" * 400).digest()).hexdigest() + "-2"
    assert "not verified" in verify_etag(path, two_parts)  # a 600-byte part size is not one S3 tools use


def test_accepted_error_hint_is_the_flag_that_accepts_it_again() -> None:
    """The hint shown beside an accepted restore error, pasted into a shell, is a regex matching that error."""
    import re
    import shlex

    from restore.backups.outcome import RestoreOutcome
    from restore.backups.pgrestore import accept as _accept

    error = 'role "postgres" already exists\\n(path C:\\\\x; 100% {y})'
    outcome = RestoreOutcome()
    _accept([error], (re.escape(error),), outcome)
    hint = outcome.accepted_errors[0].rsplit("[accepted: ", 1)[1].rstrip("]")
    (flag,) = shlex.split(hint)
    pattern = flag.removeprefix("--allow-restore-error=")
    assert re.search(pattern, error)


def _client_error(code: str, message: str = "details") -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": message}}, "Operation")


@pytest.mark.parametrize(("code", "kind", "says"), [
    ("DBSnapshotNotFound", "not_found", "does not exist"),
    ("AccessDenied", "access_denied", "may not call rds:RestoreDBInstanceFromDBSnapshot on snapshot 's1'"),
    ("InstanceQuotaExceeded", "quota", "would exceed an AWS quota"),
    ("InvalidDBSnapshotState", "invalid_state", "is not in a state that allows"),
    ("DBInstanceAlreadyExists", "collision", "already exists"),
    ("Throttling", "throttled", "was throttled by AWS 5 times"),
])
def test_every_kind_of_aws_failure_reads_as_a_clear_error(code: str, kind: str, says: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from restore import cloud

    monkeypatch.setattr(cloud.time, "sleep", lambda _s: None)  # the backoff's waits, not the behaviour
    calls = []

    def failing(**params: object) -> None:
        calls.append(params)
        raise _client_error(code)

    lines: list[str] = []
    with pytest.raises(cloud.CloudError) as caught:
        cloud.aws_call(failing, "rds:RestoreDBInstanceFromDBSnapshot", resource="snapshot 's1'", log=lines.append,
                       DBSnapshotIdentifier="s1", MasterUserPassword="secret-value")
    assert caught.value.kind == kind
    assert says in str(caught.value)
    assert len(calls) == (cloud.THROTTLE_ATTEMPTS if kind == "throttled" else 1)
    assert "secret-value" not in "\n".join(lines)  # secrets never reach the restore log


def test_throttling_is_retried_and_then_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    from restore import cloud

    monkeypatch.setattr(cloud.time, "sleep", lambda _s: None)
    answers = iter([_client_error("ThrottlingException"), _client_error("ThrottlingException"), {"ok": True}])

    def flaky(**_params: object) -> object:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert cloud.aws_call(flaky, "rds:DescribeDBInstances", resource="instance 'x'") == {"ok": True}


@pytest.mark.parametrize(("status", "says"), [(404, "does not exist"), (403, "Forbidden: the suite's ServiceAccount"),
                                              (500, "failed: 500")])
def test_kubernetes_failures_read_as_clear_errors(status: int, says: str) -> None:
    from restore.targets.kube import AppError, _api

    class ApiException(Exception):
        def __init__(self) -> None:
            super().__init__("boom")
            self.status, self.reason = status, "Reason"

    def call(*_args: object) -> None:
        raise ApiException()

    with pytest.raises(AppError, match=says):
        _api(call, "get the scale of", "deployment 'web' in namespace 'prod'", "web", "prod")


def test_restore_progress_counts_each_tables_data_once_as_it_arrives() -> None:
    """pg_restore --jobs names a table twice (processing, finished) and tenants share table names: counted by item;
    before the data, the schema being created is counted."""
    from restore.backups.pgrestore import RestoreProgress

    progress = RestoreProgress(None, "", 3)
    progress.on_line('pg_restore: creating TABLE "tenant_a.orders"\n')
    progress.on_line('pg_restore: creating TABLE "tenant_b.orders"\n')
    assert progress.status(0.0).startswith("restoring: the schema (2 objects created), then 0/3 tables' data")
    for item, schema in ((101, "tenant_a"), (102, "tenant_b")):
        progress.on_line(f"pg_restore: launching item {item} TABLE DATA orders\n")
        progress.on_line(f'pg_restore: processing data for table "{schema}.orders"\n')
        progress.on_line(f"pg_restore: finished item {item} TABLE DATA orders\n")
    assert progress.done == 2
    serial = RestoreProgress(None, "", 2)
    serial.on_line('pg_restore: processing data for table "tenant_a.orders"\n')
    assert serial.done == 1


def test_fix_hints_quote_names_one_way() -> None:
    """Every hint names objects as psycopg quotes them, app.toml's own `schema.table` included."""
    from restore import hints

    assert hints.grant("UPDATE", "table", "public.orders", "app") == 'GRANT UPDATE ON TABLE "public"."orders" TO "app";'
    assert '"public"."orders"' in hints.refresh("public", "orders")
    assert hints.grant("EXECUTE", "function", "public.f(bigint)", "app").startswith(
        "GRANT EXECUTE ON FUNCTION public.f(bigint)")  # a signature is SQL text, used as written


def test_inventory_compares_entries_by_name_owner_and_definition_and_names_the_database() -> None:
    import dataclasses

    from restore.backups.toc import RawEntry, RawToc
    from restore.compare import inventory

    def toc(dbname: str, *entries: RawEntry) -> RawToc:
        return RawToc(version=(1, 16), dbname=dbname, entries=entries, server_version="18.6", dump_version="18.6")

    rule = RawEntry(3, "RULE", "app", "parent r1", "app_owner", "CREATE RULE r1 AS ON INSERT TO app.parent …;\n",
                    None, (2,))
    parent = RawEntry(2, "TABLE", "app", "parent", "app_owner", "CREATE TABLE app.parent (id integer);\n", None)
    props = RawEntry(4, "DATABASE PROPERTIES", None, "shop", "app_owner", "ALTER DATABASE shop SET work_mem TO '64MB';",
                     None)
    backup = inventory.from_toc(toc("shop", parent, rule, props))
    restored = inventory.from_toc(toc("shop_restored", dataclasses.replace(parent, owner="postgres")))
    result = inventory.compare(backup, restored, dbname="shop_restored")
    texts = {d.kind: d.text for d in result.differences}
    assert texts["RULE"].startswith("RULE app.parent r1 is missing from the restore. Fix: CREATE RULE r1")
    assert "owned by postgres in the restore, by app_owner in the backup" in texts["TABLE"]
    assert "ALTER DATABASE shop_restored SET work_mem" in texts["DATABASE PROPERTIES"]
    assert result.exact
    assert inventory.route(inventory.key_of("RULE", "app", "parent r1"), backup["entries"], set()) == "app.parent"


def test_named_facts_of_every_value_shape_are_named_never_an_exception() -> None:
    """An event trigger's tags and a publication's options are lists and dicts: a change is named, not a TypeError."""
    from restore.compare.fidelity import compare_named_facts

    src = {"audit_ddl": {"tags": ["CREATE TABLE", "ALTER TABLE"], "enabled": "O", "options": {"publish": "insert"},
                         "none": None}}
    dst = {"audit_ddl": {"tags": ["CREATE TABLE"], "enabled": "D", "options": {"publish": "insert, update"},
                         "none": None}}
    diffs = compare_named_facts("EVENT TRIGGER", src, dst, {"enabled": {"O": "enabled", "D": "disabled"}})
    assert any("tags was ['CREATE TABLE', 'ALTER TABLE'], is ['CREATE TABLE']" in d for d in diffs), diffs
    assert any("enabled was 'enabled', is 'disabled'" in d for d in diffs), diffs
    assert any("options was {'publish': 'insert'}" in d for d in diffs), diffs
    assert len(diffs) == 3, diffs


def test_what_a_check_meets_is_evidence_or_the_verifiers_world() -> None:
    """One rule (restore/errors.py verifier_world): the data's answers stay evidence; a lost connection, a server
    out of disk, the verifier's machine out of space and a bug of the suite's own are not about the backup."""
    import errno

    import psycopg

    from restore.errors import verifier_world

    assert verifier_world(AssertionError("rows differ")) is None
    assert verifier_world(psycopg.errors.DataCorrupted("invalid page in block 3")) is None
    assert verifier_world(psycopg.errors.UndefinedTable('relation "x" does not exist')) is None
    lost = verifier_world(psycopg.OperationalError("server closed the connection unexpectedly"))
    assert lost is not None
    assert lost.startswith("the connection to the database was lost (server closed the connection unexpectedly)")
    disk = verifier_world(psycopg.errors.DiskFull("could not extend file: No space left on device"))
    assert disk is not None
    assert "ran out of a resource" in disk
    machine = verifier_world(OSError(errno.ENOSPC, "No space left on device"))
    assert machine is not None
    assert "verifier's machine" in machine
    try:
        {}[["a"]]  # type: ignore[index]
    except TypeError as exc:
        bug = verifier_world(exc)
    assert bug is not None
    assert bug.startswith("restore-verify's own error (TypeError: unhashable type: 'list' at test_units.py:")


def test_a_changed_definition_is_shown_as_what_changed_not_whole() -> None:
    """One flipped operator in a long view, one word in a long function: the words or lines that differ."""
    from restore.compare.comparison import text_change

    view = "SELECT o.id, o.total FROM public.orders o WHERE o.status <> 'cancelled' " + "AND o.total > 0 " * 200
    said = text_change(view, view.replace("<>", "="))
    assert "[-<>-] {+=+}" in said, said
    assert len(said) < 200, said
    body = "\n".join(f"    PERFORM step_{n}();" for n in range(300))
    function = f"CREATE FUNCTION f() RETURNS void AS $$\nBEGIN\n{body}\nEND $$ LANGUAGE plpgsql"
    said = text_change(function, function.replace("step_150()", "step_151()"))
    assert "-    PERFORM step_150();" in said, said
    assert "+    PERFORM step_151();" in said, said
    assert len(said.splitlines()) <= 8, said


def test_notes_and_faults_show_database_text_as_escapes() -> None:
    """A layout note or a fault names database objects: a name with ESC/CR must not move the terminal's cursor."""
    from reports.plugin import Collected, TestResult, _Collector

    result = TestResult("checks/x.py::t", "schema_matches")
    _Collector(Collected())._properties(result, [("note", "TABLE public.t\x1b[2K\rbackup test PASSED differs")], 0.1)
    assert result.note == "TABLE public.t\\x1b[2K\\rbackup test PASSED differs"
    report = pytest.TestReport("checks/x.py::u", ("x.py", 0, "u"), {}, "skipped", ("x.py", 0, "not run: y"), "setup",
                                user_properties=[("verifier_fault", "lost \x1b[2K")])
    collector = _Collector(Collected())
    collector.pytest_runtest_logreport(report)
    assert collector.collected.results["checks/x.py::u"].fault == "lost \\x1b[2K"


def test_a_wal_fetch_that_fails_is_not_a_file_missing_from_the_archive(tmp_path: Path) -> None:
    """The restore_command wrapper passes the tool's "not found" (1) on at once, tries any other failure again, then
    stops recovery (a code over 125) with a line the suite reads back as the verifier's world."""
    from restore.backups import walfetch
    from restore.errors import VerifierFault

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sleep").write_text("#!/bin/sh\nexit 0\n")  # the pauses between tries, not waited here
    (fake / "sleep").chmod(0o755)
    tool = tmp_path / "tool"  # exits with the codes listed in its file, one per call, and counts its calls
    tool.write_text('#!/bin/sh\nn=$(($(cat "$0.calls" 2>/dev/null || echo 0) + 1)); echo $n > "$0.calls"\n'
                    'echo "tool: network is unreachable" >&2\nexit $(sed -n "${n}p" "$0.codes")\n')
    tool.chmod(0o755)
    command = walfetch.wrapped(tmp_path, [str(tool)])
    env = {"PATH": f"{fake}:/usr/bin:/bin"}

    def fetch(*codes: int) -> tuple[int, int, str]:
        (tmp_path / "tool.codes").write_text("".join(f"{c}\n" for c in codes))
        (tmp_path / "tool.calls").unlink(missing_ok=True)
        shell = command.replace("%f", "000000010000000000000003").replace("%p", str(tmp_path / "out"))
        done = subprocess.run(["sh", "-c", shell], env=env, capture_output=True, text=True, timeout=60)
        return done.returncode, int((tmp_path / "tool.calls").read_text()), done.stderr

    assert fetch(0)[:2] == (0, 1)
    assert fetch(1)[:2] == (1, 1)  # not in the archive: said at once, recovery may take it for the end
    assert fetch(4, 2, 0)[:2] == (0, 3)  # a blip: tried again
    code, calls, said = fetch(4, 4, 4, 4, 4)
    assert (code, calls) == (walfetch.STOP_CODE, walfetch.ATTEMPTS)
    assert code > 125  # PostgreSQL stops recovery instead of promoting
    assert fetch(143)[:2] == (143, 1)  # killed by a signal (a shutdown): not tried again, still not "not found"
    log = ("2026-12-06 10:00:00.000 UTC [1] LOG:  restored log file \"000000010000000000000002\" from archive\n"
           + said + "2026-12-06 10:00:07.000 UTC [1] FATAL:  could not restore file\n")
    fault = walfetch.fault(log, "the Barman Cloud WAL archive s3://b/p/main")
    assert isinstance(fault, VerifierFault)
    assert "asked for WAL file 000000010000000000000003" in str(fault), fault
    assert "failed 4 times (exit code 4; tool: network is unreachable)" in str(fault), fault
    assert walfetch.fault(log.replace(walfetch.MARK, "something else"), "x") is None


def test_a_self_test_that_raises_fails_it_is_never_not_run(tmp_path: Path) -> None:
    """Only the checks turn the verifier's world into "not run": any other test in a session with the plugin (the
    suite's own self-tests) fails on an error, so a broken self-test can never pass as skipped."""
    import sys

    (tmp_path / "test_broken.py").write_text("def test_it():\n    undefined_name  # noqa: F821\n\n\n"
                                             "def test_lost():\n    raise ConnectionResetError('lost')\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "fixtures.outcomes",
                           str(tmp_path / "test_broken.py")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "2 failed" in done.stdout, done.stdout[-2000:]
    assert "skipped" not in done.stdout, done.stdout[-2000:]


def test_a_small_throwaway_cluster_is_written_to_memory_and_a_large_one_or_a_chosen_folder_to_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from restore.targets import embedded
    from restore.targets.embedded import EmbeddedServer, memory_home

    # Not a tmpfs (the test's own folder): on disk, saying why.
    home, why = memory_home(10, tmp_path)
    assert home is None
    assert "not a writable memory filesystem" in why
    # A tmpfs as this process sees it: small goes to memory, more than a quarter of what is free does not.
    monkeypatch.setattr(embedded, "_is_tmpfs", lambda path: True)
    monkeypatch.setattr(embedded, "_memory_available_bytes", lambda: 4_000_000_000)
    monkeypatch.setattr(embedded.shutil, "disk_usage", lambda path: type("U", (), {"free": 8_000_000_000})())
    home, why = memory_home(900_000_000, tmp_path)
    assert home == tmp_path
    assert why.startswith("in memory (likely 900 MB")
    assert "--server-dir=PATH" in why
    home, why = memory_home(1_100_000_000, tmp_path)  # over 4,000 MB available / 4
    assert home is None
    assert "too large for memory" in why
    assert "1/4" in why
    monkeypatch.setattr(embedded, "_memory_available_bytes", lambda: None)
    assert memory_home(10, tmp_path)[0] is None
    # --server-dir and --keep-target are never overridden (a kept copy would hold memory until removed).
    monkeypatch.setattr(embedded, "MEMORY_DIR", tmp_path)
    monkeypatch.setattr(embedded, "_memory_available_bytes", lambda: 4_000_000_000)
    assert EmbeddedServer(jobs=1, base_dir=tmp_path / "given").place(10) is None
    assert EmbeddedServer(jobs=1, keep=True).place(10) is None
    server = EmbeddedServer(jobs=1)
    assert (server.place(10) or "").startswith("the throwaway cluster is written in memory")
    assert server.in_memory
    assert server.room()[0] == tmp_path


def test_a_restore_in_two_runs_reports_the_errors_and_data_of_both() -> None:
    from restore.backups.pgrestore import restore_runs

    assert restore_runs(1) == ((),)
    assert restore_runs(2) == (("--section=pre-data",), ("--section=data", "--section=post-data"))
    run, first, second = ToolRun(command="both"), ToolRun(command="1"), ToolRun(command="2")
    parse_pg_restore_log([
        "pg_restore: from TOC entry 5; 1259 16390 TABLE t owner\n",
        'pg_restore: error: could not execute query: ERROR:  type "x" does not exist\n',
        "pg_restore: warning: errors ignored on restore: 1\n"], first)
    first.exit_code = 1
    parse_pg_restore_log(['pg_restore: processing data for table "public.u"\n'], second)
    run.merge(first)
    run.merge(second)
    assert run.exit_code == 1
    assert run.reported_error_count == 1
    assert run.errors == ['[TABLE t owner] could not execute query: ERROR:  type "x" does not exist']
    assert run.data_processed == ["public.u"]
    assert "public.u" in run.output
    assert "type" in run.output


def test_a_backend_crash_is_the_datas_unless_a_full_disk_made_the_server_panic() -> None:
    from restore.errors import server_crash

    crash = ("2026-12-06 LOG:  client backend (PID 7) was terminated by signal 11: Segmentation fault\n"
             "2026-12-06 DETAIL:  Failed process was running: SELECT * FROM t\n")
    assert server_crash(crash) == ("client backend (PID 7) was terminated by signal 11: Segmentation fault; it was "
                                   "running: SELECT * FROM t")
    full = ('2026-12-06 PANIC:  could not write to file "pg_wal/xlogtemp.7": No space left on device\n'
            + crash.replace("signal 11: Segmentation fault", "signal 6: Aborted"))
    assert server_crash(full) is None
    assert server_crash(crash.replace("signal 11: Segmentation fault", "signal 9: Killed")) is None


def test_a_manifest_read_early_is_parsed_once_and_used_only_if_unchanged(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker reads the backup's manifest while the controller restores (and the controller checks it before
    its restore): the later load takes that parse, once, and only if the file did not change meanwhile."""
    import json
    import os
    from types import SimpleNamespace

    from restore import run
    from restore.compare import manifest
    from restore.compare.manifest import FORMAT, VERSION

    def write(path: Path, table: str) -> None:
        path.write_text(json.dumps({"format": FORMAT, "version": VERSION, "database": {}, "sequences": {},
                                    "tables": {table: {"row_count": 1}}, "inventory": {"entries": {}}}))

    parsed: list[Path] = []
    real = manifest._parse
    monkeypatch.setattr(manifest, "_parse", lambda path: parsed.append(path) or real(path))
    source, restored = tmp_path / "backup.manifest.json", tmp_path / "restored.manifest.json"
    write(source, "public.a")
    write(restored, "public.a")
    facts = run.RunFacts(run_id="r", started_at="2026-12-06T00:00:00+00:00", run_dir=tmp_path,
                         source_kind="manifest", source_manifest_path=source, restored_manifest_path=restored)

    def state() -> run.RunState:
        worker = run.RunState(SimpleNamespace(manifest=source), None, lambda: facts)  # type: ignore[arg-type]
        worker.read_source_early()
        return worker

    manifests = state().manifests()
    assert manifests is not None
    assert parsed == [source, restored]  # the backup's manifest parsed once, early
    assert "inventory" not in manifests[0]
    assert manifest.load(source) is not manifests[0]  # handed over once, not held: a third load parses again
    parsed.clear()
    changed = state()
    write(source, "public.b")  # the file changed after it was read early: read again
    os.utime(source, ns=(1, 1))
    manifests = changed.manifests()
    assert manifests is not None
    assert list(manifests[0]["tables"]) == ["public.b"]
    assert parsed == [source, source, restored]


def test_a_tests_cost_is_what_it_reads_so_the_largest_run_first() -> None:
    """The order xdist hands tests out in (fixtures/params.py): an index checked with heapallindexed reads its table
    too, one checked for structure only does not; a foreign key's scan reads both tables; a batch, all its objects."""
    from fixtures.batches import Batch
    from fixtures.params import _cost

    sizes = {"public.orders": 1000, "public.items": 5000, "odd.a.b": 7}
    index = {"schema": "public", "name": "items_idx", "table": "items", "size_bytes": 300, "proven": None}
    assert _cost(index, sizes) == 5300
    assert _cost(index | {"proven": "built by the restore"}, sizes) == 300
    assert _cost(index | {"pages": "pages and structure"}, sizes) == 300
    fk = {"schema": "public", "table": "items", "ref_schema": "public", "ref_table": "orders", "proven": None}
    assert _cost(fk, sizes) == 6000
    assert _cost({"table": "odd.a.b"}, sizes) == 7  # a manifest's qualified name, a dot in the table's own name
    assert _cost(Batch("index", (("a", index), ("b", fk))), sizes) == 11300
    assert _cost("a rule's name", sizes) == 0
