"""The stack config of a Google Cloud stack (`raygpu:cloud: gcp`).

Its own keys (`gcp:project`, `gcp:region`, the zones, the VPC's ranges, GKE, the
node pools, the billing account) are declared here; the keys that mean the same on
every cloud (the Ray layer, the buckets' lifecycle, the budget) are the AWS model's
own fields and validators, carried over as they are (raygpu.config.cloud_base), so
each is still declared once. The properties the Kubernetes layer reads
(`name_prefix`, `system_sizes`, ...) are the AWS model's too.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, ValidationInfo, field_validator

from raygpu import versions
from raygpu.config.cloud_base import (
    CloudKeys,
    private_range,
    ranges_apart,
    with_shared_fields,
)
from raygpu.config.fields import (
    EndpointCidr,
    Entries,
    listing,
    matching,
    one_of,
    several,
)
from raygpu.config.gcp_pools import GcpGpuPoolConfig, GcpSystemPoolConfig
from raygpu.config.model import MAX_GPU_POOLS, _K8sVersion
from raygpu.names import GCP_PROJECT_LABEL, GCP_STACK_LABEL

CLOUD = "gcp"
PROJECT_KEY = "gcp:project"
REGION_KEY = "gcp:region"
PROVIDER_KEYS = (PROJECT_KEY, REGION_KEY)
# GKE's control plane takes a /28 of its own for a private cluster.
MASTER_PREFIX = 28
RELEASE_CHANNELS = ("STABLE", "REGULAR", "RAPID")
MAX_ZONES = 4

_Project = matching(
    r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$",
    "a Google Cloud project ID like my-project-123 (6-30 characters)",
)
_Region = matching(r"^[a-z]+-[a-z]+\d+$", "a Google Cloud region like us-central1")
_Zone = matching(r"^[a-z]+-[a-z]+\d+-[a-z]$", "a zone like us-central1-a")
_Zones = listing(_Zone, Entries(1, MAX_ZONES))
_BillingAccount = matching(
    r"^[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}$",
    "a billing account ID like 012345-6789AB-CDEF01",
)
_GpuPools = Annotated[tuple[GcpGpuPoolConfig, ...], Entries(1, MAX_GPU_POOLS)]


# The ranges GKE's VPC-native networking needs: nodes, pods, services, control plane.
_RANGES = ("subnet_cidr", "pods_cidr", "services_cidr", "master_cidr")


class _GcpKeys(CloudKeys):
    """The keys of a Google Cloud stack that AWS stacks do not have."""

    cloud: one_of(CLOUD) = Field(
        description="The cloud of the stack: `aws` (the default), `gcp` or `azure`"
    )
    gcp_project: _Project = Field(
        alias=PROJECT_KEY,
        description="Google Cloud project of every resource",
        json_schema_extra={"why": "set it with `pulumi config set gcp:project`"},
    )
    region: _Region = Field(
        alias=REGION_KEY,
        description="Google Cloud region of every resource (a regional cluster)",
        json_schema_extra={"why": "set it with `pulumi config set gcp:region`"},
    )
    gcp_zones: _Zones = Field(
        description="Zones of the region the node pools span (GPU types are zonal: "
        "list zones that offer the pools' accelerators)",
    )

    # ---- network
    subnet_cidr: private_range((16, 24)) = Field(
        "10.10.0.0/20", description="The subnet's primary range (node addresses)"
    )
    pods_cidr: private_range((12, 21)) = Field(
        "10.16.0.0/14",
        description="The subnet's secondary range for pods (VPC-native)",
    )
    services_cidr: private_range((16, 27)) = Field(
        "10.20.0.0/20",
        description="The subnet's secondary range for Services",
    )
    master_cidr: private_range((MASTER_PREFIX, MASTER_PREFIX)) = Field(
        "172.16.0.0/28",
        description="The /28 of GKE's private control plane; overlaps no other range",
    )
    master_authorized_cidrs: listing(EndpointCidr) = Field(
        (),
        description="Networks that may reach the cluster's public endpoint (master "
        "authorized networks): public ones /24 or longer, private ones /8 or "
        "longer; empty: private endpoint only",
    )

    # ---- cluster
    release_channel: one_of(*RELEASE_CHANNELS) = Field(
        "REGULAR",
        description="GKE release channel: GKE upgrades the cluster within it",
    )
    cluster_version: _K8sVersion = Field(
        versions.KUBERNETES_VERSION,
        description="Minimum GKE Kubernetes minor (min_master_version; "
        "raygpu/versions.py)",
    )
    system_pool: GcpSystemPoolConfig = Field(
        default_factory=GcpSystemPoolConfig,
        description="CPU node pool of the operators and the Ray head (no taint)",
    )
    gpu_pools: _GpuPools = Field(description="GPU node pools, one per entry")

    # ---- cost guard
    billing_account: _BillingAccount = Field(
        description="The Cloud Billing account the budget is created on",
        json_schema_extra={"why": "a GCP budget belongs to a billing account"},
    )

    @field_validator("gcp_zones")
    @classmethod
    def _zones_of_region(cls, zones: tuple[str, ...], info: ValidationInfo) -> Any:
        region = info.data.get("region")
        problems = [
            ((i,), f"{zone} is not a zone of {REGION_KEY} {region}")
            for i, zone in enumerate(zones)
            if region and zone.rpartition("-")[0] != region
        ]
        if problems:
            raise several(problems)
        return zones

    _ranges_apart = ranges_apart(_RANGES, *_RANGES[1:])

    @property
    def labels(self) -> dict[str, str]:
        """GCP labels: lowercase keys without ':' (the AWS tags' names otherwise)."""
        return {GCP_STACK_LABEL: self.stack, GCP_PROJECT_LABEL: self.project}

    @property
    def workload_pool(self) -> str:
        """Workload Identity's pool: `<project>.svc.id.goog`."""
        return f"{self.gcp_project}.svc.id.goog"


GcpStackConfig = with_shared_fields(
    _GcpKeys,
    "GcpStackConfig",
    "One Google Cloud stack: its `raygpu:*` and `gcp:*` keys.",
)
