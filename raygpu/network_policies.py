"""The stack's NetworkPolicies, as plain data, and their structural check.

With the VPC CNI enforcing policies (infra/cluster.py turns it on), the Ray
namespace denies all ingress except:
- between the stack's own Ray pods (KubeRay labels them `ray.io/is-ray-node`):
  every port, since Ray's GCS, raylets, object managers and workers pick ports
  of their own;
- to the head's dashboard/job API from pods of the Ray namespace (RayJob
  submitters) and from the KubeRay operator (RayJob and RayService status);
- to Serve's HTTP port from the Ray namespace and the networks and namespaces
  the stack lists (serveAllowedCidrs, serveAllowedNamespaces);
- to Ray's metrics ports from the monitoring namespace.
The operator's namespace denies all ingress but its metrics port from the
monitoring namespace. `kubectl port-forward` is not pod-to-pod traffic (the
kubelet connects inside the pod), so it still reaches the dashboard; so do the
kubelet's probes (the VPC CNI's agent admits the node's own address).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from raygpu.config import StackConfig
from raygpu.names import DASHBOARD_PORT, KUBERAY_NAMESPACE, SERVE_PORT, STACK_LABEL

API_VERSION = "networking.k8s.io/v1"
# Labels KubeRay puts on every Ray pod, and on the head only.
RAY_NODE_LABEL = "ray.io/is-ray-node"
RAY_NODE_TYPE_LABEL = "ray.io/node-type"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by Kubernetes itself
OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "kuberay-operator"}
# Ray's Prometheus endpoints: every node's metrics agent, and on the head the
# autoscaler's and the dashboard's (KubeRay's documented ports).
RAY_METRICS_PORTS = {"metrics": 8080, "as-metrics": 44217, "dash-metrics": 44227}
OPERATOR_METRICS_PORT = 8080
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PROTOCOLS = ("TCP", "UDP", "SCTP")


def ray_pod_labels(cfg: StackConfig) -> dict[str, str]:
    """What every Ray pod of the stack carries (KubeRay's label and ours)."""
    return {RAY_NODE_LABEL: "yes", STACK_LABEL: cfg.stack}


def _namespace(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: name}}}


def _ports(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def _policy(
    cfg: StackConfig,
    name: str,
    namespace: str,
    selector: Mapping[str, str],
    ingress: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/part-of": cfg.project,
                "app.kubernetes.io/managed-by": "pulumi",
                STACK_LABEL: cfg.stack,
            },
        },
        "spec": {
            "podSelector": {"matchLabels": dict(selector)} if selector else {},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def network_policies(cfg: StackConfig) -> list[dict[str, Any]]:
    """Every NetworkPolicy the stack applies, Ray namespace first."""
    ns = cfg.ray_namespace
    ray = ray_pod_labels(cfg)
    head = {**ray, RAY_NODE_TYPE_LABEL: "head"}
    operator = {**_namespace(KUBERAY_NAMESPACE), "podSelector": {
        "matchLabels": dict(OPERATOR_POD_LABELS)}}  # fmt: skip
    in_namespace = {"podSelector": {}}
    serve_from = [
        in_namespace,
        *(_namespace(n) for n in cfg.serve_allowed_namespaces),
        *({"ipBlock": {"cidr": c}} for c in cfg.serve_allowed_cidrs),
    ]
    monitoring = _namespace(cfg.monitoring_namespace)
    return [
        _policy(cfg, "default-deny-ingress", ns, {}, []),
        _policy(
            cfg,
            "ray-internal",
            ns,
            ray,
            [{"from": [{"podSelector": {"matchLabels": dict(ray)}}]}],
        ),  # fmt: skip
        _policy(
            cfg,
            "ray-head-api",
            ns,
            head,
            [{"from": [in_namespace, operator], "ports": _ports(DASHBOARD_PORT)}],
        ),
        _policy(
            cfg,
            "ray-serve",
            ns,
            ray,
            [{"from": serve_from, "ports": _ports(SERVE_PORT)}],
        ),
        _policy(
            cfg,
            "ray-metrics",
            ns,
            ray,
            [{"from": [monitoring], "ports": _ports(*RAY_METRICS_PORTS.values())}],
        ),
        _policy(cfg, "default-deny-ingress", KUBERAY_NAMESPACE, {}, []),
        _policy(
            cfg,
            "operator-metrics",
            KUBERAY_NAMESPACE,
            OPERATOR_POD_LABELS,
            [{"from": [monitoring], "ports": _ports(OPERATOR_METRICS_PORT)}],
        ),
    ]


# --------------------------------------------------------------------- check


def _selector_problems(selector: Any, where: str) -> list[str]:
    if not isinstance(selector, Mapping):
        return [f"{where}: must be a label selector"]
    problems = []
    labels = selector.get("matchLabels", {})
    if not isinstance(labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        problems.append(f"{where}.matchLabels: must map strings to strings")
    unknown = set(selector) - {"matchLabels", "matchExpressions"}
    if unknown:
        problems.append(f"{where}: unknown fields {sorted(unknown)}")
    return problems


def _peer_problems(peer: Any, where: str) -> list[str]:
    if not isinstance(peer, Mapping) or not peer:
        return [f"{where}: a peer needs podSelector, namespaceSelector or ipBlock"]
    problems = []
    unknown = set(peer) - {"podSelector", "namespaceSelector", "ipBlock"}
    if unknown:
        problems.append(f"{where}: unknown fields {sorted(unknown)}")
    if "ipBlock" in peer:
        if set(peer) != {"ipBlock"}:
            problems.append(f"{where}: ipBlock cannot be combined with selectors")
        block = peer["ipBlock"] if isinstance(peer["ipBlock"], Mapping) else {}
        try:
            net = ipaddress.ip_network(str(block.get("cidr")))
            for ex in block.get("except", []):
                if not ipaddress.ip_network(ex).subnet_of(net):
                    problems.append(f"{where}.ipBlock.except: {ex} is outside {net}")
        except (ValueError, TypeError) as exc:
            problems.append(f"{where}.ipBlock: {exc}")
    for key in ("podSelector", "namespaceSelector"):
        if key in peer:
            problems += _selector_problems(peer[key], f"{where}.{key}")
    return problems


def _port_problems(port: Any, where: str) -> list[str]:
    if not isinstance(port, Mapping):
        return [f"{where}: must be an object"]
    problems = []
    if port.get("protocol", "TCP") not in _PROTOCOLS:
        problems.append(f"{where}.protocol: must be one of {', '.join(_PROTOCOLS)}")
    number = port.get("port")
    if isinstance(number, bool) or not (
        (isinstance(number, int) and 1 <= number <= 65535)
        or (isinstance(number, str) and _DNS1123.match(number) and len(number) <= 15)
    ):
        problems.append(f"{where}.port: {number!r} is not a port number or name")
    return problems


def network_policy_problems(obj: Mapping[str, Any]) -> list[str]:
    """What the API server would refuse in a NetworkPolicy, one line each."""
    problems = []
    if obj.get("apiVersion") != API_VERSION or obj.get("kind") != "NetworkPolicy":
        problems.append(f"must be {API_VERSION} NetworkPolicy")
    meta = obj.get("metadata") or {}
    for key in ("name", "namespace"):
        value = meta.get(key)
        if not (isinstance(value, str) and len(value) <= 63 and _DNS1123.match(value)):
            problems.append(f"metadata.{key}: {value!r} is not a DNS-1123 label")
    spec = obj.get("spec") or {}
    if "podSelector" not in spec:
        problems.append("spec.podSelector: required ({} selects every pod)")
    else:
        problems += _selector_problems(spec["podSelector"], "spec.podSelector")
    types = spec.get("policyTypes", ["Ingress"])
    if not set(types) <= {"Ingress", "Egress"}:
        problems.append("spec.policyTypes: only Ingress and Egress")
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(spec.get(direction) or []):
            where = f"spec.{direction}[{i}]"
            for j, peer in enumerate(rule.get(peers_key) or []):
                problems += _peer_problems(peer, f"{where}.{peers_key}[{j}]")
            for j, port in enumerate(rule.get("ports") or []):
                problems += _port_problems(port, f"{where}.ports[{j}]")
    return problems
