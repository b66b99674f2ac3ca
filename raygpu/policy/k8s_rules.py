"""The Kubernetes rules: the Ray clusters, namespaces, network policies and the
Helm charts' values, as the stack registers them.

Ray pods appear inside RayCluster specs (and the RayJob/RayService specs that
embed one); Helm charts only as their values. Controls cite the CIS Amazon EKS
Benchmark v1.0.1; where no FSBP or CIS control covers a rule, it says so and
names the guidance it follows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from raygpu import versions
from raygpu.monitoring import dcgm, pod_security
from raygpu.monitoring import stack as monitoring_stack
from raygpu.policy.model import Resource, Rule, Stack, as_list, is_list

RAY_KINDS = {
    "kubernetes:ray.io/v1:RayCluster": ("spec",),
    "kubernetes:ray.io/v1:RayJob": ("spec", "rayClusterSpec"),
    "kubernetes:ray.io/v1:RayService": ("spec", "rayClusterConfig"),
}
RAY = tuple(RAY_KINDS)
NAMESPACE = ("kubernetes:core/v1:Namespace",)
SERVICE = ("kubernetes:core/v1:Service",)
NETWORK_POLICY = ("kubernetes:networking.k8s.io/v1:NetworkPolicy",)
HELM_RELEASE = ("kubernetes:helm.sh/v3:Release", "kubernetes:helm.sh/v4:Chart")
PSA_ENFORCE = "pod-security.kubernetes.io/enforce"
EXPOSED_TYPES = ("LoadBalancer", "NodePort")
# Where images may come from (CIS Amazon EKS 5.1.4: approved registries only).
APPROVED_REPOSITORIES = versions.APPROVED_IMAGE_REPOSITORIES


# ------------------------------------------------------------------- helpers


def cluster_specs(resource: Resource) -> list[tuple[str, Mapping[str, Any]]]:
    """(where, spec) of each Ray cluster spec in a RayCluster/RayJob/RayService."""
    path = RAY_KINDS.get(resource.type)
    spec = resource.get(*path) if path else None
    return [(".".join(path), spec)] if isinstance(spec, Mapping) else []


def pod_specs(resource: Resource) -> list[tuple[str, str, Mapping[str, Any]]]:
    """(where, role, pod spec) of every pod template: role head, worker or submitter."""
    found = []
    for where, spec in cluster_specs(resource):
        head = (spec.get("headGroupSpec") or {}).get("template") or {}
        if isinstance(head.get("spec"), Mapping):
            found.append((f"{where}.headGroupSpec", "head", head["spec"]))
        for i, group in enumerate(as_list(spec.get("workerGroupSpecs"))):
            template = group.get("template") if isinstance(group, Mapping) else None
            if isinstance(template, Mapping) and isinstance(
                template.get("spec"), Mapping
            ):
                found.append(
                    (f"{where}.workerGroupSpecs[{i}]", "worker", template["spec"])
                )
    submitter = resource.get("spec", "submitterPodTemplate", "spec")
    if isinstance(submitter, Mapping):
        found.append(("spec.submitterPodTemplate", "submitter", submitter))
    return found


def containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [
        c
        for key in ("initContainers", "containers")
        for c in as_list(pod.get(key))
        if isinstance(c, Mapping)
    ]


def _image_problems(image: Any) -> list[str]:
    image = str(image or "")
    if not image:
        return ["has no image"]
    name, _, digest = image.partition("@")
    repository, _, tag = name.rpartition(":")
    if "/" in tag or not repository:  # a registry port, not a tag
        repository, tag = name, ""
    problems = []
    if repository not in APPROVED_REPOSITORIES:
        problems.append(
            f"image {image} is not from a repository raygpu/versions.py pins"
        )
    if not tag or tag == "latest":
        problems.append(f"image {image} has no pinned tag")
    recorded = versions.IMAGE_DIGESTS.get(name)
    if recorded and digest != recorded.digest:
        problems.append(f"image {image} lacks its recorded digest {recorded.digest}")
    return problems


def _values_images(values: Any, path: str = "values") -> Iterator[tuple[str, str]]:
    """(where, [registry/]repository:tag) of every `image: {registry?, repository,
    tag}` in Helm values (charts such as kube-prometheus-stack split off the
    registry)."""
    if isinstance(values, Mapping):
        image = values.get("image")
        if isinstance(image, Mapping) and "repository" in image:
            repo = image.get("repository")
            if image.get("registry"):
                repo = f"{image['registry']}/{repo}"
            yield f"{path}.image", f"{repo}:{image.get('tag', '')}"
        for key, value in values.items():
            yield from _values_images(value, f"{path}.{key}")
    elif is_list(values):
        for i, value in enumerate(values):
            yield from _values_images(value, f"{path}[{i}]")


def _security_context_problems(ctx: Any, where: str) -> list[str]:
    ctx = ctx if isinstance(ctx, Mapping) else {}
    problems = []
    if ctx.get("privileged") is True:
        problems.append(f"{where}: privileged")
    if ctx.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation is not false")
    caps = ctx.get("capabilities") or {}
    if "ALL" not in as_list(caps.get("drop")):
        problems.append(f"{where}: capabilities do not drop ALL")
    if as_list(caps.get("add")):
        problems.append(f"{where}: adds capabilities {as_list(caps.get('add'))}")
    if ctx.get("runAsUser") == 0 or ctx.get("runAsNonRoot") is False:
        problems.append(f"{where}: runs as root")
    return problems


# --------------------------------------------------------------------- rules


def head_cluster_ip(resource: Resource, _stack: Stack) -> Iterator[str]:
    if resource.type in RAY:
        for where, spec in cluster_specs(resource):
            head = spec.get("headGroupSpec") or {}
            kind = head.get("serviceType", "ClusterIP")
            if kind != "ClusterIP":
                yield f"{where}.headGroupSpec.serviceType is {kind}, not ClusterIP"
            if head.get("enableIngress") is True:
                yield f"{where}.headGroupSpec.enableIngress is true"
    elif resource.type in SERVICE:
        kind = resource.get("spec", "type", default="ClusterIP")
        if kind in EXPOSED_TYPES:
            yield f"spec.type is {kind}"
    else:
        yield from _exposed_values(resource.get("values"), "values")


def _exposed_values(values: Any, path: str) -> Iterator[str]:
    if isinstance(values, Mapping):
        for key, value in values.items():
            here = f"{path}.{key}"
            if key in ("type", "serviceType") and value in EXPOSED_TYPES:
                yield f"{here} is {value}"
            elif key == "enableIngress" and value is True:
                yield f"{here} is true"
            else:
                yield from _exposed_values(value, here)
    elif is_list(values):
        for i, value in enumerate(values):
            yield from _exposed_values(value, f"{path}[{i}]")


def token_auth(resource: Resource, _stack: Stack) -> Iterator[str]:
    for where, spec in cluster_specs(resource):
        mode = (spec.get("authOptions") or {}).get("mode")
        if mode != "token":
            yield f"{where}.authOptions.mode is {mode!r}, not 'token'"


def unprivileged(resource: Resource, _stack: Stack) -> Iterator[str]:
    if resource.type in HELM_RELEASE:
        values = resource.get("values") or {}
        values = values if isinstance(values, Mapping) else {}
        # Charts name the container's context `containerSecurityContext` when
        # `securityContext` is the pod's (cluster-autoscaler), else `securityContext`.
        key = (
            "containerSecurityContext"
            if "containerSecurityContext" in values
            else "securityContext"
        )
        if isinstance(values.get(key), Mapping):
            yield from _security_context_problems(values[key], f"values.{key}")
        return
    for where, _role, pod in pod_specs(resource):
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(key) is True:
                yield f"{where}: {key} is true"
        pod_ctx = pod.get("securityContext") or {}
        if pod_ctx.get("runAsNonRoot") is not True:
            yield f"{where}: securityContext.runAsNonRoot is not true"
        for c in containers(pod):
            yield from _security_context_problems(
                c.get("securityContext"), f"{where} container {c.get('name')}"
            )
    for where, spec in cluster_specs(resource):
        if spec.get("enableInTreeAutoscaling") is True:
            options = spec.get("autoscalerOptions") or {}
            yield from _security_context_problems(
                options.get("securityContext"), f"{where}.autoscalerOptions"
            )


def images_pinned(resource: Resource, _stack: Stack) -> Iterator[str]:
    if resource.type in HELM_RELEASE:
        for where, image in _values_images(resource.get("values")):
            for problem in _image_problems(image):
                yield f"{where}: {problem}"
        return
    for where, _role, pod in pod_specs(resource):
        for c in containers(pod):
            for problem in _image_problems(c.get("image")):
                yield f"{where} container {c.get('name')}: {problem}"
    for where, spec in cluster_specs(resource):
        image = (spec.get("autoscalerOptions") or {}).get("image")
        if image:
            for problem in _image_problems(image):
                yield f"{where}.autoscalerOptions: {problem}"


def read_only_root(resource: Resource, _stack: Stack) -> Iterator[str]:
    for where, _role, pod in pod_specs(resource):
        for c in containers(pod):
            ctx = c.get("securityContext") or {}
            if ctx.get("readOnlyRootFilesystem") is not True:
                yield f"{where} container {c.get('name')}: root filesystem is writable"
    for where, spec in cluster_specs(resource):
        if spec.get("enableInTreeAutoscaling") is True:
            ctx = (spec.get("autoscalerOptions") or {}).get("securityContext") or {}
            if ctx.get("readOnlyRootFilesystem") is not True:
                yield f"{where}.autoscalerOptions: root filesystem is writable"


def workers_without_api_token(resource: Resource, _stack: Stack) -> Iterator[str]:
    pods = pod_specs(resource)
    heads = {p.get("serviceAccountName") for _w, role, p in pods if role == "head"}
    for where, role, pod in pods:
        if role == "head":
            continue
        if pod.get("automountServiceAccountToken") is not False:
            yield f"{where}: automountServiceAccountToken is not false"
        account = pod.get("serviceAccountName")
        if account in heads or not account:
            yield (
                f"{where}: uses the head's service account {account!r} (the one "
                "bound to Kubernetes API rights)"
            )


def _namespace_name(resource: Resource) -> str | None:
    return resource.get("metadata", "name")


def _is_default_deny(policy: Resource) -> bool:
    spec = policy.get("spec") or {}
    selector = spec.get("podSelector") or {}
    return (
        not selector.get("matchLabels")
        and not selector.get("matchExpressions")
        and "Ingress" in as_list(spec.get("policyTypes"))
        and not as_list(spec.get("ingress"))
    )


def namespace_default_deny(namespace: Resource, stack: Stack) -> Iterator[str]:
    name = _namespace_name(namespace)
    policies = [
        p
        for p in stack.of_type(*NETWORK_POLICY)
        if p.get("metadata", "namespace") == name
    ]
    if not any(_is_default_deny(p) for p in policies):
        yield f"namespace {name} has no default-deny ingress NetworkPolicy"


def namespace_restricted(namespace: Resource, stack: Stack) -> Iterator[str]:
    labels = namespace.get("metadata", "labels") or {}
    level = labels.get(PSA_ENFORCE)
    if level == "restricted":
        return
    served = labels.get(pod_security.HOST_AGENTS_LABEL)
    if served is None:
        yield f"{PSA_ENFORCE} is {level!r}, not 'restricted'"
        return
    # The one exception: the monitoring stack's host agents' namespace.
    yield from _host_agents_problems(namespace, stack, str(served), level)


def _host_agents_problems(
    namespace: Resource, stack: Stack, served: str, level: Any
) -> Iterator[str]:
    """A namespace labelled as the host agents' of monitoring namespace `served`
    may be privileged only under the name derived from `served`, beside a
    namespace `served` of the stack, and with only node-exporter (through
    kube-prometheus-stack's override) and the DCGM exporter's release in it."""
    name = _namespace_name(namespace)
    label = f"{pod_security.HOST_AGENTS_LABEL}={served}"
    try:
        expected = pod_security.agents_namespace(served)
    except ValueError:
        expected = None
    if name != expected:
        yield (
            f"{PSA_ENFORCE} is {level!r}, not 'restricted', and {label} admits "
            f"only the namespace {expected}, not {name}"
        )
        return
    if served not in {_namespace_name(n) for n in stack.of_type(*NAMESPACE)}:
        yield f"{label}: the stack creates no namespace {served}"
    for resource in stack.resources:
        for problem in _not_a_host_agent(resource, name):
            yield f"{PSA_ENFORCE} is {level!r} for the host agents only, but {problem}"


def _not_a_host_agent(resource: Resource, namespace: str) -> Iterator[str]:
    """What `resource` puts in the host agents' `namespace` that is not one of the
    two agents (NetworkPolicies, which run nothing, may be there)."""
    where = f"{resource.type} {resource.name}"
    if resource.type in HELM_RELEASE:
        chart = resource.get("chart")
        dcgm_release = chart == dcgm.CHART and resource.get("name") == dcgm.RELEASE
        if resource.get("namespace") == namespace and not dcgm_release:
            yield f"{where} (chart {chart}) installs into it"
        allowed = (
            f"values.{pod_security.NODE_EXPORTER_SUBCHART}."
            f"{pod_security.NAMESPACE_OVERRIDE}"
            if chart == monitoring_stack.CHART
            else None
        )
        for path in _overrides_to(resource.get("values"), namespace, "values"):
            if path != allowed:
                yield f"{where} moves {path} into it"
    elif resource.type not in NETWORK_POLICY + NAMESPACE:
        if resource.get("metadata", "namespace") == namespace:
            yield f"{where} is placed in it"


def _overrides_to(values: Any, namespace: str, path: str) -> Iterator[str]:
    """Paths of every `namespaceOverride: <namespace>` in Helm values."""
    if isinstance(values, Mapping):
        for key, value in values.items():
            here = f"{path}.{key}"
            if key == pod_security.NAMESPACE_OVERRIDE and value == namespace:
                yield here
            else:
                yield from _overrides_to(value, namespace, here)
    elif is_list(values):
        for i, value in enumerate(values):
            yield from _overrides_to(value, namespace, f"{path}[{i}]")


def _open_peer(peer: Any) -> str | None:
    if not isinstance(peer, Mapping) or not peer:
        return "an empty peer (every source)"
    block = peer.get("ipBlock") or {}
    if block.get("cidr") in ("0.0.0.0/0", "::/0"):
        return f"ipBlock {block.get('cidr')}"
    selector = peer.get("namespaceSelector")
    if isinstance(selector, Mapping) and not (
        selector.get("matchLabels") or selector.get("matchExpressions")
    ):
        return "namespaceSelector {} (every namespace)"
    return None


def policy_sources_named(policy: Resource, _stack: Stack) -> Iterator[str]:
    for i, rule in enumerate(as_list(policy.get("spec", "ingress"))):
        peers = as_list(rule.get("from")) if isinstance(rule, Mapping) else []
        if not peers:
            yield f"spec.ingress[{i}] admits every source (no from)"
        for j, peer in enumerate(peers):
            problem = _open_peer(peer)
            if problem:
                yield f"spec.ingress[{i}].from[{j}]: {problem}"


RULES = (
    Rule("RG-K8S-01", "Ray head ClusterIP only",
         "the Ray head Service is ClusterIP, with no Ingress, and no Service or "
         "chart value asks for a LoadBalancer or NodePort",
         "no FSBP/CIS control; CIS Amazon EKS 5.4.2 keeps the endpoints private, "
         "EKS Best Practices (network security) the workloads", RAY + SERVICE
         + HELM_RELEASE, head_cluster_ip),
    Rule("RG-K8S-02", "Ray token auth",
         "every Ray cluster spec turns on Ray token authentication",
         "no FSBP/CIS control; Ray's security guide (token authentication)", RAY,
         token_auth),
    Rule("RG-K8S-03", "No privileged pods",
         "Ray pods, KubeRay's autoscaler and chart pods run as non-root, without "
         "privilege, escalation, added capabilities or host namespaces",
         "CIS Amazon EKS 4.2.1-4.2.9, 4.6.2", RAY + HELM_RELEASE, unprivileged),
    Rule("RG-K8S-04", "Images pinned",
         "every image comes from a repository raygpu/versions.py pins, with a tag "
         "(not latest) and its recorded digest where one is recorded",
         "CIS Amazon EKS 5.1.4; EKS Best Practices (immutable image references)",
         RAY + HELM_RELEASE, images_pinned),
    Rule("RG-K8S-05", "Read-only root filesystems",
         "Ray containers and the autoscaler write only to their volumes",
         "CIS Amazon EKS 4.6.2", RAY, read_only_root),
    Rule("RG-K8S-06", "Workers without an API token",
         "Ray workers (and RayJob submitters) mount no Kubernetes API token and "
         "use a service account other than the head's",
         "CIS Amazon EKS 4.1.6", RAY, workers_without_api_token),
    Rule("RG-K8S-07", "Default-deny ingress",
         "every namespace the stack creates has a default-deny ingress "
         "NetworkPolicy", "CIS Amazon EKS 4.3.2", NAMESPACE, namespace_default_deny),
    Rule("RG-K8S-08", "Pod Security restricted",
         "every namespace the stack creates enforces the restricted Pod Security "
         "Standard, but one: the monitoring stack's host agents' namespace "
         f"(labelled `{pod_security.HOST_AGENTS_LABEL}: <monitoring namespace>`, "
         f"named `<monitoring namespace>{pod_security.AGENTS_SUFFIX}`) may be "
         "privileged while the stack puts "
         "nothing there but node-exporter and the DCGM exporter",
         "CIS Amazon EKS 4.2.1-4.2.9 (through Pod Security Admission)",
         NAMESPACE, namespace_restricted),
    Rule("RG-K8S-09", "Network policies name their sources",
         "no NetworkPolicy admits every source, every namespace or 0.0.0.0/0",
         "CIS Amazon EKS 4.3.2, 5.4.4", NETWORK_POLICY, policy_sources_named),
)  # fmt: skip
