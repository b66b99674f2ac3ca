"""Monitors of the two operators whose metrics the alerts read: the KubeRay
operator (`kuberay_job_deployment_status`, RayJobFailed) and the Cluster
Autoscaler (`cluster_autoscaler_node_group_*`, GpuPoolAtMaximum).

Both charts can make a ServiceMonitor of their own; these are raygpu's instead, so
that they carry the label Prometheus selects and are validated like the others.
"""

from __future__ import annotations

from typing import Any

from raygpu import autoscaler_values, network_policies
from raygpu.config import StackConfig
from raygpu.crd_schema import MONITORING_API_VERSION
from raygpu.names import KUBERAY_NAMESPACE

# The operator container's port (kuberay helm-chart/kuberay-operator v1.7.0,
# templates/deployment.yaml: `http`, 8080), the one the NetworkPolicy opens.
KUBERAY_METRICS_PORT = "http"
# The Cluster Autoscaler chart's Service (charts/cluster-autoscaler 9.51.0,
# templates/service.yaml): labelled with the release and `<cloudProvider>-<chart>`,
# port `http` (service.portName) to the container's 8085.
AUTOSCALER_METRICS_PORT = "http"


def autoscaler_service_labels(cfg: StackConfig) -> dict[str, str]:
    release = autoscaler_values.cluster_autoscaler_release(cfg, role_arn="")
    provider = release.values["cloudProvider"]
    return {
        "app.kubernetes.io/instance": release.name,
        "app.kubernetes.io/name": f"{provider}-{release.chart}",
    }


def _metadata(cfg: StackConfig, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": cfg.monitoring_namespace, "labels": labels}


def kuberay_pod_monitor(cfg: StackConfig, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": MONITORING_API_VERSION,
        "kind": "PodMonitor",
        "metadata": _metadata(cfg, "kuberay-operator", labels),
        "spec": {
            "namespaceSelector": {"matchNames": [KUBERAY_NAMESPACE]},
            "selector": {"matchLabels": dict(network_policies.OPERATOR_POD_LABELS)},
            "podMetricsEndpoints": [{"port": KUBERAY_METRICS_PORT, "path": "/metrics"}],
        },
    }


def autoscaler_service_monitor(
    cfg: StackConfig, labels: dict[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": MONITORING_API_VERSION,
        "kind": "ServiceMonitor",
        "metadata": _metadata(cfg, autoscaler_values.RELEASE, labels),
        "spec": {
            "namespaceSelector": {"matchNames": [autoscaler_values.NAMESPACE]},
            "selector": {"matchLabels": autoscaler_service_labels(cfg)},
            "endpoints": [{"port": AUTOSCALER_METRICS_PORT, "path": "/metrics"}],
        },
    }


def operator_monitors(cfg: StackConfig, labels: dict[str, str]) -> list[dict[str, Any]]:
    return [kuberay_pod_monitor(cfg, labels), autoscaler_service_monitor(cfg, labels)]
