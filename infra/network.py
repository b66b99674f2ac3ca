"""Network: a VPC across N Availability Zones for an EKS cluster.

Public subnets hold only NAT gateways and internet-facing load balancers; nodes and
pods live in private subnets and get no public IPs. Private traffic to S3 stays on
the AWS network through a gateway endpoint, and VPC flow logs go to CloudWatch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from raygpu.config import StackConfig
from raygpu.names import REGION_TAG


@dataclass(frozen=True)
class NetworkArgs:
    """What the network takes from the stack config (defaults live there only)."""

    cluster_name: str
    region: str
    cidr: str
    public_subnet_cidrs: tuple[str, ...]
    private_subnet_cidrs: tuple[str, ...]
    nat_gateway_mode: str  # "single" or "per_az"
    flow_log_retention_days: int
    tags: Mapping[str, str]

    @property
    def az_count(self) -> int:
        return len(self.private_subnet_cidrs)

    @classmethod
    def from_config(cls, cfg: StackConfig) -> NetworkArgs:
        return cls(
            cluster_name=cfg.cluster_name,
            region=cfg.region,
            cidr=cfg.vpc_cidr,
            public_subnet_cidrs=cfg.public_subnet_cidrs,
            private_subnet_cidrs=cfg.private_subnet_cidrs,
            nat_gateway_mode=cfg.nat_gateway_mode,
            flow_log_retention_days=cfg.flow_log_retention_days,
            tags=cfg.tags,
        )


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    public_subnet_ids: list[pulumi.Output[str]]
    private_subnet_ids: list[pulumi.Output[str]]
    nat_gateway_ids: list[pulumi.Output[str]]
    availability_zones: list[str]

    def __init__(
        self,
        name: str,
        args: NetworkArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("raygpu:network:Network", name, {}, opts)
        if len(args.public_subnet_cidrs) != args.az_count:
            raise ValueError("one public and one private subnet per AZ are needed")

        def tags(resource_name: str, **extra: str) -> dict[str, str]:
            return {**args.tags, "Name": resource_name, **extra}

        child = pulumi.ResourceOptions(parent=self)
        zones = aws.get_availability_zones(
            state="available",
            filters=[
                aws.GetAvailabilityZonesFilterArgs(
                    name="opt-in-status", values=["opt-in-not-required"]
                )
            ],
            opts=pulumi.InvokeOptions(parent=self),
        )
        if len(zones.names) < args.az_count:
            raise ValueError(
                f"the region has {len(zones.names)} Availability Zones without opt-in, "
                f"the stack asks for {args.az_count} (raygpu:azCount)"
            )
        azs = list(zones.names[: args.az_count])
        self.availability_zones = azs

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags=tags(f"{name}-vpc"),
            opts=child,
        )
        # Take every rule off the default security group: nothing may use it by
        # accident (CIS AWS 5.4).
        aws.ec2.DefaultSecurityGroup(
            f"{name}-default-sg",
            vpc_id=vpc.id,
            ingress=[],
            egress=[],
            tags=tags(f"{name}-default-sg"),
            opts=child,
        )
        igw = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=vpc.id, tags=tags(f"{name}-igw"), opts=child
        )

        cluster_tag = f"kubernetes.io/cluster/{args.cluster_name}"
        public_rt = aws.ec2.RouteTable(
            f"{name}-public-rt",
            vpc_id=vpc.id,
            routes=[
                aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)
            ],
            tags=tags(f"{name}-public-rt"),
            opts=child,
        )
        public_subnets: list[aws.ec2.Subnet] = []
        private_subnets: list[aws.ec2.Subnet] = []
        for az, cidr in zip(azs, args.public_subnet_cidrs, strict=True):
            subnet_name = f"{name}-public-{az}"
            subnet = aws.ec2.Subnet(
                subnet_name,
                vpc_id=vpc.id,
                cidr_block=cidr,
                availability_zone=az,
                map_public_ip_on_launch=False,
                tags=tags(
                    subnet_name,
                    **{"kubernetes.io/role/elb": "1", cluster_tag: "shared"},
                ),
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{subnet_name}-rta",
                subnet_id=subnet.id,
                route_table_id=public_rt.id,
                opts=child,
            )
            public_subnets.append(subnet)

        nat_count = args.az_count if args.nat_gateway_mode == "per_az" else 1
        nats: list[aws.ec2.NatGateway] = []
        for az, subnet in zip(azs[:nat_count], public_subnets, strict=False):
            eip = aws.ec2.Eip(
                f"{name}-nat-eip-{az}",
                domain="vpc",
                tags=tags(f"{name}-nat-eip-{az}"),
                opts=child,
            )
            nats.append(
                aws.ec2.NatGateway(
                    f"{name}-nat-{az}",
                    allocation_id=eip.id,
                    subnet_id=subnet.id,
                    connectivity_type="public",
                    tags=tags(f"{name}-nat-{az}"),
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
                )
            )

        private_rts: list[aws.ec2.RouteTable] = []
        for i, (az, cidr) in enumerate(
            zip(azs, args.private_subnet_cidrs, strict=True)
        ):
            subnet_name = f"{name}-private-{az}"
            subnet = aws.ec2.Subnet(
                subnet_name,
                vpc_id=vpc.id,
                cidr_block=cidr,
                availability_zone=az,
                map_public_ip_on_launch=False,
                tags=tags(
                    subnet_name,
                    **{"kubernetes.io/role/internal-elb": "1", cluster_tag: "shared"},
                ),
                opts=child,
            )
            nat = nats[i] if args.nat_gateway_mode == "per_az" else nats[0]
            rt = aws.ec2.RouteTable(
                f"{name}-private-rt-{az}",
                vpc_id=vpc.id,
                routes=[
                    aws.ec2.RouteTableRouteArgs(
                        cidr_block="0.0.0.0/0", nat_gateway_id=nat.id
                    )
                ],
                tags=tags(f"{name}-private-rt-{az}"),
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{subnet_name}-rta",
                subnet_id=subnet.id,
                route_table_id=rt.id,
                opts=child,
            )
            private_subnets.append(subnet)
            private_rts.append(rt)

        aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=vpc.id,
            service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[rt.id for rt in private_rts],
            tags=tags(f"{name}-s3"),
            opts=child,
        )

        # Flow logs: every accepted and rejected flow, to CloudWatch Logs.
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs",
            retention_in_days=args.flow_log_retention_days,
            tags=tags(f"{name}-flow-logs"),
            opts=child,
        )
        flow_role = aws.iam.Role(
            f"{name}-flow-logs",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "vpc-flow-logs.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
            tags=tags(f"{name}-flow-logs", **{REGION_TAG: args.region}),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-flow-logs",
            role=flow_role.id,
            policy=log_group.arn.apply(
                lambda arn: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": [
                                    "logs:CreateLogStream",
                                    "logs:PutLogEvents",
                                    "logs:DescribeLogStreams",
                                ],
                                "Resource": [arn, f"{arn}:*"],
                            }
                        ],
                    }
                )
            ),
            opts=child,
        )
        aws.ec2.FlowLog(
            f"{name}-flow-log",
            vpc_id=vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=log_group.arn,
            iam_role_arn=flow_role.arn,
            max_aggregation_interval=60,
            tags=tags(f"{name}-flow-log"),
            opts=child,
        )

        self.vpc_id = vpc.id
        self.public_subnet_ids = [s.id for s in public_subnets]
        self.private_subnet_ids = [s.id for s in private_subnets]
        self.nat_gateway_ids = [n.id for n in nats]
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "public_subnet_ids": self.public_subnet_ids,
                "private_subnet_ids": self.private_subnet_ids,
                "nat_gateway_ids": self.nat_gateway_ids,
            }
        )
