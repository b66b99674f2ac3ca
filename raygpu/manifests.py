"""Every Kubernetes object and Helm values dict the stack applies, as plain data.

Plain functions of the validated `StackConfig` that return dicts; they import no
Pulumi, so tests check them directly and `scripts/render.py` writes them as YAML.
`infra/kuberay.py` only hands them to `CustomResource`/`Release`.

Values that exist only once AWS resources do (bucket names, the IRSA role ARN) come
in through `ClusterRefs`. Under Pulumi they are Outputs, which Pulumi resolves
anywhere inside a dict; in tests and renders they are plain strings.

What the Ray cluster looks like (see docs/cluster.md):
- one Ray version (`infra/versions.py`) drives `rayVersion` and every image tag;
- the head runs on the system nodes with `num-cpus: 0` (no tasks land on it);
- one worker group per GPU pool, 0..maxSize replicas, scaled by the in-tree
  autoscaler v2, with the pool's node selector, the GPU taint's toleration and
  CPU/memory sized to what the instance type leaves after kubelet and daemonsets;
- Ray token authentication; the head Service is ClusterIP only (reach it with
  `kubectl port-forward`); pods run as the image's non-root `ray` user.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from raygpu import names, versions
from raygpu.config import GpuPoolConfig, StackConfig
from raygpu.errors import UsageError
from raygpu.names import (  # noqa: E402  (re-exported: manifests users name them)
    GPU_RESOURCE,
    HEAD_PORTS,
    KUBERAY_NAMESPACE,
    RAY_API_VERSION,
)
from raygpu.serve_ingress import serve_ingress_env
from raygpu.sizing import (
    allocatable,
    head_cpu_problem,
    head_memory_problem,
    memory_bytes,
)

KUBERAY_RELEASE = "kuberay-operator"
KUBERAY_CHART = "kuberay-operator"
KUBERAY_OPERATOR_IMAGE = "quay.io/kuberay/operator"
DEVICE_PLUGIN_NAMESPACE = "kube-system"
DEVICE_PLUGIN_RELEASE = "nvidia-device-plugin"
DEVICE_PLUGIN_CHART = "nvidia-device-plugin"

# The rayproject/ray images run as user `ray` (uid 1000, gid 100).
RAY_UID = 1000
RAY_GID = 100
HEAD_CONTAINER = "ray-head"
WORKER_CONTAINER = "ray-worker"
# Share of a pod's memory given to /dev/shm (Ray's object store defaults to 30 %).
SHM_FRACTION = 0.3

# The smallest worker worth scheduling: Ray itself plus a PyTorch process.
MIN_WORKER_CPU = 1
MIN_WORKER_MEMORY_GIB = 4

DEFAULT_JOB_TTL_SECONDS = 300
DEFAULT_JOB_DEADLINE_SECONDS = 6 * 3600
SUBMISSION_MODES = ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")
# ray_jobs/serve_app.py: a ready `app` (checkpoint from $RAYGPU_CHECKPOINT) and the
# application builder `build_app` that takes `checkpoint` as an argument.
SERVE_IMPORT_PATH = "serve_app:app"
SERVE_BUILDER_IMPORT_PATH = "serve_app:build_app"
SERVE_APP_NAME = "raygpu"

# A Service that someone switches to LoadBalancer would still get only an internal
# (VPC-private) load balancer from the AWS controllers: defence in depth.
INTERNAL_LB_ANNOTATIONS = {
    "service.beta.kubernetes.io/aws-load-balancer-internal": "true",
    "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
}
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"


class ManifestError(UsageError, ValueError):
    """The config asks for something no manifest can express (names the key)."""


@dataclass(frozen=True)
class ClusterRefs:
    """Values known once the AWS resources exist: Outputs under Pulumi, strings
    elsewhere."""

    data_bucket: Any
    artifacts_bucket: Any
    irsa_role_arn: Any


# ----------------------------------------------------------------------- names


def ray_cluster_name(cfg: StackConfig) -> str:
    """`<project>-<stack>`: a DNS-1035 label of at most 41 characters (config
    limits project and stack to 20 each), within KubeRay's 53."""
    return cfg.name_prefix


def head_service_name(cfg: StackConfig) -> str:
    """The ClusterIP Service KubeRay creates for the head."""
    return names.head_service_name(ray_cluster_name(cfg))


def common_labels(cfg: StackConfig) -> dict[str, str]:
    return {
        "app.kubernetes.io/part-of": cfg.project,
        "app.kubernetes.io/managed-by": "pulumi",
        "raygpu.io/stack": cfg.stack,
    }


@dataclass(frozen=True)
class PodSize:
    cpu: int  # whole CPUs
    memory_mib: int
    gpus: int

    @property
    def memory(self) -> str:
        return f"{self.memory_mib}Mi"

    @property
    def shm(self) -> str:
        return f"{int(self.memory_mib * SHM_FRACTION)}Mi"


def worker_size(pool: GpuPoolConfig) -> PodSize:
    """One Ray worker pod per node, using the whole node (its smallest type)."""
    cpu_m, mem_mib = allocatable(pool.vcpus, pool.memory_gib)
    # Whole CPUs and whole GiB: Ray counts CPUs as integers anyway.
    size = PodSize(
        cpu=cpu_m // 1000,
        memory_mib=(mem_mib // 1024) * 1024,
        gpus=pool.gpus_per_node,
    )
    if size.cpu < MIN_WORKER_CPU or size.memory_mib < MIN_WORKER_MEMORY_GIB * 1024:
        raise ManifestError(
            f"raygpu:gpuPools[name={pool.name}].instanceTypes: "
            f"{', '.join(pool.instance_types)} leave {size.cpu} CPU and "
            f"{size.memory_mib} MiB for a Ray worker; at least {MIN_WORKER_CPU} CPU "
            f"and {MIN_WORKER_MEMORY_GIB} GiB are needed"
        )
    if size.gpus < 1:
        raise ManifestError(
            f"raygpu:gpuPools[name={pool.name}].instanceTypes: no GPU instance type"
        )
    return size


def head_size(cfg: StackConfig) -> PodSize:
    node = (cfg.system_pool.vcpus, cfg.system_pool.memory_gib)
    problems = [
        f"{key} {problem}"
        for key, problem in (
            ("rayHeadCpu", head_cpu_problem(cfg.ray_head_cpu, *node)),
            ("rayHeadMemory", head_memory_problem(cfg.ray_head_memory, *node)),
        )
        if problem
    ]
    if problems:
        raise ManifestError(
            "raygpu:rayHeadCpu/rayHeadMemory: the head does not fit a system node: "
            + "; ".join(problems)
        )
    memory_mib = memory_bytes(cfg.ray_head_memory) // 2**20
    return PodSize(cpu=0, memory_mib=memory_mib, gpus=0)


# ---------------------------------------------------------------- core objects


def namespace_manifest(cfg: StackConfig) -> dict[str, Any]:
    """The Ray namespace. Pod Security: enforce baseline, warn/audit restricted."""
    labels = {
        **common_labels(cfg),
        "pod-security.kubernetes.io/enforce": "baseline",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
    }
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": cfg.ray_namespace, "labels": labels},
    }


def kuberay_namespace_manifest(cfg: StackConfig) -> dict[str, Any]:
    """The operator's namespace; its pod meets the `restricted` profile."""
    labels = {
        **common_labels(cfg),
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
    }
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": KUBERAY_NAMESPACE, "labels": labels},
    }


def service_account_manifest(cfg: StackConfig, refs: ClusterRefs) -> dict[str, Any]:
    """Ray pods' identity: IRSA gives them the stack's bucket role. The head's
    autoscaler also uses it for the Kubernetes API (KubeRay binds its Role)."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": cfg.ray_service_account,
            "namespace": cfg.ray_namespace,
            "labels": common_labels(cfg),
            "annotations": {IRSA_ANNOTATION: refs.irsa_role_arn},
        },
    }


def ray_env(cfg: StackConfig, refs: ClusterRefs) -> list[dict[str, Any]]:
    return [
        {"name": "AWS_REGION", "value": cfg.region},
        {"name": "RAYGPU_STACK", "value": cfg.stack},
        {"name": "RAYGPU_DATA_BUCKET", "value": refs.data_bucket},
        {"name": "RAYGPU_ARTIFACTS_BUCKET", "value": refs.artifacts_bucket},
    ] + [
        {"name": k, "value": v}
        for k, v in sorted(serve_ingress_env(cfg.serve_ingress).items())
    ]


def _pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RAY_UID,
        "runAsGroup": RAY_GID,
        "fsGroup": RAY_GID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security_context() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _resources(cpu: str, memory: str, gpus: int = 0) -> dict[str, Any]:
    amounts: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus:
        amounts[GPU_RESOURCE] = gpus
    # Requests equal limits: Guaranteed QoS, and Ray sees exactly what it gets.
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _shm_volume(size: PodSize) -> dict[str, Any]:
    return {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": size.shm}}


def gpu_toleration() -> dict[str, Any]:
    return {
        "key": names.GPU_TAINT_KEY,
        "operator": "Equal",
        "value": names.GPU_TAINT_VALUE,
        "effect": names.GPU_TAINT_EFFECT,
    }


def head_group_spec(cfg: StackConfig, refs: ClusterRefs) -> dict[str, Any]:
    size = head_size(cfg)
    container = {
        "name": HEAD_CONTAINER,
        "image": versions.RAY_IMAGE_CPU,
        "imagePullPolicy": "IfNotPresent",
        "resources": _resources(cfg.ray_head_cpu, cfg.ray_head_memory),
        "env": ray_env(cfg, refs),
        "ports": [{"name": n, "containerPort": p} for n, p in HEAD_PORTS.items()],
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        "securityContext": _container_security_context(),
    }
    return {
        # num-cpus 0: the head schedules no tasks or actors, only coordinates.
        # dashboard-host 0.0.0.0: the dashboard listens on the pod IP so that
        # `kubectl port-forward` reaches it; the Service stays ClusterIP.
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
        "serviceType": "ClusterIP",
        "enableIngress": False,
        "template": {
            "metadata": {"labels": common_labels(cfg)},
            "spec": {
                "serviceAccountName": cfg.ray_service_account,
                "nodeSelector": dict(cfg.system_pool.node_labels),
                "securityContext": _pod_security_context(),
                "containers": [container],
                "volumes": [_shm_volume(size)],
            },
        },
    }


def worker_group_spec(
    cfg: StackConfig, pool: GpuPoolConfig, refs: ClusterRefs
) -> dict[str, Any]:
    size = worker_size(pool)
    container = {
        "name": WORKER_CONTAINER,
        "image": versions.RAY_IMAGE_GPU,
        "imagePullPolicy": "IfNotPresent",
        "resources": _resources(str(size.cpu), size.memory, size.gpus),
        "env": ray_env(cfg, refs),
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        "securityContext": _container_security_context(),
    }
    return {
        "groupName": pool.name,
        # Scale from zero: the autoscaler adds workers as GPU demand appears and
        # removes them after the idle timeout; the node group follows.
        "replicas": 0,
        "minReplicas": 0,
        "maxReplicas": pool.max_size,
        "rayStartParams": {},
        "template": {
            "metadata": {"labels": {**common_labels(cfg), names.POOL_LABEL: pool.name}},
            "spec": {
                "serviceAccountName": cfg.ray_service_account,
                "nodeSelector": {names.POOL_LABEL: pool.name},
                "tolerations": [gpu_toleration()],
                "securityContext": _pod_security_context(),
                "containers": [container],
                "volumes": [_shm_volume(size)],
            },
        },
    }


def autoscaler_options(cfg: StackConfig) -> dict[str, Any]:
    return {
        "version": "v2",
        "idleTimeoutSeconds": cfg.ray_idle_timeout_seconds,
        "upscalingMode": "Default",
        "resources": _resources("500m", "512Mi"),
        "securityContext": _container_security_context(),
    }


def raycluster_spec(cfg: StackConfig, refs: ClusterRefs) -> dict[str, Any]:
    """The cluster spec shared by the RayCluster, the RayJob and the RayService."""
    return {
        "rayVersion": versions.RAY_VERSION,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": autoscaler_options(cfg),
        "authOptions": {"mode": "token"},
        "headServiceAnnotations": dict(INTERNAL_LB_ANNOTATIONS),
        "headGroupSpec": head_group_spec(cfg, refs),
        "workerGroupSpecs": [worker_group_spec(cfg, p, refs) for p in cfg.gpu_pools],
    }


def raycluster_manifest(cfg: StackConfig, refs: ClusterRefs) -> dict[str, Any]:
    return {
        "apiVersion": RAY_API_VERSION,
        "kind": "RayCluster",
        "metadata": {
            "name": ray_cluster_name(cfg),
            "namespace": cfg.ray_namespace,
            "labels": common_labels(cfg),
        },
        "spec": raycluster_spec(cfg, refs),
    }


# -------------------------------------------------------------------- templates


def _positive_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ManifestError(f"{field}: must be a positive integer, got {value!r}")
    return value


def rayjob_manifest(
    cfg: StackConfig,
    refs: ClusterRefs,
    *,
    name: str,
    entrypoint: str,
    runtime_env: Mapping[str, Any] | None = None,
    ttl_seconds_after_finished: int = DEFAULT_JOB_TTL_SECONDS,
    active_deadline_seconds: int = DEFAULT_JOB_DEADLINE_SECONDS,
    submission_mode: str = "K8sJobMode",
) -> dict[str, Any]:
    """A RayJob that brings up its own cluster (the stack's cluster spec), runs
    `entrypoint`, and deletes the cluster when the job ends (after the TTL)."""
    if not isinstance(entrypoint, str) or not entrypoint.strip():
        raise ManifestError("entrypoint: must be a non-empty command")
    if submission_mode not in SUBMISSION_MODES:
        raise ManifestError(
            f"submission_mode: must be one of {', '.join(SUBMISSION_MODES)}, "
            f"got {submission_mode!r}"
        )
    if isinstance(ttl_seconds_after_finished, bool) or not (
        isinstance(ttl_seconds_after_finished, int) and ttl_seconds_after_finished >= 0
    ):
        raise ManifestError(
            "ttl_seconds_after_finished: must be an integer >= 0, "
            f"got {ttl_seconds_after_finished!r}"
        )
    spec: dict[str, Any] = {
        "entrypoint": entrypoint,
        "submissionMode": submission_mode,
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": ttl_seconds_after_finished,
        "activeDeadlineSeconds": _positive_int(
            active_deadline_seconds, "active_deadline_seconds"
        ),
        "backoffLimit": 0,
        "rayClusterSpec": raycluster_spec(cfg, refs),
    }
    if runtime_env:
        spec["runtimeEnvYAML"] = yaml.safe_dump(dict(runtime_env), sort_keys=True)
    return {
        "apiVersion": RAY_API_VERSION,
        "kind": "RayJob",
        "metadata": {
            "name": name,
            "namespace": cfg.ray_namespace,
            "labels": common_labels(cfg),
        },
        "spec": spec,
    }


def serve_config(
    *,
    working_dir: str,
    checkpoint: str | None = None,
    import_path: str | None = None,
    app_name: str = SERVE_APP_NAME,
    route_prefix: str = "/",
    extra_args: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A Serve config (the `serveConfigV2` schema) for one application.

    With `checkpoint` (or other args) the app comes from the builder
    `serve_app:build_app`, which receives them as `args`; without, from the ready
    `serve_app:app`. Serve refuses args for an already-built application."""
    if not working_dir:
        raise ManifestError("working_dir: must be a URI of the packaged ray_jobs/")
    args = dict(extra_args or {})
    if checkpoint:
        args["checkpoint"] = checkpoint
    if import_path is None:
        import_path = SERVE_BUILDER_IMPORT_PATH if args else SERVE_IMPORT_PATH
    elif args and import_path == SERVE_IMPORT_PATH:
        raise ManifestError(
            f"import_path: {SERVE_IMPORT_PATH} is an already-built application and "
            f"takes no args; use the builder {SERVE_BUILDER_IMPORT_PATH}"
        )
    app: dict[str, Any] = {
        "name": app_name,
        "route_prefix": route_prefix,
        "import_path": import_path,
        "runtime_env": {"working_dir": working_dir},
    }
    if args:
        app["args"] = args
    return {"applications": [app]}


def rayservice_manifest(
    cfg: StackConfig,
    refs: ClusterRefs,
    *,
    name: str,
    working_dir: str,
    checkpoint: str | None = None,
    import_path: str | None = None,
    app_name: str = SERVE_APP_NAME,
    extra_args: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A RayService running the serving app on the stack's cluster spec."""
    config = serve_config(
        working_dir=working_dir,
        checkpoint=checkpoint,
        import_path=import_path,
        app_name=app_name,
        extra_args=extra_args,
    )
    return {
        "apiVersion": RAY_API_VERSION,
        "kind": "RayService",
        "metadata": {
            "name": name,
            "namespace": cfg.ray_namespace,
            "labels": common_labels(cfg),
        },
        "spec": {
            "serveConfigV2": yaml.safe_dump(config, sort_keys=False),
            "rayClusterConfig": raycluster_spec(cfg, refs),
        },
    }


# ------------------------------------------------------------------ Helm values


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
            "repository": KUBERAY_OPERATOR_IMAGE,
            "tag": f"v{versions.KUBERAY_CHART_VERSION}",
        },
        "nodeSelector": dict(cfg.system_pool.node_labels),
        # Namespaced RBAC: the operator may manage pods only in the Ray namespace.
        "singleNamespaceInstall": True,
        "crNamespacedRbacEnable": True,
        "watchNamespace": [cfg.ray_namespace],
        "resources": _resources("100m", "512Mi"),
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
        "securityContext": _container_security_context(),
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


# ------------------------------------------------------------------------ audit


def cluster_objects(cfg: StackConfig, refs: ClusterRefs) -> list[dict[str, Any]]:
    """Every object the stack applies itself (Helm charts apart), in apply order."""
    return [
        kuberay_namespace_manifest(cfg),
        namespace_manifest(cfg),
        service_account_manifest(cfg, refs),
        raycluster_manifest(cfg, refs),
    ]


def public_exposure(obj: Any, path: str = "") -> list[str]:
    """Where `obj` (a manifest or Helm values) would expose something outside the
    VPC: a LoadBalancer or NodePort Service type, an Ingress, KubeRay's
    enableIngress. Empty when there is none."""
    found: list[str] = []
    if isinstance(obj, Mapping):
        if obj.get("kind") == "Ingress":
            found.append(f"{path or '.'}: kind Ingress")
        for key, value in obj.items():
            here = f"{path}.{key}" if path else str(key)
            if key in ("type", "serviceType") and value in ("LoadBalancer", "NodePort"):
                found.append(f"{here}: {value}")
            elif key == "enableIngress" and value is True:
                found.append(f"{here}: true")
            else:
                found += public_exposure(value, here)
    elif isinstance(obj, Sequence) and not isinstance(obj, str | bytes):
        for i, value in enumerate(obj):
            found += public_exposure(value, f"{path}[{i}]")
    return found
