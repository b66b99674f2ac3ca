"""Azure list prices the plan uses for an Azure stack, each with its source.

Price table
-----------
- Region: eastus2 (the example stack's). Other regions differ; `raygpu plan`
  says so when a stack runs elsewhere.
- Date seen: 2026-12-02 (the day each source below was read).
- VM sizes: SkyPilot's catalog of the Azure Retail Prices API,
  `catalogs/v6/azure/vms.csv` in github.com/skypilot-org/skypilot-catalog (commit
  098741e70562f65d7af1cceb81e33b284f742604), the eastus2 rows: pay-as-you-go
  Linux (`Price`) and Spot (`SpotPrice`). Azure's own pricing pages could not be
  read for the tables (the search index holds their prose, not the numbers).
  A GPU size's price includes its GPUs: Azure bills the VM size whole.
- Spot: Azure moves Spot prices with capacity; the catalog's column is a
  snapshot, so a Spot figure here is an estimate of the day. The stack's Spot
  pools bid up to the pay-as-you-go price (spotMaxPrice -1), so a node never
  costs more than that.
- AKS: the stack's cluster sets no SKU tier, so it runs on AKS's Free tier
  (no control-plane fee, no financially backed SLA); the Standard tier is
  $0.10 per cluster-hour.
- A price not found is None, with the reason; the plan names such an item and
  leaves it out of the totals rather than guess it.

This module imports nothing from Pulumi.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICE_TABLE_REGION = "eastus2"
PRICE_TABLE_DATE = "2026-12-02"
CATALOG = (
    "github.com/skypilot-org/skypilot-catalog catalogs/v6/azure/vms.csv "
    "(commit 098741e7), Azure Retail Prices API, eastus2"
)
# Secondary: c3x.dev's Azure resource pages quote Azure's list prices; Azure's
# own NAT gateway and IP address pages could not be read for the numbers.
NAT_SOURCE = "c3x.dev/resources/azure/azurerm_nat_gateway (secondary)"
PUBLIC_IP_SOURCE = "c3x.dev/resources/azure/azurerm_public_ip (secondary)"
AKS_SOURCE = "azure.microsoft.com/pricing/details/kubernetes-service/"
PRICE_TABLE_SOURCE = (
    f"VM sizes: {CATALOG}; AKS tiers: {AKS_SOURCE}; NAT gateway: {NAT_SOURCE}; "
    f"public IP: {PUBLIC_IP_SOURCE}"
)
SPOT_NOTE = "spot = the catalog's Spot snapshot (Azure moves it with capacity)"


@dataclass(frozen=True)
class Rate:
    """USD per hour pay-as-you-go and as Spot; None where no price was found."""

    on_demand: float | None
    spot: float | None
    source: str = CATALOG

    def usd_hour(self, spot: bool) -> float | None:
        return self.spot if spot else self.on_demand


# D-series v5 is priced per vCPU: the catalog's eastus2 D8s_v5 (0.384) and
# D96s_v5 (4.608) rows agree, so the sizes whose rows were not read are the
# 8-vCPU row scaled; the system pool runs pay-as-you-go only (no Spot read).
_D8S = f"{CATALOG}: the Standard_D8s_v5 row scaled per vCPU"
_D8AS = f"{CATALOG}: the Standard_D8as_v5 row scaled per vCPU"
# Every size of raygpu/config/azure_pools.py VM_SIZES, eastus2.
VM_USD_HOUR: dict[str, Rate] = {
    "Standard_D2s_v5": Rate(0.096, None, _D8S),
    "Standard_D4s_v5": Rate(0.192, None, _D8S),
    "Standard_D8s_v5": Rate(0.384, 0.04992),
    "Standard_D16s_v5": Rate(0.768, None, _D8S),
    "Standard_D4as_v5": Rate(0.172, None, _D8AS),
    "Standard_D8as_v5": Rate(0.344, 0.047231),
    "Standard_NC4as_T4_v3": Rate(0.526, 0.05786),
    "Standard_NC8as_T4_v3": Rate(0.752, 0.08272),
    "Standard_NC16as_T4_v3": Rate(1.204, 0.13244),
    "Standard_NC64as_T4_v3": Rate(4.352, 0.47872),
    "Standard_NV36ads_A10_v5": Rate(3.2, 0.8),
    "Standard_NV72ads_A10_v5": Rate(6.52, 1.63),
    "Standard_NC24ads_A100_v4": Rate(3.673, 0.47749),
    "Standard_NC48ads_A100_v4": Rate(7.346, 0.95498),
    "Standard_NC96ads_A100_v4": Rate(14.692, 1.90996),
}

HOURS_PER_MONTH = 730.0
# AKS_SOURCE: the Free tier has no cluster fee; Standard (uptime SLA, more
# nodes) is $0.10 per cluster per hour. The stack's ManagedCluster sets no sku,
# which ARM takes as Free.
AKS_TIER_USD_HOUR = {"Free": 0.0, "Standard": 0.10}
AKS_DEFAULT_TIER = "Free"
# NAT_SOURCE: a Standard NAT gateway is $0.045 per hour and $0.045 per GB
# processed (traffic, left out of the plan).
NAT_GATEWAY_USD_HOUR = 0.045
NAT_USD_GB = 0.045
# PUBLIC_IP_SOURCE: a Standard public IPv4 address, $0.005 per hour, attached
# or not.
PUBLIC_IP_USD_HOUR = 0.005
# Managed OS disks bill by the Premium SSD tier that holds their size (a 50 GiB
# disk as a P6 of 64 GiB, 200 GiB as a P15 of 256 GiB); no source read gave
# the tiers' eastus2 prices, so the plan names the disks without a price.
PREMIUM_SSD_TIERS_GIB = (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
DISK_NOT_FOUND = (
    "Premium SSD tier prices were not found (azure.microsoft.com/pricing/"
    "details/managed-disks/ could not be read for them)"
)


def vm_usd_hour(vm_size: str, spot: bool) -> tuple[float | None, str]:
    """(USD/hour of one node of `vm_size`, or None; why, when None)."""
    rate = VM_USD_HOUR.get(vm_size)
    if rate is None:
        return None, f"{vm_size} is not in raygpu/prices_azure.py"
    price = rate.usd_hour(spot)
    if price is None:
        kind = "Spot" if spot else "pay-as-you-go"
        return None, f"{vm_size}: no {kind} price read ({rate.source})"
    return price, ""


def disk_tier_gib(size_gib: float) -> int | None:
    """The Premium SSD tier (GiB) a managed disk of `size_gib` is billed as."""
    return next((t for t in PREMIUM_SSD_TIERS_GIB if t >= size_gib), None)
