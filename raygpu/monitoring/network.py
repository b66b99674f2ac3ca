"""NetworkPolicies of the monitoring stack's two namespaces: each denies ingress by
default, then admits only what the stack's monitoring pods send.

- the monitoring namespace: its own pods to each other (Grafana to Prometheus,
  Prometheus to Alertmanager and kube-state-metrics);
- the host agents' namespace (pod_security.py): Prometheus's pods, in the monitoring
  namespace, to the DCGM exporter's metrics port. node-exporter runs on the host's
  network (`hostNetwork`), which NetworkPolicies do not cover: no policy here
  applies to it, and what reaches the node's port 9100 can scrape it.

Prometheus's scrapes of Ray and the KubeRay operator are egress from here, admitted
by their namespaces' own policies (raygpu/network_policies.py); `kubectl
port-forward` goes through the kubelet, not pod to pod.
"""

from __future__ import annotations

from typing import Any

from raygpu import manifests, network_policies
from raygpu.config import StackConfig
from raygpu.monitoring import dcgm, pod_security
from raygpu.monitoring.stack import PROMETHEUS_SERVICE

# What prometheus-operator labels the pods of the chart's Prometheus with (the
# Prometheus object is named like its Service).
PROMETHEUS_POD_LABELS = {
    "app.kubernetes.io/name": "prometheus",
    "app.kubernetes.io/instance": PROMETHEUS_SERVICE,
}


def _policy(
    cfg: StackConfig,
    name: str,
    namespace: str,
    ingress: list[dict[str, Any]],
    pods: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": network_policies.API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": manifests.common_labels(cfg),
        },
        "spec": {
            "podSelector": {"matchLabels": dict(pods)} if pods else {},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def monitoring_network_policies(cfg: StackConfig) -> list[dict[str, Any]]:
    """Default-deny ingress, then ingress from pods of the same namespace."""
    ns = cfg.monitoring_namespace
    return [
        _policy(cfg, "default-deny-ingress", ns, []),
        _policy(cfg, "monitoring-internal", ns, [{"from": [{"podSelector": {}}]}]),
    ]


def agents_network_policies(cfg: StackConfig) -> list[dict[str, Any]]:
    """Default-deny ingress, then Prometheus to the DCGM exporter's port."""
    ns = pod_security.agents_namespace(cfg.monitoring_namespace)
    prometheus = {
        "namespaceSelector": {
            "matchLabels": {
                network_policies.NAMESPACE_NAME_LABEL: cfg.monitoring_namespace
            }
        },
        "podSelector": {"matchLabels": dict(PROMETHEUS_POD_LABELS)},
    }
    scrape = {
        "from": [prometheus],
        "ports": [{"protocol": "TCP", "port": dcgm.METRICS_PORT}],
    }
    return [
        _policy(cfg, "default-deny-ingress", ns, []),
        _policy(cfg, "prometheus-scrape-dcgm", ns, [scrape], dcgm.SERVICE_LABELS),
    ]
