"""EC2 instance types the stacks may use, with their size and an hourly price.

Price table
-----------
- Region: us-east-1 (US East, N. Virginia). Other regions differ (typically 0-30 %
  higher); `raygpu plan` says so when a stack runs elsewhere.
- Date: 2026-11-28 (the day the table was written down).
- Source: the AWS "Amazon EC2 On-Demand Pricing" page
  (https://aws.amazon.com/ec2/pricing/on-demand/), Linux, shared tenancy, and the
  service pricing pages named next to each constant below. The table was transcribed
  on a machine without internet access, so it was not re-fetched that day; g5.xlarge
  ($1.006/h) was cross-checked against a public June 2026 rate card. Refresh the
  numbers from the source before you use them for anything but planning.
- Spot: Spot prices move every few minutes per Availability Zone and are not a list
  price. `spot_usd_hour` is therefore an *estimate*: the on-demand price times
  `SPOT_ESTIMATE_FRACTION`, a planning figure (GPU spot in us-east-1 commonly sits
  at 30-50 % of on-demand). Check the Spot Instance pricing history for real values.

This module imports nothing from Pulumi: scripts and config validation use it.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICE_TABLE_REGION = "us-east-1"
PRICE_TABLE_DATE = "2026-11-28"
PRICE_TABLE_SOURCE = (
    "AWS EC2 On-Demand pricing page (aws.amazon.com/ec2/pricing/on-demand/), "
    "Linux, shared tenancy; EKS, VPC (NAT gateway, public IPv4), EBS and KMS "
    "pricing pages for the fixed items"
)
SPOT_ESTIMATE_FRACTION = 0.40

HOURS_PER_MONTH = 730.0
# https://aws.amazon.com/eks/pricing/ : standard-support cluster, per hour.
EKS_CONTROL_PLANE_USD_HOUR = 0.10
# https://aws.amazon.com/vpc/pricing/ : NAT gateway, per hour (data processed is
# $0.045/GB on top and depends on traffic, so the plan leaves it out).
NAT_GATEWAY_USD_HOUR = 0.045
# https://aws.amazon.com/vpc/pricing/ : every public IPv4 address (the NAT's EIP).
PUBLIC_IPV4_USD_HOUR = 0.005
# https://aws.amazon.com/ebs/pricing/ : gp3, per GiB-month (3000 IOPS/125 MB/s free).
EBS_GP3_USD_GIB_MONTH = 0.08
# https://aws.amazon.com/kms/pricing/ : customer managed key, per month.
KMS_KEY_USD_MONTH = 1.00


@dataclass(frozen=True)
class InstanceSpec:
    vcpus: int
    memory_gib: float
    gpus: int
    gpu_model: str | None
    on_demand_usd_hour: float
    spot_usd_hour: float

    @property
    def is_gpu(self) -> bool:
        return self.gpus > 0


def _spec(
    vcpus: int, memory_gib: float, gpus: int, gpu_model: str | None, on_demand: float
) -> InstanceSpec:
    return InstanceSpec(
        vcpus=vcpus,
        memory_gib=memory_gib,
        gpus=gpus,
        gpu_model=gpu_model,
        on_demand_usd_hour=on_demand,
        spot_usd_hour=round(on_demand * SPOT_ESTIMATE_FRACTION, 4),
    )


INSTANCE_TYPES: dict[str, InstanceSpec] = {
    # --- CPU (system pool: operators, the Ray head) ---
    "m6i.large": _spec(2, 8, 0, None, 0.096),
    "m6i.xlarge": _spec(4, 16, 0, None, 0.192),
    "m6i.2xlarge": _spec(8, 32, 0, None, 0.384),
    "m6i.4xlarge": _spec(16, 64, 0, None, 0.768),
    "m6a.large": _spec(2, 8, 0, None, 0.0864),
    "m6a.xlarge": _spec(4, 16, 0, None, 0.1728),
    "m6a.2xlarge": _spec(8, 32, 0, None, 0.3456),
    "m7i.large": _spec(2, 8, 0, None, 0.1008),
    "m7i.xlarge": _spec(4, 16, 0, None, 0.2016),
    "m7i.2xlarge": _spec(8, 32, 0, None, 0.4032),
    "m5.large": _spec(2, 8, 0, None, 0.096),
    "m5.xlarge": _spec(4, 16, 0, None, 0.192),
    "m5.2xlarge": _spec(8, 32, 0, None, 0.384),
    # --- NVIDIA T4 ---
    "g4dn.xlarge": _spec(4, 16, 1, "T4", 0.526),
    "g4dn.2xlarge": _spec(8, 32, 1, "T4", 0.752),
    "g4dn.4xlarge": _spec(16, 64, 1, "T4", 1.204),
    "g4dn.12xlarge": _spec(48, 192, 4, "T4", 3.912),
    # --- NVIDIA A10G ---
    "g5.xlarge": _spec(4, 16, 1, "A10G", 1.006),
    "g5.2xlarge": _spec(8, 32, 1, "A10G", 1.212),
    "g5.4xlarge": _spec(16, 64, 1, "A10G", 1.624),
    "g5.8xlarge": _spec(32, 128, 1, "A10G", 2.448),
    "g5.12xlarge": _spec(48, 192, 4, "A10G", 5.672),
    "g5.16xlarge": _spec(64, 256, 1, "A10G", 4.096),
    "g5.24xlarge": _spec(96, 384, 4, "A10G", 8.144),
    "g5.48xlarge": _spec(192, 768, 8, "A10G", 16.288),
    # --- NVIDIA L4 ---
    "g6.xlarge": _spec(4, 16, 1, "L4", 0.8048),
    "g6.2xlarge": _spec(8, 32, 1, "L4", 0.9776),
    "g6.4xlarge": _spec(16, 64, 1, "L4", 1.3232),
    "g6.8xlarge": _spec(32, 128, 1, "L4", 2.0144),
    "g6.12xlarge": _spec(48, 192, 4, "L4", 4.6016),
    "g6.16xlarge": _spec(64, 256, 1, "L4", 3.3968),
    "g6.24xlarge": _spec(96, 384, 4, "L4", 6.6752),
    "g6.48xlarge": _spec(192, 768, 8, "L4", 13.3504),
    # --- NVIDIA L40S ---
    "g6e.xlarge": _spec(4, 32, 1, "L40S", 1.861),
    "g6e.2xlarge": _spec(8, 64, 1, "L40S", 2.24208),
    "g6e.4xlarge": _spec(16, 128, 1, "L40S", 3.00424),
    "g6e.12xlarge": _spec(48, 384, 4, "L40S", 10.49264),
}


# Memory of one GPU by `gpu_model`, in GiB as NVIDIA's data sheets give it (what a
# process can allocate is a little less). The names are also Ray's accelerator types
# (ray.util.accelerators), which Serve LLM's `accelerator_type` takes. A100-80G and
# H100 have no instance type above (p4de, p5) but are sized for in docs/serving-llm.md.
GPU_MEMORY_GIB: dict[str, int] = {
    "T4": 16,
    "A10G": 24,
    "L4": 24,
    "L40S": 48,
    "A100-40G": 40,
    "A100-80G": 80,
    "H100": 80,
}


def gpu_memory_gib(gpu_model: str | None) -> int | None:
    """Memory of one GPU of `gpu_model`, or None when the table does not know it."""
    return GPU_MEMORY_GIB.get(gpu_model or "")


def is_known(name: str) -> bool:
    return name in INSTANCE_TYPES


def is_gpu_instance(name: str) -> bool:
    """True for a known instance type with at least one GPU (never raises)."""
    found = INSTANCE_TYPES.get(name)
    return found is not None and found.is_gpu


def spec(name: str) -> InstanceSpec | None:
    """The table entry for `name`, or None when the table does not know it."""
    return INSTANCE_TYPES.get(name)


def gpu_instance_names() -> list[str]:
    return sorted(n for n, s in INSTANCE_TYPES.items() if s.is_gpu)


def cpu_instance_names() -> list[str]:
    return sorted(n for n, s in INSTANCE_TYPES.items() if not s.is_gpu)
