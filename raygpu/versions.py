"""The one place that pins every version the cluster runs.

The Ray version here must equal the `ray[...]` pin in requirements.txt (the client
that submits jobs) and is used for the container image tags and the RayCluster's
`rayVersion`; tests/test_versions.py checks that all three agree.

Images are pinned by tag, and by digest where a digest is recorded in
IMAGE_DIGESTS with where it was read and when (digests cannot be looked up from
the machines this project is built on; verify one with
`docker buildx imagetools inspect <image>` before relying on it).
"""

from dataclasses import dataclass

RAY_VERSION = "2.60.0"
RAY_PYTHON_TAG = "py311"
RAY_IMAGE_REPOSITORY = "rayproject/ray"
# CPU image for the head (no CUDA libraries: smaller, faster to pull).
RAY_IMAGE_CPU = f"{RAY_IMAGE_REPOSITORY}:{RAY_VERSION}-{RAY_PYTHON_TAG}"
# GPU image (CUDA runtime) for GPU worker groups.
RAY_IMAGE_GPU = f"{RAY_IMAGE_REPOSITORY}:{RAY_VERSION}-{RAY_PYTHON_TAG}-gpu"

# Ray Serve LLM's image (Ray with vLLM and its CUDA stack) for `raygpu serve --llm`.
# Its Python and CUDA are ray-llm's own, not RAY_PYTHON_TAG: ray-llm images are built
# for Python 3.12 + CUDA 13.0 only since ray-project/ray#62458 deprecated the
# py311/cu128 ones (#64498: "ray-llm stays py3.12-only"); a cluster runs one Python,
# so an LLM RayService uses this image for its head as well as its GPU workers.
RAY_LLM_IMAGE_REPOSITORY = "rayproject/ray-llm"
RAY_LLM_PYTHON_TAG = "py312"
RAY_LLM_CUDA_TAG = "cu130"
RAY_LLM_IMAGE = (
    f"{RAY_LLM_IMAGE_REPOSITORY}:{RAY_VERSION}-{RAY_LLM_PYTHON_TAG}-{RAY_LLM_CUDA_TAG}"
)
# The vLLM that Ray 2.60's `ray[llm]` pins, inside RAY_LLM_IMAGE: recorded, never
# installed here (it needs torch 2.13.0; requirements.txt has torch 2.14.1).
VLLM_VERSION = "0.29.0"

KUBERAY_CHART_VERSION = "1.7.0"
KUBERAY_HELM_REPO = "https://ray-project.github.io/kuberay-helm/"
KUBERAY_OPERATOR_IMAGE_REPOSITORY = "quay.io/kuberay/operator"
KUBERAY_OPERATOR_IMAGE_TAG = f"v{KUBERAY_CHART_VERSION}"

NVIDIA_DEVICE_PLUGIN_CHART_VERSION = "0.17.1"
NVIDIA_DEVICE_PLUGIN_HELM_REPO = "https://nvidia.github.io/k8s-device-plugin"
# GKE installs the NVIDIA driver on GPU nodes (and its own device plugin): the
# newest driver of the node's GKE version, so CUDA 12 images of Ray run.
GKE_GPU_DRIVER_VERSION = "LATEST"

# Default EKS Kubernetes version; a stack may override it with `clusterVersion`.
KUBERNETES_VERSION = "1.33"

# Kubernetes Cluster Autoscaler: its minor must equal the cluster's Kubernetes minor
# (kubernetes/autoscaler README "Releases": k8s 1.33 -> CA 1.33.x, chart 9.47.0+).
# Chart 9.51.0 is the last chart release whose appVersion is 1.33.0; the image tag
# pins the newest 1.33 patch release (v1.33.5). A stack whose `clusterVersion` is
# another minor must move these three together.
CLUSTER_AUTOSCALER_CHART_VERSION = "9.51.0"
CLUSTER_AUTOSCALER_HELM_REPO = "https://kubernetes.github.io/autoscaler"
CLUSTER_AUTOSCALER_IMAGE_REPOSITORY = "registry.k8s.io/autoscaling/cluster-autoscaler"
CLUSTER_AUTOSCALER_IMAGE_TAG = "v1.33.5"
CLUSTER_AUTOSCALER_KUBERNETES_MINOR = "1.33"

# kube-prometheus-stack: the newest release in github.com/prometheus-community/
# helm-charts (tag kube-prometheus-stack-88.5.3, commit ea930baeebeba39f56d6b44e351
# f23b2a072a600; kubeVersion >=1.25). Its appVersion is the prometheus-operator
# release whose CRDs the chart ships (vendored in raygpu/crds/prometheus-operator/);
# operator >= 0.84 needs Kubernetes >= 1.25 (its getting-started/compatibility.md).
KUBE_PROMETHEUS_STACK_CHART_VERSION = "88.5.3"
KUBE_PROMETHEUS_STACK_HELM_REPO = "https://prometheus-community.github.io/helm-charts"
PROMETHEUS_OPERATOR_VERSION = "0.93.1"
# The images that chart's values.yaml names at that tag (and its subcharts' at the
# versions it depends on: kube-state-metrics 8.4.0, prometheus-node-exporter 4.56.1,
# grafana 12.11.1 from github.com/grafana-community/helm-charts); raygpu's values set
# each one, so the chart runs these and nothing it might default to later.
PROMETHEUS_OPERATOR_IMAGE_REPOSITORY = "quay.io/prometheus-operator/prometheus-operator"
PROMETHEUS_CONFIG_RELOADER_IMAGE_REPOSITORY = (
    "quay.io/prometheus-operator/prometheus-config-reloader"
)
PROMETHEUS_OPERATOR_IMAGE_TAG = f"v{PROMETHEUS_OPERATOR_VERSION}"
PROMETHEUS_IMAGE_REPOSITORY = "quay.io/prometheus/prometheus"
PROMETHEUS_IMAGE_TAG = "v3.14.0-distroless"
ALERTMANAGER_IMAGE_REPOSITORY = "quay.io/prometheus/alertmanager"
ALERTMANAGER_IMAGE_TAG = "v0.34.0"
KUBE_STATE_METRICS_IMAGE_REPOSITORY = (
    "registry.k8s.io/kube-state-metrics/kube-state-metrics"
)
KUBE_STATE_METRICS_IMAGE_TAG = "v2.20.0"  # chart 8.4.0's appVersion
NODE_EXPORTER_IMAGE_REPOSITORY = "quay.io/prometheus/node-exporter"
# chart 4.56.1's appVersion, distroless (kube-prometheus-stack sets image.distroless)
NODE_EXPORTER_IMAGE_TAG = "v1.12.1-distroless"
GRAFANA_IMAGE_REPOSITORY = "docker.io/grafana/grafana"
GRAFANA_IMAGE_TAG = "13.2.0"  # chart 12.11.1's appVersion
GRAFANA_SIDECAR_IMAGE_REPOSITORY = "quay.io/kiwigrid/k8s-sidecar"
GRAFANA_SIDECAR_IMAGE_TAG = "2.10.1"

# NVIDIA's DCGM exporter chart: the newest tag in github.com/NVIDIA/dcgm-exporter
# (4.5.3-4.8.2, 691c92762eb551313c825f6efe4ceeee20982801; deployment/Chart.yaml
# version 4.8.2, kubeVersion >= 1.19), its Helm repo as the README gives it, and the
# image its values.yaml names.
DCGM_EXPORTER_CHART_VERSION = "4.8.2"
DCGM_EXPORTER_HELM_REPO = "https://nvidia.github.io/dcgm-exporter/helm-charts"
DCGM_EXPORTER_IMAGE_REPOSITORY = "nvcr.io/nvidia/k8s/dcgm-exporter"
DCGM_EXPORTER_IMAGE_TAG = "4.5.3-4.8.2-distroless"
# The EBS CSI driver's EKS add-on, which provisions the Prometheus volume:
# v1.66.0-eksbuild.1 is the version AWS marked defaultVersion (for Kubernetes 1.36)
# when github.com/mitodl/ol-infrastructure#5959 moved to it (2026-09-21). That source
# does not list its other minors: confirm 1.33 with `aws eks describe-addon-versions
# --addon-name aws-ebs-csi-driver --kubernetes-version 1.33` before relying on it.
EBS_CSI_ADDON_VERSION = "v1.66.0-eksbuild.1"
MONITORING_IMAGES = (
    (PROMETHEUS_OPERATOR_IMAGE_REPOSITORY, PROMETHEUS_OPERATOR_IMAGE_TAG),
    (PROMETHEUS_CONFIG_RELOADER_IMAGE_REPOSITORY, PROMETHEUS_OPERATOR_IMAGE_TAG),
    (PROMETHEUS_IMAGE_REPOSITORY, PROMETHEUS_IMAGE_TAG),
    (ALERTMANAGER_IMAGE_REPOSITORY, ALERTMANAGER_IMAGE_TAG),
    (KUBE_STATE_METRICS_IMAGE_REPOSITORY, KUBE_STATE_METRICS_IMAGE_TAG),
    (NODE_EXPORTER_IMAGE_REPOSITORY, NODE_EXPORTER_IMAGE_TAG),
    (GRAFANA_IMAGE_REPOSITORY, GRAFANA_IMAGE_TAG),
    (GRAFANA_SIDECAR_IMAGE_REPOSITORY, GRAFANA_SIDECAR_IMAGE_TAG),
    (DCGM_EXPORTER_IMAGE_REPOSITORY, DCGM_EXPORTER_IMAGE_TAG),
)


@dataclass(frozen=True)
class ImageDigest:
    digest: str  # sha256:<64 hex digits>
    source: str  # where it was read
    recorded: str  # when (YYYY-MM-DD)


# repository:tag -> its digest. Ray's images (RAY_IMAGE_CPU, RAY_IMAGE_GPU) and the
# Cluster Autoscaler's have no entry: no record of a digest for these tags could be
# found (searched 2026-12-01), so they stay pinned by tag only.
IMAGE_DIGESTS = {
    f"{KUBERAY_OPERATOR_IMAGE_REPOSITORY}:{KUBERAY_OPERATOR_IMAGE_TAG}": ImageDigest(
        digest="sha256:4a779237ef1c5262a63840ccf42d0d67f0b74e911158fbcaee4478fb1560bce6",
        source="third-party pin in github.com/skyhook-io/radar "
        "scripts/kuberay-demo/README.md at 7f65f74a9b4c82855292c8466f7017c0a21ccd78 "
        "(not read from quay.io)",
        recorded="2026-12-01",
    ),
}
# Every image a stack runs (repository:tag): preflight reports which have no
# recorded digest.
CLUSTER_IMAGES = (
    RAY_IMAGE_CPU,
    RAY_IMAGE_GPU,
    f"{KUBERAY_OPERATOR_IMAGE_REPOSITORY}:{KUBERAY_OPERATOR_IMAGE_TAG}",
    f"{CLUSTER_AUTOSCALER_IMAGE_REPOSITORY}:{CLUSTER_AUTOSCALER_IMAGE_TAG}",
    *(f"{repository}:{tag}" for repository, tag in MONITORING_IMAGES),
)
# Where the cluster's images may come from (the policy's image rule).
APPROVED_IMAGE_REPOSITORIES = frozenset(
    {
        RAY_IMAGE_REPOSITORY,
        RAY_LLM_IMAGE_REPOSITORY,
        KUBERAY_OPERATOR_IMAGE_REPOSITORY,
        CLUSTER_AUTOSCALER_IMAGE_REPOSITORY,
        *(repository for repository, _ in MONITORING_IMAGES),
    }
)


def pinned(image: str) -> str:
    """`image` (repository:tag) with its recorded digest appended, if any."""
    recorded = IMAGE_DIGESTS.get(image)
    return f"{image}@{recorded.digest}" if recorded else image


def pinned_tag(repository: str, tag: str) -> str:
    """The tag to give a Helm chart whose image is `repository:tag`: the chart
    writes `repository:tag`, so a digest rides along after the tag."""
    return pinned(f"{repository}:{tag}").removeprefix(f"{repository}:")
