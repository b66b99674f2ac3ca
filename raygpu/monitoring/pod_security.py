"""Pod Security of the monitoring stack: its two namespaces, and the securityContexts
that let the first one enforce `restricted`.

- `cfg.monitoring_namespace` enforces `restricted`: prometheus-operator, Prometheus,
  Alertmanager, Grafana and kube-state-metrics, with the contexts below set in the
  chart's values (stack.py).
- `agents_namespace(cfg.monitoring_namespace)`, `<monitoringNamespace>-agents`, is
  `privileged` for the two host agents only: node-exporter (the host's network, PID
  namespace and file systems) and the DCGM exporter (root, for the GPU driver). It
  carries HOST_AGENTS_LABEL, whose value names the monitoring namespace it serves;
  RG-K8S-08 (raygpu/policy/k8s_rules.py) admits it `privileged` only under that
  derived name and while nothing but those two agents targets it.
"""

from __future__ import annotations

from typing import Any

from raygpu import manifests
from raygpu.config import StackConfig

PSA = "pod-security.kubernetes.io"
PSA_ENFORCE = f"{PSA}/enforce"
RESTRICTED = "restricted"
PRIVILEGED = "privileged"
AGENTS_SUFFIX = "-agents"
HOST_AGENTS_LABEL = "raygpu.io/host-agents-of"
# The kube-prometheus-stack subchart that runs node-exporter, and its values key
# that moves it (its DaemonSet, Service and ServiceMonitor) into another namespace.
NODE_EXPORTER_SUBCHART = "prometheus-node-exporter"
NAMESPACE_OVERRIDE = "namespaceOverride"
MAX_NAME = 63  # a Kubernetes namespace name (DNS label)


def agents_namespace(monitoring_namespace: str) -> str:
    """The host agents' namespace: declared here only, derived from the config."""
    name = f"{monitoring_namespace}{AGENTS_SUFFIX}"
    if len(name) > MAX_NAME:
        raise ValueError(
            f"monitoringNamespace: at most {MAX_NAME - len(AGENTS_SUFFIX)} characters "
            f"(its host agents' namespace is <name>{AGENTS_SUFFIX}), got "
            f"{len(monitoring_namespace)}"
        )
    return name


def pod_context(uid: int, gid: int | None = None) -> dict[str, Any]:
    """A pod securityContext the restricted profile admits, as user `uid`."""
    gid = uid if gid is None else gid
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "fsGroup": gid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_context() -> dict[str, Any]:
    """What the restricted profile asks of every container; the charts' own
    defaults (a read-only root where the image allows it) merge under it."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _namespace(cfg: StackConfig, name: str, level: str, extra: dict[str, str]):
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                **manifests.common_labels(cfg),
                **extra,
                PSA_ENFORCE: level,
                f"{PSA}/warn": level,
                f"{PSA}/audit": level,
            },
        },
    }


def namespace_manifests(cfg: StackConfig) -> list[dict[str, Any]]:
    """The monitoring namespace (`restricted`), then its host agents' (`privileged`)."""
    served = cfg.monitoring_namespace
    return [
        _namespace(cfg, served, RESTRICTED, {}),
        _namespace(
            cfg, agents_namespace(served), PRIVILEGED, {HOST_AGENTS_LABEL: served}
        ),
    ]
