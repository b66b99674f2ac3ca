"""NVIDIA's DCGM exporter: a DaemonSet on the stack's GPU nodes only (the chart,
pinned in raygpu/versions.py), in the host agents' namespace (it runs as root:
pod_security.py), and the ServiceMonitor, in the monitoring namespace, that
scrapes it there.

The chart's own ServiceMonitor is switched off: raygpu's is validated against the
vendored CRD like every other object, and carries the label Prometheus selects.
"""

from __future__ import annotations

from typing import Any

from raygpu import names, versions
from raygpu.config import StackConfig
from raygpu.helm_values import HelmRelease
from raygpu.manifests import gpu_toleration
from raygpu.monitoring.pod_security import agents_namespace

RELEASE = "dcgm-exporter"
CHART = "dcgm-exporter"
METRICS_PORT = 9400
METRICS_PORT_NAME = "metrics"  # the chart's Service port name
# The chart's selector labels (deployment/templates/_helpers.tpl
# "dcgm-exporter.selectorLabels") for release RELEASE: on its Service and pods.
SERVICE_LABELS = {
    "app.kubernetes.io/name": CHART,
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/component": CHART,
}
RESOURCES = {
    "requests": {"cpu": "50m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}


def gpu_node_selector() -> dict[str, str]:
    """What every GPU node of the stack carries (GpuPoolConfig.node_labels)."""
    return {names.NODE_ROLE_LABEL: names.GPU_NODE_ROLE}


def dcgm_values(cfg: StackConfig) -> dict[str, Any]:
    return {
        "image": {
            "repository": versions.DCGM_EXPORTER_IMAGE_REPOSITORY,
            "tag": versions.pinned_tag(
                versions.DCGM_EXPORTER_IMAGE_REPOSITORY,
                versions.DCGM_EXPORTER_IMAGE_TAG,
            ),
            "pullPolicy": "IfNotPresent",
        },
        # GPU nodes only: the selector every GPU pool's nodes carry, and the
        # toleration of their taint (the chart's default tolerates control planes).
        "nodeSelector": gpu_node_selector(),
        "tolerations": [gpu_toleration(cfg)],
        "priorityClassName": "system-node-critical",
        "resources": RESOURCES,
        "service": {"enable": True, "type": "ClusterIP", "port": METRICS_PORT},
        "serviceMonitor": {"enabled": False},
    }


def dcgm_release(cfg: StackConfig) -> HelmRelease:
    return HelmRelease(
        name=RELEASE,
        namespace=agents_namespace(cfg.monitoring_namespace),
        chart=CHART,
        version=versions.DCGM_EXPORTER_CHART_VERSION,
        repo=versions.DCGM_EXPORTER_HELM_REPO,
        values=dcgm_values(cfg),
    )


def dcgm_service_monitor(cfg: StackConfig, labels: dict[str, str]) -> dict[str, Any]:
    """Scrapes the exporter's Service in the host agents' namespace; `node` names
    the GPU node (the GpuNodeIdle alert groups by the exporter's Hostname)."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {
            "name": RELEASE,
            "namespace": cfg.monitoring_namespace,
            "labels": dict(labels),
        },
        "spec": {
            "selector": {"matchLabels": dict(SERVICE_LABELS)},
            "namespaceSelector": {
                "matchNames": [agents_namespace(cfg.monitoring_namespace)]
            },
            "endpoints": [
                {
                    "port": METRICS_PORT_NAME,
                    "path": "/metrics",
                    "interval": "15s",
                    "relabelings": [
                        {
                            "action": "replace",
                            "sourceLabels": ["__meta_kubernetes_pod_node_name"],
                            "targetLabel": "node",
                        }
                    ],
                }
            ],
        },
    }
