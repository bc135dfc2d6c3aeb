"""Manifest fidelity: a restore that holds the right rows but behaves differently fails schema_matches.

Each fault is an incident-style change made on a restored copy of the sample, verified against the backup's
manifest (``--target=DSN --manifest=…``, no expectations): only ``schema_matches`` fails, and its message names the
object, both sides and the statement that reconciles them. A manifest of the older version still verifies, its new
properties reported as not recorded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.conftest import FaultServer, Sample, SuiteRun

# (statement, what the failure must say); every one in one copy: one run proves them all, each named.
FAULTS = [
    ("REVOKE SELECT ON public.products FROM ecommerce_app",
     'ecommerce_app held SELECT in the backup and does not in the restore (ecommerce_app gets "permission denied")'
     '. Fix: GRANT SELECT ON TABLE "public"."products" TO "ecommerce_app";'),
    ("REVOKE SELECT ON public.order_summaries FROM ecommerce_app",
     "view public.order_summaries: ecommerce_app held SELECT in the backup"),
    ("ALTER TABLE public.orders ENABLE ROW LEVEL SECURITY",
     "table public.orders: row-level security was disabled in the backup, is enabled and forced in the restore (with "
     "no policy"),
    ("ALTER TABLE public.orders FORCE ROW LEVEL SECURITY",
     'ROW LEVEL SECURITY; ALTER TABLE "public"."orders" NO FORCE ROW LEVEL SECURITY;'),
    ("REVOKE EXECUTE ON FUNCTION public.order_item_total(bigint) FROM ecommerce_app",
     "function public.order_item_total(bigint): ecommerce_app held EXECUTE in the backup and does not"),
    ("REVOKE USAGE ON SEQUENCE public.customers_id_seq FROM ecommerce_app",
     "sequence public.customers_id_seq: ecommerce_app held USAGE in the backup and does not"),
    ("REVOKE CONNECT ON DATABASE {db} FROM PUBLIC",
     "the database: PUBLIC held CONNECT in the backup and does not in the restore"),
    ("CREATE FUNCTION public.ddl_noop() RETURNS event_trigger LANGUAGE plpgsql AS $$BEGIN END$$",
     "function public.ddl_noop() is not in the backup"),
    ("CREATE EVENT TRIGGER ddl_watch ON ddl_command_start EXECUTE FUNCTION public.ddl_noop()",
     "event trigger ddl_watch is not in the backup"),
    ("ALTER TABLE audit.order_events SET UNLOGGED",
     'table audit.order_events was LOGGED in the backup, is UNLOGGED in the restore (an unlogged table is emptied '
     'after a crash). Fix: ALTER TABLE "audit"."order_events" SET LOGGED;'),
    ("ALTER TABLE public.payments OWNER TO postgres",
     'table public.payments: owned by ecommerce_owner in the backup, by postgres in the restore'),
    ("ALTER SEQUENCE public.orders_id_seq OWNED BY NONE",
     'sequence public.orders_id_seq was OWNED BY public.orders.id in the backup, by no column in the restore'),
    ("COMMENT ON TABLE public.customers IS 'changed by hand'",
     "table public.customers: comment was (none) in the backup, is 'changed by hand' in the restore. Fix: COMMENT ON "
     "TABLE \"public\".\"customers\" IS NULL;"),
    ("GRANT UPDATE (name) ON public.products TO ecommerce_app",
     'Fix: REVOKE UPDATE ("name") ON TABLE "public"."products" FROM "ecommerce_app";'),
    ("CREATE POLICY own_rows ON public.payments USING (true)",
     "table public.payments: row-level security policy own_rows is not in the backup"),
    ("ALTER TABLE public.order_items REPLICA IDENTITY FULL",
     "table public.order_items: replica identity was DEFAULT in the backup, is FULL in the restore"),
    ("ALTER SEQUENCE public.customers_id_seq INCREMENT BY 5",
     'sequence public.customers_id_seq: increment was 1, is 5. Fix: ALTER SEQUENCE "public"."customers_id_seq" '
     "INCREMENT BY 1;"),
    ("ALTER TABLE public.order_items ALTER COLUMN quantity SET STATISTICS 500",
     "column public.order_items.quantity: statistics target was the default, is 500"),
    ("ALTER TABLE public.customers SET (fillfactor = 70)",
     "table public.customers: storage options were the defaults, are ['fillfactor=70']"),
    ("ALTER FUNCTION public.order_item_total(bigint) SECURITY DEFINER",
     "function public.order_item_total(bigint) was SECURITY INVOKER in the backup, is SECURITY DEFINER"),
    ("ALTER FUNCTION public.touch_updated_at() SET search_path = public",
     "function public.touch_updated_at(): its SET options were none, are ['search_path=public']"),
    ("ALTER DATABASE {db} SET work_mem = '64MB'",
     "the database: setting work_mem = '64MB' is in the restore, not in the backup"),
    ("ALTER ROLE ecommerce_app IN DATABASE {db} SET statement_timeout = '5s'",
     "role ecommerce_app in this database: setting statement_timeout = '5s' is in the restore"),
    ("ALTER DEFAULT PRIVILEGES FOR ROLE ecommerce_owner IN SCHEMA public GRANT SELECT ON TABLES TO ecommerce_app",
     'Fix: ALTER DEFAULT PRIVILEGES FOR ROLE "ecommerce_owner" IN SCHEMA "public" REVOKE SELECT ON TABLES FROM '
     '"ecommerce_app";'),
    ("REVOKE USAGE ON SCHEMA audit FROM ecommerce_app",
     'schema audit: ecommerce_app held USAGE in the backup and does not'),
    ("ALTER TABLE public.orders DISABLE TRIGGER orders_touch_updated_at",
     'trigger orders_touch_updated_at on public.orders was enabled in the backup, is disabled in the restore. Fix: '
     'ALTER TABLE "public"."orders" ENABLE TRIGGER "orders_touch_updated_at";'),
    ("CREATE PUBLICATION orders_cdc FOR TABLE public.orders",
     "publication orders_cdc is not in the backup"),
]


def _inject(conninfo: str, dbname: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for statement, _ in FAULTS:
            conn.execute(statement.format(db=sql.Identifier(dbname).as_string(conn)).encode())


@pytest.fixture
def no_expectations(tmp_path: Path) -> Path:
    empty = tmp_path / "no-expectations"
    empty.mkdir()
    return empty


def test_behaviour_changes_fail_schema_matches_with_the_fix(
    fault_server: FaultServer, sample: Sample, no_expectations: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    dsn = fault_server.copy("fidelity_faults")
    _inject(dsn, "fidelity_faults")
    run = run_suite(f"--target={dsn}", f"--manifest={sample.manifest}", f"--expectations={no_expectations}")
    assert run.failed_items() == {"schema_matches"}, run.explain()
    messages = "\n".join(f["message"] for f in run.result["failures"])
    missing = [expected for _, expected in FAULTS if expected not in messages]
    assert not missing, f"not reported: {missing}\n---\n{messages}"


def test_a_faithful_copy_matches_including_privileges_and_roles(
    fault_server: FaultServer, sample: Sample, no_expectations: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    dsn = fault_server.copy("fidelity_clean")
    run = run_suite(f"--target={dsn}", f"--manifest={sample.manifest}", f"--expectations={no_expectations}")
    assert run.result["checklist"]["schema_matches"] == "passed", run.explain()
    assert not any(s["checklist"] == "schema_matches" for s in run.result["skips"]), run.explain()


def test_an_older_manifest_still_verifies_and_says_what_it_lacks(
    fault_server: FaultServer, sample: Sample, tmp_path: Path, no_expectations: Path,
    run_suite: Callable[..., SuiteRun]
) -> None:
    old = json.loads(sample.manifest.read_text())
    old["version"] = 1
    for key in ("behaviour",):
        old.pop(key)
    old["backup"].pop("toc_digest", None)
    old_path = tmp_path / "v1.manifest.json"
    old_path.write_text(json.dumps(old))
    dsn = fault_server.copy("fidelity_old_manifest")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("REVOKE SELECT ON public.products FROM ecommerce_app")  # not recorded in v1: not a difference
    run = run_suite(f"--target={dsn}", f"--manifest={old_path}", f"--expectations={no_expectations}")
    assert run.result["checklist"]["schema_matches"] == "passed", run.explain()
    not_recorded = [s for s in run.result["skips"] if "not recorded in this manifest" in s["reason"]]
    assert {s["nodeid"].rsplit("[", 1)[1].rstrip("]") for s in not_recorded} >= {
        "sequences", "default_privileges", "event_triggers", "publications", "roles"}, run.explain()


LAYOUT = ["CLUSTER public.orders USING orders_customer_created_idx",
          "ALTER TABLE public.customers ALTER COLUMN full_name SET STORAGE EXTERNAL",
          "ALTER TABLE public.customers ALTER COLUMN email SET COMPRESSION pglz"]


def test_layout_only_maintenance_is_a_note_and_fails_with_strict_layout(
    fault_server: FaultServer, sample: Sample, no_expectations: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """CLUSTER, SET STORAGE and SET COMPRESSION on a copy change no row, result or permission: schema_matches
    passes with a note naming each (docs/checks.md "Layout-only differences"); --strict-layout makes it fail."""
    dsn = fault_server.copy("fidelity_layout")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in LAYOUT:
            conn.execute(statement.encode())
    run = run_suite(f"--target={dsn}", f"--manifest={sample.manifest}", f"--expectations={no_expectations}")
    assert run.result["checklist"]["schema_matches"] == "passed", run.explain()
    notes = " ".join(n["note"] for n in run.result["notes"])
    for said in ("public.orders differs in layout only", "clustered-index mark", "public.customers differs in "
                 "layout only", "column storage strategy", "column compression method"):
        assert said in notes, notes
    assert "passed with 2 note(s)" in run.result["checklist_reasons"]["schema_matches"], run.explain()
    assert "NOTE" in run.output
    assert "layout only" in run.output
    strict = run_suite(f"--target={dsn}", f"--manifest={sample.manifest}", f"--expectations={no_expectations}",
                       "--strict-layout")
    assert strict.failed_items() == {"schema_matches"}, strict.explain()
    messages = "\n".join(f["message"] for f in strict.result["failures"])
    assert "a failure because of --strict-layout" in messages, messages
    assert "CLUSTER ON" in messages, messages


HINTED = ["ALTER TABLE public.payments OWNER TO postgres",
          "REVOKE SELECT ON public.products FROM ecommerce_app",
          "ALTER TABLE public.orders ALTER COLUMN status SET DEFAULT 'x'",
          "ALTER TABLE public.products ALTER COLUMN stock SET DEFAULT 7",
          "ALTER FUNCTION public.touch_updated_at() SET search_path = public",
          "ALTER SEQUENCE public.customers_id_seq INCREMENT BY 5"]


def test_fix_hints_applied_in_order_bring_the_copy_back(
    fault_server: FaultServer, sample: Sample, no_expectations: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    """Owner, grant, column default, function setting and sequence changes: every "Fix:" of the failure, applied in
    the order given, makes schema_matches green again; the owner's own privileges are not listed as lost."""
    dsn = fault_server.copy("fidelity_hints")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in HINTED:
            conn.execute(statement.encode())
    run = run_suite(f"--target={dsn}", f"--manifest={sample.manifest}", f"--expectations={no_expectations}")
    assert run.failed_items() == {"schema_matches"}, run.explain()
    messages = "\n".join(f["message"] for f in run.result["failures"])
    assert "ecommerce_owner held" not in messages, messages  # ALTER … OWNER TO gives them back
    assert "security hole" not in messages, messages  # touch_updated_at is not SECURITY DEFINER
    fixes = [line.split("Fix: ", 1)[1] for line in messages.splitlines() if "Fix: " in line]
    assert len(fixes) >= len(HINTED), messages
    with psycopg.connect(dsn, autocommit=True) as conn:
        for fix in fixes:
            conn.execute(fix.encode())
    again = run_suite(f"--target={dsn}", f"--manifest={sample.manifest}", f"--expectations={no_expectations}")
    assert again.result["checklist"]["schema_matches"] == "passed", again.explain()
