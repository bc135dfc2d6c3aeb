"""A throwaway PostgreSQL container (testcontainers-python), matched to the backup's server version.

The image defaults to ``postgres:<major of the dump's "dumped from">``; ``image = "…"`` in targets.toml
overrides it and may use ``{major}`` (``image = "local/postgres:{major}"``). The container is tuned like the
embedded server (``-c`` flags) and removed at the end. testcontainers' reaper (Ryuk) is per process and its image
cannot always be pulled: this target removes its own container, so it turns Ryuk off for itself unless
``TESTCONTAINERS_RYUK_DISABLED`` says otherwise.
"""

from __future__ import annotations

import io
import os
import secrets
import tarfile
from pathlib import Path
from types import TracebackType
from typing import Any

from restore import janitor
from restore.conninfo import with_params
from restore.embedded import SUPERUSER, tuned_settings
from restore.errors import RestoreError


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

    def __init__(self, *, image: str, jobs: int, keep: bool = False, run_id: str | None = None) -> None:
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
        flags = " ".join(f"-c {key}={value}" for key, value in tuned_settings(jobs=self.jobs).items())
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
        """Copy a file or directory into the container; returns its path there."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(str(path), arcname=path.name)
        self._container.get_wrapped_container().put_archive(destination, buffer.getvalue())
        return f"{destination}/{path.name}"

    def exec(self, command: list[str]) -> tuple[int, str]:
        """Run a command in the container with the superuser's password in its environment."""
        result = self._container.get_wrapped_container().exec_run(
            command, environment={"PGPASSWORD": self.password}, demux=False)
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
