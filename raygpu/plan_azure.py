"""The priced items of an Azure stack for `raygpu plan` (its row of
raygpu/plan.py CLOUD_PRICES), from the resources the program registered and the
list prices of raygpu/prices_azure.py.

Node pools: the cluster's system pool (its agentPoolProfiles) and one AgentPool
per GPU pool, at their autoscaler minimum (idle) and maximum (full); each
node's managed OS disk is named per pool, unpriced (prices_azure.DISK_NOT_FOUND).
"""

from __future__ import annotations

from typing import Any

from raygpu import prices_azure as az
from raygpu.cost_items import item
from raygpu.names import NODE_ROLE_LABEL

CLUSTER = "azure-native:containerservice:ManagedCluster"
AGENT_POOL = "azure-native:containerservice:AgentPool"
NAT_GATEWAY = "azure-native:network:NatGateway"
PUBLIC_IP = "azure-native:network:PublicIPAddress"
BUDGET = "azure-native:consumption:Budget"
EXCLUDED = (
    f"NAT gateway data processing (${az.NAT_USD_GB}/GB)",
    "storage account capacity, transactions and data transfer",
    "Azure Monitor and Log Analytics ingestion",
    "bandwidth out of Azure and across zones",
    "load balancers, public IPs and disks created later by Kubernetes",
)


def _pools(run) -> list[tuple[str, dict[str, Any]]]:
    """(resource name, pool inputs) of every node pool of the stack."""
    pools = []
    for r in run.of_type(CLUSTER):
        for profile in r["inputs"].get("agentPoolProfiles") or []:
            pools.append((f"{r['name']}/{profile.get('name')}", profile))
    pools += [(r["name"], r["inputs"]) for r in run.of_type(AGENT_POOL)]
    return pools


def _pool_items(name: str, pool: dict[str, Any], unpriced: list[str]) -> list[dict]:
    lo, hi = int(pool.get("minCount") or 0), int(pool.get("maxCount") or 0)
    if not pool.get("enableAutoScaling"):
        lo = hi = int(pool.get("count") or 0)
    role = (pool.get("nodeLabels") or {}).get(NODE_ROLE_LABEL)
    size, spot = pool.get("vmSize", ""), pool.get("scaleSetPriority") == "Spot"
    price, why = az.vm_usd_hour(size, spot)
    items = []
    if price is None:
        unpriced.append(f"{name} ({size}): {why}")
    else:
        kind = "spot, the day's snapshot" if spot else "pay-as-you-go"
        items.append(item("node pool VMs", name, price, lo, hi, f"{size} {kind}", role))
    gib = float(pool.get("osDiskSizeGB") or 0)
    if gib:
        tier = az.disk_tier_gib(gib)
        unpriced.append(
            f"{name}: {lo}..{hi} managed OS disks of {gib:g} GiB (billed as the "
            f"{tier} GiB Premium SSD tier): {az.DISK_NOT_FOUND}"
        )
    return items


def azure_items(run) -> tuple[list[dict[str, Any]], list[str]]:
    """The priced items of an Azure stack, and what has no price (named, left
    out of the totals)."""
    items: list[dict[str, Any]] = []
    unpriced: list[str] = []
    for r in run.of_type(CLUSTER):
        tier = (r["inputs"].get("sku") or {}).get("tier") or az.AKS_DEFAULT_TIER
        fee = az.AKS_TIER_USD_HOUR.get(tier)
        if fee is None:
            unpriced.append(f"{r['name']}: AKS tier {tier!r} has no price here")
        else:
            note = f"AKS {tier} tier" + (
                " (no SLA; Standard is $0.10/h)" if tier == "Free" else ""
            )
            items.append(item("AKS control plane", r["name"], fee, 1, 1, note))
    for name, pool in _pools(run):
        items += _pool_items(name, pool, unpriced)
    for r in run.of_type(NAT_GATEWAY):
        unit = az.NAT_GATEWAY_USD_HOUR
        items.append(item("NAT gateway", r["name"], unit, 1, 1, "Standard"))
    for r in run.of_type(PUBLIC_IP):
        unit = az.PUBLIC_IP_USD_HOUR
        items.append(item("public IPv4 address", r["name"], unit, 1, 1, "Standard"))
    return items, unpriced


def budget_limits(run) -> list[float]:
    """The monthly amounts of the stack's consumption budgets."""
    return [float(r["inputs"]["amount"]) for r in run.of_type(BUDGET)]
