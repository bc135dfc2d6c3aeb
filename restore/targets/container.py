"""A throwaway PostgreSQL container (testcontainers-python), matched to the backup's server version.

The image defaults to ``postgres:<major of the dump's "dumped from">``; ``image = "…"`` in targets.toml
overrides it and may use ``{major}`` (``image = "local/postgres:{major}"``). The container is tuned like the
embedded server (``-c`` flags) and removed at the end. testcontainers' reaper (Ryuk) is per process and its image
cannot always be pulled: this target removes its own container, so it turns Ryuk off for itself unless
``TESTCONTAINERS_RYUK_DISABLED`` says otherwise.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import psycopg

from restore import janitor
from restore.backups.pgrestore import (
    ToolRun,
    parse_pg_restore_log,
    restore_jobs,
    restore_runs,
    run_pg_restore,
    schema_only,
)
from restore.conninfo import redact, with_params
from restore.errors import ArchiveUnreadable, RestoreError, ToolTooOld
from restore.targets.elsewhere import ServerElsewhere
from restore.targets.embedded import tuned_settings
from restore.tools import SUPERUSER, tool_version

if TYPE_CHECKING:
    from restore.backups.archive import ArchiveInfo, BackupSummary
    from restore.backups.sources import Source


class ContainerError(RestoreError):
    """The container target could not be had: no engine, no image, or a container that never became ready."""

    @classmethod
    def no_engine(cls, reason: str) -> ContainerError:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock (the default)")
        return cls(
            f"No Docker engine is reachable at DOCKER_HOST={host}: {reason}. Start one (systemctl start docker, or "
            "dockerd & as root; scripts/docker-ci.sh does it where there is no systemd) or point DOCKER_HOST at one."
        )

    @classmethod
    def no_image(cls, image: str, reason: str) -> ContainerError:
        return cls(
            f"Image {image!r} is not present and could not be pulled: {reason}. Pull or build it (scripts/docker-ci.sh "
            "builds local/postgres:15 and :18 without a registry) or set image = \"…\" for the target in targets.toml."
        )


def image_for(configured: str | None, dumped_from: str | None) -> str:
    major = (dumped_from or "").split(".")[0].split()[0] if dumped_from else ""
    template = configured or "postgres:{major}"
    if "{major}" in template and not major:
        raise ContainerError(f"Image {template!r} needs the dump's server version, but the backup does not say it.")
    return template.replace("{major}", major)


class ContainerServer:
    """``with ContainerServer(image=…, jobs=2) as server:``; ``server.conninfo(dbname)`` connects as superuser."""

    def __init__(self, *, image: str, jobs: int, keep: bool = False, run_id: str | None = None,
                 cores: int | None = None) -> None:
        self.cores = cores
        self.run_id = run_id  # on the janitor's tag and the container's labels
        self.image = image
        self.jobs = jobs
        self.keep = keep
        self.password = secrets.token_urlsafe(18)  # per run; never printed (connection strings are redacted)
        self._container: Any = None
        self.host = ""
        self.port = 0
        self._tag: Path | None = None  # the janitor's record of this container (see restore/janitor.py)

    def start(self) -> ContainerServer:
        try:
            import docker.errors
            from testcontainers.community.postgres import PostgresContainer
            from testcontainers.core.config import testcontainers_config
        except ImportError as exc:
            raise ContainerError(f"testcontainers is not installed ({exc}): pip install testcontainers") from exc
        if os.environ.get("TESTCONTAINERS_RYUK_DISABLED") is None:
            testcontainers_config.ryuk_disabled = True  # we remove our container ourselves (see module docstring)
        try:
            client = docker.from_env()
            client.ping()
        except docker.errors.DockerException as exc:
            raise ContainerError.no_engine(str(exc)) from exc
        try:
            client.images.get(self.image)
        except docker.errors.ImageNotFound:
            try:
                client.images.pull(self.image)
            except docker.errors.DockerException as exc:
                raise ContainerError.no_image(self.image, str(exc).splitlines()[0]) from exc
        flags = " ".join(f"-c {key}={value}" for key, value in tuned_settings(jobs=self.jobs,
                                                                              cores=self.cores).items())
        owner = janitor.owner_tag("container", f"container from {self.image}", run_id=self.run_id)
        container = PostgresContainer(self.image, username=SUPERUSER, password=self.password, dbname="postgres",
                                      driver=None).with_command(flags).with_kwargs(labels={
                                          # what the janitor's sweep finds even if the run dies while it starts
                                          janitor.LABEL_PID: str(owner.owner_pid),
                                          janitor.LABEL_STARTED: str(owner.owner_started or ""),
                                          janitor.LABEL_RUN: owner.run_id})
        self._container = container
        try:
            container.start()
        except Exception as exc:
            logs = self._logs()
            self.stop()
            err = ContainerError(f"The container from {self.image!r} did not become ready: {exc}")
            err.add_note(f"last log lines of the container:\n{logs}")
            raise err from exc
        self.host = container.get_container_host_ip()
        self.port = int(container.get_exposed_port(5432))
        owner.container_id = self.container_id
        owner.description = f"container {self.container_id} from {self.image}"
        self._tag = janitor.register(owner)
        return self

    def _logs(self) -> str:
        try:
            out, err = self._container.get_logs()
            return "\n".join((out + err).decode(errors="replace").splitlines()[-20:])
        except Exception:  # the logs are a courtesy; the error that matters is being raised
            return "(no logs)"

    @property
    def container_id(self) -> str:
        return str(self._container.get_wrapped_container().short_id) if self._container else ""

    def conninfo(self, dbname: str = "postgres") -> str:
        return with_params("", host=self.host, port=self.port, user=SUPERUSER, password=self.password,
                           dbname=dbname)

    def inner_conninfo(self, dbname: str) -> str:
        """The same database as seen from inside the container (for its own client tools)."""
        return with_params("", host="127.0.0.1", port=5432, user=SUPERUSER, dbname=dbname)

    def copy_in(self, path: Path, destination: str = "/tmp") -> str:
        """Copy a file or directory into the container (testcontainers' own transfer); returns its path there."""
        inner = f"{destination}/{path.name}"
        # A file lands at the path given; a directory is put under it by name.
        self._container.copy_into_container(path, destination if path.is_dir() else inner)
        return inner

    def exec(self, command: list[str]) -> tuple[int, str]:
        """Run a command in the container with the superuser's password in its environment."""
        from testcontainers.core.container import ExecConfig

        result = self._container.exec(ExecConfig(command=command, environment={"PGPASSWORD": self.password}))
        return int(result.exit_code), (result.output or b"").decode(errors="replace")

    def stop(self) -> None:
        if self._container is not None and not self.keep:
            try:
                self._container.stop()  # stops and removes the container (and its anonymous volume)
            except Exception:  # the engine's error at teardown: docker rm -f, else the tag stays for the janitor
                tag = janitor.load(self._tag) if self._tag else None
                if tag is None or not janitor.remove(tag).startswith("removed"):
                    self._container = None
                    return
            finally:
                self._container = None
        janitor.release(self._tag)  # removed, or kept on purpose
        self._tag = None

    def __enter__(self) -> ContainerServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ContainerTarget(ServerElsewhere):
    """kind "container" (``--target docker``): a throwaway container of the dump's major version (or the
    configured image), the dump loaded into it."""

    restores = True
    loads_dumps = True

    def __init__(self, name: str, *, image: str | None, jobs: int, keep: bool, run_id: str,
                 cores: int | None = None) -> None:
        self.name, self.image, self.jobs, self.keep, self.run_id, self.cores = name, image, jobs, keep, run_id, cores
        self.server: ContainerServer | None = None

    def check(self, source: Source | None) -> None:
        if source is not None:
            source.require_logical(self.name)

    def start(self, *, source: Source | None, info: ArchiveInfo | None, log: IO[str]) -> None:
        self.server = ContainerServer(image=image_for(self.image, info.dumped_from if info else None),
                                      jobs=self.jobs, keep=self.keep, run_id=self.run_id, cores=self.cores)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def _server(self) -> ContainerServer:
        if self.server is None:
            raise ContainerError("The container target has not been started.")
        return self.server

    def conninfo(self, dbname: str | None = None) -> str:
        return self._server().conninfo(dbname or "postgres")

    def display(self, dbname: str | None) -> str:
        server = self._server()
        return f"container {server.image} {server.container_id} ({redact(self.conninfo(dbname))})"

    def app_address(self) -> tuple[str | None, int | None]:
        server = self._server()
        return server.host, server.port

    def kept(self, dbname: str | None) -> tuple[str, ...]:
        if not self.keep or self.server is None or not self.server.container_id:
            return ()
        container = self.server.container_id
        return (f"connect:  docker exec -it {container} psql -U {SUPERUSER} -d {dbname}",
                f"remove:   docker rm -f {container}")

    def restore_dump(self, info: ArchiveInfo, dbname: str, *, jobs: int, log: IO[str],
                     on_line: Callable[[str], None], before_data: Callable[[], None] | None = None) -> ToolRun:
        """On the host, unless the server is older than the host's pg_restore: pg_restore 18 issues
        ``SET transaction_timeout``, which older servers reject, so the server's own pg_restore is used."""
        server = self._server()
        if _server_major(self.conninfo()) >= int(tool_version("pg_restore").split(".")[0]):
            return run_pg_restore(info, self.conninfo(dbname), jobs=jobs, log=log, on_line=on_line,
                                  before_data=before_data)
        return _restore_inside(server, info, dbname, jobs=jobs, log=log, before_data=before_data)

    def server_label(self) -> str:
        return self._server().image

    def backup_summary(self) -> BackupSummary | None:
        return None


def _server_major(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()
    return int(row[0]) if row else 0


def _restore_inside(server: ContainerServer, info: ArchiveInfo, dbname: str, *, jobs: int, log: IO[str],
                    before_data: Callable[[], None] | None) -> ToolRun:
    """pg_restore inside the container — if the server's own pg_restore can read the archive at all."""
    inner_path = server.copy_in(info.path)
    _, version_text = server.exec(["pg_restore", "--version"])
    found = re.search(r"(\d+(?:\.\d+)?)", version_text)
    version = found.group(1) if found else None
    code, listing = server.exec(["pg_restore", "--list", inner_path])
    if code != 0:
        if "unsupported version" in listing:
            raise ToolTooOld(
                f"The server in {server.image} is PostgreSQL {version}, older than the host's pg_restore (which it "
                f"rejects), and its own pg_restore cannot read archive format {info.archive_version} "
                f"({listing.strip()}): a dump made by pg_dump {info.dumped_by} restores only into a server at least "
                "that new. Use an image of that major version (image = \"postgres:{major}\" restores into the "
                "dump's own version), or take the dump with the older server's pg_dump. Nothing was restored."
            )
        raise ArchiveUnreadable.from_read(info.path, f"pg_restore --list (in {server.image})", listing)
    jobs, why = restore_jobs(info, jobs, log)
    runs = restore_runs(jobs)  # as on the host: with --jobs, the schema first, then the data and post-data
    shown_each = [" ".join([f"docker exec {server.container_id} pg_restore --verbose --jobs={jobs}", *sections,
                            f"--dbname <target> {inner_path}"]) for sections in runs]
    run = ToolRun(command=" && ".join(shown_each), where=f"container {server.image} (pg_restore {version})",
                  version=version, jobs=jobs, jobs_reason=why)
    for sections, shown in zip(runs, shown_each, strict=True):
        if before_data is not None and not schema_only(sections):
            before_data()
        log.write(f"$ {shown}\n")
        part = ToolRun(command=shown)
        part.exit_code, output = server.exec(["pg_restore", "--verbose", f"--jobs={jobs}", *sections, "--dbname",
                                              server.inner_conninfo(dbname), inner_path])
        log.write(output + f"# exit code {part.exit_code}\n")
        parse_pg_restore_log(output.splitlines(keepends=True), part)
        run.merge(part)
    if run.exit_code != 0 and not run.errors:
        run.errors.append(f"pg_restore exited with code {run.exit_code} without naming an error; see the restore log")
    return run
