"""app_connect: the application's role logs in with its own credentials and holds the privileges it needs."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from fixtures.params import Param, parameters
from restore import hints
from restore.backups.outcome import PreparedDatabase
from restore.compare.expectations import AppExpectation, Expectations, Privilege
from restore.conninfo import get_param, read_pgpass, with_params
from restore.run import RunState
from restore.verify import has_privilege

pytestmark = pytest.mark.checklist("app_connect")


@parameters('privilege', empty="no application privileges listed in expectations/app.toml", needs_db=False)
def privileges(state: RunState) -> list[Param]:
    app = state.expectations.app
    return [pytest.param(p, id=p.id) for p in app.privileges] if app else []


APP_PARTS = ("pods_ready", "no_restarts", "logs_clean", "health")


@parameters('app_part', empty="nothing to observe", needs_db=False)
def app_parts(state: RunState) -> list[Param] | str:
    if state.facts.app_observation is None:
        return "the application side is observed with --stop-app and [targets.NAME.app] in the targets file"
    return [pytest.param(part, id=part) for part in APP_PARTS]


@pytest.fixture(scope="session")
def app(expectations: Expectations) -> AppExpectation:
    """The application's role as configured in expectations/app.toml."""
    if expectations.app is None:
        pytest.skip(f"no application role configured: create {expectations.directory / 'app.toml'} with "
                    "role = \"…\" and password_env or passfile")
    return expectations.app


def _verifiers_path(prepared: PreparedDatabase, app: AppExpectation) -> str:
    """The verifier's own way to the server (its host or socket), as the application's role."""
    assert prepared.conninfo is not None
    return with_params(prepared.conninfo, password=None, passfile=None, options=None, user=app.role,
                       dbname=app.database or prepared.dbname)


def _tcp_instead_of_socket(prepared: PreparedDatabase, app: AppExpectation) -> bool:
    """The verifier reaches an existing target through a Unix socket and app.toml names no host: the login is
    tried over TCP on loopback instead (where the server asks for the password)."""
    return not prepared.owned and app.host is None and (
        get_param(_verifiers_path(prepared, app), "host") or "/").startswith("/")


def app_conninfo(prepared: PreparedDatabase, app: AppExpectation, *, over_socket: bool = False) -> str:
    """How the application would connect: password login over TCP, never the suite's own credentials.
    ``over_socket``: the verifier's own path instead (when TCP was refused; the password is then not proven)."""
    base = _verifiers_path(prepared, app)
    if over_socket:  # the verifier's host or socket, as it is
        return _with_password(base, app)
    if prepared.owned:  # our embedded server: superuser uses its socket; applications come in over loopback
        base = with_params(base, host=prepared.app_host, port=prepared.app_port)
    elif app.host is not None:  # where the application connects, as app.toml says
        base = with_params(base, host=app.host, hostaddr=None, port=app.port or get_param(base, "port"))
    elif _tcp_instead_of_socket(prepared, app):
        # The verifier may use the server's Unix socket (often trust); an application logs in over TCP with its
        # password, where an expired or wrong password shows.
        base = with_params(base, host="127.0.0.1", hostaddr=None)
    return _with_password(base, app)


def _with_password(base: str, app: AppExpectation) -> str:
    """The application's password from app.toml's source, passed explicitly."""
    if app.password_env:
        password = os.environ.get(app.password_env)
        if password is None:
            pytest.fail(f"The application's password is read from ${app.password_env}, which is not set. Export "
                        "it, or set passfile = \"…\" in app.toml.", pytrace=False)
        return with_params(base, password=password)
    if app.passfile:
        # Read here, passed explicitly: libpq would let a PGPASSWORD in the environment win over passfile=.
        password = read_pgpass(app.passfile, host=get_param(base, "host") or "localhost",
                               port=get_param(base, "port") or "5432", dbname=get_param(base, "dbname") or "",
                               user=app.role)
        if password is None:
            pytest.fail(f"The application's password file {app.passfile} has no line for {app.role} on "
                        f"{get_param(base, 'host')}:{get_param(base, 'port')}/{get_param(base, 'dbname')} (libpq "
                        "format host:port:database:user:password, * matches anything).", pytrace=False)
        return with_params(base, password=password)
    return base


def test_app_role_logs_in(app: AppExpectation, restored_db: PreparedDatabase, db_conn: psycopg.Connection[Any],
                          record_property: Callable[[str, object], None]) -> None:
    """Log in as the application role over TCP with its password and run a read-only query, as the application
    would; say when its password has expired (VALID UNTIL)."""
    conninfo = app_conninfo(restored_db, app)
    found = db_conn.execute("SELECT CASE WHEN rolvaliduntil IN ('infinity', '-infinity') THEN NULL "
                            "ELSE rolvaliduntil END, rolcanlogin FROM pg_roles WHERE rolname = %s",
                            (app.role,)).fetchone()
    valid_until = found[0] if found else None
    record_property("valid_until", valid_until.isoformat() if valid_until is not None else "no expiry")
    where = (f"{get_param(conninfo, 'host')}:{get_param(conninfo, 'port') or 5432}/"
             f"{get_param(conninfo, 'dbname')} as {app.role}")
    row, failure, unreached = _log_in(conninfo)
    if unreached and _tcp_instead_of_socket(restored_db, app):
        # No TCP listener where the verifier's socket is: not the role's fault. The verifier's own path proves the
        # role logs in, not the password (a socket is often trusted): a gap in the proof, said with its fix.
        socket_row, socket_failure, socket_unreached = _log_in(app_conninfo(restored_db, app, over_socket=True))
        tcp = f"TCP to {get_param(conninfo, 'host')}:{get_param(conninfo, 'port') or 5432} was refused ({failure})"
        if socket_row is not None and socket_row[0] == app.role:
            pytest.skip(f"the application's password is not proven: {tcp}, so the role {app.role!r} logged in "
                        "over the verifier's own Unix socket instead, where the server may not ask for a password. "
                        "To prove it, set host = \"…\" (and port) in app.toml to where the application connects.")
        if socket_unreached:
            pytest.skip(f"not proven: {tcp}, and the verifier's own socket refused the role too ({socket_failure})."
                        " Set host = \"…\" (and port) in app.toml to where the application connects.")
        failure, where = socket_failure, f"the verifier's socket as {app.role} (after {tcp})"
    elif unreached:
        pytest.skip(f"not proven: the application's way in ({where}) could not be reached: {failure}. Nothing "
                    "was learnt about the role; check host/port in app.toml (or the target's TCP listener).")
    if failure is not None:
        if valid_until is not None and valid_until < datetime.now(UTC):
            pytest.fail(f"The application role {app.role!r} cannot log in ({where}): its password expired at "
                        f"{valid_until.isoformat()} (VALID UNTIL). Fix: ALTER ROLE {hints.ident(app.role)} VALID "
                        "UNTIL 'infinity'; (or a later date), then set the password the application uses.",
                        pytrace=False)
        if found is not None and not found[1]:
            pytest.fail(f"The application role {app.role!r} cannot log in ({where}): it has NOLOGIN (restored "
                        "without --globals, this run created it so). Restore the roles with "
                        "--globals=pg_dumpall-globals.sql, or ALTER ROLE … LOGIN.", pytrace=False)
        pytest.fail(
            f"The application role {app.role!r} cannot log in ({where}): {failure}. "
            "Check that the role exists with LOGIN (restore with --globals=pg_dumpall-globals.sql to bring roles "
            "and their passwords), and the password source in app.toml.",
            pytrace=False,
        )
    assert row is not None
    assert row[0] == app.role


def _log_in(conninfo: str) -> tuple[tuple[Any, ...] | None, str | None, bool]:
    """(current_user and database, or None; libpq's last words; whether the server was never reached — no TCP
    listener, a socket that does not exist, a timeout — as opposed to a login the server refused)."""
    try:
        with psycopg.connect(conninfo, connect_timeout=15) as conn:
            conn.read_only = True
            return conn.execute("SELECT current_user, current_database()").fetchone(), None, False
    except psycopg.OperationalError as exc:
        words = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        # A server that answered says why with an SQLSTATE (28P01 wrong password, 28000 no such role or no LOGIN);
        # libpq's own "no password supplied" means the server asked for one.
        unreached = exc.sqlstate is None and "password" not in str(exc)
        return None, words, unreached


@privileges
def test_app_privilege(
    privilege: Privilege, app: AppExpectation, restored_db: PreparedDatabase, db_conn: psycopg.Connection[Any]
) -> None:
    """has_*_privilege for each privilege app.toml lists: checked in the catalog, nothing is written."""
    try:
        ok, failure = has_privilege(db_conn, app.role, privilege.kind, privilege.obj, privilege.privilege), None
    except psycopg.errors.UndefinedObject as exc:  # role missing: the login test says so
        ok, failure = False, exc.diag.message_primary or str(exc)
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction, psycopg.errors.InvalidSchemaName) as exc:
        # A missing object is reported by the item that owns it (tables_present, critical_queries, …);
        # a privilege on nothing is neither held nor lacking.
        pytest.skip(f"{privilege.kind} {privilege.obj} does not exist ({exc.diag.message_primary}): its absence is "
                    "reported by the item that owns it")
    assert failure is None, (
        f"Cannot check {privilege.privilege} on {privilege.kind} {privilege.obj} for {app.role}: {failure}"
    )
    assert ok, (
        f"Role {app.role} lacks {privilege.privilege} on {privilege.kind} {privilege.obj}, which app.toml says the "
        f"application needs. The GRANT was lost in the restore (run without --globals? an ACL error in the "
        f"restore log?). Fix: {hints.grant(privilege.privilege, privilege.kind, privilege.obj, app.role)}"
    )


_APP_PART_TEXT = {
    "pods_ready": "its pods are Ready after the restart",
    "no_restarts": "no pod restarts within the observation window",
    "logs_clean": "its logs since the restart hold none of the configured failure patterns",
    "health": "its health command or HTTP path succeeds",
}


@app_parts
def test_application_reconnects(app_part: str, run_state_data: RunState) -> None:
    """The application side, after --stop-app brought it back: one test per part, each reported on its own."""
    observation = run_state_data.facts.app_observation
    assert observation is not None
    assert observation.error is None, f"The application could not be observed: {observation.error}"
    problems = observation.problems[app_part]
    assert not problems, f"The application fails \"{_APP_PART_TEXT[app_part]}\": " + "; ".join(problems)
