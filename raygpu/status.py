"""`raygpu status`: what runs on a stack's cluster (or a local Ray cluster) and what
it costs per hour now.

One view from two sources: Kubernetes for the nodes (pool, instance type, capacity
type: what the bill is made of) and Ray's dashboard API for the Ray nodes, jobs,
Serve apps and GPU utilisation (the dashboard reports it per GPU when the node has
any). Nothing here changes the cluster.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from raygpu import instance_types as it
from raygpu import options
from raygpu.names import POOL_LABEL
from raygpu.rayclient import check_address, dashboard_get, local_token

# Kubernetes' and EKS's well-known node labels.
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
CAPACITY_TYPE_LABEL = "eks.amazonaws.com/capacityType"
NODEGROUP_LABEL = "eks.amazonaws.com/nodegroup"
ACTIVE_JOB_STATES = {"PENDING", "RUNNING"}
DEFAULT_RECENT_JOBS = 10


# ------------------------------------------------------------------- Kubernetes nodes


def _ready(node: Mapping[str, Any]) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def node_rows(nodes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per Kubernetes node: its pool, instance, capacity type and price."""
    rows = []
    for node in nodes.get("items") or []:
        labels = (node.get("metadata") or {}).get("labels") or {}
        instance = labels.get(INSTANCE_TYPE_LABEL, "unknown")
        capacity = labels.get(CAPACITY_TYPE_LABEL, "ON_DEMAND")
        spec = it.spec(instance)
        if spec is None:
            price = None
        else:
            spot = capacity == "SPOT"
            price = spec.spot_usd_hour if spot else spec.on_demand_usd_hour
        rows.append(
            {
                "name": node["metadata"]["name"],
                "pool": labels.get(POOL_LABEL) or labels.get(NODEGROUP_LABEL, "-"),
                "instance_type": instance,
                "capacity_type": capacity,
                "gpus": spec.gpus if spec else None,
                "ready": _ready(node),
                "usd_hour": price,
            }
        )
    return rows


def pool_rows(nodes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Nodes grouped by pool, instance and capacity type."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for n in nodes:
        key = (n["pool"], n["instance_type"], n["capacity_type"])
        g = groups.setdefault(
            key,
            {
                "pool": key[0],
                "instance_type": key[1],
                "capacity_type": key[2],
                "nodes": 0,
                "ready": 0,
                "usd_hour": 0.0,
                "priced": True,
            },
        )
        g["nodes"] += 1
        g["ready"] += bool(n["ready"])
        if n["usd_hour"] is None:
            g["priced"] = False
        else:
            g["usd_hour"] = round(g["usd_hour"] + n["usd_hour"], 4)
    return [groups[k] for k in sorted(groups)]


def hourly_cost(pools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What runs now, per hour: the nodes, plus the control plane and the NAT."""
    nodes = round(sum(p["usd_hour"] for p in pools), 4)
    fixed = round(it.EKS_CONTROL_PLANE_USD_HOUR + it.NAT_GATEWAY_USD_HOUR, 4)
    unpriced = sorted({p["instance_type"] for p in pools if not p["priced"]})
    return {
        "nodes_usd_hour": nodes,
        "fixed_usd_hour": fixed,
        "total_usd_hour": round(nodes + fixed, 4),
        "spot_is_estimate": any(p["capacity_type"] == "SPOT" for p in pools),
        "unpriced_instance_types": unpriced,
    }


# ------------------------------------------------------------------------- Ray's view


def ray_node_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for node in ((summary or {}).get("data") or {}).get("summary") or []:
        raylet = node.get("raylet") or {}
        total = raylet.get("resourcesTotal") or {}
        gpus = node.get("gpus") or []
        rows.append(
            {
                "ip": node.get("ip"),
                "head": bool(raylet.get("isHeadNode")),
                "state": raylet.get("state"),
                "cpus": total.get("CPU", 0),
                "gpus": total.get("GPU", 0),
                "cpu_percent": node.get("cpu"),
                "gpu_utilization": [g.get("utilizationGpu") for g in gpus],
            }
        )
    return rows


def job_rows(
    jobs: Sequence[Mapping[str, Any]], recent: int = DEFAULT_RECENT_JOBS
) -> list[dict[str, Any]]:
    """The running jobs and the `recent` latest others, newest first."""
    ordered = sorted(jobs or [], key=lambda j: j.get("start_time") or 0, reverse=True)
    active = [j for j in ordered if j.get("status") in ACTIVE_JOB_STATES]
    rest = [j for j in ordered if j.get("status") not in ACTIVE_JOB_STATES][:recent]
    rows = []
    for j in active + rest:
        start, end = j.get("start_time"), j.get("end_time")
        duration = ((end or time.time() * 1000) - start) / 1000 if start else None
        rows.append(
            {
                "id": j.get("submission_id") or j.get("job_id"),
                "status": j.get("status"),
                "entrypoint": j.get("entrypoint"),
                "duration_s": round(duration, 1) if duration is not None else None,
                "message": j.get("message") if j.get("status") == "FAILED" else None,
            }
        )
    return rows


def serve_rows(applications: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    apps = (applications or {}).get("applications") or {}
    for name, app in sorted(apps.items()):
        for dep_name, dep in sorted((app.get("deployments") or {}).items()):
            states = Counter(r.get("state") for r in dep.get("replicas") or [])
            rows.append(
                {
                    "app": name,
                    "app_status": app.get("status"),
                    "route_prefix": app.get("route_prefix"),
                    "deployment": dep_name,
                    "status": dep.get("status"),
                    "replicas": dict(sorted(states.items())),
                }
            )
    return rows


def ray_view(address: str, token: str | None, recent: int) -> dict[str, Any]:
    return {
        "ray_nodes": ray_node_rows(
            dashboard_get(address, "/nodes?view=summary", token)
        ),
        "jobs": job_rows(dashboard_get(address, "/api/jobs/", token), recent),
        "serve": serve_rows(dashboard_get(address, "/api/serve/applications/", token)),
    }


def gather(args: argparse.Namespace) -> dict[str, Any]:
    if args.address:
        view = ray_view(check_address(args.address), local_token(), args.recent)
        return {"target": args.address, **view}
    from raygpu.stack import ClusterAsleep, load_outputs, ray_access, stack_kubectl

    outputs = load_outputs(args.stack, args.outputs)
    with stack_kubectl(outputs) as kubectl:
        nodes = node_rows(kubectl.get_json("get", "nodes"))
        try:
            with ray_access(kubectl, outputs) as (url, token, _kubectl):
                view = {"state": "awake", **ray_view(url, token, args.recent)}
        except ClusterAsleep:
            view = {"state": "asleep", "ray_nodes": [], "jobs": [], "serve": []}
    pools = pool_rows(nodes)
    return {
        "target": f"stack {args.stack}",
        "pools": pools,
        "nodes": nodes,
        "cost": hourly_cost(pools),
        **view,
    }


# --------------------------------------------------------------------------- printing


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(c) for c in header]] + [
        ["-" if c is None else str(c) for c in r] for r in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in cells
    ]


def render_text(view: Mapping[str, Any]) -> str:
    out = [f"status of {view['target']}"]
    if view.get("state") == "asleep":
        out[0] += (
            ": asleep (`raygpu wake` brings the system pool and the Ray head back)"
        )
    if "pools" in view:
        out += ["", "node pools:"]
        out += _table(
            ("pool", "instance", "capacity", "nodes", "ready", "$/h"),
            [
                (
                    p["pool"],
                    p["instance_type"],
                    p["capacity_type"],
                    p["nodes"],
                    p["ready"],
                    f"{p['usd_hour']:.3f}" if p["priced"] else "unpriced",
                )
                for p in view["pools"]
            ],
        )
        c = view["cost"]
        note = " (spot prices are estimates)" if c["spot_is_estimate"] else ""
        out.append(
            f"cost now: ${c['total_usd_hour']:.3f}/h = nodes ${c['nodes_usd_hour']:.3f}"
            f" + control plane and NAT ${c['fixed_usd_hour']:.3f}{note}"
        )
        if c["unpriced_instance_types"]:
            out.append(
                "not in the price table: " + ", ".join(c["unpriced_instance_types"])
            )
    if view.get("state") == "asleep":
        return "\n".join(out)
    out += ["", "ray nodes:"]
    out += _table(
        ("ip", "head", "state", "CPUs", "GPUs", "CPU %", "GPU util %"),
        [
            (
                n["ip"],
                "yes" if n["head"] else "",
                n["state"],
                n["cpus"],
                n["gpus"],
                n["cpu_percent"],
                ",".join(str(u) for u in n["gpu_utilization"]) or None,
            )
            for n in view["ray_nodes"]
        ],
    )
    out += ["", "jobs:" if view["jobs"] else "jobs: none"]
    if view["jobs"]:
        out += _table(
            ("id", "status", "duration s", "entrypoint"),
            [
                (j["id"], j["status"], j["duration_s"], j["entrypoint"])
                for j in view["jobs"]
            ],
        )
        out += [
            f"  {j['id']}: {j['message'].strip().splitlines()[0][:200]}"
            for j in view["jobs"]
            if j["message"] and j["message"].strip()
        ]
    out += ["", "serve apps:" if view["serve"] else "serve apps: none"]
    if view["serve"]:
        out += _table(
            ("app", "status", "route", "deployment", "replicas"),
            [
                (
                    s["app"],
                    s["app_status"],
                    s["route_prefix"],
                    s["deployment"],
                    " ".join(f"{k}={v}" for k, v in s["replicas"].items()) or None,
                )
                for s in view["serve"]
            ],
        )
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_cluster_target(
        parser, "dashboard URL of a reachable Ray cluster, e.g. the local one"
    )
    parser.add_argument(
        "--recent",
        type=options.positive_int("--recent"),
        default=DEFAULT_RECENT_JOBS,
        help=f"finished jobs to list (default {DEFAULT_RECENT_JOBS})",
    )
    options.add_json(parser)


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    options.check_cluster_target(parser, args)


def run(args: argparse.Namespace) -> int:
    view = gather(args)
    print(json.dumps(view, indent=2) if args.json else render_text(view))
    return 0
