"""Nothing left behind: every server or container a run creates is tagged with the run and its owner process,
and removed when that process is gone — also after a ``kill -9`` (OOM kill, a cancelled CI runner, a drained
node), when no teardown code of the run can execute.

Three layers, in the spirit of testcontainers' Ryuk and pytest-postgresql's janitor:

1. A **tag file** per resource in :func:`registry` (JSON: kind, run id, owner PID and its start time, what to
   remove). Teardown removes the resource, then its tag.
2. A **watchdog** per tag (``python -m restore.janitor watch TAG``), started in its own session so that it outlives
   its owner: it polls every half second and removes the resource once the owner is gone; it exits when the tag
   is gone (normal teardown).
3. A **sweep** (:func:`sweep`) at the start of every run and in ``python -m restore cleanup``, for whatever a
   watchdog could not handle (the machine rebooted, the watchdog was killed too).

A PID can be reused: the owner is "alive" only while a process with that PID has the start time recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

POLL_S = 0.5
# Labels on every container the suite starts, so that a sweep finds one even before its tag was written.
LABEL_PID, LABEL_STARTED, LABEL_RUN = "restore-verify.owner-pid", "restore-verify.owner-started", "restore-verify.run"


def registry() -> Path:
    """Where tags live: beside the servers themselves (the temporary directory the run uses)."""
    path = Path(tempfile.gettempdir()) / "rv-janitor"  # per TMPDIR; another user's is not ours to read
    if os.getuid() != 0:
        path = path.with_name(f"rv-janitor-{os.getuid()}")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass
class Tag:
    """One resource a run created."""

    kind: str  # "embedded" | "container"
    run_id: str
    owner_pid: int
    owner_started: str | None
    description: str
    base_dir: str | None = None  # embedded: the cluster's folder (data, socket, log)
    extra_dirs: list[str] = field(default_factory=list)
    pg_ctl: str | None = None
    run_as: str | None = None  # the system user that owns the cluster (root runs postgres as another user)
    container_id: str | None = None
    created_at: float = field(default_factory=time.time)

    def owner_alive(self) -> bool:
        if self.owner_started == HANDED_OVER:
            return False
        started = process_start_time(self.owner_pid)
        return started is not None and (self.owner_started is None or started == self.owner_started)


def register(tag: Tag, *, watch: bool = True) -> Path:
    """Record the resource, and start its watchdog; returns the tag's path (give it to :func:`release`)."""
    path = registry() / f"{tag.run_id}-{tag.kind}-{uuid.uuid4().hex[:8]}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(tag)))
    tmp.replace(path)  # a watchdog or a sweep never reads half a tag
    if watch:
        subprocess.Popen(
            [sys.executable, "-m", "restore.janitor", "watch", str(path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # outlives a kill -9 of the run, and a Ctrl-C on its terminal
            close_fds=True, cwd=str(Path(__file__).resolve().parent.parent),  # where the restore package is
        )
    return path


def release(path: Path | None) -> None:
    """The run removed the resource itself (or keeps it on purpose): forget it; its watchdog exits."""
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


HANDED_OVER = "handed over"  # a tag's owner_started once its owner asked the watchdog to remove the resource
HANDED_OVER_GRACE_S = 600  # then a sweep finishes it (the watchdog is gone: a reboot)


def hand_over(path: Path | None, base_dir: Path) -> bool:
    """A stopped server's folder removed by its watchdog rather than by the caller, who need not wait: 10,000
    tables are 60,000 files, 11 s of ``unlink``. The folder is renamed out of its place first (at once: the
    place is free, the name hidden), then the tag says so and that its owner is gone; the watchdog removes it
    within a poll and forgets the tag (a sweep does, should the watchdog be gone too). False, with nothing
    changed, when that cannot be done here (no tag, a rename refused): the caller removes the folder itself."""
    tag = load(path) if path is not None else None
    if path is None or tag is None or tag.base_dir != str(base_dir):
        return False
    trash = base_dir.with_name(f".{base_dir.name}.{uuid.uuid4().hex[:8]}.removing")  # never another's name
    tag.base_dir, tag.owner_started, tag.created_at = str(trash), HANDED_OVER, time.time()
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(asdict(tag)))  # first: a full disk refuses it before anything moved
        base_dir.rename(trash)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False
    tmp.replace(path)
    return True


def load(path: Path) -> Tag | None:
    try:
        return Tag(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def remove(tag: Tag) -> str:
    """Remove what the tag names; returns what was done, in words."""
    if tag.kind == "container" and tag.container_id:
        done = subprocess.run(["docker", "rm", "-f", tag.container_id], capture_output=True, text=True,
                              check=False, timeout=60)
        return (f"removed container {tag.container_id[:12]}" if done.returncode == 0
                else f"container {tag.container_id[:12]}: {done.stderr.strip() or 'already gone'}")
    if tag.base_dir:
        datadir = Path(tag.base_dir) / "data"
        if (datadir / "postmaster.pid").exists():
            _stop_cluster(datadir, tag)
        for folder in [tag.base_dir, *tag.extra_dirs]:
            shutil.rmtree(folder, ignore_errors=True)
        return f"stopped and removed the server in {tag.base_dir}"
    return "nothing to remove"


def _stop_cluster(datadir: Path, tag: Tag) -> None:
    """pg_ctl stop -m immediate (a throwaway cluster needs no clean shutdown); the postmaster is killed when
    pg_ctl is unavailable."""
    if tag.pg_ctl and Path(tag.pg_ctl).exists():
        done = subprocess.run([tag.pg_ctl, "-D", str(datadir), "-m", "immediate", "-w", "-t", "30", "stop"],
                              user=tag.run_as if os.geteuid() == 0 else None, capture_output=True, check=False,
                              env={k: v for k, v in os.environ.items() if not k.startswith("PG")})
        if done.returncode == 0:
            return
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((datadir / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)


def sweep(*, dry_run: bool = False, report: Callable[[str], None] | None = None) -> list[str]:
    """Remove every tagged resource whose owner is gone; returns what was (or would be) removed."""
    done = []
    for path in sorted(registry().glob("*.json")):
        tag = load(path)
        if tag is None or tag.owner_alive():
            continue
        if tag.owner_started == HANDED_OVER:  # a stopped server's folder its watchdog deletes: no leftover, and
            if not dry_run and time.time() - tag.created_at > HANDED_OVER_GRACE_S:  # not this run's to wait for
                remove(tag)
                release(path)
            continue
        what = f"{tag.description} (run {tag.run_id}, owner PID {tag.owner_pid} is gone)"
        if dry_run:
            done.append(f"would remove {what}")
            continue
        done.append(f"{remove(tag)}: {what}")
        release(path)
    done += _sweep_containers(dry_run=dry_run)
    if report:
        for line in done:
            report(line)
    return done


def _sweep_containers(*, dry_run: bool) -> list[str]:
    """Labelled containers whose owner is gone (no Docker engine here: nothing to sweep)."""
    if shutil.which("docker") is None:
        return []
    try:
        listed = subprocess.run(
            ["docker", "ps", "-a", "--filter", f"label={LABEL_PID}", "--format",
             f'{{{{.ID}}}} {{{{.Label "{LABEL_PID}"}}}} {{{{.Label "{LABEL_STARTED}"}}}} {{{{.Label "{LABEL_RUN}"}}}}'],
            capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    done = []
    for line in listed.stdout.splitlines():
        cid, pid, started, run = ([*line.split(), "", "", ""])[:4]
        if not pid.isdigit():
            continue
        tag = Tag(kind="container", run_id=run, owner_pid=int(pid), owner_started=started or None,
                  description=f"container {cid}", container_id=cid)
        if tag.owner_alive():
            continue
        what = f"container {cid} (run {run}, owner PID {pid} is gone)"
        done.append(f"would remove {what}" if dry_run else f"{remove(tag)}: {what}")
    return done


def watch(path: Path) -> int:
    """The watchdog's loop: until the tag is gone (normal teardown) or its owner is (then clean up)."""
    with contextlib.suppress(OSError):
        os.setpgrp()
    first: Tag | None = None
    while True:
        tag = load(path)
        if tag is None:
            if first is not None:
                _remove_handed_over(first)
            return 0 if not path.exists() else 1
        first = first or tag
        if not tag.owner_alive():
            remove(tag)
            release(path)
            return 0
        time.sleep(POLL_S)


def _remove_handed_over(tag: Tag) -> None:
    """A folder handed over (see :func:`hand_over`) whose tag was deleted before this watchdog's next poll — with
    the TMPDIR it lives in, which a CI job or a test removes when the run exits: nothing else would ever delete it
    (found: 53 stopped clusters, 3 GB, left in /dev/shm by self-tests). An owner that releases its tag never hands
    over, so a ``.NAME.*.removing`` beside this cluster's own place is this cluster's."""
    if not tag.base_dir:
        return
    place = Path(tag.base_dir)
    with contextlib.suppress(OSError):
        for entry in place.parent.iterdir():
            if entry.name.startswith(f".{place.name}.") and entry.name.endswith(".removing"):
                shutil.rmtree(entry, ignore_errors=True)


def owner_tag(kind: str, description: str, *, run_id: str | None = None, **resource: object) -> Tag:
    """A tag owned by this process."""
    pid = os.getpid()
    return Tag(kind=kind, run_id=run_id or f"pid{pid}",
               owner_pid=pid, owner_started=process_start_time(pid), description=description,
               **resource)  # type: ignore[arg-type]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "watch":
        sys.exit(watch(Path(sys.argv[2])))
    print("usage: python -m restore.janitor watch TAGFILE (started by the suite; see python -m restore cleanup)",
          file=sys.stderr)
    sys.exit(2)
