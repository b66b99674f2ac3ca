"""What the Kubernetes layer differs in from one cloud to the next, as data.

The KubeRay operator, the RayCluster, the jobs and the Serve apps are the same
objects on every cloud (raygpu/manifests.py); only these facts change. A stack's
`cloud` (the `raygpu:cloud` key) picks its row. A new cloud adds a row here and its
config model in raygpu/config/, not a copy of the manifest code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raygpu import names


@dataclass(frozen=True)
class Cloud:
    name: str
    # The service-account annotation that binds Ray's pods to the cloud identity
    # (its value: the IAM role ARN, the Google service account's email, the
    # Azure identity's client ID).
    identity_annotation: str
    # The label the platform itself puts on GPU nodes (value: the accelerator).
    gpu_node_label: str
    # The value of the nvidia.com/gpu taint on GPU nodes (GKE sets "present").
    gpu_taint_value: str
    # Whether the stack installs NVIDIA's device plugin; GKE installs its own with
    # the driver (gpu_driver_installation_config).
    installs_device_plugin: bool
    # The URI scheme of the stack's buckets, as jobs address them.
    storage_scheme: str
    # The environment variable that tells Ray's pods the stack's region.
    region_env: str
    # Whether the stack installs the Cluster Autoscaler chart; GKE and AKS grow
    # their node pools with their own autoscalers.
    installs_cluster_autoscaler: bool
    # Labels every Ray pod carries for the platform (AKS's workload identity
    # webhook injects the federated token only into pods labelled so).
    pod_labels: dict[str, str] = field(default_factory=dict)

    def uri(self, bucket: str, path: str = "") -> str:
        """`path` in a bucket output of the stack, as jobs address it. Azure's
        bucket outputs already read `<container>@<account>.dfs.core.windows.net`,
        so every cloud's URI is `<scheme>://<bucket>/<path>`."""
        return f"{self.storage_scheme}://{bucket}" + (f"/{path}" if path else "")


AWS = Cloud(
    name="aws",
    identity_annotation="eks.amazonaws.com/role-arn",
    gpu_node_label=names.AWS_GPU_LABEL,
    gpu_taint_value=names.GPU_TAINT_VALUE,
    installs_device_plugin=True,
    storage_scheme="s3",
    region_env="AWS_REGION",
    installs_cluster_autoscaler=True,
)
GCP = Cloud(
    name="gcp",
    identity_annotation="iam.gke.io/gcp-service-account",
    gpu_node_label="cloud.google.com/gke-accelerator",
    gpu_taint_value="present",
    installs_device_plugin=False,
    storage_scheme="gs",
    region_env="GOOGLE_CLOUD_REGION",
    installs_cluster_autoscaler=False,
)
# AKS installs the NVIDIA driver on GPU pools but no device plugin: the stack
# installs it through the same Helm release as on AWS (docs/config.md).
AZURE = Cloud(
    name="azure",
    identity_annotation="azure.workload.identity/client-id",
    gpu_node_label="kubernetes.azure.com/accelerator",
    gpu_taint_value=names.GPU_TAINT_VALUE,
    installs_device_plugin=True,
    storage_scheme="abfs",
    region_env="AZURE_REGION",
    installs_cluster_autoscaler=False,
    pod_labels={"azure.workload.identity/use": "true"},
)

CLOUDS = {c.name: c for c in (AWS, GCP, AZURE)}
# Clouds a stack may name that have no row yet.
PLANNED: tuple[str, ...] = ()


def of(cfg: object) -> Cloud:
    """The row of a validated stack config (its `cloud`)."""
    return CLOUDS[getattr(cfg, "cloud", AWS.name)]
