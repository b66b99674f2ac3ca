"""The stack config of a Google Cloud stack (`raygpu:cloud: gcp`).

Its own keys (`gcp:project`, `gcp:region`, the zones, the VPC's ranges, GKE, the
node pools, the billing account) are declared here; the keys that mean the same on
every cloud (the Ray layer, the buckets' lifecycle, the budget) are the AWS model's
own fields and validators, carried over as they are (`SHARED_FIELDS`), so each is
still declared once. The properties the Kubernetes layer reads (`name_prefix`,
`system_sizes`, ...) are the AWS model's too.
"""

from __future__ import annotations

import copy
import inspect
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic.alias_generators import to_camel

from raygpu import versions
from raygpu.config.fields import (
    ConfigModel,
    EndpointCidr,
    Entries,
    Ipv4Cidr,
    bad,
    is_private,
    listing,
    matching,
    network,
    one_of,
    several,
)
from raygpu.config.gcp_pools import GcpGpuPoolConfig, GcpSystemPoolConfig
from raygpu.config.model import (
    DEFAULT_PROJECT,
    MAX_GPU_POOLS,
    MIN_CLUSTER_MINOR,
    StackConfig,
)
from raygpu.names import GCP_PROJECT_LABEL, GCP_STACK_LABEL

CLOUD = "gcp"
PROJECT_KEY = "gcp:project"
REGION_KEY = "gcp:region"
PROVIDER_KEYS = (PROJECT_KEY, REGION_KEY)
# GKE's control plane takes a /28 of its own for a private cluster.
MASTER_PREFIX = 28
RELEASE_CHANNELS = ("STABLE", "REGULAR", "RAPID")
MAX_ZONES = 4

# Keys whose meaning does not depend on the cloud, in the order the table shows.
SHARED_FIELDS = (
    "protect_data_bucket",
    "artifacts_force_destroy",
    "noncurrent_version_expiration_days",
    "budget_monthly_usd",
    "budget_alert_email",
    "ray_namespace",
    "ray_service_account",
    "ray_worker_service_account",
    "ray_idle_timeout_seconds",
    "ray_head_cpu",
    "ray_head_memory",
    "serve_ingress",
    "serve_allowed_cidrs",
    "serve_allowed_namespaces",
    "monitoring_namespace",
    "asleep",
)

_Name20 = matching(r"^[a-z][a-z0-9-]{0,19}$", "1-20 lowercase letters, digits or '-'")
_Project = matching(
    r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$",
    "a Google Cloud project ID like my-project-123 (6-30 characters)",
)
_Region = matching(r"^[a-z]+-[a-z]+\d+$", "a Google Cloud region like us-central1")
_Zone = matching(r"^[a-z]+-[a-z]+\d+-[a-z]$", "a zone like us-central1-a")
_Zones = listing(_Zone, Entries(1, MAX_ZONES))
_K8sVersion = matching(r"^1\.(\d{1,2})$", 'a quoted Kubernetes version like "1.33"')
_BillingAccount = matching(
    r"^[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}$",
    "a billing account ID like 012345-6789AB-CDEF01",
)
_GpuPools = Annotated[tuple[GcpGpuPoolConfig, ...], Entries(1, MAX_GPU_POOLS)]


def _private_range(prefixes: tuple[int, int]) -> Any:
    low, high = prefixes

    def check(text: str) -> str:
        if not is_private(text):
            raise bad(
                f"must be a private range inside 10.0.0.0/8, 172.16.0.0/12 or "
                f"192.168.0.0/16, got {text!r}"
            )
        got = network(text).prefixlen
        if not low <= got <= high:
            want = f"/{low}" if low == high else f"between /{low} and /{high}"
            raise bad(f"prefix length must be {want}, got /{got}")
        return text

    return Annotated[Ipv4Cidr, AfterValidator(check)]


# The ranges GKE's VPC-native networking needs: nodes, pods, services, control plane.
_RANGES = ("subnet_cidr", "pods_cidr", "services_cidr", "master_cidr")


class _GcpKeys(ConfigModel):
    """The keys of a Google Cloud stack that AWS stacks do not have."""

    stack: _Name20 = Field(description="Stack name")
    project: _Name20 = Field(DEFAULT_PROJECT, description="Pulumi project name")
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
    subnet_cidr: _private_range((16, 24)) = Field(
        "10.10.0.0/20", description="The subnet's primary range (node addresses)"
    )
    pods_cidr: _private_range((12, 21)) = Field(
        "10.16.0.0/14",
        description="The subnet's secondary range for pods (VPC-native)",
    )
    services_cidr: _private_range((16, 27)) = Field(
        "10.20.0.0/20",
        description="The subnet's secondary range for Services",
    )
    master_cidr: _private_range((MASTER_PREFIX, MASTER_PREFIX)) = Field(
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

    @field_validator(*_RANGES[1:])
    @classmethod
    def _ranges_apart(cls, text: str, info: ValidationInfo) -> str:
        mine = network(text)
        for earlier in _RANGES[: _RANGES.index(info.field_name)]:
            other = info.data.get(earlier)
            if other and mine.overlaps(network(other)):
                raise bad(f"{text} overlaps {other} ({to_camel(earlier)})")
        return text

    @field_validator("cluster_version")
    @classmethod
    def _new_enough(cls, version: str) -> str:
        if int(version.split(".")[1]) < MIN_CLUSTER_MINOR:
            raise bad(f"must be 1.{MIN_CLUSTER_MINOR} or newer, got {version!r}")
        return version

    @field_validator("gpu_pools")
    @classmethod
    def _unique_names(cls, pools: tuple[GcpGpuPoolConfig, ...]) -> Any:
        return StackConfig._unique_names(pools)

    # The same definitions as on AWS.
    name_prefix = StackConfig.name_prefix
    cluster_name = StackConfig.cluster_name
    system_sizes = StackConfig.system_sizes

    @property
    def labels(self) -> dict[str, str]:
        """GCP labels: lowercase keys without ':' (the AWS tags' names otherwise)."""
        return {GCP_STACK_LABEL: self.stack, GCP_PROJECT_LABEL: self.project}

    @property
    def workload_pool(self) -> str:
        """Workload Identity's pool: `<project>.svc.id.goog`."""
        return f"{self.gcp_project}.svc.id.goog"


def _carried(decorator: Any) -> Any:
    """One of StackConfig's field validators, declared again on another model."""
    func = decorator.func
    func = classmethod(func.__func__) if inspect.ismethod(func) else func
    return field_validator(*decorator.info.fields, mode=decorator.info.mode)(func)


def _shared_model() -> Any:
    fields = StackConfig.model_fields
    validators = {
        name: _carried(d)
        for name, d in StackConfig.__pydantic_decorators__.field_validators.items()
        if set(d.info.fields) <= set(SHARED_FIELDS)
    }
    return create_model(
        "GcpStackConfig",
        __base__=_GcpKeys,
        __module__=__name__,
        __doc__="One Google Cloud stack: its `raygpu:*` and `gcp:*` keys.",
        __validators__=validators,
        **{n: (fields[n].annotation, copy.copy(fields[n])) for n in SHARED_FIELDS},
    )


GcpStackConfig = _shared_model()
