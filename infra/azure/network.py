"""AzureNetwork: the stack's resource group, a VNet with the node subnet, and a NAT
gateway with one static public address on that subnet: the nodes' only way out
(AKS's outbound type `userAssignedNATGateway`). Nothing here accepts inbound
traffic; pods take Azure CNI overlay's own range, outside the VNet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
from pulumi_azure_native import network, resources

TYPE_TOKEN = "raygpu:azure:Network"
# Idle outbound flows are dropped after this long (Azure's default is 4 minutes,
# shorter than a long-poll or a stalled download).
NAT_IDLE_TIMEOUT_MINUTES = 10


@dataclass(frozen=True)
class AzureNetworkArgs:
    """What the network takes from the stack config (defaults live there only)."""

    resource_group: str
    location: str
    vnet_cidr: str
    node_subnet_cidr: str
    tags: Mapping[str, str]
    # Keep the resource group on `pulumi destroy` (it holds a kept storage
    # account: deleting a group deletes everything in it).
    keep_group: bool = False

    @classmethod
    def from_config(cls, cfg, *, keep_group: bool) -> AzureNetworkArgs:
        return cls(
            resource_group=cfg.resource_group,
            location=cfg.region,
            vnet_cidr=cfg.vnet_cidr,
            node_subnet_cidr=cfg.node_subnet_cidr,
            tags=cfg.tags,
            keep_group=keep_group,
        )


class AzureNetwork(pulumi.ComponentResource):
    resource_group_name: pulumi.Output[str]
    resource_group_id: pulumi.Output[str]
    vnet_id: pulumi.Output[str]
    subnet_id: pulumi.Output[str]
    nat_gateway_id: pulumi.Output[str]
    egress_ip: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: AzureNetworkArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TYPE_TOKEN, name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(args.tags)
        group = resources.ResourceGroup(
            f"{name}-rg",
            resource_group_name=args.resource_group,
            location=args.location,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=args.keep_group),
        )
        rg = group.name
        address = network.PublicIPAddress(
            f"{name}-nat-ip",
            resource_group_name=rg,
            public_ip_address_name=f"{name}-nat-ip",
            location=args.location,
            sku=network.PublicIPAddressSkuArgs(name="Standard"),
            public_ip_allocation_method="Static",
            public_ip_address_version="IPv4",
            tags=tags,
            opts=child,
        )
        nat = network.NatGateway(
            f"{name}-nat",
            resource_group_name=rg,
            nat_gateway_name=f"{name}-nat",
            location=args.location,
            sku=network.NatGatewaySkuArgs(name="Standard"),
            public_ip_addresses=[network.SubResourceArgs(id=address.id)],
            idle_timeout_in_minutes=NAT_IDLE_TIMEOUT_MINUTES,
            tags=tags,
            opts=child,
        )
        vnet = network.VirtualNetwork(
            f"{name}-vnet",
            resource_group_name=rg,
            virtual_network_name=f"{name}-vnet",
            location=args.location,
            address_space=network.AddressSpaceArgs(address_prefixes=[args.vnet_cidr]),
            tags=tags,
            opts=child,
        )
        subnet = network.Subnet(
            f"{name}-nodes",
            resource_group_name=rg,
            virtual_network_name=vnet.name,
            subnet_name=f"{name}-nodes",
            address_prefix=args.node_subnet_cidr,
            nat_gateway=network.SubResourceArgs(id=nat.id),
            # No implicit outbound address: only the NAT gateway leads out.
            default_outbound_access=False,
            opts=child,
        )
        self.resource_group_name = rg
        self.resource_group_id = group.id
        self.vnet_id = vnet.id
        self.subnet_id = subnet.id
        self.nat_gateway_id = nat.id
        self.egress_ip = address.ip_address.apply(lambda ip: ip or "")
        self.register_outputs(
            {
                "resource_group_name": self.resource_group_name,
                "subnet_id": self.subnet_id,
                "egress_ip": self.egress_ip,
            }
        )
