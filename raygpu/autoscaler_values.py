"""Helm values for the Kubernetes Cluster Autoscaler, as plain data.

Plain functions of the validated `StackConfig` (no Pulumi import), like
`raygpu/manifests.py`: `infra/autoscaler.py` hands the dict to a Helm `Release`,
tests check it directly.

What the values say (chart `cluster-autoscaler` from
https://kubernetes.github.io/autoscaler, versions in `raygpu/versions.py`):
- AWS, auto-discovery of the Auto Scaling groups tagged
  `k8s.io/cluster-autoscaler/enabled` and `k8s.io/cluster-autoscaler/<cluster>`
  (EKS puts both tags on every managed node group's Auto Scaling group itself);
- the service account `kube-system/cluster-autoscaler`, annotated with the IRSA
  role that `infra/autoscaler.py` creates for exactly that service account;
- one replica on the system nodes, never evicted by itself
  (`safe-to-evict: "false"`), unprivileged and read-only;
- `balance-similar-node-groups`, `expander=least-waste`,
  `skip-nodes-with-system-pods=false` (system nodes may shrink back to their
  minimum), `skip-nodes-with-local-storage=true` (Ray pods use an emptyDir for
  /dev/shm, so a node that runs a Ray head or a busy worker is never drained
  under it: GPU nodes go only once Ray's autoscaler removed their worker pod),
  and `scale-down-unneeded-time` (how long an empty node waits before it goes).
"""

from __future__ import annotations

import re
from typing import Any

from raygpu import versions
from raygpu.config import StackConfig
from raygpu.helm_values import HelmRelease
from raygpu.manifests import IRSA_ANNOTATION, ManifestError

RELEASE = "cluster-autoscaler"
CHART = "cluster-autoscaler"
NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "cluster-autoscaler"
# Auto-discovery tag keys; EKS sets them to "true" and "owned" on the Auto Scaling
# group of every managed node group of the cluster.
ENABLED_TAG = "k8s.io/cluster-autoscaler/enabled"
CLUSTER_TAG_PREFIX = "k8s.io/cluster-autoscaler/"
ENABLED_TAG_VALUE = "true"
# Only groups with this tag too are the Cluster Autoscaler's (the GPU pools): EKS
# puts the two tags above on every managed node group, the system pool's too,
# whose size the stack owns (so that `raygpu sleep` can take it to zero).
AUTOSCALED_TAG = "raygpu.io/autoscaled"
AUTOSCALED_TAG_VALUE = "true"
CLUSTER_TAG_VALUE = "owned"
# An empty node leaves this long after it became unneeded (the chart's default is
# 10m; GPU nodes bill by the second, and Ray already waited its idle timeout).
DEFAULT_SCALE_DOWN_UNNEEDED_TIME = "5m"
SAFE_TO_EVICT_ANNOTATION = "cluster-autoscaler.kubernetes.io/safe-to-evict"
_DURATION_RE = re.compile(r"^(\d+h)?(\d+m)?(\d+s)?$")
# Read-only actions of the Cluster Autoscaler that AWS cannot scope to a resource
# (Resource must be "*"); infra/autoscaler.py says why each is needed, and the
# policy pack allows "*" for these only.
UNSCOPED_READ_ACTIONS = (
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeScalingActivities",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeLaunchTemplateVersions",
)


def cluster_tag(cluster_name: str) -> str:
    """`k8s.io/cluster-autoscaler/<cluster>`: the tag that names the cluster."""
    return f"{CLUSTER_TAG_PREFIX}{cluster_name}"


def check_cluster_version(cfg: StackConfig) -> None:
    """The Cluster Autoscaler's minor must equal the cluster's Kubernetes minor."""
    if cfg.cluster_version != versions.CLUSTER_AUTOSCALER_KUBERNETES_MINOR:
        raise ManifestError(
            f"raygpu:clusterVersion: the Cluster Autoscaler pinned in "
            f"raygpu/versions.py ({versions.CLUSTER_AUTOSCALER_IMAGE_TAG}) supports "
            f"Kubernetes {versions.CLUSTER_AUTOSCALER_KUBERNETES_MINOR} only, got "
            f"{cfg.cluster_version!r}; move the CLUSTER_AUTOSCALER_* pins with it"
        )


def cluster_autoscaler_values(
    cfg: StackConfig,
    *,
    role_arn: Any,
    cluster_name: Any = None,
    scale_down_unneeded_time: str = DEFAULT_SCALE_DOWN_UNNEEDED_TIME,
) -> dict[str, Any]:
    """Values for the `cluster-autoscaler` chart. `role_arn` (and `cluster_name`,
    default the stack's) may be Pulumi Outputs or plain strings."""
    check_cluster_version(cfg)
    if not _DURATION_RE.match(scale_down_unneeded_time) or not any(
        ch.isdigit() for ch in scale_down_unneeded_time
    ):
        raise ManifestError(
            "scale_down_unneeded_time: a Go duration like '5m' or '1h30m', got "
            f"{scale_down_unneeded_time!r}"
        )
    name = cluster_name if cluster_name is not None else cfg.cluster_name
    return {
        "cloudProvider": "aws",
        "awsRegion": cfg.region,
        "autoDiscovery": {
            "clusterName": name,
            # The chart's default and the GPU pools' own tag: all three keys
            # must be on a group.
            "tags": [
                ENABLED_TAG,
                CLUSTER_TAG_PREFIX + "{{ .Values.autoDiscovery.clusterName }}",
                AUTOSCALED_TAG,
            ],
        },
        "image": {
            "repository": versions.CLUSTER_AUTOSCALER_IMAGE_REPOSITORY,
            "tag": versions.pinned_tag(
                versions.CLUSTER_AUTOSCALER_IMAGE_REPOSITORY,
                versions.CLUSTER_AUTOSCALER_IMAGE_TAG,
            ),
        },
        "rbac": {
            "create": True,
            "serviceAccount": {
                "create": True,
                "name": SERVICE_ACCOUNT,
                "annotations": {IRSA_ANNOTATION: role_arn},
            },
        },
        "extraArgs": {
            "logtostderr": True,
            "stderrthreshold": "info",
            "v": 4,
            "balance-similar-node-groups": True,
            "expander": "least-waste",
            "skip-nodes-with-system-pods": False,
            "skip-nodes-with-local-storage": True,
            "scale-down-unneeded-time": scale_down_unneeded_time,
            # Per-group size and bounds metrics: the pool-at-maximum alert reads them.
            "emit-per-nodegroup-metrics": True,
        },
        "replicaCount": 1,
        "nodeSelector": dict(cfg.system_pool.node_labels),
        "priorityClassName": "system-cluster-critical",
        # It must not remove the node it runs on.
        "podAnnotations": {SAFE_TO_EVICT_ANNOTATION: "false"},
        "resources": {
            "requests": {"cpu": "100m", "memory": "300Mi"},
            "limits": {"memory": "600Mi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65534,
            "runAsGroup": 65534,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containerSecurityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        # Metrics only, inside the cluster.
        "service": {"create": True, "type": "ClusterIP"},
    }


def cluster_autoscaler_release(
    cfg: StackConfig,
    *,
    role_arn: Any,
    cluster_name: Any = None,
    scale_down_unneeded_time: str = DEFAULT_SCALE_DOWN_UNNEEDED_TIME,
) -> HelmRelease:
    return HelmRelease(
        name=RELEASE,
        namespace=NAMESPACE,
        chart=CHART,
        version=versions.CLUSTER_AUTOSCALER_CHART_VERSION,
        repo=versions.CLUSTER_AUTOSCALER_HELM_REPO,
        values=cluster_autoscaler_values(
            cfg,
            role_arn=role_arn,
            cluster_name=cluster_name,
            scale_down_unneeded_time=scale_down_unneeded_time,
        ),
        skip_crds=True,  # the chart has no CRDs
    )
