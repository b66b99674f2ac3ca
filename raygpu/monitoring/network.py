"""NetworkPolicies of the monitoring namespace: deny ingress by default, and admit
what the stack's own monitoring pods send each other (Grafana to Prometheus,
Prometheus to Alertmanager, kube-state-metrics and the DCGM exporter).

Prometheus's scrapes of Ray and the KubeRay operator are egress from here, admitted
by their namespaces' own policies (raygpu/network_policies.py); node-exporter runs
on the host's network, which NetworkPolicies do not cover; `kubectl port-forward`
goes through the kubelet, not pod to pod.
"""

from __future__ import annotations

from typing import Any

from raygpu import manifests, network_policies
from raygpu.config import StackConfig


def _policy(
    cfg: StackConfig, name: str, ingress: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": network_policies.API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": cfg.monitoring_namespace,
            "labels": manifests.common_labels(cfg),
        },
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": ingress},
    }


def monitoring_network_policies(cfg: StackConfig) -> list[dict[str, Any]]:
    """Default-deny ingress, then ingress from pods of the same namespace."""
    return [
        _policy(cfg, "default-deny-ingress", []),
        _policy(cfg, "monitoring-internal", [{"from": [{"podSelector": {}}]}]),
    ]
