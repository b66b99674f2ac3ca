"""EC2 vCPU quotas a stack needs at full scale, and where their values come from.

EC2 limits running instances by vCPUs per instance family and purchase option
(Service Quotas, service code `ec2`). A stack at full scale runs every pool at its
maximum size; `needed` adds up the vCPUs per quota (the largest instance type of a
pool, since the group may launch any of them). `QuotaSource` is the seam between
the check and the Service Quotas API: `ServiceQuotas` asks AWS, tests pass a
mapping.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from raygpu import instance_types

SERVICE = "ec2"


@dataclass(frozen=True)
class Quota:
    code: str
    name: str


# (instance family class, capacity type) -> the vCPU quota that covers it.
QUOTAS = {
    ("standard", "ON_DEMAND"): Quota(
        "L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"
    ),
    ("standard", "SPOT"): Quota(
        "L-34B43A08", "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"
    ),
    ("G", "ON_DEMAND"): Quota("L-DB2E81BA", "Running On-Demand G and VT instances"),
    ("G", "SPOT"): Quota("L-3819A6DF", "All G and VT Spot Instance Requests"),
    ("P", "ON_DEMAND"): Quota("L-417A185B", "Running On-Demand P instances"),
    ("P", "SPOT"): Quota("L-7212CCBC", "All P Spot Instance Requests"),
}
STANDARD_FAMILIES = tuple("acdhimrtz")


def family_class(instance_type: str) -> str:
    """'g6.xlarge' -> 'G' (G and VT share a quota), 'm6i.large' -> 'standard'."""
    family = instance_type.split(".")[0].lower()
    if family.startswith("vt") or family.startswith("g"):
        return "G"
    if family.startswith("p"):
        return "P"
    if family[0] in STANDARD_FAMILIES:
        return "standard"
    raise ValueError(f"{instance_type}: no vCPU quota known for this family")


def _largest_vcpus(types: Iterable[str]) -> int:
    specs = [instance_types.spec(t) for t in types]
    return max(s.vcpus for s in specs if s is not None)


def needed(cfg: Any) -> dict[Quota, int]:
    """vCPUs per quota with every pool of `cfg` (a StackConfig) at its max size."""
    pools = [(cfg.system_pool, "ON_DEMAND")] + [
        (p, p.capacity_type) for p in cfg.gpu_pools
    ]
    totals: dict[Quota, int] = {}
    for pool, capacity in pools:
        classes = {family_class(t) for t in pool.instance_types}
        for cls in classes:
            quota = QUOTAS[(cls, capacity)]
            types = [t for t in pool.instance_types if family_class(t) == cls]
            totals[quota] = totals.get(quota, 0) + pool.max_size * _largest_vcpus(types)
    return totals


class QuotaSource(Protocol):
    def value(self, quota: Quota) -> float | None:
        """The account's current value of `quota` in the region; None if unknown."""


class ServiceQuotas:
    """Quota values from the Service Quotas API (the applied value, else AWS's
    default for the account)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def value(self, quota: Quota) -> float | None:
        from botocore.exceptions import ClientError

        for call in (
            self.client.get_service_quota,
            self.client.get_aws_default_service_quota,
        ):
            try:
                found = call(ServiceCode=SERVICE, QuotaCode=quota.code)
            except ClientError as exc:
                if (
                    exc.response.get("Error", {}).get("Code")
                    == "NoSuchResourceException"
                ):
                    continue
                raise
            return float(found["Quota"]["Value"])
        return None
