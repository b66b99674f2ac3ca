"""Every Kubernetes object and Helm values dict the stack applies, as plain data.

Plain functions of the validated `StackConfig` that return dicts; they import no
Pulumi, so tests check them directly and `raygpu render` writes them as YAML.
`infra/kuberay.py` only hands them to `CustomResource`/`Release`. The Ray
workloads (RayJob, RayService, Serve config) are in `raygpu/workloads.py`, the
Helm values in `raygpu/helm_values.py`.

Values that exist only once AWS resources do (bucket names, the IRSA role ARN) come
in through `ClusterRefs`. Under Pulumi they are Outputs, which Pulumi resolves
anywhere inside a dict; in tests and renders they are plain strings.

What the Ray cluster looks like (see docs/cluster.md):
- one Ray version (`raygpu/versions.py`) drives `rayVersion` and every image tag;
- the head runs on the system nodes with `num-cpus: 0` (no tasks land on it);
- one worker group per GPU pool, 0..maxSize replicas, scaled by the in-tree
  autoscaler v2, with the pool's node selector, the GPU taint's toleration and
  CPU/memory sized to what the instance type leaves after kubelet and daemonsets;
- Ray token authentication; the head Service is ClusterIP only (reach it with
  `kubectl port-forward`); pods run as the image's non-root `ray` user with a
  read-only root filesystem (sized emptyDirs for /tmp, Ray's session folder and
  ~/.cache), in a namespace that enforces the `restricted` Pod Security level;
- the head (and its autoscaler) use the service account KubeRay binds to its
  Kubernetes API Role; workers and RayJob submitters use another one and mount
  no API token (IRSA's web-identity token still reaches them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from raygpu import clouds, names, network_policies, versions
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

# The rayproject/ray images run as user `ray` (uid 1000, gid 100).
RAY_UID = 1000
RAY_GID = 100
HEAD_CONTAINER = "ray-head"
WORKER_CONTAINER = "ray-worker"
# Share of a pod's memory given to /dev/shm (Ray's object store defaults to 30 %).
SHM_FRACTION = 0.3
# Writable places under the read-only root filesystem. The session folder keeps
# KubeRay's volume name, so the autoscaler container mounts the same volume.
RAY_HOME = "/home/ray"
SESSION_DIR = "/tmp/ray"
TMP_VOLUME = ("tmp", "/tmp")
SESSION_VOLUME = ("ray-logs", SESSION_DIR)
CACHE_VOLUME = ("cache", f"{RAY_HOME}/.cache")
TMP_SIZE = "1Gi"
# Shares of the node's root volume: the session folder holds logs, spilled objects
# and what jobs install at start (runtime_env pip packages, working_dir); the
# cache holds pip's, Hugging Face's and torch's downloads. The rest is left to the
# container images and the node itself.
SESSION_DISK_FRACTION = 0.4
CACHE_DISK_FRACTION = 0.2
SUBMITTER_CONTAINER = "ray-job-submitter"

# The smallest worker worth scheduling: Ray itself plus a PyTorch process.
MIN_WORKER_CPU = 1
MIN_WORKER_MEMORY_GIB = 4


# A Service that someone switches to LoadBalancer would still get only an internal
# (VPC-private) load balancer from the AWS controllers: defence in depth.
INTERNAL_LB_ANNOTATIONS = {
    "service.beta.kubernetes.io/aws-load-balancer-internal": "true",
    "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
}
IRSA_ANNOTATION = clouds.AWS.identity_annotation


class ManifestError(UsageError, ValueError):
    """The config asks for something no manifest can express (names the key)."""


@dataclass(frozen=True)
class ClusterRefs:
    """Values known once the cloud's resources exist: Outputs under Pulumi, strings
    elsewhere."""

    data_bucket: Any
    artifacts_bucket: Any
    # The identity the service accounts are bound to (raygpu.clouds): the IRSA
    # role's ARN on AWS, the Google service account's email on GCP, the
    # user-assigned identity's client ID on Azure.
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
        names.STACK_LABEL: cfg.stack,
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
    """The Ray namespace; its pods meet the `restricted` Pod Security profile."""
    labels = {
        **common_labels(cfg),
        "pod-security.kubernetes.io/enforce": "restricted",
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
    """The head's identity: IRSA gives it the stack's bucket role, and its
    autoscaler uses it for the Kubernetes API (KubeRay binds its Role)."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": cfg.ray_service_account,
            "namespace": cfg.ray_namespace,
            "labels": common_labels(cfg),
            "annotations": {clouds.of(cfg).identity_annotation: refs.irsa_role_arn},
        },
    }


def worker_service_account_manifest(
    cfg: StackConfig, refs: ClusterRefs
) -> dict[str, Any]:
    """Workers' identity: the same bucket role through IRSA, no API token."""
    sa = service_account_manifest(cfg, refs)
    sa["metadata"]["name"] = cfg.ray_worker_service_account
    sa["automountServiceAccountToken"] = False
    return sa


def ray_env(cfg: StackConfig, refs: ClusterRefs) -> list[dict[str, Any]]:
    return [
        {"name": clouds.of(cfg).region_env, "value": cfg.region},
        {"name": "RAYGPU_STACK", "value": cfg.stack},
        {"name": "RAYGPU_DATA_BUCKET", "value": refs.data_bucket},
        {"name": "RAYGPU_ARTIFACTS_BUCKET", "value": refs.artifacts_bucket},
    ] + [
        {"name": k, "value": v}
        for k, v in sorted(serve_ingress_env(cfg.serve_ingress).items())
    ]


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RAY_UID,
        "runAsGroup": RAY_GID,
        "fsGroup": RAY_GID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def ray_container_security_context() -> dict[str, Any]:
    """Ray's containers write only to their volumes (see scratch_volumes)."""
    return {**container_security_context(), "readOnlyRootFilesystem": True}


def resources(cpu: str, memory: str, gpus: int = 0) -> dict[str, Any]:
    amounts: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus:
        amounts[GPU_RESOURCE] = gpus
    # Requests equal limits: Guaranteed QoS, and Ray sees exactly what it gets.
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _shm_volume(size: PodSize) -> dict[str, Any]:
    return {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": size.shm}}


def _gib(disk_gib: int, fraction: float) -> str:
    return f"{max(1, int(disk_gib * fraction))}Gi"


def scratch_volumes(disk_gib: int | None) -> list[tuple[str, str, str]]:
    """(volume, mount path, size) of the writable places of a Ray pod on a node
    whose root volume has `disk_gib` (None: a pod of no node pool, e.g. a
    RayJob submitter, which gets /tmp only)."""
    volumes = [(*TMP_VOLUME, TMP_SIZE)]
    if disk_gib is not None:
        volumes += [
            (*SESSION_VOLUME, _gib(disk_gib, SESSION_DISK_FRACTION)),
            (*CACHE_VOLUME, _gib(disk_gib, CACHE_DISK_FRACTION)),
        ]
    return volumes


def pod_volumes(
    size: PodSize | None, disk_gib: int | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pod volumes, container mounts): /dev/shm (when sized) and scratch."""
    volumes, mounts = [], []
    if size is not None:
        volumes.append(_shm_volume(size))
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    for name, path, limit in scratch_volumes(disk_gib):
        volumes.append({"name": name, "emptyDir": {"sizeLimit": limit}})
        mounts.append({"name": name, "mountPath": path})
    return volumes, mounts


def gpu_toleration(cfg: StackConfig) -> dict[str, Any]:
    return {
        "key": names.GPU_TAINT_KEY,
        "operator": "Equal",
        "value": clouds.of(cfg).gpu_taint_value,
        "effect": names.GPU_TAINT_EFFECT,
    }


def pool_tolerations(pool: GpuPoolConfig) -> list[dict[str, Any]]:
    """Tolerations of a pool's taints besides the GPU one (AKS's Spot taint)."""
    return [
        {"key": key, "operator": "Equal", "value": value, "effect": effect}
        for key, value, effect in pool.taints
        if key != names.GPU_TAINT_KEY
    ]


HEAD_METRICS_PORTS = {
    n: p for n, p in network_policies.RAY_METRICS_PORTS.items() if n != "metrics"
}


def ray_pod_labels(cfg: StackConfig) -> dict[str, str]:
    """Labels of Ray's pods: the stack's, and what the cloud's platform reads
    (raygpu.clouds: AKS's workload identity)."""
    return {**common_labels(cfg), **clouds.of(cfg).pod_labels}


def head_group_spec(cfg: StackConfig, refs: ClusterRefs) -> dict[str, Any]:
    size = head_size(cfg)
    volumes, mounts = pod_volumes(size, cfg.system_pool.disk_size_gib)
    container = {
        "name": HEAD_CONTAINER,
        "image": versions.pinned(versions.RAY_IMAGE_CPU),
        "imagePullPolicy": "IfNotPresent",
        "resources": resources(cfg.ray_head_cpu, cfg.ray_head_memory),
        "env": ray_env(cfg, refs),
        # KubeRay adds `metrics` to every Ray container; the autoscaler's and the
        # dashboard's metrics ports are declared here so the head's PodMonitor has them.
        "ports": [
            {"name": n, "containerPort": p}
            for n, p in {**HEAD_PORTS, **HEAD_METRICS_PORTS}.items()
        ],
        "volumeMounts": mounts,
        "securityContext": ray_container_security_context(),
    }
    return {
        # num-cpus 0: the head schedules no tasks or actors, only coordinates.
        # dashboard-host 0.0.0.0: the dashboard listens on the pod IP so that
        # `kubectl port-forward` reaches it; the Service stays ClusterIP.
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
        "serviceType": "ClusterIP",
        "enableIngress": False,
        "template": {
            "metadata": {"labels": ray_pod_labels(cfg)},
            "spec": {
                "serviceAccountName": cfg.ray_service_account,
                "nodeSelector": dict(cfg.system_pool.node_labels),
                "securityContext": pod_security_context(),
                "containers": [container],
                "volumes": volumes,
            },
        },
    }


def worker_group_spec(
    cfg: StackConfig, pool: GpuPoolConfig, refs: ClusterRefs
) -> dict[str, Any]:
    size = worker_size(pool)
    volumes, mounts = pod_volumes(size, pool.disk_size_gib)
    container = {
        "name": WORKER_CONTAINER,
        "image": versions.pinned(versions.RAY_IMAGE_GPU),
        "imagePullPolicy": "IfNotPresent",
        "resources": resources(str(size.cpu), size.memory, size.gpus),
        "env": ray_env(cfg, refs),
        "volumeMounts": mounts,
        "securityContext": ray_container_security_context(),
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
            "metadata": {
                "labels": {**ray_pod_labels(cfg), names.POOL_LABEL: pool.name}
            },
            "spec": {
                # Workers never call the Kubernetes API: no token in the pod.
                "serviceAccountName": cfg.ray_worker_service_account,
                "automountServiceAccountToken": False,
                "nodeSelector": {names.POOL_LABEL: pool.name},
                "tolerations": [gpu_toleration(cfg), *pool_tolerations(pool)],
                "securityContext": pod_security_context(),
                "containers": [container],
                "volumes": volumes,
            },
        },
    }


def autoscaler_options(cfg: StackConfig) -> dict[str, Any]:
    return {
        "version": "v2",
        "idleTimeoutSeconds": cfg.ray_idle_timeout_seconds,
        "upscalingMode": "Default",
        "resources": resources("500m", "512Mi"),
        "securityContext": ray_container_security_context(),
        # The head pod's /tmp; KubeRay adds the shared session folder itself.
        "volumeMounts": [{"name": TMP_VOLUME[0], "mountPath": TMP_VOLUME[1]}],
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
    spec = raycluster_spec(cfg, refs)
    if cfg.asleep:
        spec["suspend"] = True  # KubeRay deletes the head and worker pods
    return {
        "apiVersion": RAY_API_VERSION,
        "kind": "RayCluster",
        "metadata": {
            "name": ray_cluster_name(cfg),
            "namespace": cfg.ray_namespace,
            "labels": common_labels(cfg),
        },
        "spec": spec,
    }


# ------------------------------------------------------------------------ audit


def cluster_objects(cfg: StackConfig, refs: ClusterRefs) -> list[dict[str, Any]]:
    """Every object the stack applies itself (Helm charts apart), in apply order."""
    return [
        kuberay_namespace_manifest(cfg),
        namespace_manifest(cfg),
        service_account_manifest(cfg, refs),
        worker_service_account_manifest(cfg, refs),
        *network_policies.network_policies(cfg),
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
