"""deploy/kubernetes validates against the Kubernetes OpenAPI schema (bundled by kubernetes-validate: no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_manifests_validate(path: Path) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert {d["kind"] for d in documents} >= {"CronJob", "ServiceAccount", "Role", "RoleBinding", "ConfigMap"}
    for document in documents:
        kubernetes_validate.validate(document, "1.30", strict=True)


def test_the_role_grants_what_the_suite_needs_and_no_more() -> None:
    documents = [d for d in yaml.safe_load_all((ROOT / "deploy/kubernetes/restore-verify.yaml").read_text()) if d]
    role = next(d for d in documents if d["kind"] == "Role")
    granted = {(r["apiGroups"][0], res, verb) for r in role["rules"] for res in r["resources"] for verb in r["verbs"]}
    assert granted == {
        ("apps", "deployments", "get"), ("apps", "deployments/scale", "get"), ("apps", "deployments/scale", "patch"),
        ("", "pods", "get"), ("", "pods", "list"), ("", "pods", "watch"), ("", "pods/log", "get"),
        ("", "pods/exec", "create"),
    }
    assert all(r.get("resourceNames") == ["ecommerce-backend"] for r in role["rules"] if r["apiGroups"] == ["apps"])
