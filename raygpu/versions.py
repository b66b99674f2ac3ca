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
)
# Where the cluster's images may come from (the policy's image rule).
APPROVED_IMAGE_REPOSITORIES = frozenset(
    {
        RAY_IMAGE_REPOSITORY,
        RAY_LLM_IMAGE_REPOSITORY,
        KUBERAY_OPERATOR_IMAGE_REPOSITORY,
        CLUSTER_AUTOSCALER_IMAGE_REPOSITORY,
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
