"""The stack config of an Azure stack (`raygpu:cloud: azure`).

Its own keys (`azure-native:subscriptionId`, `azure-native:location`, the resource
group, the VNet's and Azure CNI overlay's ranges, the API server's access, AKS
and its node pools) are declared here; the keys that mean the same on every cloud
(the Ray layer, the storage lifecycle, the budget) are the AWS model's fields and
validators, carried over as on Google Cloud (raygpu.config.cloud_base), so each
is still declared once.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator

from raygpu import versions
from raygpu.config.azure_pools import AzureGpuPoolConfig, AzureSystemPoolConfig
from raygpu.config.cloud_base import (
    CloudKeys,
    private_range,
    ranges_apart,
    with_shared_fields,
)
from raygpu.config.fields import (
    EndpointCidr,
    Entries,
    bad,
    listing,
    matching,
    network,
    one_of,
)
from raygpu.config.model import MAX_GPU_POOLS, StackConfig, _K8sVersion

CLOUD = "azure"
SUBSCRIPTION_KEY = "azure-native:subscriptionId"
LOCATION_KEY = "azure-native:location"
PROVIDER_KEYS = (SUBSCRIPTION_KEY, LOCATION_KEY)
# Azure CNI overlay's DNS service takes this address of the service range.
DNS_SERVICE_HOST = 10

_Subscription = matching(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
    "a subscription ID (a lowercase GUID like 0b1f6471-1bf0-4dda-aec3-cb9272f09590)",
)
_Location = matching(
    r"^[a-z][a-z0-9]{2,29}$", "an Azure region name like eastus2 or westeurope"
)
_ResourceGroup = matching(
    r"^[-\w.()]{0,89}[-\w()]$",
    "1-90 letters, digits, '-', '_', '.', '(' or ')', not ending in '.'",
)
_GpuPools = Annotated[tuple[AzureGpuPoolConfig, ...], Entries(1, MAX_GPU_POOLS)]

# The VNet, its node subnet, and Azure CNI overlay's pod and service ranges.
_RANGES = ("vnet_cidr", "node_subnet_cidr", "pod_cidr", "service_cidr")


class _AzureKeys(CloudKeys):
    """The keys of an Azure stack that AWS stacks do not have."""

    cloud: one_of(CLOUD) = Field(
        description="The cloud of the stack: `aws` (the default), `gcp` or `azure`"
    )
    subscription_id: _Subscription = Field(
        alias=SUBSCRIPTION_KEY,
        description="Azure subscription of every resource (the provider is pinned "
        "to it, whatever `az account show` says)",
        json_schema_extra={
            "why": "set it with `pulumi config set azure-native:subscriptionId`"
        },
    )
    region: _Location = Field(
        alias=LOCATION_KEY,
        description="Azure region of every resource",
        json_schema_extra={
            "why": "set it with `pulumi config set azure-native:location`"
        },
    )
    resource_group_name: _ResourceGroup | None = Field(
        None,
        description="The resource group the stack creates and holds everything in "
        "(AKS adds its node resource group `<this>-nodes`)",
        json_schema_extra={"shown_default": "`rg-<project>-<stack>`"},
    )

    # ---- network
    vnet_cidr: private_range((16, 24)) = Field(
        "10.30.0.0/16", description="The VNet's address space"
    )
    node_subnet_cidr: private_range((16, 27)) = Field(
        "10.30.0.0/20",
        description="The node subnet inside vnetCidr (node addresses only: pods "
        "take podCidr under Azure CNI overlay)",
    )
    pod_cidr: private_range((12, 20)) = Field(
        "10.244.0.0/16",
        description="Azure CNI overlay's pod range (a /24 per node), outside the VNet",
    )
    service_cidr: private_range((16, 24)) = Field(
        "10.40.0.0/16",
        description="The range of Kubernetes Services (its 10th address is the DNS "
        "service's), outside the VNet and podCidr",
    )
    api_server_authorized_cidrs: listing(EndpointCidr) = Field(
        (),
        description="Networks that may reach the AKS API server's public endpoint "
        "(authorized IP ranges; the NAT gateway's address is added): public ones "
        "/24 or longer, private ones /8 or longer; empty: a private cluster",
    )

    # ---- cluster
    cluster_version: _K8sVersion = Field(
        versions.KUBERNETES_VERSION,
        description="AKS Kubernetes minor (AKS takes its latest patch and keeps "
        "it patched; raygpu/versions.py)",
    )
    deployer_principal_type: one_of("User", "ServicePrincipal") = Field(
        "User",
        description="What runs `pulumi up`: a person signed in with `az login`, or "
        "a service principal or managed identity (CI); it gets the AKS RBAC "
        "Cluster Admin role on this cluster, and Azure refuses a wrong type",
    )
    system_pool: AzureSystemPoolConfig = Field(
        default_factory=AzureSystemPoolConfig,
        description="CPU node pool (AKS mode System) of the operators and the "
        "Ray head (no taint: see Azure stacks below)",
    )
    gpu_pools: _GpuPools = Field(
        description="GPU node pools (mode User), one per entry"
    )

    @field_validator("node_subnet_cidr")
    @classmethod
    def _inside_vnet(cls, text: str, info: ValidationInfo) -> str:
        vnet = info.data.get("vnet_cidr")
        if vnet and not network(text).subnet_of(network(vnet)):
            raise bad(f"{text} is not inside vnetCidr {vnet}")
        return text

    _apart = ranges_apart(_RANGES, "pod_cidr", "service_cidr")

    # Azure tag names may hold ':', so they are the AWS tags.
    tags = StackConfig.tags

    @property
    def resource_group(self) -> str:
        return self.resource_group_name or f"rg-{self.name_prefix}"

    @property
    def dns_service_ip(self) -> str:
        return str(network(self.service_cidr)[DNS_SERVICE_HOST])


AzureStackConfig = with_shared_fields(
    _AzureKeys,
    "AzureStackConfig",
    "One Azure stack: its `raygpu:*` and `azure-native:*` keys.",
)
