"""GcpNetwork: a custom-mode VPC with one regional subnet (node addresses, and the
secondary ranges GKE's VPC-native pods and Services use), a Cloud Router and a
Cloud NAT: nodes have no external addresses, so the NAT is their only way out.

A custom-mode VPC starts with no firewall rule that admits traffic from outside;
GKE adds the rules its control plane needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

TYPE_TOKEN = "raygpu:gcp:Network"
PODS_RANGE = "pods"
SERVICES_RANGE = "services"


@dataclass(frozen=True)
class GcpNetworkArgs:
    """What the network takes from the stack config (defaults live there only)."""

    region: str
    subnet_cidr: str
    pods_cidr: str
    services_cidr: str
    labels: Mapping[str, str]

    @classmethod
    def from_config(cls, cfg) -> GcpNetworkArgs:
        return cls(
            region=cfg.region,
            subnet_cidr=cfg.subnet_cidr,
            pods_cidr=cfg.pods_cidr,
            services_cidr=cfg.services_cidr,
            labels=cfg.labels,
        )


class GcpNetwork(pulumi.ComponentResource):
    network_id: pulumi.Output[str]
    network_name: pulumi.Output[str]
    subnet_id: pulumi.Output[str]
    pods_range: str = PODS_RANGE
    services_range: str = SERVICES_RANGE

    def __init__(
        self,
        name: str,
        args: GcpNetworkArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TYPE_TOKEN, name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        vpc = gcp.compute.Network(
            f"{name}-vpc",
            name=name,
            auto_create_subnetworks=False,
            routing_mode="REGIONAL",
            opts=child,
        )
        subnet = gcp.compute.Subnetwork(
            f"{name}-subnet",
            name=f"{name}-nodes",
            network=vpc.id,
            region=args.region,
            ip_cidr_range=args.subnet_cidr,
            secondary_ip_ranges=[
                gcp.compute.SubnetworkSecondaryIpRangeArgs(
                    range_name=PODS_RANGE, ip_cidr_range=args.pods_cidr
                ),
                gcp.compute.SubnetworkSecondaryIpRangeArgs(
                    range_name=SERVICES_RANGE, ip_cidr_range=args.services_cidr
                ),
            ],
            # Nodes without external addresses still reach Google APIs (GCS,
            # Artifact Registry) over Google's network.
            private_ip_google_access=True,
            log_config=gcp.compute.SubnetworkLogConfigArgs(
                aggregation_interval="INTERVAL_5_SEC",
                flow_sampling=0.5,
                metadata="INCLUDE_ALL_METADATA",
            ),
            opts=child,
        )
        router = gcp.compute.Router(
            f"{name}-router",
            name=f"{name}-router",
            network=vpc.id,
            region=args.region,
            opts=child,
        )
        gcp.compute.RouterNat(
            f"{name}-nat",
            name=f"{name}-nat",
            router=router.name,
            region=args.region,
            nat_ip_allocate_option="AUTO_ONLY",
            source_subnetwork_ip_ranges_to_nat="LIST_OF_SUBNETWORKS",
            subnetworks=[
                gcp.compute.RouterNatSubnetworkArgs(
                    name=subnet.id, source_ip_ranges_to_nats=["ALL_IP_RANGES"]
                )
            ],
            log_config=gcp.compute.RouterNatLogConfigArgs(
                enable=True, filter="ERRORS_ONLY"
            ),
            opts=child,
        )
        self.network_id = vpc.id
        self.network_name = vpc.name
        self.subnet_id = subnet.id
        self.register_outputs(
            {"network_id": self.network_id, "subnet_id": self.subnet_id}
        )
