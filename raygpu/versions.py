"""The one place that pins every version the cluster runs.

The Ray version here must equal the `ray[...]` pin in requirements.txt (the client
that submits jobs) and is used for the container image tags and the RayCluster's
`rayVersion`; tests/test_versions.py checks that all three agree.
"""

RAY_VERSION = "2.60.0"
RAY_PYTHON_TAG = "py311"
RAY_IMAGE_REPOSITORY = "rayproject/ray"
# CPU image for the head (no CUDA libraries: smaller, faster to pull).
RAY_IMAGE_CPU = f"{RAY_IMAGE_REPOSITORY}:{RAY_VERSION}-{RAY_PYTHON_TAG}"
# GPU image (CUDA runtime) for GPU worker groups.
RAY_IMAGE_GPU = f"{RAY_IMAGE_REPOSITORY}:{RAY_VERSION}-{RAY_PYTHON_TAG}-gpu"

KUBERAY_CHART_VERSION = "1.7.0"
KUBERAY_HELM_REPO = "https://ray-project.github.io/kuberay-helm/"

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
