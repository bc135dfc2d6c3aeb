"""Build the sample e-commerce database, dump it, and write the expectations that match it.

    python examples/build_sample.py [--out examples/out] [--expectations examples/expectations] [--format custom]

Writes ``OUT/sample.dump`` (pg_dump -Fc) with ``OUT/sample.dump.manifest.json`` (both from one snapshot),
``OUT/sample.globals.sql`` (pg_dumpall --globals-only),
``OUT/app.pgpass`` (the sample application's password, for expectations/app.toml) and, in the
expectations directory, ``tables.txt``, ``row_counts.toml`` and ``keys.toml`` read from the source database.
The server is a throwaway embedded PostgreSQL, gone when the script ends.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from restore.take_backup import take_backup  # noqa: E402
from restore.targets.embedded import EmbeddedServer  # noqa: E402
from restore.tools import clean_env, pg_tool  # noqa: E402

SAMPLE_DB = "ecommerce_production"
APP_ROLE = "ecommerce_app"
APP_PASSWORD = "sample-app-password"  # the sample's own throwaway role; real passwords never live in files
FRESHNESS_SQL = "SELECT max(created_at) FROM public.orders"
FORMAT_FLAGS = {"custom": ("-Fc", ".dump"), "directory": ("-Fd", ".dir"), "tar": ("-Ft", ".tar"),
                "plain": ("-Fp", ".sql")}


def write_expectations(conninfo: str, directory: Path) -> None:
    """tables.txt, row_counts.toml and keys.toml, read from the source database."""
    directory.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(conninfo) as conn:
        tables = conn.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " ORDER BY 1"
        ).fetchall()
        names = [t for (t,) in tables]
        counts = {}
        for name in names:
            schema, table = name.split(".", 1)
            row = conn.execute(
                psycopg.sql.SQL("SELECT count(*) FROM {}").format(psycopg.sql.Identifier(schema, table))
            ).fetchone()
            counts[name] = row[0] if row else 0
        pks = conn.execute(
            "SELECT n.nspname || '.' || c.relname,"
            " array(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, o)"
            "       JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o)"
            " FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE con.contype = 'p'"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
        ).fetchall()
        fks = conn.execute(
            "SELECT n.nspname || '.' || c.relname, array_agg(con.conname::text ORDER BY con.conname)"
            " FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE con.contype = 'f'"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema') GROUP BY 1 ORDER BY 1"
        ).fetchall()
    header = "# Written by examples/build_sample.py from the source database.\n"
    (directory / "tables.txt").write_text(header + "".join(f"{n}\n" for n in names))
    (directory / "row_counts.toml").write_text(
        header + "[tables]\n" + "".join(f'"{n}" = {counts[n]}\n' for n in names)
    )
    (directory / "keys.toml").write_text(
        header + "[primary_keys]\n" + "".join(f'"{t}" = {list(cols)!r}\n'.replace("'", '"') for t, cols in pks)
        + "\n[foreign_keys]\n" + "".join(f'"{t}" = {list(n)!r}\n'.replace("'", '"') for t, n in fks)
    )


def build(out: Path, expectations: Path | None, formats: list[str]) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    with EmbeddedServer(jobs=2) as server:
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(SAMPLE_DB)))
        source = server.conninfo(SAMPLE_DB)
        subprocess.run(
            [str(pg_tool("psql")), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", source,
             "-f", str(Path(__file__).parent / "sample.sql")],
            check=True, env=clean_env(),
        )
        for fmt in formats:
            flag, suffix = FORMAT_FLAGS[fmt]
            path = out / f"sample{suffix}"
            subprocess.run(["rm", "-rf", str(path)], check=True)
            if fmt == "custom":
                # The dump and its manifest from one exported snapshot, as `python -m restore backup` takes them.
                _, manifest_path = take_backup(source, path, jobs=2, freshness_sql=FRESHNESS_SQL)
                written["manifest"] = manifest_path
            else:
                subprocess.run([str(pg_tool("pg_dump")), flag, "-f", str(path), "-d", source], check=True,
                               env=clean_env())
            written[fmt] = path
        globals_sql = subprocess.run(
            [str(pg_tool("pg_dumpall")), "--globals-only", "-d", server.conninfo()],
            check=True, capture_output=True, text=True, env=clean_env(),
        ).stdout
        (out / "sample.globals.sql").write_text(globals_sql)
        written["globals"] = out / "sample.globals.sql"
        pgpass = out / "app.pgpass"
        pgpass.write_text(f"*:*:*:{APP_ROLE}:{APP_PASSWORD}\n")
        pgpass.chmod(0o600)  # libpq ignores a password file others can read
        written["pgpass"] = pgpass
        if expectations is not None:
            write_expectations(source, expectations)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "examples" / "out")
    parser.add_argument("--expectations", type=Path, default=ROOT / "examples" / "expectations")
    parser.add_argument("--format", action="append", choices=sorted(FORMAT_FLAGS), dest="formats")
    args = parser.parse_args()
    written = build(args.out, args.expectations, args.formats or ["custom"])
    for kind, path in written.items():
        print(f"{kind:10} {path}")


if __name__ == "__main__":
    main()
