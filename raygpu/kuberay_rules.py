"""The rules the KubeRay operator checks that no CRD schema holds.

From ray-operator/controllers/ray/utils/validation.go of the pinned KubeRay: names
short enough for the Services the operator derives from them, resources declared
once, autoscaler v2 restart policies, the Ray version token auth needs, and the
RayJob submission rules. `crd_schema.manifest_problems` runs these after the
schema check.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

KINDS = ("RayCluster", "RayJob", "RayService")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_VERSION = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?")
# ray-operator/controllers/ray/utils/constant.go: a RayCluster name leaves room for
# the "-serve-svc" suffix (63 - 10); RayJob and RayService append 6 characters to
# name the RayCluster they create.
MAX_NAME_LENGTH = {"RayCluster": 53, "RayJob": 47, "RayService": 47}
MIN_RAY_VERSION_TOKEN_AUTH = (2, 52, 0)
MIN_RAY_VERSION_K8S_TOKEN_AUTH = (2, 55, 0)
# rayStartParams that declare resources; the operator refuses them together with the
# group's `resources` field.
_RESOURCE_START_PARAMS = ("num-cpus", "num-gpus", "memory", "resources")
_AUTOSCALER_V2_ENV = "RAY_enable_autoscaler_v2"
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def parse_version(text: Any) -> tuple[int, int, int] | None:
    """`2.60.0` -> (2, 60, 0), like k8s.io version.ParseGeneric; None if unparsable."""
    if not isinstance(text, str):
        return None
    match = _VERSION.match(text.strip())
    if not match:
        return None
    return tuple(int(g) if g else 0 for g in match.groups())  # type: ignore[return-value]


def _containers(template: Any) -> list[Any]:
    spec = template.get("spec") if isinstance(template, Mapping) else None
    containers = spec.get("containers") if isinstance(spec, Mapping) else None
    return containers if isinstance(containers, list) else []


def _restart_policy(template: Any) -> Any:
    spec = template.get("spec") if isinstance(template, Mapping) else None
    return spec.get("restartPolicy", "") if isinstance(spec, Mapping) else ""


def _env_names(container: Any) -> dict[str, Any]:
    env = container.get("env") if isinstance(container, Mapping) else None
    if not isinstance(env, list):
        return {}
    return {e.get("name"): e.get("value") for e in env if isinstance(e, Mapping)}


def _group_problems(group: Any, where: str, label: str) -> list[str]:
    if not isinstance(group, Mapping):
        return [f"{where}: must be an object"]
    problems = []
    if not _containers(group.get("template")):
        problems.append(f"{where}.template.spec.containers: {label} needs a container")
    params = group.get("rayStartParams") or {}
    resources = group.get("resources") or {}
    if isinstance(params, Mapping):
        if any(params.get(k) for k in _RESOURCE_START_PARAMS) and resources:
            problems.append(
                f"{where}: set resources in rayStartParams or in resources, not both"
            )
        if "labels" in params:
            problems.append(
                f"{where}.rayStartParams.labels: not supported, use {where}.labels"
            )
    labels = group.get("labels")
    if isinstance(labels, Mapping):
        problems += label_problems(labels, f"{where}.labels")
    return problems


def cluster_spec_problems(spec: Any, where: str = "spec") -> list[str]:
    """The operator's ValidateRayClusterSpec, for a RayCluster spec at `where`."""
    if not isinstance(spec, Mapping):
        return [f"{where}: must be an object"]
    problems: list[str] = []
    head = spec.get("headGroupSpec")
    problems += _group_problems(head, f"{where}.headGroupSpec", "the head group")
    head_containers = (
        _containers(head.get("template")) if isinstance(head, Mapping) else []
    )
    head_env = _env_names(head_containers[0]) if head_containers else {}

    autoscaling = spec.get("enableInTreeAutoscaling") is True
    options = spec.get("autoscalerOptions")
    options = options if isinstance(options, Mapping) else {}
    v2 = autoscaling and (
        options.get("version") == "v2"
        or str(head_env.get(_AUTOSCALER_V2_ENV, "")).lower() in ("1", "true")
    )

    groups = spec.get("workerGroupSpecs") or []
    seen: set[Any] = set()
    for i, group in enumerate(groups if isinstance(groups, list) else []):
        at = f"{where}.workerGroupSpecs[{i}]"
        problems += _group_problems(group, at, "a worker group")
        if not isinstance(group, Mapping):
            continue
        name = group.get("groupName")
        if name in seen:
            problems.append(f"{at}.groupName: {name!r} is used by another worker group")
        seen.add(name)
        lo, hi = group.get("minReplicas"), group.get("maxReplicas")
        if not autoscaling and (lo is None or hi is None):
            problems.append(
                f"{at}: minReplicas and maxReplicas are required without autoscaling"
            )
        for key, value in (("minReplicas", lo), ("maxReplicas", hi)):
            if isinstance(value, int) and value < 0:
                problems.append(f"{at}.{key}: must be >= 0, got {value}")
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            problems.append(
                f"{at}.minReplicas: {lo} is greater than maxReplicas ({hi})"
            )
        idle = group.get("idleTimeoutSeconds")
        if idle is not None:
            if isinstance(idle, int) and idle < 0:
                problems.append(f"{at}.idleTimeoutSeconds: must be >= 0, got {idle}")
            elif not v2:
                problems.append(
                    f"{at}.idleTimeoutSeconds: needs autoscalerOptions.version 'v2'"
                )
        if group.get("suspend") is True and autoscaling:
            problems.append(f"{at}.suspend: not allowed with autoscaling enabled")
        if v2 and _restart_policy(group.get("template")) not in ("", "Never"):
            problems.append(
                f"{at}.template.spec.restartPolicy: must be Never or unset with "
                "autoscaler v2"
            )

    if not autoscaling and str(head_env.get(_AUTOSCALER_V2_ENV, "")).lower() in (
        "1",
        "true",
    ):
        problems.append(
            f"{where}.headGroupSpec: env {_AUTOSCALER_V2_ENV} needs "
            "enableInTreeAutoscaling: true"
        )
    if (
        autoscaling
        and options.get("version") is not None
        and (_AUTOSCALER_V2_ENV in head_env)
    ):
        problems.append(
            f"{where}.autoscalerOptions.version: do not also set env "
            f"{_AUTOSCALER_V2_ENV} on the head"
        )
    if v2 and isinstance(head, Mapping):
        if _restart_policy(head.get("template")) not in ("", "Never"):
            problems.append(
                f"{where}.headGroupSpec.template.spec.restartPolicy: must be Never or "
                "unset with autoscaler v2"
            )
    idle = options.get("idleTimeoutSeconds")
    if isinstance(idle, int) and idle < 0:
        problems.append(f"{where}.autoscalerOptions.idleTimeoutSeconds: must be >= 0")

    auth = spec.get("authOptions")
    auth = auth if isinstance(auth, Mapping) else {}
    k8s_auth = auth.get("enableK8sTokenAuth") is True
    if auth.get("mode") == "token":
        ray_version = spec.get("rayVersion")
        parsed = parse_version(ray_version)
        if not ray_version:
            problems.append(
                f"{where}.rayVersion: required with authOptions.mode 'token' "
                "(Ray 2.52.0 or later)"
            )
        elif parsed is None:
            problems.append(f"{where}.rayVersion: {ray_version!r} is not a version")
        else:
            if parsed < MIN_RAY_VERSION_TOKEN_AUTH:
                problems.append(
                    f"{where}.rayVersion: authOptions.mode 'token' needs Ray 2.52.0 "
                    f"or later, got {ray_version}"
                )
            if k8s_auth and parsed < MIN_RAY_VERSION_K8S_TOKEN_AUTH:
                problems.append(
                    f"{where}.rayVersion: authOptions.enableK8sTokenAuth needs Ray "
                    f"2.55.0 or later, got {ray_version}"
                )
    elif k8s_auth:
        problems.append(
            f"{where}.authOptions.enableK8sTokenAuth: needs authOptions.mode 'token'"
        )
    return problems


def _name_problems(kind: str, metadata: Any) -> list[str]:
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if not isinstance(name, str) or not name:
        return ["metadata.name: required"]
    problems = []
    limit = MAX_NAME_LENGTH[kind]
    if len(name) > limit:
        problems.append(
            f"metadata.name: {kind} names are at most {limit} characters, "
            f"{name!r} has {len(name)}"
        )
    if not _DNS1035.match(name):
        problems.append(
            f"metadata.name: {name!r} is not a DNS-1035 label (lower-case letters, "
            "digits and '-', starting with a letter)"
        )
    return problems


def _yaml_problem(text: Any, where: str) -> list[str]:
    if text in (None, ""):
        return []
    if not isinstance(text, str):
        return [f"{where}: must be a YAML string"]
    try:
        yaml.load(text, Loader=yaml.CSafeLoader)
    except yaml.YAMLError as exc:
        return [f"{where}: not valid YAML ({exc.__class__.__name__})"]
    return []


def operator_problems(manifest: Mapping[str, Any]) -> list[str]:
    """The KubeRay operator's own checks (validation.go) for any of the three kinds."""
    kind = manifest.get("kind")
    if kind not in KINDS:
        return [f"kind: {kind!r} is not one of {sorted(KINDS)}"]
    problems = _name_problems(kind, manifest.get("metadata"))
    spec = manifest.get("spec")
    if not isinstance(spec, Mapping):
        return [*problems, "spec: must be an object"]
    if kind == "RayCluster":
        problems += cluster_spec_problems(spec, "spec")
    elif kind == "RayJob":
        problems += _rayjob_problems(spec)
    else:
        problems += cluster_spec_problems(
            spec.get("rayClusterConfig"), "spec.rayClusterConfig"
        )
        head = (spec.get("rayClusterConfig") or {}).get("headGroupSpec") or {}
        svc = head.get("headService") if isinstance(head, Mapping) else None
        if isinstance(svc, Mapping) and (svc.get("metadata") or {}).get("name"):
            problems.append(
                "spec.rayClusterConfig.headGroupSpec.headService.metadata.name: "
                "must not be set"
            )
        delay = spec.get("rayClusterDeletionDelaySeconds")
        if isinstance(delay, int) and delay < 0:
            problems.append("spec.rayClusterDeletionDelaySeconds: must be >= 0")
        problems += _yaml_problem(spec.get("serveConfigV2"), "spec.serveConfigV2")
    return problems


def _rayjob_problems(spec: Mapping[str, Any]) -> list[str]:
    problems = []
    shutdown = spec.get("shutdownAfterJobFinishes") is True
    ttl = spec.get("ttlSecondsAfterFinished")
    if spec.get("suspend") is True and not shutdown:
        problems.append("spec.suspend: needs shutdownAfterJobFinishes: true")
    if isinstance(ttl, int) and ttl < 0:
        problems.append(f"spec.ttlSecondsAfterFinished: must be >= 0, got {ttl}")
    if not shutdown and isinstance(ttl, int) and ttl > 0:
        problems.append(
            "spec.ttlSecondsAfterFinished: needs shutdownAfterJobFinishes: true"
        )
    selector = spec.get("clusterSelector") or {}
    mode = spec.get("submissionMode", "K8sJobMode")
    backoff = spec.get("backoffLimit")
    if spec.get("rayClusterSpec") is None and not selector:
        problems.append("spec: set rayClusterSpec or clusterSelector")
    if selector:
        if not (isinstance(selector, Mapping) and selector.get("ray.io/cluster")):
            problems.append("spec.clusterSelector: needs a 'ray.io/cluster' entry")
        if mode == "SidecarMode":
            problems.append("spec.clusterSelector: not supported in SidecarMode")
        if spec.get("suspend") is True:
            problems.append("spec.suspend: not supported with clusterSelector")
    if isinstance(backoff, int):
        if backoff < 0:
            problems.append(f"spec.backoffLimit: must be >= 0, got {backoff}")
        elif backoff > 0 and (mode == "InteractiveMode" or selector):
            problems.append(
                "spec.backoffLimit: retries need a RayJob-owned cluster and a "
                "non-interactive submissionMode"
            )
    if mode == "SidecarMode":
        for field in ("submitterPodTemplate", "submitterConfig"):
            if spec.get(field) is not None:
                problems.append(f"spec.{field}: not supported in SidecarMode")
    deadline = spec.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and deadline <= 0:
        problems.append(f"spec.activeDeadlineSeconds: must be > 0, got {deadline}")
    if spec.get("rayClusterSpec") is not None:
        problems += cluster_spec_problems(spec["rayClusterSpec"], "spec.rayClusterSpec")
    problems += _yaml_problem(spec.get("runtimeEnvYAML"), "spec.runtimeEnvYAML")
    return problems


def metadata_problems(metadata: Any) -> list[str]:
    if not isinstance(metadata, Mapping):
        return ["metadata: must be an object"]
    problems = []
    namespace = metadata.get("namespace")
    if namespace is not None and not (
        isinstance(namespace, str)
        and len(namespace) <= 63
        and _DNS1123_LABEL.match(namespace)
    ):
        problems.append(f"metadata.namespace: {namespace!r} is not a DNS-1123 label")
    for field in ("labels", "annotations"):
        value = metadata.get(field, {})
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            problems.append(f"metadata.{field}: must map strings to strings")
    labels = metadata.get("labels", {})
    if isinstance(labels, Mapping):
        problems += label_problems(labels, "metadata.labels")
    return problems


def label_problems(labels: Mapping[str, Any], where: str) -> list[str]:
    problems = []
    for key, value in labels.items():
        if not isinstance(key, str) or not _qualified_name_ok(key):
            problems.append(f"{where}: key {key!r} is not a valid label key")
        if (
            not isinstance(value, str)
            or len(value) > 63
            or not _LABEL_VALUE.match(value)
        ):
            problems.append(
                f"{where}.{key}: value {value!r} is not a valid label value"
            )
    return problems


def _qualified_name_ok(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return False
    return bool(name) and len(name) <= 63 and bool(_LABEL_NAME.match(name))
