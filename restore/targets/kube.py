"""The application around a restore (the runbook's Kubernetes steps), with the official ``kubernetes`` client.

Before the restore, each configured deployment's replica count is recorded and scaled to 0 (waiting until its
pods are gone); after it — also when the restore or a check failed, and on Ctrl-C — each is scaled back to the
recorded count and its rollout awaited, bounded. Only deployments named in ``[targets.<name>.app]`` are touched.
Afterwards the application side of ``app_connect`` is observed: pods Ready, no restart in the observation window,
no configured failure pattern in the logs since the restart, and the health command or HTTP path.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from restore import kubeapi
from restore.errors import ConfigError, RestoreError
from restore.waiting import wait_until


class AppError(RestoreError):
    """The application could not be stopped or brought back."""


@dataclass(frozen=True)
class AppConfig:
    namespace: str
    deployments: tuple[str, ...]
    health_command: tuple[str, ...] = ()
    health_path: str | None = None
    health_port: int = 8080
    failure_patterns: tuple[str, ...] = ("could not connect to", "connection refused", "password authentication failed")
    observe_s: float = 30.0
    timeout_s: float = 300.0

    @classmethod
    def from_toml(cls, raw: dict[str, Any], where: str) -> AppConfig:
        deployments = raw.get("deployments") or ([raw["deployment"]] if "deployment" in raw else [])
        if not raw.get("namespace") or not deployments:
            raise ConfigError(f"{where} needs namespace = \"…\" and deployments = [\"…\"] (the ones to stop and "
                              "restart; nothing else is ever touched).")
        for pattern in raw.get("failure_patterns", ()):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError.invalid("failure pattern", pattern, where, str(exc)) from exc
        return cls(
            namespace=str(raw["namespace"]), deployments=tuple(deployments),
            health_command=tuple(raw.get("health_command", ())), health_path=raw.get("health_path"),
            health_port=int(raw.get("health_port", 8080)),
            failure_patterns=tuple(raw.get("failure_patterns", cls.failure_patterns)),
            observe_s=float(raw.get("observe_seconds", 30)), timeout_s=float(raw.get("timeout_seconds", 300)),
        )


def _apis() -> tuple[Any, Any]:
    """AppsV1Api and CoreV1Api from the in-cluster config, else the kubeconfig (KUBECONFIG), the standard way."""
    from kubernetes import client

    if (why := kubeapi.load()) is not None:
        raise AppError(f"No Kubernetes cluster to talk to: {why}. Set KUBECONFIG, or run without --stop-app.")
    return client.AppsV1Api(), client.CoreV1Api()


def _api(call: Callable[..., Any], verb: str, what: str, *args: Any) -> Any:
    """One Kubernetes API call; its ApiException becomes an AppError naming the verb, the object and the fix
    (a 429 is retried with backoff)."""
    for attempt in range(5):
        try:
            return call(*args)
        except Exception as exc:  # kubernetes.client.ApiException carries the HTTP status
            status = getattr(exc, "status", None)
            if status == 429 and attempt < 4:
                time.sleep(min(8.0, 0.5 * 2 ** attempt))
                continue
            reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
            if status == 404:
                raise AppError(f"{what} does not exist ({status} {reason}); checked with {verb}. Check "
                               "[targets.NAME.app] namespace and deployments in the targets file.") from exc
            if status == 403:
                raise AppError(f"Forbidden: the suite's ServiceAccount may not {verb} {what} ({reason}). Grant it "
                               "in its Role (deploy/kubernetes/restore-verify.yaml lists exactly what is needed)."
                               ) from exc
            if status is None:
                raise AppError(f"The Kubernetes API could not be reached to {verb} {what}: "
                               f"{type(exc).__name__}: {reason}") from exc
            raise AppError(f"{verb} {what} failed: {status} {reason}") from exc
    raise AssertionError("unreachable")  # the loop returns or raises


@dataclass
class AppController:
    config: AppConfig
    progress: Callable[[str], None] | None = None
    recorded: dict[str, int] = field(default_factory=dict)
    _apps: Any = None
    _core: Any = None

    def __post_init__(self) -> None:
        self._apps, self._core = _apis()

    def _selector(self, name: str) -> str:
        deployment = _api(self._apps.read_namespaced_deployment, "get", self._named(name), name,
                          self.config.namespace)
        labels = deployment.spec.selector.match_labels or {}
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))

    def _pods(self, name: str) -> list[Any]:
        selector = self._selector(name)
        return list(_api(lambda ns: self._core.list_namespaced_pod(ns, label_selector=selector), "list",
                         f"pods of {self._named(name)}", self.config.namespace).items)

    def _scale(self, name: str, replicas: int) -> None:
        _api(self._apps.patch_namespaced_deployment_scale, "patch the scale of", self._named(name), name,
             self.config.namespace, {"spec": {"replicas": replicas}})

    def _named(self, name: str) -> str:
        return f"deployment {name!r} in namespace {self.config.namespace!r}"

    def _wait(self, what: str, done: Callable[[], bool]) -> None:
        def say(elapsed: float) -> None:
            if self.progress:
                self.progress(f"{what} ({elapsed:.0f} s)")

        wait_until(lambda: True if done() else None, timeout_s=self.config.timeout_s, interval_s=1, progress=say,
                   on_timeout=lambda _: AppError(
                       f"{what}: not done after {self.config.timeout_s:.0f} s (timeout_seconds in the app config). "
                       "Check the deployment's events (kubectl describe deployment …)."))

    def stop(self) -> dict[str, int]:
        """Record each deployment's replicas, scale it to 0, wait until its pods are gone."""
        for name in self.config.deployments:
            scale = _api(self._apps.read_namespaced_deployment_scale, "get the scale of", self._named(name), name,
                         self.config.namespace)
            self.recorded[name] = int(scale.spec.replicas or 0)
        for name in self.config.deployments:
            self._scale(name, 0)
        for name in self.config.deployments:
            def gone(n: str = name) -> bool:
                return not self._pods(n)
            self._wait(f"waiting for the pods of {name} to stop", gone)
        return dict(self.recorded)

    def restart(self) -> None:
        """Scale back to the recorded counts and wait for the rollout to be ready (once: a second call is a no-op)."""
        recorded, self.recorded = dict(self.recorded), {}
        for name, replicas in recorded.items():
            self._scale(name, replicas)
        for name, replicas in recorded.items():
            def ready(n: str = name, want: int = replicas) -> bool:
                status = _api(self._apps.read_namespaced_deployment, "get", self._named(n), n,
                              self.config.namespace).status
                return int(status.ready_replicas or 0) >= want
            self._wait(f"waiting for {name} to be ready with {replicas} replica(s)", ready)

    def observe(self, exec_stream: Callable[..., str] | None = None) -> dict[str, list[str]]:
        """The application side of app_connect, part by part: the problems found in each (empty: it held)."""
        restarts: dict[str, int] = {}
        problems: dict[str, list[str]] = {"pods_ready": [], "no_restarts": [], "logs_clean": [], "health": []}
        for name in self.config.deployments:
            for pod in self._pods(name):
                ready = any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
                if not ready:
                    problems["pods_ready"].append(f"pod {pod.metadata.name} of {name} is not Ready")
                restarts[pod.metadata.name] = sum(s.restart_count for s in (pod.status.container_statuses or []))
        time.sleep(self.config.observe_s)
        for name in self.config.deployments:
            pods = self._pods(name)
            for pod in pods:
                now = sum(s.restart_count for s in (pod.status.container_statuses or []))
                before = restarts.get(pod.metadata.name, now)
                if now > before:
                    problems["no_restarts"].append(f"pod {pod.metadata.name} restarted {now - before} time(s) within "
                                                   f"{self.config.observe_s:.0f} s")
                log = self._core.read_namespaced_pod_log(pod.metadata.name, self.config.namespace,
                                                         since_seconds=int(self.config.observe_s) + 60)
                for pattern in self.config.failure_patterns:
                    for line in str(log).splitlines():
                        if re.search(pattern, line, re.IGNORECASE):
                            problems["logs_clean"].append(f"{pod.metadata.name}: {line.strip()[:200]}")
                            break
            if pods:
                problems["health"] += self._health(pods[0], exec_stream)
        return problems

    def _health(self, pod: Any, exec_stream: Callable[..., str] | None) -> list[str]:
        name = pod.metadata.name
        if self.config.health_command:
            from kubernetes.stream import stream

            runner = exec_stream or stream
            output = runner(self._core.connect_get_namespaced_pod_exec, name, self.config.namespace,
                            command=list(self.config.health_command), stderr=True, stdout=True, stdin=False,
                            tty=False, _preload_content=True)
            return [] if "ok" in str(output).lower() or not str(output).strip() else [
                f"health command {' '.join(self.config.health_command)} in {name}: {str(output).strip()[:200]}"]
        if self.config.health_path:
            try:
                self._core.connect_get_namespaced_pod_proxy_with_path(
                    f"{name}:{self.config.health_port}", self.config.namespace, self.config.health_path.lstrip("/"))
            except Exception as exc:  # the API client raises ApiException with the pod's HTTP status
                return [f"health path {self.config.health_path} on {name}: {str(exc).splitlines()[0][:200]}"]
        return []
