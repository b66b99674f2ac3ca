"""The Helm charts the stack installs (KubeRay's operator, NVIDIA's device plugin)
and their values, as plain data; `infra/helm.py` hands them to a Helm `Release`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raygpu import names, versions
from raygpu.config import StackConfig
from raygpu.manifests import container_security_context, resources
from raygpu.names import KUBERAY_NAMESPACE

KUBERAY_RELEASE = "kuberay-operator"
KUBERAY_CHART = "kuberay-operator"
DEVICE_PLUGIN_NAMESPACE = "kube-system"
DEVICE_PLUGIN_RELEASE = "nvidia-device-plugin"
DEVICE_PLUGIN_CHART = "nvidia-device-plugin"


@dataclass(frozen=True)
class HelmRelease:
    """What `helm install` needs: one per chart the stack installs."""

    name: str
    namespace: str
    chart: str
    version: str
    repo: str
    values: dict[str, Any]
    skip_crds: bool = False


def kuberay_operator_values(cfg: StackConfig) -> dict[str, Any]:
    return {
        "image": {
            "repository": versions.KUBERAY_OPERATOR_IMAGE_REPOSITORY,
            "tag": versions.pinned_tag(
                versions.KUBERAY_OPERATOR_IMAGE_REPOSITORY,
                versions.KUBERAY_OPERATOR_IMAGE_TAG,
            ),
        },
        "nodeSelector": dict(cfg.system_pool.node_labels),
        # Namespaced RBAC: the operator may manage pods only in the Ray namespace.
        "singleNamespaceInstall": True,
        "crNamespacedRbacEnable": True,
        "watchNamespace": [cfg.ray_namespace],
        "resources": resources("100m", "512Mi"),
        "podSecurityContext": {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "service": {"type": "ClusterIP"},
    }


def device_plugin_values(cfg: StackConfig) -> dict[str, Any]:
    """The NVIDIA device plugin: only on the stack's GPU nodes, tolerating their
    taint, unprivileged (the chart's default for migStrategy none)."""
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": names.POOL_LABEL,
                                    "operator": "In",
                                    "values": [p.name for p in cfg.gpu_pools],
                                }
                            ]
                        }
                    ]
                }
            }
        },
        "tolerations": [
            {
                "key": names.GPU_TAINT_KEY,
                "operator": "Exists",
                "effect": names.GPU_TAINT_EFFECT,
            }
        ],
        "migStrategy": "none",
        "failOnInitError": True,
        "priorityClassName": "system-node-critical",
        "securityContext": container_security_context(),
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        },
        "gfd": {"enabled": False},
        "nfd": {"enabled": False},
    }


def helm_releases(cfg: StackConfig) -> list[HelmRelease]:
    return [
        HelmRelease(
            name=DEVICE_PLUGIN_RELEASE,
            namespace=DEVICE_PLUGIN_NAMESPACE,
            chart=DEVICE_PLUGIN_CHART,
            version=versions.NVIDIA_DEVICE_PLUGIN_CHART_VERSION,
            repo=versions.NVIDIA_DEVICE_PLUGIN_HELM_REPO,
            values=device_plugin_values(cfg),
        ),
        HelmRelease(
            name=KUBERAY_RELEASE,
            namespace=KUBERAY_NAMESPACE,
            chart=KUBERAY_CHART,
            version=versions.KUBERAY_CHART_VERSION,
            repo=versions.KUBERAY_HELM_REPO,
            values=kuberay_operator_values(cfg),
            skip_crds=False,  # the chart's crds/ install RayCluster/RayJob/RayService
        ),
    ]
