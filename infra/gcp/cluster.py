"""GkeCluster: a regional GKE cluster with private nodes, Workload Identity,
shielded nodes and Dataplane V2 (which enforces the stack's NetworkPolicies), its
node service account, the system node pool and one GPU node pool per
`gpuPools` entry.

The API endpoint is public only for `masterAuthorizedCidrs` (master authorized
networks, never 0.0.0.0/0); with none listed it is private only. GPU pools scale
from zero under GKE's cluster autoscaler (sizes are totals over the zones), carry
GKE's `nvidia.com/gpu=present:NoSchedule` taint, and get the NVIDIA driver and
device plugin from GKE (`gpu_driver_installation_config`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from raygpu import versions

TYPE_TOKEN = "raygpu:gcp:GkeCluster"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# Logs and metrics only: what GKE's nodes need, instead of the Compute Engine
# default service account (Editor on the project).
NODE_ROLE = "roles/container.defaultNodeServiceAccount"
TAINT_EFFECTS = {"NoSchedule": "NO_SCHEDULE", "NoExecute": "NO_EXECUTE"}


@dataclass(frozen=True)
class PoolArgs:
    name: str
    machine_type: str
    disk_size_gib: int
    min_size: int
    initial_size: int
    max_size: int
    labels: Mapping[str, str]
    taints: tuple[tuple[str, str, str], ...] = ()
    spot: bool = False
    accelerator: tuple[str, int] | None = None


@dataclass(frozen=True)
class GkeClusterArgs:
    """What the cluster takes from the stack config (defaults live there only)."""

    project: str
    region: str
    zones: tuple[str, ...]
    cluster_name: str
    network_id: pulumi.Input[str]
    subnet_id: pulumi.Input[str]
    pods_range: str
    services_range: str
    master_cidr: str
    authorized_cidrs: tuple[str, ...]
    release_channel: str
    min_version: str
    workload_pool: str
    system_pool: PoolArgs
    gpu_pools: tuple[PoolArgs, ...]
    labels: Mapping[str, str]

    @classmethod
    def from_config(cls, cfg, network) -> GkeClusterArgs:
        low, desired, high = cfg.system_sizes
        system = PoolArgs(
            name="system",
            machine_type=cfg.system_pool.machine_type,
            disk_size_gib=cfg.system_pool.disk_size_gib,
            min_size=low,
            initial_size=desired,
            max_size=high,
            labels=cfg.system_pool.node_labels,
        )
        gpus = tuple(
            PoolArgs(
                name=p.name,
                machine_type=p.machine_type,
                disk_size_gib=p.disk_size_gib,
                min_size=p.min_size,
                initial_size=p.min_size,
                max_size=p.max_size,
                labels=p.node_labels,
                taints=p.taints,
                spot=p.spot,
                accelerator=(p.accelerator_type, p.accelerator_count),
            )
            for p in cfg.gpu_pools
        )
        return cls(
            project=cfg.gcp_project,
            region=cfg.region,
            zones=cfg.gcp_zones,
            cluster_name=cfg.cluster_name,
            network_id=network.network_id,
            subnet_id=network.subnet_id,
            pods_range=network.pods_range,
            services_range=network.services_range,
            master_cidr=cfg.master_cidr,
            authorized_cidrs=cfg.master_authorized_cidrs,
            release_channel=cfg.release_channel,
            min_version=cfg.cluster_version,
            workload_pool=cfg.workload_pool,
            system_pool=system,
            gpu_pools=gpus,
            labels=cfg.labels,
        )


def account_id(kind: str, cluster_name: str) -> str:
    """A service account ID (6-30 characters, unique per stack within the project):
    the kind and a hash of the cluster's name; the display name spells it out."""
    digest = hashlib.sha256(cluster_name.encode()).hexdigest()[:10]
    return f"{kind}-{digest}"


def kubeconfig(name: str, endpoint: str, ca_data: str) -> str:
    """A kubeconfig that authenticates with gke-gcloud-auth-plugin (the caller's
    gcloud credentials): no static credential in the stack's state."""
    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: {name}\n  cluster:\n"
        f"    server: https://{endpoint}\n"
        f"    certificate-authority-data: {ca_data}\n"
        f"contexts:\n- name: {name}\n  context:\n    cluster: {name}\n"
        f"    user: {name}\ncurrent-context: {name}\n"
        f"users:\n- name: {name}\n  user:\n    exec:\n"
        "      apiVersion: client.authentication.k8s.io/v1beta1\n"
        "      command: gke-gcloud-auth-plugin\n"
        "      provideClusterInfo: true\n"
        "      interactiveMode: Never\n"
    )


def node_config(
    pool: PoolArgs, service_account: pulumi.Input[str], labels: Mapping[str, str]
) -> gcp.container.NodePoolNodeConfigArgs:
    accelerators = []
    if pool.accelerator is not None:
        kind, count = pool.accelerator
        accelerators = [
            gcp.container.NodePoolNodeConfigGuestAcceleratorArgs(
                type=kind,
                count=count,
                gpu_driver_installation_config=gcp.container.NodePoolNodeConfigGuestAcceleratorGpuDriverInstallationConfigArgs(  # noqa: E501
                    gpu_driver_version=versions.GKE_GPU_DRIVER_VERSION
                ),
            )
        ]
    return gcp.container.NodePoolNodeConfigArgs(
        machine_type=pool.machine_type,
        disk_size_gb=pool.disk_size_gib,
        disk_type="pd-balanced",
        image_type="COS_CONTAINERD",
        service_account=service_account,
        oauth_scopes=[CLOUD_PLATFORM_SCOPE],
        labels=dict(pool.labels),
        taints=[
            gcp.container.NodePoolNodeConfigTaintArgs(
                key=key, value=value, effect=TAINT_EFFECTS[effect]
            )
            for key, value, effect in pool.taints
        ],
        spot=pool.spot,
        guest_accelerators=accelerators,
        shielded_instance_config=gcp.container.NodePoolNodeConfigShieldedInstanceConfigArgs(  # noqa: E501
            enable_secure_boot=True, enable_integrity_monitoring=True
        ),
        # Pods see GKE's metadata server, which serves Workload Identity tokens
        # and hides the node's own credentials.
        workload_metadata_config=gcp.container.NodePoolNodeConfigWorkloadMetadataConfigArgs(  # noqa: E501
            mode="GKE_METADATA"
        ),
        metadata={"disable-legacy-endpoints": "true"},
        resource_labels=dict(labels),
    )


class GkeCluster(pulumi.ComponentResource):
    cluster_name: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    node_service_account: pulumi.Output[str]
    node_pools: list[gcp.container.NodePool]
    gpu_node_pools: dict[str, gcp.container.NodePool]

    def __init__(
        self,
        name: str,
        args: GkeClusterArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TYPE_TOKEN, name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        node_sa = gcp.serviceaccount.Account(
            f"{name}-node-sa",
            account_id=account_id("node", args.cluster_name),
            display_name=f"GKE nodes of {args.cluster_name}",
            opts=child,
        )
        gcp.projects.IAMMember(
            f"{name}-node-sa-role",
            project=args.project,
            role=NODE_ROLE,
            member=node_sa.member,
            opts=child,
        )
        private_endpoint = not args.authorized_cidrs
        cluster = gcp.container.Cluster(
            f"{name}-gke",
            name=args.cluster_name,
            location=args.region,
            node_locations=list(args.zones),
            network=args.network_id,
            subnetwork=args.subnet_id,
            networking_mode="VPC_NATIVE",
            ip_allocation_policy=gcp.container.ClusterIpAllocationPolicyArgs(
                cluster_secondary_range_name=args.pods_range,
                services_secondary_range_name=args.services_range,
            ),
            private_cluster_config=gcp.container.ClusterPrivateClusterConfigArgs(
                enable_private_nodes=True,
                enable_private_endpoint=private_endpoint,
                master_ipv4_cidr_block=args.master_cidr,
            ),
            master_authorized_networks_config=gcp.container.ClusterMasterAuthorizedNetworksConfigArgs(  # noqa: E501
                cidr_blocks=[
                    gcp.container.ClusterMasterAuthorizedNetworksConfigCidrBlockArgs(
                        cidr_block=cidr, display_name=f"authorized-{i}"
                    )
                    for i, cidr in enumerate(args.authorized_cidrs)
                ],
                # Not every address of Google Cloud: only the listed networks.
                gcp_public_cidrs_access_enabled=False,
            ),
            release_channel=gcp.container.ClusterReleaseChannelArgs(
                channel=args.release_channel
            ),
            min_master_version=args.min_version,
            workload_identity_config=gcp.container.ClusterWorkloadIdentityConfigArgs(
                workload_pool=args.workload_pool
            ),
            enable_shielded_nodes=True,
            enable_legacy_abac=False,
            datapath_provider="ADVANCED_DATAPATH",
            # The default pool only bootstraps the cluster; it goes at once.
            remove_default_node_pool=True,
            initial_node_count=1,
            node_config=gcp.container.ClusterNodeConfigArgs(
                service_account=node_sa.email,
                oauth_scopes=[CLOUD_PLATFORM_SCOPE],
                shielded_instance_config=gcp.container.ClusterNodeConfigShieldedInstanceConfigArgs(  # noqa: E501
                    enable_secure_boot=True, enable_integrity_monitoring=True
                ),
                workload_metadata_config=gcp.container.ClusterNodeConfigWorkloadMetadataConfigArgs(  # noqa: E501
                    mode="GKE_METADATA"
                ),
            ),
            resource_labels=dict(args.labels),
            # `pulumi destroy` removes the cluster (as on AWS).
            deletion_protection=False,
            opts=child,
        )

        def pool(spec: PoolArgs, location_policy: str) -> gcp.container.NodePool:
            per_zone = math.ceil(spec.initial_size / len(args.zones))
            return gcp.container.NodePool(
                f"{name}-{spec.name}",
                name=spec.name,
                cluster=cluster.id,
                location=args.region,
                node_locations=list(args.zones),
                initial_node_count=per_zone,
                autoscaling=gcp.container.NodePoolAutoscalingArgs(
                    total_min_node_count=spec.min_size,
                    total_max_node_count=spec.max_size,
                    location_policy=location_policy,
                ),
                management=gcp.container.NodePoolManagementArgs(
                    auto_repair=True, auto_upgrade=True
                ),
                node_config=node_config(spec, node_sa.email, args.labels),
                # A new initial count would replace the pool; the autoscaler
                # owns the size after creation.
                opts=pulumi.ResourceOptions(
                    parent=self, ignore_changes=["initialNodeCount"]
                ),
            )

        system = pool(args.system_pool, "BALANCED")
        # GPU capacity is scarce: take it in whichever zone has it.
        self.gpu_node_pools = {p.name: pool(p, "ANY") for p in args.gpu_pools}
        self.node_pools = [system, *self.gpu_node_pools.values()]
        self.cluster_name = cluster.name
        self.node_service_account = node_sa.email
        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(
                cluster.name,
                cluster.endpoint,
                cluster.master_auth.apply(
                    lambda auth: auth.cluster_ca_certificate if auth else ""
                ),
            ).apply(lambda a: kubeconfig(*a))
        )
        self.register_outputs(
            {"cluster_name": self.cluster_name, "kubeconfig": self.kubeconfig}
        )
