"""What makes a restored database *behave* like the backed-up one, beyond its tables and rows (manifest v2).

Privileges (table, column, view, sequence, schema, function, type and database ACLs; default privileges),
ownership, row-level security and policies, persistence (logged/unlogged), replica identity, storage options,
statistics targets, tablespaces, comments, sequence parameters and OWNED BY, functions' SECURITY DEFINER and
``SET`` options, database and role-in-database settings, event triggers, publications, and the attributes and
memberships of the roles the database references.

Everything is captured as normalised catalog facts, never as pretty-printed SQL, so that a restore into a newer
major compares equal: an ACL is the set of (grantee, privilege, grantable) that ``aclexplode`` gives, with a NULL
ACL read as the object kind's default (``acldefault``), the grantor left out. Policy expressions are the one textual
comparison (``pg_get_expr``, whitespace-normalised).

:func:`capture` fills a manifest's version-2 fields; the ``compare_*`` functions return differences, each naming
the object, the backed-up value, the restored value, and the statement that would reconcile them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from typing_extensions import TypedDict

from restore.hints import ident, literal

_USER = ("n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'"
         " AND n.nspname NOT LIKE 'pg\\_temp\\_%'")
_NOT_EXT = ("NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = {cls}::regclass AND d.objid = {oid}"
            " AND d.deptype = 'e')")


def _acl(acl: str, default: str = "NULL::aclitem[]") -> str:
    """SQL: an ACL as a JSON list of [grantee, privilege, grantable] sorted by name (oids differ between servers);
    a NULL ACL is read as ``default`` (the kind's ``acldefault``: what the owner holds implicitly)."""
    return ("(SELECT coalesce(jsonb_agg(jsonb_build_array(a.who, a.privilege_type, a.is_grantable) "
            "ORDER BY a.who, a.privilege_type), '[]'::jsonb) FROM (SELECT CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE "
            f"pg_get_userbyid(x.grantee) END AS who, x.privilege_type, x.is_grantable FROM aclexplode(coalesce({acl}, "
            f"{default})) x) a)")


acl_sql = _acl  # for the other catalog readers (large objects' privileges, restore/compare/content.py)


def _default_acl(kind: str, owner: str) -> str:
    return f"acldefault('{kind}'::\"char\", {owner})"


_RELATION_DEFAULT_ACL = "acldefault((CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END)::\"char\", c.relowner)"

RELATIONS_SQL = f"""
SELECT c.oid, n.nspname || '.' || c.relname AS name, n.nspname AS schema, c.relname AS relname, c.relkind AS kind,
       pg_get_userbyid(c.relowner) AS owner, c.relpersistence AS persistence, c.relreplident AS replica_identity,
       (SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
         WHERE i.indrelid = c.oid AND i.indisreplident) AS replica_identity_index,
       c.relrowsecurity AS row_security, c.relforcerowsecurity AS force_row_security,
       {_acl("c.relacl", _RELATION_DEFAULT_ACL)} AS acl,
       obj_description(c.oid, 'pg_class') AS comment, c.reloptions AS options,
       (SELECT spcname FROM pg_tablespace WHERE oid = c.reltablespace) AS tablespace
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'f', 'm', 'v', 'S') AND {_USER} AND {_NOT_EXT.format(cls="'pg_class'", oid="c.oid")}
ORDER BY 2
"""
COLUMNS_SQL = f"""
SELECT a.attrelid AS oid, a.attname AS name, {_acl("a.attacl")} AS acl,
       col_description(a.attrelid, a.attnum) AS comment,
       CASE WHEN a.attstattarget IS NULL OR a.attstattarget < 0 THEN NULL ELSE a.attstattarget END AS statistics
FROM pg_attribute a WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""
POLICIES_SQL = """
SELECT p.polrelid AS oid, p.polname AS name,
       CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE'
                     ELSE 'ALL' END AS command,
       p.polpermissive AS permissive,
       array(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r) END FROM unnest(p.polroles) r ORDER BY 1)
           AS roles,
       pg_get_expr(p.polqual, p.polrelid) AS using, pg_get_expr(p.polwithcheck, p.polrelid) AS with_check
FROM pg_policy p WHERE p.polrelid = ANY(%s) ORDER BY 1, 2
"""
SEQUENCES_SQL = f"""
SELECT n.nspname || '.' || c.relname AS name, format_type(s.seqtypid, NULL) AS type, s.seqstart AS start,
       s.seqincrement AS increment, s.seqmin AS min, s.seqmax AS max, s.seqcache AS cache, s.seqcycle AS cycle,
       (SELECT tn.nspname || '.' || t.relname || '.' || a.attname
        FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
          AND d.deptype IN ('a', 'i') LIMIT 1) AS owned_by
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_sequence s ON s.seqrelid = c.oid
WHERE c.relkind = 'S' AND {_USER} AND {_NOT_EXT.format(cls="'pg_class'", oid="c.oid")} ORDER BY 1
"""
FUNCTIONS_SQL = f"""
SELECT p.oid::regprocedure::text AS name, pg_get_userbyid(p.proowner) AS owner, p.prosecdef AS security_definer,
       coalesce(p.proconfig, '{{}}') AS settings, {_acl("p.proacl", _default_acl('f', "p.proowner"))} AS acl,
       obj_description(p.oid, 'pg_proc') AS comment
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.prokind IN ('f', 'p') AND {_USER} AND {_NOT_EXT.format(cls="'pg_proc'", oid="p.oid")} ORDER BY 1
"""
TYPES_SQL = f"""
SELECT n.nspname || '.' || t.typname AS name, pg_get_userbyid(t.typowner) AS owner,
       {_acl("t.typacl", _default_acl('T', "t.typowner"))} AS acl, obj_description(t.oid, 'pg_type') AS comment
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype IN ('e', 'd', 'c', 'r') AND {_USER} AND {_NOT_EXT.format(cls="'pg_type'", oid="t.oid")}
  AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
ORDER BY 1
"""
SCHEMAS_SQL = f"""
SELECT n.nspname AS name, pg_get_userbyid(n.nspowner) AS owner,
       {_acl("n.nspacl", _default_acl('n', "n.nspowner"))} AS acl, obj_description(n.oid, 'pg_namespace') AS comment
FROM pg_namespace n WHERE {_USER} AND {_NOT_EXT.format(cls="'pg_namespace'", oid="n.oid")} ORDER BY 1
"""
DATABASE_SQL = f"""
SELECT pg_get_userbyid(d.datdba) AS owner, {_acl("d.datacl", _default_acl('d', "d.datdba"))} AS acl,
       shobj_description(d.oid, 'pg_database') AS comment,
       coalesce((SELECT setconfig FROM pg_db_role_setting WHERE setdatabase = d.oid AND setrole = 0), '{{}}')
           AS settings,
       coalesce((SELECT jsonb_object_agg(pg_get_userbyid(setrole), setconfig) FROM pg_db_role_setting
                 WHERE setdatabase = d.oid AND setrole <> 0), '{{}}'::jsonb) AS role_settings
FROM pg_database d WHERE d.datname = current_database()
"""
DEFAULT_ACL_SQL = f"""
SELECT pg_get_userbyid(d.defaclrole) AS role, n.nspname AS schema,
       CASE d.defaclobjtype WHEN 'r' THEN 'TABLES' WHEN 'S' THEN 'SEQUENCES' WHEN 'f' THEN 'FUNCTIONS'
                            WHEN 'T' THEN 'TYPES' WHEN 'n' THEN 'SCHEMAS' ELSE d.defaclobjtype::text END AS objects,
       {_acl("d.defaclacl")} AS acl
FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace ORDER BY 1, 2, 3
"""
EVENT_TRIGGERS_SQL = """
SELECT evtname AS name, evtevent AS event, evtfoid::regproc::text AS function, evtenabled AS enabled,
       coalesce(evttags, '{}') AS tags, pg_get_userbyid(evtowner) AS owner
FROM pg_event_trigger ORDER BY 1
"""
PUBLICATIONS_SQL = """
SELECT p.pubname AS name, p.puballtables AS all_tables, p.pubinsert AS insert, p.pubupdate AS update,
       p.pubdelete AS delete, p.pubtruncate AS truncate, pg_get_userbyid(p.pubowner) AS owner,
       array(SELECT schemaname || '.' || tablename FROM pg_publication_tables t WHERE t.pubname = p.pubname
             ORDER BY 1) AS tables
FROM pg_publication p ORDER BY 1
"""
ROLES_SQL = """
SELECT r.rolname AS name, r.rolsuper AS superuser, r.rolinherit AS inherit, r.rolcreaterole AS createrole,
       r.rolcreatedb AS createdb, r.rolcanlogin AS login, r.rolreplication AS replication,
       r.rolbypassrls AS bypassrls, r.rolconnlimit AS connection_limit,
       array(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
             WHERE m.member = r.oid ORDER BY 1) AS member_of
FROM pg_roles r WHERE r.rolname = ANY(%s) ORDER BY 1
"""

TRIGGER_STATES = {"O": "enabled", "D": "disabled", "R": "enabled on replicas only", "A": "always enabled"}
PERSISTENCE = {"p": "LOGGED", "u": "UNLOGGED", "t": "TEMPORARY"}
REPLICA_IDENTITY = {"d": "DEFAULT", "n": "NOTHING", "f": "FULL", "i": "USING INDEX"}
RELATION_KIND = {"r": "TABLE", "p": "TABLE", "f": "FOREIGN TABLE", "m": "MATERIALIZED VIEW", "v": "VIEW",
                 "S": "SEQUENCE"}


Facts = dict[str, dict[str, Any]]  # object name -> its recorded facts


class Behaviour(TypedDict, total=False):
    """What manifest version 2 records of behaviour (absent from version 1 manifests)."""

    relations: Facts
    sequence_parameters: Facts
    function_details: Facts
    type_details: Facts
    schema_details: Facts
    database_details: dict[str, Any]
    default_privileges: list[dict[str, Any]]
    event_triggers: Facts
    publications: Facts
    role_details: Facts
    current_user: str


def capture(cur: psycopg.Cursor[Any], roles: list[str]) -> Behaviour:
    """The version-2 fields, read in the manifest's own snapshot transaction (``cur`` has dict rows)."""
    relations: dict[str, dict[str, Any]] = {}
    by_oid: dict[int, dict[str, Any]] = {}
    for r in cur.execute(RELATIONS_SQL.encode()).fetchall():
        entry = {k: r[k] for k in ("schema", "relname", "kind", "owner", "persistence", "replica_identity",
                                   "replica_identity_index", "row_security", "force_row_security", "acl", "comment",
                                   "tablespace")}
        entry["options"] = sorted(r["options"] or [])
        entry["columns"] = {}
        entry["policies"] = {}
        relations[r["name"]] = entry
        by_oid[r["oid"]] = entry
    oids = list(by_oid)
    for r in cur.execute(COLUMNS_SQL.encode(), (oids,)).fetchall():
        by_oid[r["oid"]]["columns"][r["name"]] = {"acl": r["acl"], "comment": r["comment"],
                                                  "statistics": r["statistics"]}
    for r in cur.execute(POLICIES_SQL.encode(), (oids,)).fetchall():
        by_oid[r["oid"]]["policies"][r["name"]] = {k: r[k] for k in ("command", "permissive", "roles", "using",
                                                                     "with_check")}

    def named(query: str, params: tuple[Any, ...] | None = None) -> dict[str, dict[str, Any]]:
        # No parameters: the query's LIKE patterns hold '%', which psycopg reads as placeholders when given any.
        return {r["name"]: {k: v for k, v in r.items() if k != "name"}
                for r in cur.execute(query.encode(), params).fetchall()}

    database = dict(cur.execute(DATABASE_SQL.encode()).fetchone() or {})
    return {
        "relations": relations,
        "sequence_parameters": named(SEQUENCES_SQL),
        "function_details": named(FUNCTIONS_SQL),
        "type_details": named(TYPES_SQL),
        "schema_details": named(SCHEMAS_SQL),
        "database_details": database,
        "default_privileges": [dict(r) for r in cur.execute(DEFAULT_ACL_SQL.encode()).fetchall()],
        "event_triggers": named(EVENT_TRIGGERS_SQL),
        "publications": named(PUBLICATIONS_SQL),
        "role_details": named(ROLES_SQL, (roles,)),
        "current_user": str((cur.execute("SELECT current_user AS u").fetchone() or {"u": ""})["u"]),
    }


# --- comparison -----------------------------------------------------------------------------------------

NOT_RECORDED = "not recorded in this manifest (taken by an older restore-verify): {what} not compared"


def _norm(text: str | None) -> str | None:
    return None if text is None else re.sub(r"\s+", " ", text).strip()


def _qualified(name: str, entry: dict[str, Any]) -> str:
    if entry.get("schema") is not None and entry.get("relname") is not None:
        return ident(entry["schema"], entry["relname"])
    schema, _, rel = name.partition(".")
    return ident(schema, rel)


def _grantee(name: str) -> str:
    return "PUBLIC" if name == "PUBLIC" else ident(name)


# Privileges a newer server grants that the backup's server did not have: ALL and an owner's implicit privileges
# include them after a restore into the newer major, so they are left out of the comparison.
NEW_PRIVILEGES = {17: {"MAINTAIN"}}


def tolerated_privileges(src_version_num: int, dst_version_num: int) -> frozenset[str]:
    """The privileges the backup's major did not know and the restore's does."""
    return frozenset(p for major, privileges in NEW_PRIVILEGES.items()
                     if src_version_num // 10000 < major <= dst_version_num // 10000 for p in privileges)


def _acl_diffs(what: str, on: str, src: list[list[Any]], dst: list[list[Any]], *, prefix: str = "",
               target: str | None = None, ignore: frozenset[str] = frozenset()) -> list[str]:
    """Privileges granted in one and not the other, each with its GRANT or REVOKE (``prefix``: ALTER DEFAULT
    PRIVILEGES …; ``target``: what follows ON in the statement when it is not ``on``)."""
    s = {(g, p): bool(w) for g, p, w in src}
    d = {(g, p): bool(w) for g, p, w in dst if p not in ignore}
    on_sql = target or on
    diffs = []
    for (grantee, priv), grantable in sorted(s.items()):
        option = " WITH GRANT OPTION" if grantable else ""
        if (grantee, priv) not in d:
            diffs.append(f"{what}: {grantee} held {priv} in the backup and does not in the restore ({grantee} gets "
                         f"\"permission denied\"). Fix: {prefix}GRANT {priv} ON {on_sql} TO "
                         f"{_grantee(grantee)}{option};")
        elif d[(grantee, priv)] != grantable:
            diffs.append(f"{what}: {grantee}'s {priv} was {'with' if grantable else 'without'} the grant option in "
                         f"the backup, is {'with' if d[(grantee, priv)] else 'without'} it in the restore.")
    for (grantee, priv) in sorted(set(d) - set(s)):
        diffs.append(f"{what}: {grantee} holds {priv} in the restore but did not in the backup. Fix: {prefix}REVOKE "
                     f"{priv} ON {on_sql} FROM {_grantee(grantee)};")
    return diffs


def _comment_diff(what: str, on: str, src: str | None, dst: str | None) -> list[str]:
    if src == dst:
        return []
    def shown(text: str | None) -> str:
        return "(none)" if text is None else repr(text)
    return [f"{what}: comment was {shown(src)} in the backup, is {shown(dst)} in the restore. Fix: COMMENT ON {on} IS "
            f"{literal(src) if src is not None else 'NULL'};"]


def _after_owner_fix(acl: list[list[Any]], owner_now: str | None, owner_then: str | None) -> list[list[Any]]:
    """The restore's privileges as they will be once its owner is put back (ALTER … OWNER TO moves the old owner's
    privileges to the new one): what the owner's fix does not mend is what is left to grant or revoke, so the fixes,
    applied in the order given, bring the object back."""
    if owner_now is None or owner_then is None or owner_now == owner_then:
        return acl
    return [[owner_then if grantee == owner_now else grantee, priv, grantable] for grantee, priv, grantable in acl]


def _owner_diff(what: str, on: str, src: str | None, dst: str | None) -> list[str]:
    if src == dst or src is None:
        return []
    return [f"{what}: owned by {src} in the backup, by {dst} in the restore (its owner's privileges and "
            f"default privileges go with it). Fix: ALTER {on} OWNER TO {ident(src)};"]


def _ownership_diffs(label: str, on: str, src: dict[str, Any], dst: dict[str, Any], *, ignore: frozenset[str],
                     owner: bool = True, target: str | None = None) -> list[str]:
    """Owner, privileges (as they stand once the owner is fixed) and comment of one object. ``owner``: False when the
    owner follows another object's fix (a sequence OWNED BY a column)."""
    diffs = _owner_diff(label, on, src.get("owner"), dst.get("owner")) if owner else []
    diffs += _acl_diffs(label, on, src["acl"], _after_owner_fix(dst["acl"], dst.get("owner"), src.get("owner")),
                        ignore=ignore, target=target)
    return diffs + _comment_diff(label, on, src.get("comment"), dst.get("comment"))


def compare_relation(name: str, src: dict[str, Any], dst: dict[str, Any], *,
                     ignore: frozenset[str] = frozenset(), follows: str | None = None) -> list[str]:
    """Security, storage and behaviour of one table, view, materialized view or sequence. ``follows``: the table
    whose owner this sequence (OWNED BY one of its columns) takes: its owner is that table's fix, not its own."""
    kind = RELATION_KIND.get(src["kind"], "TABLE")
    on = f"{kind} {_qualified(name, src)}"
    label = f"{kind.lower()} {name}"
    diffs = _ownership_diffs(label, on, src, dst, ignore=ignore, owner=not follows,
                             target=f"TABLE {_qualified(name, src)}" if kind != "SEQUENCE" else None)
    if src.get("persistence") != dst.get("persistence"):
        was, now = PERSISTENCE.get(src["persistence"], src["persistence"]), PERSISTENCE.get(dst["persistence"])
        why = " (an unlogged table is emptied after a crash)" if now == "UNLOGGED" else ""
        diffs.append(f"{label} was {was} in the backup, is {now} in the restore{why}. Fix: ALTER {on} SET {was};")
    if (src.get("row_security"), src.get("force_row_security")) != (dst.get("row_security"),
                                                                      dst.get("force_row_security")):
        def rls(e: dict[str, Any]) -> str:
            return ("disabled" if not e.get("row_security") else
                    "enabled and forced" if e.get("force_row_security") else "enabled")
        fix = (f"ALTER TABLE {_qualified(name, src)} {'ENABLE' if src.get('row_security') else 'DISABLE'} ROW LEVEL "
               f"SECURITY; ALTER TABLE {_qualified(name, src)} {'' if src.get('force_row_security') else 'NO '}FORCE "
               "ROW LEVEL SECURITY;")
        consequence = (" (with no policy that admits it, a role that is not the owner sees no rows)"
                       if dst.get("row_security") and not src.get("row_security") else "")
        diffs.append(f"{label}: row-level security was {rls(src)} in the backup, is {rls(dst)} in the "
                     f"restore{consequence}. Fix: {fix}")
    if (src.get("replica_identity"), src.get("replica_identity_index")) != (dst.get("replica_identity"),
                                                                              dst.get("replica_identity_index")):
        def ri(e: dict[str, Any]) -> str:
            words = REPLICA_IDENTITY.get(e.get("replica_identity") or "d", "DEFAULT")
            return f"{words} {ident(e['replica_identity_index'])}" if e.get("replica_identity_index") and \
                words == "USING INDEX" else words
        diffs.append(f"{label}: replica identity was {ri(src)} in the backup, is {ri(dst)} in the restore (logical "
                     f"replication and CDC depend on it). Fix: ALTER TABLE {_qualified(name, src)} REPLICA IDENTITY "
                     f"{ri(src)};")
    if src.get("options", []) != dst.get("options", []):
        diffs.append(f"{label}: storage options were {src.get('options') or 'the defaults'}, are "
                     f"{dst.get('options') or 'the defaults'}.")
    if src.get("tablespace") != dst.get("tablespace"):
        diffs.append(f"{label}: tablespace was {src.get('tablespace') or 'the database default'}, is "
                     f"{dst.get('tablespace') or 'the database default'}.")
    for col, s in src.get("columns", {}).items():
        d = dst.get("columns", {}).get(col)
        if d is None:
            continue  # a missing column is the column comparison's finding
        col_on = f"COLUMN {_qualified(name, src)}.{ident(col)}"
        column = ident(col)
        for x in _acl_diffs(f"column {name}.{col}", col_on, s["acl"], d["acl"], ignore=ignore,
                            target=f"TABLE {_qualified(name, src)}"):
            # Column privileges read GRANT SELECT (col) ON TABLE t.
            diffs.append(re.sub(r"(GRANT|REVOKE) (\w+) ON TABLE", _column_privilege(column), x))
        diffs += _comment_diff(f"column {name}.{col}", col_on, s.get("comment"), d.get("comment"))
        if s.get("statistics") != d.get("statistics"):
            target = s.get("statistics") if s.get("statistics") is not None else -1
            diffs.append(f"column {name}.{col}: statistics target was {s.get('statistics') or 'the default'}, is "
                         f"{d.get('statistics') or 'the default'} (plans change). Fix: ALTER TABLE "
                         f"{_qualified(name, src)} ALTER COLUMN {ident(col)} SET STATISTICS {target};")
    for pol, s in src.get("policies", {}).items():
        d = dst.get("policies", {}).get(pol)
        if d is None:
            diffs.append(f"{label}: row-level security policy {pol} ({s['command']}, roles {', '.join(s['roles'])}) "
                         "is missing: rows it admitted are hidden. Recreate it from the backup's CREATE POLICY.")
            continue
        for key in ("command", "permissive", "roles"):
            if s[key] != d[key]:
                diffs.append(f"{label}: policy {pol}: {key} was {s[key]!r}, is {d[key]!r}.")
        for key, words in (("using", "USING"), ("with_check", "WITH CHECK")):
            if _norm(s[key]) != _norm(d[key]):
                diffs.append(f"{label}: policy {pol}: {words} was {s[key]!r}, is {d[key]!r} (compared as text).")
    diffs += [f"{label}: row-level security policy {pol} is not in the backup ({d['command']}, roles "
              f"{', '.join(d['roles'])})." for pol, d in dst.get("policies", {}).items()
              if pol not in src.get("policies", {})]
    return diffs


def _column_privilege(column: str) -> Callable[[re.Match[str]], str]:
    def replace(m: re.Match[str]) -> str:
        return f"{m.group(1)} {m.group(2)} ({column}) ON TABLE"
    return replace


def compare_sequence_parameters(src: dict[str, Any], dst: dict[str, Any]) -> list[str]:
    diffs = []
    for name, s in src.items():
        d = dst.get(name)
        if d is None:
            continue  # a missing sequence is the sequences item's finding
        schema, _, seq = name.partition(".")
        on = ident(schema, seq)
        if s.get("owned_by") != d.get("owned_by"):
            fix = (f"ALTER SEQUENCE {on} OWNED BY {_owned_by_sql(s['owned_by'])};" if s.get("owned_by")
                   else f"ALTER SEQUENCE {on} OWNED BY NONE;")
            diffs.append(f"sequence {name} was OWNED BY {s.get('owned_by') or 'no column'} in the backup, by "
                         f"{d.get('owned_by') or 'no column'} in the restore (dropping the table would no longer drop "
                         f"it, and pg_dump's serial handling changes). Fix: {fix}")
        for key, clause in (("type", "AS {}"), ("increment", "INCREMENT BY {}"), ("min", "MINVALUE {}"),
                            ("max", "MAXVALUE {}"), ("cache", "CACHE {}"), ("start", "START WITH {}")):
            if s.get(key) != d.get(key):
                diffs.append(f"sequence {name}: {key} was {s.get(key)}, is {d.get(key)}. Fix: ALTER SEQUENCE {on} "
                             f"{clause.format(s.get(key))};")
        if s.get("cycle") != d.get("cycle"):
            diffs.append(f"sequence {name}: {'CYCLE' if s.get('cycle') else 'NO CYCLE'} in the backup, "
                         f"{'CYCLE' if d.get('cycle') else 'NO CYCLE'} in the restore. Fix: ALTER SEQUENCE {on} "
                         f"{'CYCLE' if s.get('cycle') else 'NO CYCLE'};")
    return diffs


def _owned_by_sql(owned_by: str) -> str:
    schema, _, rest = owned_by.partition(".")
    table, _, column = rest.rpartition(".")
    return f"{ident(schema, table)}.{ident(column)}"


def compare_functions(src: dict[str, Any], dst: dict[str, Any], *,
                      ignore: frozenset[str] = frozenset()) -> list[str]:
    diffs = []
    for name, s in src.items():
        d = dst.get(name)
        if d is None:
            continue  # a missing function is the definition comparison's finding
        on = f"FUNCTION {name}"
        label = f"function {name}"
        diffs += _ownership_diffs(label, on, s, d, ignore=ignore)
        if s.get("security_definer") != d.get("security_definer"):
            words = {True: "SECURITY DEFINER", False: "SECURITY INVOKER"}
            diffs.append(f"{label} was {words[bool(s['security_definer'])]} in the backup, is "
                         f"{words[bool(d['security_definer'])]} in the restore (it runs with other privileges). Fix: "
                         f"ALTER {on} {words[bool(s['security_definer'])]};")
        if sorted(s.get("settings") or []) != sorted(d.get("settings") or []):
            fixes = " ".join([f"ALTER {on} RESET ALL;", *(f"ALTER {on} SET {k} = {literal(v)};" for k, _, v in
                                                           (x.partition("=") for x in s.get("settings") or []))])
            definer = s.get("security_definer") or d.get("security_definer")
            why = (" (a SECURITY DEFINER function without its search_path can be made to run another's code)"
                   if definer and any(x.startswith("search_path=") for x in s.get("settings") or []) else
                   " (it runs with other settings)")
            diffs.append(f"{label}: its SET options were {s.get('settings') or 'none'}, are "
                         f"{d.get('settings') or 'none'}{why}. Fix: {fixes}")
    return diffs


def compare_owned_objects(kind: str, src: dict[str, Any], dst: dict[str, Any], *,
                          ignore: frozenset[str] = frozenset()) -> list[str]:
    """Schemas and types: owner, privileges, comment."""
    diffs = []
    for name, s in src.items():
        d = dst.get(name)
        if d is None:
            continue
        if kind == "SCHEMA":
            on = f"SCHEMA {ident(name)}"
        else:
            schema, _, rel = name.partition(".")
            on = f"TYPE {ident(schema, rel)}"
        label = f"{kind.lower()} {name}"
        diffs += _ownership_diffs(label, on, s, d, ignore=ignore)
    return diffs


# A database's own properties travel with its DATABASE entry: a gap in the restore procedure, not in the backup.
CREATE_ONLY = ("A gap in the restore procedure: pg_restore without --create does not restore a database's own "
               "settings, comment and grants (ALTER DATABASE … SET, ALTER ROLE … IN DATABASE … SET, COMMENT ON "
               "DATABASE); restore with --create, or apply them after the restore.")
LEFT_OUT = " (pg_restore without --create leaves it out)"


def compare_database(src: dict[str, Any], dst: dict[str, Any], *, dbname: str,
                     ignore: frozenset[str] = frozenset(), verifier: str | None = None) -> list[str]:
    """``verifier``: the role verifying the restore; a privilege it holds only in the restore is its own (the
    README grants it CONNECT), not the database's."""
    on = f"DATABASE {ident(dbname)}"
    extra_to_verifier = [a for a in dst["acl"] if a[0] == verifier and [a[0], a[1]] not in
                         [[g, p] for g, p, _ in src["acl"]]]
    diffs = _acl_diffs("the database", on, src["acl"], [a for a in dst["acl"] if a not in extra_to_verifier],
                       ignore=ignore)
    if src.get("comment") is not None and dst.get("comment") is None:
        diffs.append(f"the database: its comment is in the backup, not in the restore{LEFT_OUT}. Apply: COMMENT ON "
                     f"{on} IS {literal(src['comment'])};")
    else:
        diffs += _comment_diff("the database", on, src.get("comment"), dst.get("comment"))
    diffs += _settings_diff("the database", on, src.get("settings") or [], dst.get("settings") or [])
    for role in sorted(set(src.get("role_settings") or {}) | set(dst.get("role_settings") or {})):
        diffs += _settings_diff(f"role {role} in this database", f"ROLE {ident(role)} IN DATABASE {ident(dbname)}",
                                (src.get("role_settings") or {}).get(role) or [],
                                (dst.get("role_settings") or {}).get(role) or [])
    if any(LEFT_OUT in d for d in diffs):  # the procedure's gap said once, above what it left out
        diffs.insert(0, CREATE_ONLY)
    return diffs


def _settings_diff(what: str, on: str, src: list[str], dst: list[str]) -> list[str]:
    s = dict(x.partition("=")[::2] for x in src)
    d = dict(x.partition("=")[::2] for x in dst)
    diffs = [f"{what}: setting {k} = {v!r} is in the backup, not in the restore{LEFT_OUT}. Apply: ALTER {on} SET "
             f"{k} = {literal(v)};" for k, v in sorted(s.items()) if k not in d]
    diffs += [f"{what}: setting {k} was {v!r} in the backup, is {d[k]!r} in the restore. Fix: ALTER {on} SET {k} = "
              f"{literal(v)};" for k, v in sorted(s.items()) if k in d and d[k] != v]
    diffs += [f"{what}: setting {k} = {v!r} is in the restore, not in the backup. Fix: ALTER {on} RESET {k};"
              for k, v in sorted(d.items()) if k not in s]
    return diffs


def compare_default_privileges(src: list[dict[str, Any]], dst: list[dict[str, Any]], *,
                               ignore: frozenset[str] = frozenset()) -> list[str]:
    def key(e: dict[str, Any]) -> tuple[str, str | None, str]:
        return e["role"], e["schema"], e["objects"]

    s, d = {key(e): e["acl"] for e in src}, {key(e): e["acl"] for e in dst}
    diffs = []
    for k in sorted(set(s) | set(d), key=str):
        role, schema, objects = k
        where = f" IN SCHEMA {ident(schema)}" if schema else ""
        diffs += _acl_diffs(f"default privileges of {role}{' in ' + schema if schema else ''} on new "
                            f"{objects.lower()}", objects, s.get(k, []), d.get(k, []),
                            prefix=f"ALTER DEFAULT PRIVILEGES FOR ROLE {ident(role)}{where} ", ignore=ignore)
    return diffs


def _worded(words: dict[Any, str], value: Any) -> Any:
    """A catalog value in words where there are some; lists and other unhashable values (an event trigger's tags, a
    publication's options) as they are."""
    try:
        return words.get(value, value)
    except TypeError:
        return value


def compare_named_facts(kind: str, src: dict[str, Any], dst: dict[str, Any],
                        words: dict[str, dict[Any, str]] | None = None) -> list[str]:
    """Event triggers, publications: missing, extra, or a property that differs."""
    words = words or {}
    diffs = [f"{kind} {name} is missing" for name in src if name not in dst]
    for name, s in src.items():
        d = dst.get(name)
        if d is None:
            continue
        for key, value in s.items():
            if d.get(key) != value:
                shown = words.get(key, {})
                diffs.append(f"{kind} {name}: {key} was {_worded(shown, value)!r}, is "
                             f"{_worded(shown, d.get(key))!r}")
    diffs += [f"{kind} {name} is not in the backup" for name in dst if name not in src]
    return diffs


def compare_roles(src: dict[str, Any], dst: dict[str, Any], *, skip: Iterable[str] = ()) -> list[str]:
    """Attributes and memberships of the roles the database references (the restore's own superuser aside)."""
    diffs = []
    skipped = set(skip)
    for name, s in src.items():
        if name in skipped:
            continue
        d = dst.get(name)
        if d is None:
            # The restore's side lists the roles its objects reference: a role that exists but lost every grant
            # and ownership is not listed either (those losses are differences of their own).
            diffs.append(f"role {name} is no longer referenced by any object of the restore: the objects it owned or "
                         "was granted lost it (see their own differences); if the role itself does not exist in the "
                         "restored server, restore the roles with pg_dumpall --globals-only (--globals=FILE).")
            continue
        for key, value in s.items():
            if d.get(key) != value:
                diffs.append(f"role {name}: {key} was {value!r}, is {d.get(key)!r}" + (
                    f". Fix: GRANT {', '.join(ident(r) for r in set(value) - set(d.get(key) or []))} TO {ident(name)};"
                    if key == "member_of" and set(value) - set(d.get(key) or []) else ""))
    return diffs


def trigger_state(code: str | None) -> str:
    return TRIGGER_STATES.get(code or "O", str(code))
