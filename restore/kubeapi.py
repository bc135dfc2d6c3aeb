"""The Kubernetes API the standard way: the pod's own ServiceAccount (in-cluster config), else the kubeconfig
(``KUBECONFIG``, ``~/.kube/config``). Shared by the application controller (targets/kube.py) and CloudNativePG
(backups/cnpg.py); each says in its own words what to do when there is no cluster to talk to."""

from __future__ import annotations


def load() -> str | None:
    """Configure the ``kubernetes`` client; None when it is configured, else why it could not be."""
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except Exception as exc:  # no kubeconfig, no context: said by the caller, never a traceback
            return f"not in a pod, and no usable kubeconfig ({exc})"
    return None
