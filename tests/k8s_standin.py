"""A stand-in for the Kubernetes API: the real paths and JSON shapes the suite uses, with state.

apps/v1 deployments and their ``scale`` subresource, core/v1 pods (listed by label selector), pod logs and the pod
proxy (HTTP health path); and any object put at its API path (``objects``: CloudNativePG's clusters, backups and
objectstores, core/v1 secrets), got by name or listed by its collection's path (label selectors ``k=v,…``), or
refused with 403 (``forbidden``: paths). Pods follow the replica count; a deployment can be made to crash-loop
(restart counts grow) or to log a line. Every call is recorded, so that a wrong order of operations or a touch of a
deployment that was not named fails a test. This is a test double of the API server, not a cluster.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class Deployment:
    replicas: int
    crashloop: bool = False
    log: str = "connected to the database\n"
    restarts: int = 0


@dataclass
class Cluster:
    namespace: str
    deployments: dict[str, Deployment]
    calls: list[tuple[float, str, str]] = field(default_factory=list)  # (time, method, path)
    lock: threading.Lock = field(default_factory=threading.Lock)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # API path of an object → the object
    forbidden: set[str] = field(default_factory=set)  # API paths answered 403

    def put(self, obj: dict[str, Any]) -> None:
        """An object at its API path, from its apiVersion, kind and metadata (plural: the kind's, lowercased +s)."""
        group, _, version = obj["apiVersion"].rpartition("/")
        meta = obj["metadata"]
        base = f"/apis/{group}/{version}" if group else f"/api/{version}"
        self.objects[f"{base}/namespaces/{meta['namespace']}/{obj['kind'].lower()}s/{meta['name']}"] = obj

    def listing(self, path: str, selector: str) -> dict[str, Any] | None:
        """The collection at ``path``, filtered by ``k=v,…``; None when no object of that kind was ever put."""
        known = {p.rpartition("/")[0].rpartition("/namespaces/")[::2] for p in self.objects}  # (base, ns/plural)
        base, _, rest = path.rpartition("/namespaces/")
        if not any(b == base and r.rpartition("/")[2] == rest.rpartition("/")[2] for b, r in known):
            return None
        wanted = dict(pair.split("=", 1) for pair in selector.split(",") if "=" in pair)
        items = [o for p, o in self.objects.items() if p.rpartition("/")[0] == path
                 and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())]
        return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}

    def pods(self, name: str) -> list[dict[str, Any]]:
        d = self.deployments[name]
        if d.crashloop:
            d.restarts += 1  # every look finds it restarted again
        return [{
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-{i}", "namespace": self.namespace, "labels": {"app": name}},
            "spec": {"containers": [{"name": "app", "image": "ecommerce/backend:1"}]},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": "False" if d.crashloop else "True"}],
                       "containerStatuses": [{"name": "app", "image": "ecommerce/backend:1", "imageID": "",
                                              "ready": not d.crashloop, "restartCount": d.restarts}]},
        } for i in range(d.replicas)]

    def deployment(self, name: str) -> dict[str, Any]:
        d = self.deployments[name]
        ready = 0 if d.crashloop else d.replicas
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {"replicas": d.replicas, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"containers": [{"name": "app", "image": "ecommerce/backend:1"}]}}},
                "status": {"replicas": d.replicas, "readyReplicas": ready, "updatedReplicas": d.replicas}}

    def scale(self, name: str) -> dict[str, Any]:
        d = self.deployments[name]
        return {"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {"replicas": d.replicas}, "status": {"replicas": d.replicas}}


def _handler(cluster: Cluster) -> type[BaseHTTPRequestHandler]:
    ns = re.escape(cluster.namespace)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
            data = (json.dumps(body) if content_type == "application/json" else str(body)).encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _not_found(self) -> None:
            self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                             "code": 404, "message": f"{self.path} not found"})

        def _route(self, method: str) -> None:
            url = urlparse(self.path)
            with cluster.lock:
                cluster.calls.append((time.time(), method, url.path))
                if url.path in cluster.forbidden:
                    return self._send(403, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                            "reason": "Forbidden", "code": 403, "message": f"{url.path} forbidden"})
                if method == "GET" and url.path in cluster.objects:
                    return self._send(200, cluster.objects[url.path])
                if method == "GET" and (listed := cluster.listing(
                        url.path, parse_qs(url.query).get("labelSelector", [""])[0])) is not None:
                    return self._send(200, listed)
                if m := re.fullmatch(rf"/apis/apps/v1/namespaces/{ns}/deployments/([^/]+)(/scale)?", url.path):
                    name, is_scale = m.group(1), bool(m.group(2))
                    if name not in cluster.deployments:
                        return self._not_found()
                    if method == "PATCH" and is_scale:
                        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                        cluster.deployments[name].replicas = int(body["spec"]["replicas"])
                    return self._send(200, cluster.scale(name) if is_scale else cluster.deployment(name))
                if method == "GET" and re.fullmatch(rf"/api/v1/namespaces/{ns}/pods", url.path):
                    selector = parse_qs(url.query).get("labelSelector", [""])[0]
                    name = selector.removeprefix("app=")
                    items = cluster.pods(name) if name in cluster.deployments else []
                    return self._send(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
                if m := re.fullmatch(rf"/api/v1/namespaces/{ns}/pods/([^/]+)-\d+/log", url.path):
                    return self._send(200, cluster.deployments[m.group(1)].log, "text/plain")
                if m := re.fullmatch(rf"/api/v1/namespaces/{ns}/pods/([^/:%]+)-\d+(?::|%3A)\d+/proxy/(.*)", url.path):
                    healthy = not cluster.deployments[m.group(1)].crashloop
                    return self._send(200 if healthy else 503, "ok" if healthy else "unavailable", "text/plain")
            return self._not_found()

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            self._route("GET")

        def do_PATCH(self) -> None:  # noqa: N802
            self._route("PATCH")

    return Handler


class StandIn:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(cluster))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": {"token": "standin-token"}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin"}}],
        }))
        return path

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
