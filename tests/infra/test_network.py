"""Network component under Pulumi's mock runtime."""

from __future__ import annotations

import ipaddress

import pulumi
import pytest

from infra.network import Network, NetworkArgs
from raygpu.offline import RaygpuMocks
from tests.infra.infra_helpers import run_component, stack_config

SUBNET = "aws:ec2/subnet:Subnet"


def network_run(**overrides):
    cfg = stack_config(**overrides)
    run = run_component(lambda: Network("net", NetworkArgs.from_config(cfg)), cfg)
    return cfg, run


@pytest.fixture(scope="module")
def single():
    return network_run(azCount=3, natGatewayMode="single")


@pytest.fixture(scope="module")
def per_az():
    return network_run(azCount=3, natGatewayMode="per_az")


def test_vpc_has_dns_and_the_configured_cidr(single):
    cfg, run = single
    vpc = run.one("aws:ec2/vpc:Vpc")["inputs"]
    assert vpc["cidrBlock"] == cfg.vpc_cidr
    assert vpc["enableDnsHostnames"] is True and vpc["enableDnsSupport"] is True


def test_subnets_span_the_azs_with_elb_discovery_tags(single):
    cfg, run = single
    subnets = run.of_type(SUBNET)
    public = [s["inputs"] for s in subnets if "-public-" in s["name"]]
    private = [s["inputs"] for s in subnets if "-private-" in s["name"]]
    assert len(public) == len(private) == 3
    assert {s["availabilityZone"] for s in private} == {
        "us-east-1a",
        "us-east-1b",
        "us-east-1c",
    }
    cluster_tag = f"kubernetes.io/cluster/{cfg.cluster_name}"
    for s in public:
        assert s["tags"]["kubernetes.io/role/elb"] == "1"
        assert "kubernetes.io/role/internal-elb" not in s["tags"]
        assert s["tags"][cluster_tag] == "shared"
    for s in private:
        assert s["tags"]["kubernetes.io/role/internal-elb"] == "1"
        assert "kubernetes.io/role/elb" not in s["tags"]
        assert s["tags"][cluster_tag] == "shared"
    # No subnet hands out public IPs (nodes live in private subnets).
    assert all(s["mapPublicIpOnLaunch"] is False for s in public + private)
    nets = [ipaddress.ip_network(s["cidrBlock"]) for s in public + private]
    for i, a in enumerate(nets):
        assert a.subnet_of(ipaddress.ip_network(cfg.vpc_cidr))
        assert not any(a.overlaps(b) for b in nets[i + 1 :])


def test_private_subnets_route_to_nat_and_public_to_igw(single):
    _, run = single
    rts = {r["name"]: r["inputs"] for r in run.of_type("aws:ec2/routeTable:RouteTable")}
    public = rts.pop("net-public-rt")
    assert public["routes"] == [
        {"cidrBlock": "0.0.0.0/0", "gatewayId": public["routes"][0]["gatewayId"]}
    ]
    assert len(rts) == 3
    for rt in rts.values():
        (route,) = rt["routes"]
        assert route["cidrBlock"] == "0.0.0.0/0" and route.get("natGatewayId")
        assert "gatewayId" not in route
    assocs = run.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
    assert len(assocs) == 6


def test_single_nat_gateway_shared_by_all_private_subnets(single):
    _, run = single
    nats = run.of_type("aws:ec2/natGateway:NatGateway")
    assert len(nats) == 1
    assert len(run.of_type("aws:ec2/eip:Eip")) == 1
    rts = [
        r
        for r in run.of_type("aws:ec2/routeTable:RouteTable")
        if "private" in r["name"]
    ]
    assert len({rt["inputs"]["routes"][0]["natGatewayId"] for rt in rts}) == 1


def test_one_nat_gateway_per_az(per_az):
    _, run = per_az
    nats = run.of_type("aws:ec2/natGateway:NatGateway")
    assert len(nats) == 3
    public_ids = {s["id"] for s in run.of_type(SUBNET) if "-public-" in s["name"]}
    assert {n["inputs"]["subnetId"] for n in nats} == public_ids
    rts = [
        r
        for r in run.of_type("aws:ec2/routeTable:RouteTable")
        if "private" in r["name"]
    ]
    assert len({rt["inputs"]["routes"][0]["natGatewayId"] for rt in rts}) == 3


def test_s3_gateway_endpoint_on_private_route_tables(single):
    _, run = single
    ep = run.one("aws:ec2/vpcEndpoint:VpcEndpoint")["inputs"]
    assert ep["vpcEndpointType"] == "Gateway"
    assert ep["serviceName"] == "com.amazonaws.us-east-1.s3"
    private_rts = {
        r["id"]
        for r in run.of_type("aws:ec2/routeTable:RouteTable")
        if "private" in r["name"]
    }
    assert set(ep["routeTableIds"]) == private_rts


def test_flow_logs_capture_all_traffic_to_cloudwatch(single):
    cfg, run = single
    flow = run.one("aws:ec2/flowLog:FlowLog")["inputs"]
    assert flow["trafficType"] == "ALL"
    assert flow["logDestinationType"] == "cloud-watch-logs"
    group = run.one("aws:cloudwatch/logGroup:LogGroup")
    assert flow["logDestination"].startswith("arn:aws:")
    assert group["inputs"]["retentionInDays"] == cfg.flow_log_retention_days
    role = run.one("aws:iam/role:Role")["inputs"]
    assert "vpc-flow-logs.amazonaws.com" in role["assumeRolePolicy"]
    policy = run.one("aws:iam/rolePolicy:RolePolicy")["inputs"]["policy"]
    assert '"Resource": "*"' not in policy


def test_default_security_group_has_no_rules(single):
    _, run = single
    sg = run.one("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")["inputs"]
    assert sg.get("ingress", []) == [] and sg.get("egress", []) == []


def test_every_resource_is_tagged_and_named_after_the_component(single):
    cfg, run = single
    for r in run.resources:
        if r["type"].startswith("aws:"):
            assert r["name"].startswith("net-"), r["name"]
            assert r["parent"] == "net"
            tags = r["inputs"].get("tags")
            if tags is not None:
                assert tags["raygpu:stack"] == cfg.stack
                assert tags["Name"] == r["name"]


def test_two_networks_do_not_collide():
    cfg = stack_config(azCount=2)
    run = run_component(
        lambda: (
            Network("a", NetworkArgs.from_config(cfg)),
            Network("b", NetworkArgs.from_config(cfg)),
        ),
        cfg,
    )
    urns = [r["urn"] for r in run.resources]
    assert len(urns) == len(set(urns))
    assert len(run.of_type("aws:ec2/vpc:Vpc")) == 2


class _FewZones(RaygpuMocks):
    def call(self, args):
        if "getAvailabilityZones" in args.token:
            return {"names": ["us-east-1a", "us-east-1b"], "zoneIds": [], "id": "x"}
        return super().call(args)


@pulumi.runtime.test
def test_outputs_resolve_to_the_vpc_and_subnets():
    cfg = stack_config(azCount=2)
    pulumi.runtime.set_mocks(RaygpuMocks("us-east-1"), project="raygpu", stack="dev")
    net = Network("net", NetworkArgs.from_config(cfg))

    def check(values):
        vpc_id, private, public = values
        assert vpc_id.startswith("vpc-")
        assert len(private) == len(public) == 2
        assert all(s.startswith("subnet-") for s in private + public)
        assert not set(private) & set(public)

    return pulumi.Output.all(
        net.vpc_id,
        pulumi.Output.all(*net.private_subnet_ids),
        pulumi.Output.all(*net.public_subnet_ids),
    ).apply(check)


def test_too_few_zones_in_region_is_a_clear_error():
    cfg = stack_config(azCount=3)
    pulumi.runtime.set_mocks(_FewZones("us-east-1"), project="raygpu", stack="dev")
    with pytest.raises(ValueError, match=r"2 Availability Zones.*azCount"):
        Network("net", NetworkArgs.from_config(cfg))
