"""Names that the Pulumi program, the manifests and the operator's commands share.

Each is declared here once and imported everywhere else: a tag the program puts on
a resource is the tag the leftover scan looks for, a port the head listens on is
the port the port-forward targets.
"""

from __future__ import annotations

PROJECT = "raygpu"
# Only this address is ever bound or contacted by local clusters and tests.
LOOPBACK = "127.0.0.1"

# AWS tags.
STACK_TAG = "raygpu:stack"
REGION_TAG = "raygpu:region"  # on IAM resources only (see StackConfig.iam_tags)
# On the two buckets: "data" or "artifacts". The leftover scan keeps the data
# bucket by it when a destroyed stack has no outputs left to name it.
BUCKET_TAG = "raygpu:bucket"
PROJECT_TAG = "raygpu:project"  # with STACK_TAG on every taggable AWS/Azure resource

# Google Cloud labels: lowercase keys without ':', the tags' names otherwise.
GCP_STACK_LABEL = "raygpu-stack"
GCP_PROJECT_LABEL = "raygpu-project"
GCP_BUCKET_LABEL = "raygpu-bucket"  # the GCS buckets' BUCKET_TAG

# Kubernetes labels and taints that the node groups carry; the Ray manifests
# select and tolerate with these same names.
NODE_ROLE_LABEL = "raygpu.io/node-role"
STACK_LABEL = "raygpu.io/stack"  # on every Kubernetes object the stack applies
POOL_LABEL = "raygpu.io/pool"
GPU_MODEL_LABEL = "raygpu.io/gpu-model"
# The Cluster Autoscaler's GPU label on AWS: a node that carries it but does not yet
# advertise nvidia.com/gpu (device plugin starting) counts as not ready, instead of
# as a node without GPUs that would trigger a second scale-up.
AWS_GPU_LABEL = "k8s.amazonaws.com/accelerator"
SYSTEM_NODE_ROLE = "system"
GPU_NODE_ROLE = "gpu"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT_KEY = GPU_RESOURCE
GPU_TAINT_VALUE = "true"
GPU_TAINT_EFFECT = "NoSchedule"

# KubeRay's API group and where its operator runs.
RAY_API_VERSION = "ray.io/v1"
KUBERAY_NAMESPACE = "kuberay-system"

# Ports KubeRay expects on the head (it names the head Service's ports after them).
HEAD_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "serve": 8000}
DASHBOARD_PORT = HEAD_PORTS["dashboard"]  # Ray's job API and dashboard
SERVE_PORT = HEAD_PORTS["serve"]  # Ray Serve's HTTP ingress

# The audience of the web-identity tokens IRSA exchanges with STS.
STS_AUDIENCE = "sts.amazonaws.com"

# Key of the token in the Secret that KubeRay creates for `authOptions.mode: token`.
RAY_TOKEN_SECRET_KEY = "auth_token"


def auth_secret_name(ray_cluster: str) -> str:
    """The Secret KubeRay creates for token auth (key RAY_TOKEN_SECRET_KEY)."""
    return ray_cluster


def head_service_name(ray_cluster: str) -> str:
    """The head Service KubeRay creates for a RayCluster."""
    return f"{ray_cluster}-head-svc"


# Prefixes of the data bucket: raw data as `raygpu data push` uploads it (Ray's
# role may read it, not write it), and what prepare.py writes (Ray's role may
# write there only).
RAW_PREFIX = "raw"
PREPARED_PREFIX = "prepared"
