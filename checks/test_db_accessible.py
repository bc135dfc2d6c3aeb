"""db_accessible: the database accepts a connection and answers; its version, encoding and collation are shown."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from fixtures.connections import check_conninfo
from fixtures.outcomes import not_run
from restore.backups.outcome import PreparedDatabase
from restore.config import RestoreConfig
from restore.run import RunState

pytestmark = pytest.mark.checklist("db_accessible")


def test_db_accessible(
    prepared_db: PreparedDatabase, restore_config: RestoreConfig, run_state_data: RunState,
    record_property: Callable[[str, object], None],
) -> None:
    """Connect, run SELECT 1 in a read-only transaction, and read what the server is."""
    if prepared_db.restore.verifier_fault:
        pytest.skip("not run: the verifier could not restore the backup (see the verdict)")
    if prepared_db.restore.refused:
        pytest.skip("no database to connect to: the restore was refused (see restore_succeeded)")
    try:
        with psycopg.connect(check_conninfo(prepared_db, restore_config)) as conn:
            conn.read_only = True
            one = conn.execute("SELECT 1").fetchone()
            row = conn.execute(
                "SELECT current_setting('server_version'), pg_encoding_to_char(d.encoding), d.datcollate,"
                " d.datctype, current_setting('transaction_read_only')"
                " FROM pg_database d WHERE d.datname = current_database()"
            ).fetchone()
        failure = None
    except psycopg.Error as exc:
        one = row = None
        # libpq's last line is the cause ("password authentication failed for user …", "Connection refused");
        # the lines before it repeat the address.
        failure = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()
    if failure is not None:
        # The database to verify could not be reached or logged into: nothing was learnt about the backup.
        ends = "" if failure.endswith((".", "?", "!")) else "."
        not_run(f"cannot connect to {prepared_db.target_display}: {failure}{ends} Check that the server is up and "
                "the connection settings (--target / targets.toml, password environment variable) are right.")
    assert one == (1,), f"SELECT 1 returned {one!r}"
    assert row is not None
    version, encoding, collate, ctype, read_only = row
    for key, value in (("server_version", version), ("encoding", encoding), ("collation", collate),
                       ("ctype", ctype)):
        record_property(key, value)
    assert read_only == "on", "the check session is not read-only; refusing to go on"
    assert run_state_data.facts.catalog_error is None, (
        f"The catalog could not be read: {run_state_data.facts.catalog_error}")
