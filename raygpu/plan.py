"""Offline plan of a stack: the resource tree and its estimated hourly cost.

    raygpu plan --stack dev           # tree, cost table, outputs
    raygpu plan --stack prod --json   # one JSON object: resources, outputs, cost
    raygpu plan --stack dev --policy  # and the policy rules (exit 1 on a violation)

Runs the real Pulumi program under Pulumi's mock runtime with `Pulumi.<stack>.yaml`
(see raygpu/offline.py): no credentials, no Pulumi CLI, a few seconds. Costs come
from the resources the program registered (node groups, NAT gateways, the
cluster, KMS keys, disks) priced with the cloud's list prices (CLOUD_PRICES:
raygpu/instance_types.py, prices_gcp.py, prices_azure.py). "idle" puts every node
group at its minimum size, "full" at its maximum. Usage-based charges (NAT data
processing, storage and requests, logs, data transfer) are listed as excluded, and
an item without a price is named, not guessed.

`--policy` runs the security rules of raygpu/policy (the ones the CrossGuard pack
in infra/policy runs under `pulumi preview`) over the same resources and prints
one line per violation, naming the rule ID and the resource. Placeholders left in
the stack file (documentation addresses, example account IDs, example.com) are
warned about on stderr; `pulumi up` refuses them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pulumi

from raygpu import instance_types as it
from raygpu import options, plan_azure, policy
from raygpu import prices_azure as azure
from raygpu import prices_gcp as gcp
from raygpu.config import (
    BUDGET_ALERTS,
    ConfigError,
    load_config,
    placeholders,
    stack_file_values,
)
from raygpu.cost_items import item as _item
from raygpu.errors import UsageError
from raygpu.manifests import ManifestError
from raygpu.monitoring import footprint
from raygpu.monitoring import stack as monitoring_stack
from raygpu.names import NODE_ROLE_LABEL, SYSTEM_NODE_ROLE
from raygpu.offline import OfflineRun, mask_secrets, run_offline, stack_path

EXCLUDED = (
    "NAT gateway data processing ($0.045/GB in us-east-1)",
    "S3 storage, requests and KMS requests",
    "CloudWatch Logs ingestion and storage (flow logs, control-plane logs)",
    "data transfer out of AWS and across AZs",
    "load balancers created later by Kubernetes Services",
)
GCP_EXCLUDED = (
    f"Cloud NAT data processing (${gcp.NAT_USD_GIB}/GiB)",
    "GCS storage, operations and Cloud KMS operations",
    "Cloud Logging and Monitoring beyond the free allotment",
    "network egress and cross-zone traffic",
    "load balancers and persistent disks created later by Kubernetes",
)


def _aws_items(run: OfflineRun) -> tuple[list[dict[str, Any]], list[str]]:
    """The priced items of an AWS stack, and what could not be priced (nothing:
    the config only admits instance types of the price table)."""
    items: list[dict[str, Any]] = []
    for r in run.of_type("aws:eks/cluster:Cluster"):
        items.append(
            _item("EKS control plane", r["name"], it.EKS_CONTROL_PLANE_USD_HOUR, 1, 1)
        )
    for r in run.of_type("aws:ec2/natGateway:NatGateway"):
        items.append(_item("NAT gateway", r["name"], it.NAT_GATEWAY_USD_HOUR, 1, 1))
    for r in run.of_type("aws:ec2/eip:Eip"):
        items.append(
            _item("public IPv4 address", r["name"], it.PUBLIC_IPV4_USD_HOUR, 1, 1)
        )
    for r in run.of_type("aws:kms/key:Key"):
        unit = it.KMS_KEY_USD_MONTH / it.HOURS_PER_MONTH
        items.append(_item("KMS key", r["name"], unit, 1, 1))
    templates = {
        r["id"]: r for r in run.of_type("aws:ec2/launchTemplate:LaunchTemplate")
    }
    for r in run.of_type("aws:eks/nodeGroup:NodeGroup"):
        inputs = r["inputs"]
        scaling = inputs["scalingConfig"]
        lo, hi = int(scaling["minSize"]), int(scaling["maxSize"])
        spot = inputs.get("capacityType") == "SPOT"
        role = (inputs.get("labels") or {}).get(NODE_ROLE_LABEL)
        types = inputs["instanceTypes"]
        prices = {}
        for name in types:
            spec = it.spec(name)
            if spec is None:
                raise ConfigError(
                    "instanceTypes", f"{name!r} is missing from the price table"
                )
            prices[name] = spec.spot_usd_hour if spot else spec.on_demand_usd_hour
        dearest = max(prices, key=prices.get)
        kind = "spot estimate" if spot else "on-demand"
        note = f"{dearest} {kind}" + (
            f" (dearest of {', '.join(types)})" if len(types) > 1 else ""
        )
        items.append(
            _item(
                "node group instances", r["name"], prices[dearest], lo, hi, note, role
            )
        )
        template = templates.get(inputs.get("launchTemplate", {}).get("id"))
        if template is not None:
            for mapping in template["inputs"].get("blockDeviceMappings", []):
                ebs = mapping.get("ebs", {})
                gib = float(ebs.get("volumeSize", 0))
                items.append(
                    _item(
                        "node root volumes (gp3)",
                        r["name"],
                        gib * it.EBS_GP3_USD_GIB_MONTH / it.HOURS_PER_MONTH,
                        lo,
                        hi,
                        f"{gib:g} GiB each",
                        role,
                    )
                )
    for r in run.of_type("kubernetes:helm.sh/v3:Release"):
        gib = monitoring_stack.prometheus_volume_gib(r["inputs"])
        if gib:
            cost = footprint.storage_cost(gib)
            note = f"{gib} GiB; bills asleep too"
            items.append(
                _item("Prometheus volume (gp3)", r["name"], cost.usd_hour, 1, 1, note)
            )
    return items, []


def _gke_sizes(inputs: dict[str, Any]) -> tuple[int, int]:
    """(min, max) nodes of a GKE node pool over all its zones."""
    scaling = inputs.get("autoscaling") or {}
    if "totalMinNodeCount" in scaling:
        return int(scaling["totalMinNodeCount"]), int(scaling["totalMaxNodeCount"])
    zones = max(len(inputs.get("nodeLocations") or []), 1)
    if "minNodeCount" in scaling:
        return zones * int(scaling["minNodeCount"]), zones * int(
            scaling["maxNodeCount"]
        )
    count = zones * int(inputs.get("nodeCount") or inputs.get("initialNodeCount") or 0)
    return count, count


def _gcp_items(run: OfflineRun) -> tuple[list[dict[str, Any]], list[str]]:
    """The priced items of a Google Cloud stack, and the node pools that have no
    price in raygpu/prices_gcp.py (named, left out of the totals)."""
    items: list[dict[str, Any]] = []
    unpriced: list[str] = []
    for r in run.of_type("gcp:container/cluster:Cluster"):
        items.append(
            _item(
                "GKE cluster management fee",
                r["name"],
                gcp.GKE_CLUSTER_USD_HOUR,
                1,
                1,
                gcp.GKE_FREE_TIER_NOTE,
            )
        )
    for r in run.of_type("gcp:kms/cryptoKey:CryptoKey"):
        unit = gcp.KMS_KEY_VERSION_USD_MONTH / gcp.HOURS_PER_MONTH
        note = "per active key version; rotation adds versions"
        items.append(_item("Cloud KMS key", r["name"], unit, 1, 1, note))
    vms_idle = vms_full = 0
    for r in run.of_type("gcp:container/nodePool:NodePool"):
        inputs, node = r["inputs"], r["inputs"].get("nodeConfig") or {}
        lo, hi = _gke_sizes(inputs)
        vms_idle, vms_full = vms_idle + lo, vms_full + hi
        role = (node.get("labels") or {}).get(NODE_ROLE_LABEL)
        machine, spot = node.get("machineType", ""), bool(node.get("spot"))
        accels = node.get("guestAccelerators") or [{}]
        accel, count = accels[0].get("type"), int(accels[0].get("count") or 0)
        price, why = gcp.node_usd_hour(machine, accel, count, spot)
        what = machine + (f" + {count} x {accel}" if count else "")
        if price is None:
            unpriced.append(f"{r['name']} ({what}): {why}")
        else:
            kind = "spot, the day's snapshot" if spot else "on-demand"
            items.append(
                _item("node pool VMs", r["name"], price, lo, hi, f"{what} {kind}", role)
            )
        gib = float(node.get("diskSizeGb") or 0)
        unit = gib * gcp.PD_BALANCED_USD_GIB_MONTH / gcp.HOURS_PER_MONTH
        disk = f"{gib:g} GiB {node.get('diskType', 'pd-balanced')} each"
        items.append(_item("node boot disks", r["name"], unit, lo, hi, disk, role))
    for r in run.of_type("gcp:compute/routerNat:RouterNat"):
        idle, full = (min(n, gcp.NAT_MAX_VMS) for n in (vms_idle, vms_full))
        note = f"per VM using it, {gcp.NAT_MAX_VMS} at most"
        items.append(
            _item(
                "Cloud NAT gateway",
                r["name"],
                gcp.NAT_USD_HOUR_PER_VM,
                idle,
                full,
                note,
            )
        )
        items.append(
            _item(
                "Cloud NAT IP address",
                r["name"],
                gcp.NAT_IP_USD_HOUR,
                1,
                1,
                "AUTO_ONLY allocates at least one",
            )
        )
    return items, unpriced


@dataclass(frozen=True)
class CloudPrices:
    """How the plan prices one cloud: its items and where the prices come from."""

    items: Callable[[OfflineRun], tuple[list[dict[str, Any]], list[str]]]
    region: str
    date: str
    source: str
    spot: str  # how spot prices are made
    excluded: tuple[str, ...]
    # System nodes left asleep: AKS keeps a System pool at one node at least.
    asleep_system_nodes: int = 0


# One row per cloud; a new cloud adds its row (and its price module).
CLOUD_PRICES = {
    "aws": CloudPrices(
        _aws_items,
        it.PRICE_TABLE_REGION,
        it.PRICE_TABLE_DATE,
        it.PRICE_TABLE_SOURCE,
        f"spot = {it.SPOT_ESTIMATE_FRACTION:.0%} of on-demand, an estimate",
        EXCLUDED,
    ),
    "gcp": CloudPrices(
        _gcp_items,
        gcp.PRICE_TABLE_REGION,
        gcp.PRICE_TABLE_DATE,
        gcp.PRICE_TABLE_SOURCE,
        gcp.SPOT_NOTE,
        GCP_EXCLUDED,
    ),
    "azure": CloudPrices(
        plan_azure.azure_items,
        azure.PRICE_TABLE_REGION,
        azure.PRICE_TABLE_DATE,
        azure.PRICE_TABLE_SOURCE,
        azure.SPOT_NOTE,
        plan_azure.EXCLUDED,
        asleep_system_nodes=1,
    ),
}


def estimate_cost(
    run: OfflineRun,
    stack_region: str,
    system_awake_min: int | None = None,
    cloud: str = "aws",
) -> dict[str, Any]:
    """Itemised $/hour at idle (pools at min) and full scale (pools at max), and
    idle awake and asleep (the system pool at `system_awake_min` nodes, or none)."""
    prices = CLOUD_PRICES.get(cloud)
    if prices is None:
        raise UsageError(
            f"raygpu:cloud: the plan has no price table for {cloud!r} yet; it "
            f"prices {', '.join(CLOUD_PRICES)} (raygpu/plan.py CLOUD_PRICES)"
        )
    items, unpriced = prices.items(run)
    idle = round(sum(i["idle_usd_hour"] for i in items), 2)
    full = round(sum(i["full_usd_hour"] for i in items), 2)
    system = [i for i in items if i["pool_role"] == SYSTEM_NODE_ROLE]
    others = sum(i["idle_usd_hour"] for i in items if i not in system)
    asleep = others + sum(
        i["unit_usd_hour"] * prices.asleep_system_nodes for i in system
    )
    awake = others + sum(
        i["unit_usd_hour"]
        * (i["idle_count"] if system_awake_min is None else system_awake_min)
        for i in system
    )
    note = ""
    if stack_region != prices.region:
        note = (
            f"prices are for {prices.region}; the stack runs in "
            f"{stack_region}, where they are usually somewhat higher"
        )
    table = {
        "region": prices.region,
        "date": prices.date,
        "source": prices.source,
        "spot": prices.spot,
    }
    if cloud == "aws":
        table["spot_estimate_fraction"] = it.SPOT_ESTIMATE_FRACTION
    return {
        "currency": "USD",
        "cloud": cloud,
        "price_table": table,
        "stack_region": stack_region,
        "region_note": note,
        "items": items,
        "unpriced": unpriced,
        "idle_usd_hour": idle,
        "full_usd_hour": full,
        "awake_usd_hour": round(awake, 2),
        "asleep_usd_hour": round(asleep, 2),
        "asleep_system_nodes": prices.asleep_system_nodes,
        "idle_usd_month": round(idle * it.HOURS_PER_MONTH, 0),
        "full_usd_month": round(full * it.HOURS_PER_MONTH, 0),
        "budget_note": budget_note(run, idle * it.HOURS_PER_MONTH),
        "excluded": list(prices.excluded),
    }


ASLEEP_WORDS = (
    "the system pool and the Ray head at zero",
    "the Ray head at zero, the system pool at its one-node minimum",
)
AWS_BUDGET = "aws:budgets/budget:Budget"
GCP_BUDGET = "gcp:billing/budget:Budget"


def budget_note(run: OfflineRun, idle_usd_month: float) -> str | None:
    """A warning when the stack's budget alerts fire on its idle cost alone."""
    limits = [float(r["inputs"]["limitAmount"]) for r in run.of_type(AWS_BUDGET)]
    for r in run.of_type(GCP_BUDGET):
        amount = r["inputs"]["amount"]["specifiedAmount"]
        limits.append(int(amount["units"]) + int(amount.get("nanos", 0)) / 1e9)
    limits += plan_azure.budget_limits(run)
    for limit in limits:
        for kind, percent in BUDGET_ALERTS:
            threshold = limit * percent / 100
            if threshold <= idle_usd_month:
                return (
                    f"raygpu:budgetMonthlyUsd ({limit:,.0f}): its {kind.lower()} "
                    f"alert at {percent:g} % (${threshold:,.0f}) is at or below the "
                    f"idle cost (~${idle_usd_month:,.0f}/month), so it fires every "
                    "month with the GPU pools at zero; raise the budget"
                )
    return None


def plan(
    stack: str, config_path: str | None = None, *, check_policy: bool = False
) -> dict[str, Any]:
    run = run_offline(stack, config_path)
    region = str(run.outputs.get("region", ""))
    values = stack_file_values(config_path or stack_path(stack))
    cfg = load_config(stack, values)
    extra: dict[str, Any] = {
        "warnings": [
            f"{key}: {problem} (a placeholder; `pulumi up` refuses it)"
            for key, problem in placeholders(values)
        ]
    }
    if check_policy:
        report = policy.check(policy.resources_from_run(run))
        extra["policy"] = {**report.as_dict(), "lines": policy.report_lines(report)}
    return {
        "stack": stack,
        "resources": [
            {
                "type": r["type"],
                "name": r["name"],
                "parent": r["parent"],
                "inputs": mask_secrets(r["inputs"]),
            }
            for r in run.resources
        ],
        "outputs": run.public_outputs(),
        "asleep": cfg.asleep,
        "cost": estimate_cost(
            run, region, cfg.system_pool.min_size, getattr(cfg, "cloud", "aws")
        ),
        **extra,
    }


def render_text(result: dict[str, Any]) -> str:
    resources = result["resources"]
    children: dict[str | None, list[dict[str, Any]]] = {}
    for r in resources:
        children.setdefault(r["parent"], []).append(r)
    lines = [f"Stack {result['stack']}: {len(resources)} resources", ""]

    def walk(parent: str | None, depth: int) -> None:
        for r in sorted(children.get(parent, []), key=lambda x: (x["type"], x["name"])):
            lines.append(f"{'  ' * depth}{r['type']}  {r['name']}")
            if r["type"].startswith(("raygpu:", "pulumi:")):
                walk(r["name"], depth + 1)

    walk(None, 1)
    cost = result["cost"]
    table = cost["price_table"]
    lines += [
        "",
        f"Estimated cost, USD/hour (prices: {table['region']}, {table['date']}; "
        f"{table['spot']})",
        f"  {'item':<26} {'resource':<36} {'idle':>9} {'full':>9}  note",
    ]
    for i in cost["items"]:
        lines.append(
            f"  {i['item']:<26} {i['resource']:<36} "
            f"{i['idle_usd_hour']:>9.4f} {i['full_usd_hour']:>9.4f}  "
            f"{i['idle_count']:g}..{i['full_count']:g} x ${i['unit_usd_hour']:.4f}/h"
            + (f"; {i['note']}" if i["note"] else "")
        )
    lines += [
        f"  {'TOTAL':<26} {'':<36} {cost['idle_usd_hour']:>9.2f} "
        f"{cost['full_usd_hour']:>9.2f}",
        f"  idle ~ ${cost['idle_usd_month']:,.0f}/month; full scale ~ "
        f"${cost['full_usd_month']:,.0f}/month (730 h)",
    ]
    state = "asleep now" if result.get("asleep") else "awake now"
    lines.append(
        f"  idle awake ${cost['awake_usd_hour']:.2f}/h; asleep (`raygpu sleep`: "
        f"{ASLEEP_WORDS[cost['asleep_system_nodes'] > 0]}) "
        f"${cost['asleep_usd_hour']:.2f}/h"
        f"; {state}"
    )
    if cost["region_note"]:
        lines.append(f"  note: {cost['region_note']}")
    for unpriced in cost["unpriced"]:
        lines.append(f"  not priced (left out of the totals): {unpriced}")
    if cost["budget_note"]:
        lines.append(f"  warning: {cost['budget_note']}")
    lines.append("  not included: " + "; ".join(cost["excluded"]))
    lines += ["", "Outputs:"]
    for k, v in result["outputs"].items():
        lines.append(f"  {k} = {json.dumps(v)}")
    if "policy" in result:
        lines += ["", *result["policy"]["lines"]]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_stack(parser)
    options.add_config(parser)
    parser.add_argument(
        "--policy",
        action="store_true",
        help="also check the planned resources against the security rules "
        "(docs/security.md); exit 1 naming each violation's rule and resource",
    )
    options.add_json(parser)


def run(args: argparse.Namespace) -> int:
    try:
        result = plan(args.stack, args.config, check_policy=args.policy)
    except (ManifestError, pulumi.RunError) as exc:
        raise UsageError(f"the program rejected the stack: {exc}") from None
    for warning in result["warnings"]:
        print(f"raygpu plan: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=False))
    else:
        print(render_text(result))
    if args.policy and not result["policy"]["passed"]:
        return 1
    return 0
