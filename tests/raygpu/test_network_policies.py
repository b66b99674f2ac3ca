"""The stack's NetworkPolicies: structurally valid, and what they let through.

`allowed` evaluates Kubernetes' NetworkPolicy semantics for ingress (a pod that
any policy selects admits only what some rule of those policies admits) over the
policies the stack renders, so the tests read as a traffic matrix.
"""

from __future__ import annotations

import copy
import ipaddress
from dataclasses import dataclass, field

import pytest

from raygpu import network_policies as np_mod
from raygpu.names import DASHBOARD_PORT, KUBERAY_NAMESPACE, SERVE_PORT
from tests.infra.infra_helpers import stack_config

GCS = 6379
CFG = stack_config(
    "dev",
    serveAllowedCidrs=["10.30.0.0/16"],
    serveAllowedNamespaces=["ingress"],
)


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)
    ip: str = "10.99.0.1"


def _matches(selector, labels) -> bool:
    wanted = (selector or {}).get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


def _peer_admits(peer, source: Pod, policy_ns: str) -> bool:
    if "ipBlock" in peer:
        net = ipaddress.ip_network(peer["ipBlock"]["cidr"])
        return ipaddress.ip_address(source.ip) in net
    ns_ok = (
        source.namespace == policy_ns
        if "namespaceSelector" not in peer
        else _matches(
            peer["namespaceSelector"],
            {"kubernetes.io/metadata.name": source.namespace},
        )
    )
    pod_ok = "podSelector" not in peer or _matches(peer["podSelector"], source.labels)
    return ns_ok and pod_ok


def allowed(policies, source: Pod, dest: Pod, port: int) -> bool:
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == dest.namespace
        and "Ingress" in p["spec"]["policyTypes"]
        and _matches(p["spec"]["podSelector"], dest.labels)
    ]
    if not selecting:
        return True
    for p in selecting:
        for rule in p["spec"].get("ingress", []):
            ports = [x["port"] for x in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            if any(_peer_admits(peer, source, dest.namespace) for peer in rule["from"]):
                return True
    return False


RAY = np_mod.ray_pod_labels(CFG)
HEAD = Pod("ray", {**RAY, "ray.io/node-type": "head"})
WORKER = Pod("ray", {**RAY, "ray.io/node-type": "worker"})
SUBMITTER = Pod("ray", {"job-name": "train"})
OTHER_STACK = Pod("ray", {**RAY, "raygpu.io/stack": "prod"})
OPERATOR = Pod(KUBERAY_NAMESPACE, dict(np_mod.OPERATOR_POD_LABELS))
PROMETHEUS = Pod("monitoring", {"app": "prometheus"})
STRANGER = Pod("default", {"app": "anything"})
INGRESS = Pod("ingress", {"app": "controller"})
LOAD_BALANCER = Pod("elsewhere", ip="10.30.7.9")

MATRIX = [
    (WORKER, HEAD, GCS, True),
    (HEAD, WORKER, 10002, True),  # Ray's worker ports, picked at run time
    (SUBMITTER, HEAD, GCS, False),
    (SUBMITTER, HEAD, DASHBOARD_PORT, True),
    (OTHER_STACK, HEAD, GCS, False),
    (OPERATOR, HEAD, DASHBOARD_PORT, True),
    (OPERATOR, HEAD, GCS, False),
    (OPERATOR, WORKER, DASHBOARD_PORT, False),
    (STRANGER, HEAD, DASHBOARD_PORT, False),
    (STRANGER, WORKER, SERVE_PORT, False),
    (STRANGER, HEAD, GCS, False),
    (SUBMITTER, WORKER, SERVE_PORT, True),
    (INGRESS, WORKER, SERVE_PORT, True),
    (INGRESS, HEAD, DASHBOARD_PORT, False),
    (LOAD_BALANCER, HEAD, SERVE_PORT, True),
    (LOAD_BALANCER, HEAD, GCS, False),
    (PROMETHEUS, WORKER, 8080, True),
    (PROMETHEUS, HEAD, 44217, True),
    (PROMETHEUS, HEAD, GCS, False),
    (PROMETHEUS, OPERATOR, np_mod.OPERATOR_METRICS_PORT, True),
    (STRANGER, OPERATOR, np_mod.OPERATOR_METRICS_PORT, False),
    (HEAD, OPERATOR, 9443, False),
]


@pytest.mark.parametrize("source, dest, port, expected", MATRIX)
def test_traffic_matrix(source, dest, port, expected):
    assert allowed(np_mod.network_policies(CFG), source, dest, port) is expected


def test_without_policies_everything_would_pass():
    # The evaluator itself: no policy selects a pod, so it admits anything.
    assert allowed([], STRANGER, HEAD, GCS)


def test_serve_sources_follow_the_config():
    plain = np_mod.network_policies(stack_config("dev"))
    assert not allowed(plain, INGRESS, WORKER, SERVE_PORT)
    assert not allowed(plain, LOAD_BALANCER, WORKER, SERVE_PORT)
    assert allowed(plain, SUBMITTER, WORKER, SERVE_PORT)
    custom = stack_config("dev", monitoringNamespace="observability")
    moved = Pod("observability", {"app": "prometheus"})
    assert allowed(np_mod.network_policies(custom), moved, WORKER, 8080)
    assert not allowed(np_mod.network_policies(custom), PROMETHEUS, WORKER, 8080)


def test_every_policy_is_valid_and_default_deny_comes_first():
    policies = np_mod.network_policies(CFG)
    for p in policies:
        assert np_mod.network_policy_problems(p) == [], p["metadata"]["name"]
    by_ns = {}
    for p in policies:
        by_ns.setdefault(p["metadata"]["namespace"], []).append(p["metadata"]["name"])
    assert {ns: names[0] for ns, names in by_ns.items()} == {
        CFG.ray_namespace: "default-deny-ingress",
        KUBERAY_NAMESPACE: "default-deny-ingress",
    }


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda p: p["spec"].pop("podSelector"), "spec.podSelector: required"),
        (
            lambda p: p["spec"]["ingress"][0]["ports"][0].update(port=70000),
            "is not a port number or name",
        ),
        (
            lambda p: p["spec"]["ingress"][0]["from"].append(
                {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}
            ),
            "10.1.0.0/24 is outside 10.0.0.0/16",
        ),
        (
            lambda p: p["spec"]["ingress"][0]["from"].append({}),
            "a peer needs podSelector, namespaceSelector or ipBlock",
        ),
        (lambda p: p["metadata"].update(name="Bad_Name"), "metadata.name"),
        (lambda p: p["spec"].update(policyTypes=["Sideways"]), "spec.policyTypes"),
    ],
)
def test_the_check_finds_what_the_api_server_refuses(edit, problem):
    serve = next(
        p for p in np_mod.network_policies(CFG) if p["metadata"]["name"] == "ray-serve"
    )
    broken = copy.deepcopy(serve)
    edit(broken)
    assert any(problem in p for p in np_mod.network_policy_problems(broken))
