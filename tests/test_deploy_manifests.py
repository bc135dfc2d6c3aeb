"""deploy/kubernetes validates against the Kubernetes OpenAPI schema (bundled by kubernetes-validate: no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

MANIFESTS = sorted(p for p in (ROOT / "deploy" / "kubernetes").glob("*.yaml") if p.name != "kustomization.yaml")


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


def test_the_image_is_set_once_in_kustomization_and_defaults_to_the_dockerfiles_tag() -> None:
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    kustomization = yaml.safe_load((ROOT / "deploy/kubernetes/kustomization.yaml").read_text())
    assert kustomization["resources"] == ["restore-verify.yaml"]
    (image,) = kustomization["images"]
    assert (image["newName"], image["newTag"]) == ("restore-verify", version)
    documents = [d for d in yaml.safe_load_all((ROOT / "deploy/kubernetes/restore-verify.yaml").read_text()) if d]
    named = {c["image"] for d in documents if d["kind"] == "CronJob"
             for c in d["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]}
    assert named == {f"{image['name']}:{version}"}  # the name kustomize replaces, at the Dockerfile's tag
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"docker build -t restore-verify:{version} ." in dockerfile
    assert "ARG BASE=python:" in dockerfile
    assert "USER 10001" in dockerfile
