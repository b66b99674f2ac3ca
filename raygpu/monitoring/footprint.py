"""What the monitoring stack takes from the system node, and what it costs.

The dev stack runs everything on one m6a.xlarge system node (4 vCPUs, 16 GiB):
what it leaves for pods (raygpu.sizing.allocatable: 3420m, 13395Mi) holds the
Ray head (2 CPU, 8Gi, plus its autoscaler's 500m, 512Mi), the KubeRay operator
(100m, 512Mi), the Cluster Autoscaler (100m, 300Mi), CoreDNS (2 x 100m, 70Mi),
the EBS CSI controller that the Prometheus volume needs (2 x 60m, 240Mi) and this
stack's requests (340m, 1824Mi): 3360m and 11960Mi in all
(`system_node_requests`; the test checks the sum against the node).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from raygpu import autoscaler_values, helm_values, instance_types, manifests, sizing
from raygpu.config import StackConfig
from raygpu.monitoring.stack import DEFAULT_STORAGE_GIB, kube_prometheus_stack_values

# EKS's CoreDNS add-on: two replicas of 100m and 70Mi, both on the one system
# node of a dev stack.
COREDNS_REQUESTS = (2, "100m", "70Mi")
# The EBS CSI driver's controller, which provisions the Prometheus volume: two
# replicas of six containers (driver, provisioner, attacher, snapshotter, resizer,
# liveness probe) at the chart's 10m and 40Mi each (aws-ebs-csi-driver chart 2.64.0,
# controller.resources, the sidecars' default).
EBS_CSI_CONTROLLER_REQUESTS = (2, "60m", "240Mi")
# (what, path to its resources in the values, containers on one system node).
SYSTEM_NODE_CONTAINERS = (
    ("prometheus-operator", ("prometheusOperator", "resources"), 1),
    (
        "config reloaders (Prometheus, Alertmanager)",
        ("prometheusOperator", "prometheusConfigReloader", "resources"),
        2,
    ),
    ("Prometheus", ("prometheus", "prometheusSpec", "resources"), 1),
    ("Alertmanager", ("alertmanager", "alertmanagerSpec", "resources"), 1),
    ("Grafana", ("grafana", "resources"), 1),
    (
        "Grafana sidecars (dashboards, datasources)",
        ("grafana", "sidecar", "resources"),
        2,
    ),
    ("kube-state-metrics", ("kube-state-metrics", "resources"), 1),
    ("node-exporter", ("prometheus-node-exporter", "resources"), 1),
)


def _requests(resources: Mapping[str, Any]) -> tuple[int, int]:
    req = resources["requests"]
    return sizing.cpu_milli(req["cpu"]), sizing.memory_bytes(req["memory"]) // 2**20


def _at(values: Mapping[str, Any], path: Sequence[str]) -> Mapping[str, Any]:
    for key in path:
        values = values[key]
    return values


def system_node_requests(cfg: StackConfig) -> list[tuple[str, int, int]]:
    """(what, millicores, MiB) requested on one system node when the whole system
    pool is one node: the Ray head, the operators and the monitoring stack."""
    head = manifests.head_group_spec(cfg, manifests.ClusterRefs("", "", ""))
    head_container = head["template"]["spec"]["containers"][0]
    autoscaler = autoscaler_values.cluster_autoscaler_release(cfg, role_arn="")
    rows = [
        ("Ray head", *_requests(head_container["resources"])),
        ("Ray autoscaler", *_requests(manifests.autoscaler_options(cfg)["resources"])),
        (
            "KubeRay operator",
            *_requests(helm_values.kuberay_operator_values(cfg)["resources"]),
        ),
        ("Cluster Autoscaler", *_requests(autoscaler.values["resources"])),
    ]
    for what, (count, cpu, memory) in (
        ("CoreDNS", COREDNS_REQUESTS),
        ("EBS CSI controller", EBS_CSI_CONTROLLER_REQUESTS),
    ):
        mib = sizing.memory_bytes(memory) // 2**20
        rows.append((what, count * sizing.cpu_milli(cpu), count * mib))
    values = kube_prometheus_stack_values(cfg)
    for what, path, count in SYSTEM_NODE_CONTAINERS:
        cpu, mib = _requests(_at(values, path))
        rows.append((what, count * cpu, count * mib))
    return rows


def system_node_problem(cfg: StackConfig) -> str | None:
    """None when everything fits what the smallest system instance leaves."""
    pool = cfg.system_pool
    cpu_left, mib_left = sizing.allocatable(pool.vcpus, pool.memory_gib)
    rows = system_node_requests(cfg)
    cpu = sum(r[1] for r in rows)
    mib = sum(r[2] for r in rows)
    if cpu <= cpu_left and mib <= mib_left:
        return None
    return (
        f"the system node ({pool.vcpus} vCPUs, {pool.memory_gib:g} GiB) leaves "
        f"{cpu_left}m and {mib_left}Mi; the Ray head, operators and monitoring "
        f"request {cpu}m and {mib}Mi"
    )


@dataclass(frozen=True)
class StorageCost:
    """What the Prometheus volume adds to the bill, asleep or awake (an EBS
    volume bills while it exists)."""

    gib: int
    usd_month: float
    usd_hour: float


def storage_cost(storage_gib: int = DEFAULT_STORAGE_GIB) -> StorageCost:
    month = storage_gib * instance_types.EBS_GP3_USD_GIB_MONTH
    return StorageCost(
        storage_gib, round(month, 4), round(month / instance_types.HOURS_PER_MONTH, 6)
    )
