"""AksCluster: an AKS cluster with the OIDC issuer and workload identity, Azure
RBAC for Kubernetes authorization (local accounts disabled), Azure CNI overlay
with Cilium (which enforces the stack's NetworkPolicies), egress through the
network's NAT gateway, the system pool and one GPU pool per `gpuPools` entry.

The API server is public only for `apiServerAuthorizedCidrs` (with the NAT
gateway's address, so that the nodes reach it), never 0.0.0.0/0; with none
listed the cluster is private. GPU pools (mode User) scale from zero under AKS's
cluster autoscaler and carry the `nvidia.com/gpu` taint; AKS installs the NVIDIA
driver, the stack the device plugin (raygpu/clouds.py). The control plane runs as
a user-assigned identity holding Network Contributor on the node subnet only.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import yaml
from pulumi_azure_native import authorization, containerservice, managedidentity

from infra.azure import (
    AKS_RBAC_CLUSTER_ADMIN,
    NETWORK_CONTRIBUTOR,
    role_definition_id,
)

TYPE_TOKEN = "raygpu:azure:AksCluster"
# The Entra ID application of AKS's API server: kubelogin asks tokens for it.
AKS_SERVER_APP_ID = "6dae42f8-4368-4678-94ff-3960e28e3630"
SYSTEM_POOL = "system"


@dataclass(frozen=True)
class PoolArgs:
    name: str
    vm_size: str
    disk_size_gib: int
    min_size: int
    initial_size: int
    max_size: int
    labels: Mapping[str, str]
    taints: tuple[tuple[str, str, str], ...] = ()
    spot: bool = False


@dataclass(frozen=True)
class AksClusterArgs:
    """What the cluster takes from the stack config (defaults live there only)."""

    resource_group_name: pulumi.Input[str]
    node_resource_group: str
    location: str
    subscription_id: str
    cluster_name: str
    kubernetes_version: str
    subnet_id: pulumi.Input[str]
    egress_ip: pulumi.Input[str]
    pod_cidr: str
    service_cidr: str
    dns_service_ip: str
    authorized_cidrs: tuple[str, ...]
    deployer_principal_type: str
    system_pool: PoolArgs
    gpu_pools: tuple[PoolArgs, ...]
    tags: Mapping[str, str]

    @classmethod
    def from_config(cls, cfg, network) -> AksClusterArgs:
        low, desired, high = cfg.system_sizes
        # AKS keeps a System pool at one node at least, asleep or not.
        system = PoolArgs(
            name=SYSTEM_POOL,
            vm_size=cfg.system_pool.vm_size,
            disk_size_gib=cfg.system_pool.disk_size_gib,
            min_size=max(low, 1),
            initial_size=max(desired, 1),
            max_size=high,
            labels=cfg.system_pool.node_labels,
        )
        gpus = tuple(
            PoolArgs(
                name=p.name,
                vm_size=p.vm_size,
                disk_size_gib=p.disk_size_gib,
                min_size=p.min_size,
                initial_size=p.min_size,
                max_size=p.max_size,
                labels=p.node_labels,
                taints=p.taints,
                spot=p.spot,
            )
            for p in cfg.gpu_pools
        )
        return cls(
            resource_group_name=network.resource_group_name,
            node_resource_group=node_resource_group(cfg.resource_group),
            location=cfg.region,
            subscription_id=cfg.subscription_id,
            cluster_name=cfg.cluster_name,
            kubernetes_version=cfg.cluster_version,
            subnet_id=network.subnet_id,
            egress_ip=network.egress_ip,
            pod_cidr=cfg.pod_cidr,
            service_cidr=cfg.service_cidr,
            dns_service_ip=cfg.dns_service_ip,
            authorized_cidrs=cfg.api_server_authorized_cidrs,
            deployer_principal_type=cfg.deployer_principal_type,
            system_pool=system,
            gpu_pools=gpus,
            tags=cfg.tags,
        )


def node_resource_group(resource_group: str) -> str:
    """The group AKS creates for the nodes' VMs, disks and NICs."""
    return f"{resource_group}-nodes"


def taint_strings(taints: tuple[tuple[str, str, str], ...]) -> list[str]:
    """AKS spells a taint `key=value:Effect`."""
    return [f"{key}={value}:{effect}" for key, value, effect in taints]


def kubeconfig(name: str, user_kubeconfig_b64: str) -> str:
    """A kubeconfig that authenticates with kubelogin and the Azure CLI's login
    (Azure RBAC; local accounts are disabled): AKS's own user kubeconfig supplies
    the server and its CA, and no credential lands in the stack's state."""
    doc = yaml.safe_load(base64.b64decode(user_kubeconfig_b64))
    cluster = doc["clusters"][0]["cluster"]
    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: {name}\n  cluster:\n"
        f"    server: {cluster['server']}\n"
        f"    certificate-authority-data: {cluster['certificate-authority-data']}\n"
        f"contexts:\n- name: {name}\n  context:\n    cluster: {name}\n"
        f"    user: {name}\ncurrent-context: {name}\n"
        f"users:\n- name: {name}\n  user:\n    exec:\n"
        "      apiVersion: client.authentication.k8s.io/v1beta1\n"
        "      command: kubelogin\n"
        "      args: [get-token, --login, azurecli, --server-id, "
        f"{AKS_SERVER_APP_ID}]\n"
        "      interactiveMode: Never\n"
    )


def _pool_settings(
    pool: PoolArgs, subnet_id: pulumi.Input[str], tags: Mapping[str, str]
) -> dict:
    settings = {
        "vm_size": pool.vm_size,
        "count": pool.initial_size,
        "enable_auto_scaling": True,
        "min_count": pool.min_size,
        "max_count": pool.max_size,
        "os_type": "Linux",
        "os_sku": "Ubuntu",
        "os_disk_size_gb": pool.disk_size_gib,
        "os_disk_type": "Managed",
        "type": "VirtualMachineScaleSets",
        "vnet_subnet_id": subnet_id,
        "enable_node_public_ip": False,
        "node_labels": dict(pool.labels),
        "node_taints": taint_strings(pool.taints),
        # On the pool's scale set, its VMs and disks in the node resource group.
        "tags": dict(tags),
    }
    if pool.spot:
        settings.update(
            scale_set_priority="Spot",
            scale_set_eviction_policy="Delete",
            spot_max_price=-1,  # up to the on-demand price: evicted, never priced out
        )
    return settings


class AksCluster(pulumi.ComponentResource):
    cluster_name: pulumi.Output[str]
    cluster_id: pulumi.Output[str]
    oidc_issuer_url: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    node_pools: list[pulumi.Resource]
    gpu_node_pools: dict[str, containerservice.AgentPool]

    def __init__(
        self,
        name: str,
        args: AksClusterArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TYPE_TOKEN, name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        rg = args.resource_group_name
        control_plane = managedidentity.UserAssignedIdentity(
            f"{name}-control-plane",
            resource_group_name=rg,
            resource_name_=f"{args.cluster_name}-control-plane",
            location=args.location,
            tags=dict(args.tags),
            opts=child,
        )
        # AKS joins nodes to the subnet and sends their egress through its NAT.
        subnet_grant = authorization.RoleAssignment(
            f"{name}-subnet-network",
            scope=args.subnet_id,
            role_definition_id=role_definition_id(
                args.subscription_id, NETWORK_CONTRIBUTOR
            ),
            principal_id=control_plane.principal_id,
            principal_type="ServicePrincipal",
            opts=child,
        )
        private = not args.authorized_cidrs
        access = containerservice.ManagedClusterAPIServerAccessProfileArgs(
            enable_private_cluster=private,
            authorized_ip_ranges=(
                None
                if private
                else pulumi.Output.from_input(args.egress_ip).apply(
                    lambda ip: [*args.authorized_cidrs, *([f"{ip}/32"] if ip else [])]
                )
            ),
            disable_run_command=False,  # `az aks command invoke` reaches a private one
        )
        system = containerservice.ManagedClusterAgentPoolProfileArgs(
            name=args.system_pool.name,
            mode="System",
            **_pool_settings(args.system_pool, args.subnet_id, args.tags),
        )
        cluster = containerservice.ManagedCluster(
            f"{name}-aks",
            resource_group_name=rg,
            resource_name_=args.cluster_name,
            location=args.location,
            dns_prefix=args.cluster_name,
            kubernetes_version=args.kubernetes_version,
            node_resource_group=args.node_resource_group,
            identity=containerservice.ManagedClusterIdentityArgs(
                type="UserAssigned", user_assigned_identities=[control_plane.id]
            ),
            agent_pool_profiles=[system],
            network_profile=containerservice.ContainerServiceNetworkProfileArgs(
                network_plugin="azure",
                network_plugin_mode="overlay",
                network_dataplane="cilium",
                network_policy="cilium",
                pod_cidr=args.pod_cidr,
                service_cidr=args.service_cidr,
                dns_service_ip=args.dns_service_ip,
                outbound_type="userAssignedNATGateway",
                load_balancer_sku="standard",
            ),
            api_server_access_profile=access,
            enable_rbac=True,
            aad_profile=containerservice.ManagedClusterAADProfileArgs(
                managed=True, enable_azure_rbac=True
            ),
            disable_local_accounts=True,
            oidc_issuer_profile=containerservice.ManagedClusterOIDCIssuerProfileArgs(
                enabled=True
            ),
            security_profile=containerservice.ManagedClusterSecurityProfileArgs(
                workload_identity=containerservice.ManagedClusterSecurityProfileWorkloadIdentityArgs(  # noqa: E501
                    enabled=True
                ),
            ),
            auto_upgrade_profile=containerservice.ManagedClusterAutoUpgradeProfileArgs(
                upgrade_channel="patch", node_os_upgrade_channel="NodeImage"
            ),
            tags=dict(args.tags),
            # The autoscaler owns the system pool's count after creation.
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[subnet_grant],
                ignore_changes=["agentPoolProfiles[0].count"],
            ),
        )
        self.gpu_node_pools = {
            pool.name: containerservice.AgentPool(
                f"{name}-{pool.name}",
                resource_group_name=rg,
                resource_name_=cluster.name,
                agent_pool_name=pool.name,
                mode="User",
                # AKS installs the NVIDIA driver (and patches it with the node
                # image); the device plugin comes from the stack's Helm release.
                gpu_profile=containerservice.GPUProfileArgs(driver="Install"),
                **_pool_settings(pool, args.subnet_id, args.tags),
                # A new count would resize the pool; the autoscaler owns it.
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=["count"]),
            )
            for pool in args.gpu_pools
        }
        # Whoever runs `pulumi up` administers this cluster (the Kubernetes layer
        # needs it), as EKS's cluster creator does; nobody else is granted here.
        caller = authorization.get_client_config_output(
            opts=pulumi.InvokeOutputOptions(parent=self)
        )
        admin = authorization.RoleAssignment(
            f"{name}-deployer-admin",
            scope=cluster.id,
            role_definition_id=role_definition_id(
                args.subscription_id, AKS_RBAC_CLUSTER_ADMIN
            ),
            principal_id=caller.object_id,
            principal_type=args.deployer_principal_type,
            opts=child,
        )
        credentials = containerservice.list_managed_cluster_user_credentials_output(
            resource_group_name=rg,
            resource_name=cluster.name,
            format="exec",
            opts=pulumi.InvokeOutputOptions(parent=self),
        )
        self.node_pools = [cluster, admin, *self.gpu_node_pools.values()]
        self.cluster_name = cluster.name
        self.cluster_id = cluster.id
        self.oidc_issuer_url = cluster.oidc_issuer_profile.apply(
            lambda p: p.issuer_url if p else ""
        )
        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(cluster.name, credentials.kubeconfigs).apply(
                # Each credential result is a mapping (its output type is a dict).
                lambda a: kubeconfig(a[0], a[1][0]["value"])
            )
        )
        self.register_outputs(
            {
                "cluster_name": self.cluster_name,
                "oidc_issuer_url": self.oidc_issuer_url,
                "kubeconfig": self.kubeconfig,
            }
        )
