"""Google Cloud list prices the plan uses for a GCP stack, each with its source.

Price table
-----------
- Region: us-central1 (Iowa). Other regions differ; `raygpu plan` says so when a
  stack runs elsewhere.
- Date seen: 2026-12-02 (the day each source below was read).
- Machines and GPUs: SkyPilot's catalog of Google's Cloud Billing Catalog SKUs,
  `catalogs/v8/gcp/vms.csv` in github.com/skypilot-org/skypilot-catalog (commit
  8427bbff988abdd050a9f51addd314ef31cb4e85), the us-central1 rows. Google's own
  cloud.google.com/compute/vm-instance-pricing and /compute/gpus-pricing pages
  could not be read for these numbers (the search index holds their prose, not the
  tables). The catalog prices an accelerator-optimized or N1 machine without its
  GPUs and each GPU on its own row, as Google bills them, so a node here is the
  machine's vCPU and memory plus `count` GPUs: g2-standard-4 = 0.14679 + 1 L4
  (0.56004) = $0.70683/h, which is the figure Google lists for g2-standard-4.
- Spot: Google changes Spot prices up to once a day (cloud.google.com/spot-vms/
  pricing); the catalog's SpotPrice column is a snapshot, so a spot figure here is
  an estimate of the day, not a list price.
- A price not found is None, with the reason; the plan names such a node and
  leaves it out of the totals rather than guess it.

This module imports nothing from Pulumi.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICE_TABLE_REGION = "us-central1"
PRICE_TABLE_DATE = "2026-12-02"
CATALOG = (
    "github.com/skypilot-org/skypilot-catalog catalogs/v8/gcp/vms.csv "
    "(commit 8427bbff), Cloud Billing Catalog SKUs, us-central1"
)
PRICE_TABLE_SOURCE = (
    f"machines and GPUs: {CATALOG}; GKE: cloud.google.com/kubernetes-engine/"
    "pricing; Cloud NAT: cloud.google.com/nat/pricing; Cloud KMS: "
    "cloud.google.com/kms/pricing; pd-balanced: see PD_BALANCED_SOURCE"
)
SPOT_NOTE = "spot = the catalog's Spot snapshot (Google moves it up to daily)"


@dataclass(frozen=True)
class Rate:
    """USD per hour on demand and as Spot; None where no price was found."""

    on_demand: float | None
    spot: float | None
    source: str = CATALOG

    def usd_hour(self, spot: bool) -> float | None:
        return self.spot if spot else self.on_demand


def _not_found(what: str) -> Rate:
    return Rate(None, None, f"not found: {what} was not read from the catalog")


# vCPU and memory of a machine type (GPUs apart), us-central1, from CATALOG's rows.
MACHINE_USD_HOUR: dict[str, Rate] = {
    "e2-standard-4": Rate(0.13402, 0.06188),
    "e2-standard-8": Rate(0.26805, 0.12376),
    "n2-standard-4": _not_found("n2-standard-4"),
    "n2-standard-8": _not_found("n2-standard-8"),
    "n1-standard-4": Rate(0.19, 0.05802),
    # n1-standard-8's us-central1 row was not read; N1 is priced per vCPU and GiB,
    # and the rows read agree (n1-standard-16 = 4 x n1-standard-4 = $0.76/h).
    "n1-standard-8": Rate(0.38, None, f"{CATALOG}: 2 x n1-standard-4, spot not read"),
    "n1-standard-16": Rate(0.76, 0.2321),
    "g2-standard-4": Rate(0.14679, 0.05874),
    "g2-standard-8": Rate(0.29358, 0.11747),
    "g2-standard-12": Rate(0.44038, 0.17621),
    "g2-standard-16": Rate(0.58717, 0.23494),
    "g2-standard-24": Rate(0.88075, 0.35242),
    # Read from the us-west1 row; us-west1 equals us-central1 for every G2 type read.
    "g2-standard-48": Rate(1.7615, 0.70483, f"{CATALOG} (us-west1 row)"),
    "a2-highgpu-1g": Rate(0.73948, 0.36975),
    "a2-highgpu-2g": Rate(1.47895, 0.7395),
    "a2-ultragpu-1g": Rate(1.09962, 0.54978),
    "a3-highgpu-8g": _not_found("a3-highgpu-8g"),
}

# One GPU by GKE accelerator type, us-central1, from CATALOG's accelerator rows.
GPU_USD_HOUR: dict[str, Rate] = {
    "nvidia-l4": Rate(0.56004, 0.2231),
    "nvidia-tesla-t4": Rate(0.35, 0.175),
    "nvidia-tesla-a100": Rate(2.93391, 1.4341),
    "nvidia-a100-80gb": _not_found("the A100 80GB accelerator row"),
    "nvidia-h100-80gb": _not_found("the H100 80GB accelerator row"),
}

HOURS_PER_MONTH = 730.0
# cloud.google.com/kubernetes-engine/pricing: $0.10 per cluster per hour. The
# free tier's $74.40 monthly credit per billing account applies to zonal and
# Autopilot clusters only; the stack's cluster is regional, so it pays the fee.
GKE_CLUSTER_USD_HOUR = 0.10
GKE_FREE_TIER_NOTE = (
    "GKE's free tier ($74.40/month per billing account) covers zonal and "
    "Autopilot clusters only; this regional cluster pays the $0.10/h fee"
)
# cloud.google.com/nat/pricing (Public NAT): $0.0014 per hour per VM that uses
# the gateway, up to 32 VMs ($0.044/h above), $0.005/h per NAT IP address, and
# $0.045 per GiB processed (traffic, left out of the plan).
NAT_USD_HOUR_PER_VM = 0.0014
NAT_MAX_VMS = 32
NAT_IP_USD_HOUR = 0.005
NAT_USD_GIB = 0.045
# cloud.google.com/kms/pricing: an active SOFTWARE key version, per month. A key
# that rotates keeps its earlier versions active (and billed) until destroyed.
KMS_KEY_VERSION_USD_MONTH = 0.06
# pd-balanced per GiB-month: Google's disk pricing page could not be read for it;
# this is the figure c3x.dev's "GCP persistent disk types cost" article gives.
PD_BALANCED_USD_GIB_MONTH = 0.10
PD_BALANCED_SOURCE = "c3x.dev/blog/gcp-persistent-disk-types-cost (secondary)"


def node_usd_hour(
    machine_type: str, accelerator: str | None, count: int, spot: bool
) -> tuple[float | None, str]:
    """(USD/hour of one node, or None; why, when None)."""
    machine = MACHINE_USD_HOUR.get(machine_type)
    if machine is None:
        return None, f"{machine_type} is not in raygpu/prices_gcp.py"
    price = machine.usd_hour(spot)
    if price is None:
        return None, f"{machine_type}: {machine.source}"
    if accelerator and count:
        gpu = GPU_USD_HOUR.get(accelerator)
        gpu_price = gpu.usd_hour(spot) if gpu else None
        if gpu_price is None:
            why = gpu.source if gpu else "not in raygpu/prices_gcp.py"
            return None, f"{accelerator}: {why}"
        price += count * gpu_price
    return price, ""
