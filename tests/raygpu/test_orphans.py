"""The orphan scan and --delete against a real AWS API (moto_server on loopback).

Each test builds what a deleted cluster leaves behind for its own stack, beside the
same kinds of resources of another stack, of a cluster whose name shares a prefix,
and untagged ones, then checks that exactly the stack's are found and deleted, in
an order the API accepts, and that the rest is untouched.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

import pytest

from raygpu import cli
from raygpu import orphans as orphans_mod
from raygpu.errors import CommandError, UsageError
from raygpu.orphans import (
    DELETE_ORDER,
    OrphanScanner,
    classify_arn,
    cluster_reason,
    sort_for_deletion,
)
from raygpu.stack import REPO_ROOT
from tests.raygpu.conftest import REGION


class FakeClock:
    """Advances time on sleep: bounded waits run instantly."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Leftovers:
    """Resource ids of one stack's leftovers, by kind."""

    stack: str
    cluster: str
    ids: dict[str, set[str]] = field(default_factory=dict)

    def add(self, kind: str, rid: str) -> None:
        self.ids.setdefault(kind, set()).add(rid)

    def all(self) -> set[tuple[str, str]]:
        return {(k, i) for k, ids in self.ids.items() for i in ids}


def _tags(**tags: str) -> list[dict[str, str]]:
    return [{"Key": k.replace("__", "/"), "Value": v} for k, v in tags.items()]


def _spec(rtype: str, tags: dict[str, str]) -> list[dict]:
    return [
        {
            "ResourceType": rtype,
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        }
    ]


def make_leftovers(session, vpc, subnets, stack: str, cluster: str, data_bucket: str):
    """What a stack whose cluster was deleted typically leaves behind."""
    ec2 = session.client("ec2")
    elbv2 = session.client("elbv2")
    elb = session.client("elb")
    s3 = session.client("s3")
    logs = session.client("logs")
    left = Leftovers(stack, cluster)
    suffix = uuid.uuid4().hex[:6]
    lbc = {"elbv2.k8s.aws/cluster": cluster, "ingress.k8s.aws/stack": "ray/serve"}
    owned = {f"kubernetes.io/cluster/{cluster}": "owned"}

    lb_sg = ec2.create_security_group(
        GroupName=f"k8s-traffic-{suffix}",
        Description="[k8s] Shared Backend SecurityGroup for LoadBalancer",
        VpcId=vpc,
        TagSpecifications=_spec("security-group", lbc),
    )["GroupId"]
    left.add("security-group", lb_sg)
    elb_sg = ec2.create_security_group(
        GroupName=f"k8s-elb-{suffix}",
        Description="Security group for Kubernetes ELB",
        VpcId=vpc,
        TagSpecifications=_spec("security-group", owned),
    )["GroupId"]
    left.add("security-group", elb_sg)
    # The node-side group allows traffic from the load balancer's group.
    ec2.authorize_security_group_ingress(
        GroupId=elb_sg,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 8000,
                "ToPort": 8000,
                "UserIdGroupPairs": [{"GroupId": lb_sg}],
            }
        ],
    )

    lb = elbv2.create_load_balancer(
        Name=f"k8s-ray-{suffix}",
        Subnets=subnets,
        SecurityGroups=[lb_sg],
        Scheme="internal",
        Tags=_tags(**{k.replace("/", "__"): v for k, v in lbc.items()}),
    )["LoadBalancers"][0]["LoadBalancerArn"]
    left.add("load-balancer", lb)
    tg = elbv2.create_target_group(
        Name=f"k8s-ray-serve-{suffix}",
        Protocol="HTTP",
        Port=8000,
        VpcId=vpc,
        Tags=[{"Key": "elbv2.k8s.aws/cluster", "Value": cluster}],
    )["TargetGroups"][0]["TargetGroupArn"]
    left.add("target-group", tg)
    # The listener keeps the target group in use until the load balancer goes.
    elbv2.create_listener(
        LoadBalancerArn=lb,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}],
    )
    clb = f"a{suffix}{'0' * 10}"
    elb.create_load_balancer(
        LoadBalancerName=clb,
        Listeners=[{"Protocol": "tcp", "LoadBalancerPort": 80, "InstancePort": 30080}],
        Subnets=[subnets[0]],
        SecurityGroups=[elb_sg],
        Tags=[{"Key": f"kubernetes.io/cluster/{cluster}", "Value": "owned"}],
    )
    left.add("classic-load-balancer", clb)

    cni = {"cluster.k8s.amazonaws.com/name": cluster, "node.k8s.amazonaws.com/no": "x"}
    free_eni = ec2.create_network_interface(
        SubnetId=subnets[0],
        Groups=[elb_sg],
        Description="aws-K8S-i-0123",
        TagSpecifications=_spec("network-interface", cni),
    )["NetworkInterface"]["NetworkInterfaceId"]
    left.add("network-interface", free_eni)
    # A secondary interface still attached to an (untagged) instance.
    instance = ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=subnets[1]
    )["Instances"][0]["InstanceId"]
    attached_eni = ec2.create_network_interface(
        SubnetId=subnets[1],
        TagSpecifications=_spec("network-interface", cni),
    )["NetworkInterface"]["NetworkInterfaceId"]
    ec2.attach_network_interface(
        NetworkInterfaceId=attached_eni, InstanceId=instance, DeviceIndex=1
    )
    left.add("network-interface", attached_eni)

    volume = ec2.create_volume(
        AvailabilityZone=f"{REGION}a",
        Size=10,
        VolumeType="gp3",
        TagSpecifications=_spec(
            "volume",
            {
                **owned,
                "kubernetes.io/created-for/pvc/name": "ray-logs",
                "kubernetes.io/created-for/pvc/namespace": "ray",
                "ebs.csi.aws.com/cluster": "true",
            },
        ),
    )["VolumeId"]
    left.add("volume", volume)

    # Retained on destroy (protectDataBucket): the data bucket and its key.
    key = session.client("kms").create_key(
        Description="S3 default encryption",
        Tags=[
            {"TagKey": "raygpu:stack", "TagValue": stack},
            {"TagKey": "Name", "TagValue": f"raygpu-{stack}-storage-kms"},
        ],
    )["KeyMetadata"]["Arn"]
    left.add("kms-key", key)
    region_cfg = {"LocationConstraint": REGION}
    for bucket, name, role in (
        (f"{stack}-artifacts", f"raygpu-{stack}-storage-artifacts", "artifacts"),
        (data_bucket, f"raygpu-{stack}-storage-data", "data"),
    ):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration=region_cfg)
        s3.put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
        )
        s3.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": key,
                        },
                        "BucketKeyEnabled": True,
                    }
                ]
            },
        )
        s3.put_bucket_tagging(
            Bucket=bucket,
            Tagging={
                "TagSet": [
                    {"Key": "raygpu:stack", "Value": stack},
                    {"Key": "Name", "Value": name},
                    {"Key": "raygpu:bucket", "Value": role},
                ]
            },
        )
        for version in range(2):
            s3.put_object(Bucket=bucket, Key="runs/a/ckpt", Body=f"v{version}")
        s3.delete_object(Bucket=bucket, Key="runs/a/ckpt")  # leaves a marker
        left.add("s3-bucket", bucket)
    logs.create_log_group(logGroupName=f"/aws/eks/{cluster}/cluster")
    left.add("log-group", f"/aws/eks/{cluster}/cluster")

    # IAM, which the Tagging API does not list: a node role with a managed and an
    # inline policy and an instance profile, and the cluster's OIDC provider
    # (its region in the URL only).
    iam = session.client("iam")
    role = make_role(iam, f"{cluster}-node-{suffix}", stack, REGION)
    managed = iam.create_policy(PolicyName=f"{role}-p", PolicyDocument=_POLICY)
    iam.attach_role_policy(RoleName=role, PolicyArn=managed["Policy"]["Arn"])
    iam.put_role_policy(RoleName=role, PolicyName="inline", PolicyDocument=_POLICY)
    iam.create_instance_profile(InstanceProfileName=f"{role}-profile")
    iam.add_role_to_instance_profile(
        InstanceProfileName=f"{role}-profile", RoleName=role
    )
    left.add("iam-role", role)
    left.add("iam-oidc-provider", make_oidc_provider(iam, stack, REGION))
    return left


_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}],
    }
)


def make_role(iam, name: str, stack: str, region: str | None) -> str:
    tags = {"raygpu:stack": stack, "raygpu:project": "raygpu"}
    if region:
        tags["raygpu:region"] = region
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    iam.create_role(
        RoleName=name,
        AssumeRolePolicyDocument=json.dumps(trust),
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
    )
    return name


def make_oidc_provider(
    iam, stack: str, region: str, tags: dict[str, str] | None = None, host=None
) -> str:
    issuer = host or f"oidc.eks.{region}.amazonaws.com"
    tags = {"raygpu:stack": stack, **(tags or {})}
    return iam.create_open_id_connect_provider(
        Url=f"https://{issuer}/id/{uuid.uuid4().hex.upper()}",
        ClientIDList=["sts.amazonaws.com"],
        ThumbprintList=["9e99a48a9960b14926bb7f3b02e22da2b0ab7280"],
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
    )["OpenIDConnectProviderArn"]


def make_bystanders(session, vpc, subnets, cluster: str) -> dict[str, set[str]]:
    """Resources that must never be touched: untagged, shared, other clusters."""
    ec2 = session.client("ec2")
    elbv2 = session.client("elbv2")
    s3 = session.client("s3")
    suffix = uuid.uuid4().hex[:6]
    kept: dict[str, set[str]] = {}
    shared = {f"kubernetes.io/cluster/{cluster}": "shared"}
    prefix_twin = {"elbv2.k8s.aws/cluster": f"{cluster}2"}
    for name, tags in (("plain", {}), ("shared", shared), ("twin", prefix_twin)):
        spec = _spec("security-group", tags) if tags else []
        kept.setdefault("security-group", set()).add(
            ec2.create_security_group(
                GroupName=f"{name}-{suffix}",
                Description=name,
                VpcId=vpc,
                TagSpecifications=spec,
            )["GroupId"]
        )
        kept.setdefault("volume", set()).add(
            ec2.create_volume(
                AvailabilityZone=f"{REGION}a",
                Size=1,
                TagSpecifications=_spec("volume", tags) if tags else [],
            )["VolumeId"]
        )
    # CSI volume of some cluster: no cluster name in its tags, so never ours.
    kept["volume"].add(
        ec2.create_volume(
            AvailabilityZone=f"{REGION}a",
            Size=1,
            TagSpecifications=_spec("volume", {"ebs.csi.aws.com/cluster": "true"}),
        )["VolumeId"]
    )
    lb = elbv2.create_load_balancer(
        Name=f"twin-{suffix}",
        Subnets=subnets,
        Tags=[{"Key": "elbv2.k8s.aws/cluster", "Value": f"{cluster}2"}],
    )["LoadBalancers"][0]["LoadBalancerArn"]
    tg = elbv2.create_target_group(
        Name=f"plain-{suffix}", Protocol="HTTP", Port=80, VpcId=vpc
    )["TargetGroups"][0]["TargetGroupArn"]
    elbv2.create_listener(
        LoadBalancerArn=lb,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}],
    )
    kept["load-balancer"] = {lb}
    kept["target-group"] = {tg}
    kept["network-interface"] = {
        ec2.create_network_interface(SubnetId=subnets[0])["NetworkInterface"][
            "NetworkInterfaceId"
        ]
    }
    bucket = f"plain-{suffix}"
    s3.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    kept["s3-bucket"] = {bucket}
    return kept


def exists(session, kind: str, rid: str) -> bool:
    ec2 = session.client("ec2")
    try:
        if kind == "security-group":
            return bool(ec2.describe_security_groups(GroupIds=[rid])["SecurityGroups"])
        elif kind == "volume":
            return bool(ec2.describe_volumes(VolumeIds=[rid])["Volumes"])
        elif kind == "network-interface":
            found = ec2.describe_network_interfaces(NetworkInterfaceIds=[rid])
            return bool(found["NetworkInterfaces"])
        elif kind == "load-balancer":
            session.client("elbv2").describe_load_balancers(LoadBalancerArns=[rid])
        elif kind == "target-group":
            session.client("elbv2").describe_target_groups(TargetGroupArns=[rid])
        elif kind == "classic-load-balancer":
            session.client("elb").describe_load_balancers(LoadBalancerNames=[rid])
        elif kind == "s3-bucket":
            session.client("s3").head_bucket(Bucket=rid)
        elif kind == "kms-key":
            key = session.client("kms").describe_key(KeyId=rid)["KeyMetadata"]
            return key["KeyState"] != "PendingDeletion"
        elif kind == "log-group":
            groups = session.client("logs").describe_log_groups(logGroupNamePrefix=rid)
            return any(g["logGroupName"] == rid for g in groups["logGroups"])
        elif kind == "iam-role":
            session.client("iam").get_role(RoleName=rid)
        elif kind == "iam-oidc-provider":
            session.client("iam").get_open_id_connect_provider(
                OpenIDConnectProviderArn=rid
            )
        else:
            raise AssertionError(kind)
    except session.client("s3").exceptions.ClientError:
        return False
    return True


@pytest.fixture
def two_stacks(aws):
    """Leftovers of `dev`, of another stack, and bystanders; unique names per test."""
    session, vpc, subnets = aws
    tag = uuid.uuid4().hex[:6]
    dev = make_leftovers(
        session, vpc, subnets, f"dev{tag}", f"raygpu-dev{tag}", f"dev{tag}-data"
    )
    other = make_leftovers(
        session, vpc, subnets, f"prod{tag}", f"raygpu-prod{tag}", f"prod{tag}-data"
    )
    bystanders = make_bystanders(session, vpc, subnets, dev.cluster)
    return session, dev, other, bystanders


def scanner(session, left: Leftovers, **kwargs) -> OrphanScanner:
    lines: list[str] = []
    scan = OrphanScanner(
        session,
        left.stack,
        cluster_name=left.cluster,
        data_bucket=f"{left.stack}-data",
        clock=FakeClock(),
        wait_timeout_s=30,
        interval_s=1,
        log=lines.append,
        **kwargs,
    )
    scan.lines = lines
    return scan


def test_scan_finds_exactly_the_stacks_resources(two_stacks):
    session, dev, other, _ = two_stacks
    found = scanner(session, dev).scan()
    assert {(o.kind, o.id) for o in found} == dev.all()
    # In deletion order, the data bucket marked protected, each with its reason.
    assert [o.kind for o in found] == sorted(
        (o.kind for o in found), key=DELETE_ORDER.index
    )
    protected = [(o.kind, o.id) for o in found if o.protected]
    keys = [("kms-key", key) for key in dev.ids["kms-key"]]
    assert protected == [("s3-bucket", f"{dev.stack}-data"), *keys]
    reasons = {o.kind: o.reason for o in found}
    assert reasons["load-balancer"] == f"elbv2.k8s.aws/cluster={dev.cluster}"
    assert reasons["volume"] == f"kubernetes.io/cluster/{dev.cluster}=owned"
    assert reasons["network-interface"] == (
        f"cluster.k8s.amazonaws.com/name={dev.cluster}"
    )
    assert reasons["s3-bucket"] == f"raygpu:stack={dev.stack}"


def test_scan_without_cluster_name_sees_only_the_stack_tag(two_stacks):
    session, dev, _, _ = two_stacks
    scan = OrphanScanner(session, dev.stack, cluster_name=None)
    found = scan.scan()
    assert {(o.kind, o.id) for o in found} == {
        ("s3-bucket", f"{dev.stack}-artifacts"),
        ("s3-bucket", f"{dev.stack}-data"),
        *(("kms-key", key) for key in dev.ids["kms-key"]),
        *(("iam-role", role) for role in dev.ids["iam-role"]),
        *(("iam-oidc-provider", arn) for arn in dev.ids["iam-oidc-provider"]),
    }
    # No outputs after a destroy: the data bucket is known by its tag, and
    # the key that encrypts it is kept with it.
    assert {o.id for o in found if o.protected} == {
        f"{dev.stack}-data",
        *dev.ids["kms-key"],
    }


def test_delete_removes_the_stacks_resources_in_order_and_nothing_else(two_stacks):
    session, dev, other, bystanders = two_stacks
    scan = scanner(session, dev)
    outcomes = scan.delete(scan.scan())

    actions = {(o.orphan.kind, o.orphan.id): o.action for o in outcomes}
    data = ("s3-bucket", f"{dev.stack}-data")
    (key,) = (("kms-key", k) for k in dev.ids["kms-key"])
    assert actions.pop(data) == "kept"
    assert actions.pop(key) == "kept"
    assert set(actions.values()) == {"deleted"}, [o.line() for o in outcomes]
    assert set(actions) == dev.all() - {data, key}
    # Reported one by one, in dependency order: load balancers before their
    # target groups, interfaces and volumes before security groups.
    kinds = [o.orphan.kind for o in outcomes]
    assert kinds == sorted(kinds, key=DELETE_ORDER.index)
    assert kinds.index("target-group") > kinds.index("load-balancer")
    assert kinds.index("security-group") > kinds.index("network-interface")
    assert any(line.startswith("detached") for line in scan.lines)
    # Every wait (detach, load balancers gone, each deletion done) ended in time.
    assert not [line for line in scan.lines if line.startswith("warning")]

    for kind, rid in dev.all() - {data, key}:
        assert not exists(session, kind, rid), (kind, rid)
    assert exists(session, *data)
    assert exists(session, *key)
    for kind, rid in other.all():
        assert exists(session, kind, rid), (kind, rid)
    for kind, ids in bystanders.items():
        for rid in ids:
            assert exists(session, kind, rid), (kind, rid)
    # A second scan finds only the protected bucket and its key.
    again = [(o.kind, o.id, o.protected) for o in scan.scan()]
    assert again == [(*data, True), (*key, True)]


def test_delete_data_bucket_only_when_asked(two_stacks):
    session, dev, _, _ = two_stacks
    scan = scanner(session, dev)
    data = [o for o in scan.scan() if o.protected]
    assert [o.kind for o in data] == ["s3-bucket", "kms-key"]
    assert [o.action for o in scan.delete(data)] == ["kept", "kept"]
    assert exists(session, "s3-bucket", f"{dev.stack}-data")
    outcomes = scan.delete(data, delete_data_bucket=True)
    # Every object version emptied first; the key then scheduled for deletion.
    assert [o.action for o in outcomes] == ["deleted", "deleted"], outcomes
    assert not exists(session, "s3-bucket", f"{dev.stack}-data")
    assert not exists(session, "kms-key", data[1].id)


def test_volume_on_a_running_instance_is_reported_not_detached(aws):
    session, vpc, subnets = aws
    ec2 = session.client("ec2")
    cluster = f"raygpu-v{uuid.uuid4().hex[:6]}"
    instance = ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=subnets[0]
    )["Instances"][0]["InstanceId"]
    volume = ec2.create_volume(
        AvailabilityZone=f"{REGION}a",
        Size=1,
        TagSpecifications=_spec("volume", {"KubernetesCluster": cluster}),
    )["VolumeId"]
    ec2.attach_volume(VolumeId=volume, InstanceId=instance, Device="/dev/sdf")
    scan = OrphanScanner(session, "v", cluster_name=cluster, clock=FakeClock())
    outcomes = scan.delete(scan.scan())
    assert [(o.orphan.id, o.action) for o in outcomes] == [(volume, "not-deleted")]
    assert "running instance" in outcomes[0].message
    assert exists(session, "volume", volume)


def test_iam_of_the_same_stack_name_elsewhere_is_left_alone(aws):
    session, _, _ = aws
    iam = session.client("iam")
    stack = f"i{uuid.uuid4().hex[:6]}"
    ours = make_role(iam, f"{stack}-ours", stack, REGION)
    elsewhere = make_role(iam, f"{stack}-eu", stack, "eu-west-1")
    untagged_region = make_role(iam, f"{stack}-old", stack, None)
    other_stack = make_role(iam, f"{stack}x-ours", f"{stack}x", REGION)
    our_oidc = make_oidc_provider(iam, stack, REGION)
    eu_oidc = make_oidc_provider(iam, stack, "eu-west-1")
    # The tag wins over the URL; a provider that is not EKS's names no region.
    tagged_eu_oidc = make_oidc_provider(
        iam, stack, REGION, tags={"raygpu:region": "eu-west-1"}
    )
    other_oidc = make_oidc_provider(iam, stack, REGION, host="token.example.com")

    scan = OrphanScanner(session, stack, clock=FakeClock(), log=lambda line: None)
    found = {(o.kind, o.id): o for o in scan.scan()}
    assert set(found) == {
        ("iam-role", ours),
        ("iam-role", untagged_region),
        ("iam-oidc-provider", our_oidc),
        ("iam-oidc-provider", other_oidc),
    }
    assert found[("iam-role", ours)].reason == (
        f"raygpu:stack={stack}, raygpu:region={REGION}"
    )
    assert found[("iam-oidc-provider", our_oidc)].reason == (
        f"raygpu:stack={stack}, region {REGION} in its URL"
    )
    assert "names no region" in found[("iam-role", untagged_region)].describe()
    assert "names no region" in found[("iam-oidc-provider", other_oidc)].describe()

    outcomes = {o.orphan.id: o for o in scan.delete(found.values())}
    assert outcomes[ours].action == "deleted"
    assert outcomes[our_oidc].action == "deleted"
    # No region tag: reported, not deleted (IAM is account-wide).
    assert outcomes[untagged_region].action == "not-deleted"
    assert "by hand" in outcomes[untagged_region].message
    assert not exists(session, "iam-role", ours)
    assert not exists(session, "iam-oidc-provider", our_oidc)
    for role in (elsewhere, untagged_region, other_stack):
        assert exists(session, "iam-role", role), role
    for arn in (eu_oidc, tagged_eu_oidc, other_oidc):
        assert exists(session, "iam-oidc-provider", arn), arn
    assert outcomes[other_oidc].action == "not-deleted"


def test_iam_is_kept_while_the_stacks_cluster_still_exists(aws):
    session, _, subnets = aws
    iam = session.client("iam")
    stack = f"c{uuid.uuid4().hex[:6]}"
    cluster = f"raygpu-{stack}"
    role = make_role(iam, f"{stack}-cluster", stack, REGION)
    oidc = make_oidc_provider(iam, stack, REGION)
    session.client("eks").create_cluster(
        name=cluster,
        roleArn=iam.get_role(RoleName=role)["Role"]["Arn"],
        resourcesVpcConfig={"subnetIds": subnets},
    )
    scan = OrphanScanner(
        session, stack, cluster_name=cluster, clock=FakeClock(), log=lambda x: None
    )
    outcomes = scan.delete(scan.scan())
    assert {(o.orphan.id, o.action) for o in outcomes} == {
        (role, "not-deleted"),
        (oidc, "not-deleted"),
    }
    assert all(f"EKS cluster {cluster} still exists" in o.message for o in outcomes)
    assert exists(session, "iam-role", role)
    session.client("eks").delete_cluster(name=cluster)
    outcomes = scan.delete(scan.scan())
    assert {o.action for o in outcomes} == {"deleted"}
    assert not exists(session, "iam-role", role)


def test_iam_is_kept_when_the_cluster_cannot_be_checked(aws):
    from botocore.stub import Stubber

    session, _, _ = aws
    iam = session.client("iam")
    stack = f"k{uuid.uuid4().hex[:6]}"
    role = make_role(iam, f"{stack}-node", stack, REGION)
    scan = OrphanScanner(
        session, stack, cluster_name=f"raygpu-{stack}", clock=FakeClock(), log=print
    )
    found = scan.scan()
    eks = session.client("eks")
    scan._clients["eks"] = eks  # the client the check will use, stubbed below
    with Stubber(eks) as stub:
        stub.add_client_error(
            "describe_cluster",
            service_error_code="AccessDeniedException",
            http_status_code=403,
        )
        (outcome,) = scan.delete(found)
    assert outcome.action == "not-deleted"
    assert "cannot tell whether EKS cluster" in outcome.message
    assert exists(session, "iam-role", role)


def test_a_scan_iam_refuses_fails_in_one_line_naming_the_permission(aws):
    from botocore.stub import Stubber

    session, _, _ = aws
    scan = OrphanScanner(session, "denied", clock=FakeClock())
    iam = session.client("iam")
    scan._clients["iam"] = iam  # the client the scan will use, stubbed below
    with Stubber(iam) as stub:
        stub.add_client_error(
            "list_roles", service_error_code="AccessDenied", http_status_code=403
        )
        with pytest.raises(CommandError) as err:
            scan.scan()
    message = str(err.value)
    assert "IAM refused iam:ListRoles (AccessDenied)" in message
    assert "nothing was deleted" in message and "\n" not in message


def test_iam_deleted_between_list_and_tags_is_skipped(aws):
    # A role or provider another actor deletes between IAM's list call and its
    # tag call is gone: skipped, not an error and not a "leftover".
    from botocore.stub import Stubber

    session, _, _ = aws
    stack = "gone"
    scan = OrphanScanner(session, stack, clock=FakeClock())
    iam = session.client("iam")
    scan._clients["iam"] = iam  # the client the scan will use, stubbed below
    arn = "arn:aws:iam::123456789012:role/{}"
    oidc = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.{}.amazonaws.com/id/AB"
    roles = [
        {
            "Path": "/",
            "RoleName": name,
            "RoleId": "AROAEXAMPLEID0000000" + name[-1],
            "Arn": arn.format(name),
            "CreateDate": datetime.datetime(2026, 1, 1),
        }
        for name in ("gone-1", "kept-2")
    ]
    ours = [{"Key": "raygpu:stack", "Value": stack}]
    with Stubber(iam) as stub:
        stub.add_response("list_roles", {"Roles": roles, "IsTruncated": False})
        stub.add_client_error(
            "list_role_tags", service_error_code="NoSuchEntity", http_status_code=404
        )
        stub.add_response(
            "list_role_tags",
            {"Tags": [*ours, {"Key": "raygpu:region", "Value": REGION}]},
        )
        stub.add_response(
            "list_open_id_connect_providers",
            {"OpenIDConnectProviderList": [{"Arn": oidc.format(REGION)}]},
        )
        stub.add_client_error(
            "list_open_id_connect_provider_tags",
            service_error_code="NoSuchEntity",
            http_status_code=404,
        )
        found = scan.scan_iam()
        stub.assert_no_pending_responses()
    assert [(o.kind, o.id) for o in found] == [("iam-role", "kept-2")]


def test_stack_tagged_kinds_without_a_deleter_are_reported(aws):
    session, vpc, subnets = aws
    ec2 = session.client("ec2")
    stack = f"s{uuid.uuid4().hex[:6]}"
    subnet = ec2.create_subnet(
        VpcId=vpc,
        CidrBlock="10.0.9.0/24",
        TagSpecifications=_spec("subnet", {"raygpu:stack": stack}),
    )["Subnet"]["SubnetId"]
    scan = OrphanScanner(session, stack, clock=FakeClock(), log=lambda line: None)
    found = scan.scan()
    assert [(o.kind, o.id) for o in found] == [("ec2:subnet", subnet)]
    outcomes = scan.delete(found)
    assert outcomes[0].action == "not-deleted"
    assert "make destroy" in outcomes[0].message


def test_cli_lists_then_deletes(two_stacks, tmp_path, capsys):
    session, dev, _, _ = two_stacks
    outputs = tmp_path / "outputs.json"
    outputs.write_text(
        json.dumps(
            {
                "region": REGION,
                "cluster_name": dev.cluster,
                "data_bucket": f"{dev.stack}-data",
                "kubeconfig": "secret",
            }
        )
    )
    base = ["--stack", dev.stack, "--outputs", str(outputs)]
    assert cli.main(["orphans", *base]) == 1
    listed = capsys.readouterr().out
    assert f"{len(dev.all())} resource(s) left" in listed
    assert f"kept (protected) s3-bucket {dev.stack}-data" in listed

    assert cli.main(["orphans", *base, "--delete"]) == 0
    out = capsys.readouterr().out
    assert "2 kept, 0 left" in out
    assert (
        cli.main(["orphans", *base]) == 0
    )  # only the protected bucket and key are left
    assert "2 resource(s) left" in capsys.readouterr().out
    assert cli.main(["orphans", *base, "--json"]) == 0
    left = json.loads(capsys.readouterr().out)
    assert [o["id"] for o in left] == [f"{dev.stack}-data", *dev.ids["kms-key"]]


def test_cli_bad_input_is_one_line_without_traceback(moto_server, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "raygpu",
            "orphans",
            "--stack",
            "nosuchstack",
            "--outputs",
            str(tmp_path / "missing.json"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("raygpu orphans: error: --outputs: cannot read")
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "raygpu",
            "orphans",
            "--stack",
            "x",
            "--cluster-name",
            "a b",
            "--region",
            REGION,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert "--cluster-name: 'a b' is not an EKS cluster name" in bad.stderr


# ------------------------------------- an AWS that cannot be used: one line


@contextlib.contextmanager
def closed_port():
    """A loopback port that refuses connections: bound, never listening, so
    nothing else can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def no_aws_env(tmp_path, **extra: str) -> dict[str, str]:
    """An environment with no AWS configuration at all: no credentials, no
    config files, no instance metadata, nothing in HOME."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    return {**env, **extra}


def run_raygpu(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "raygpu", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


SCAN = ["--stack", "dev", "--region", REGION, "--cluster-name", "raygpu-dev"]


def test_no_credentials_is_one_line_saying_how_to_log_in(tmp_path):
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"region": REGION}))
    commands = {
        "orphans": ["orphans", *SCAN],
        "destroy": ["destroy", *SCAN, "--outputs", str(outputs), "--yes"],
    }
    with closed_port() as port:  # were a request made, it would stay on loopback
        env = no_aws_env(tmp_path, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
        for command, args in commands.items():
            proc = run_raygpu(env, *args)
            assert proc.returncode == 2, proc.stderr
            assert proc.stderr.splitlines() == [
                f"raygpu {command}: error: no AWS credentials found: run `aws "
                "configure` (or `aws sso login` and set AWS_PROFILE), or set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ]
            assert proc.stdout == ""


def test_an_unreachable_endpoint_is_one_line_naming_it(tmp_path):
    with closed_port() as port:
        url = f"http://127.0.0.1:{port}"
        env = no_aws_env(
            tmp_path,
            AWS_ENDPOINT_URL=url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
        )
        started = time.monotonic()
        proc = run_raygpu(env, "orphans", *SCAN)
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"raygpu orphans: error: cannot reach AWS at {url}")
    assert f"check AWS_ENDPOINT_URL={url}" in line
    assert proc.stdout == ""
    assert time.monotonic() - started < 60  # a few quick retries, not minutes


def test_an_unknown_region_is_one_line_naming_where_it_came_from(moto_server, tmp_path):
    env = no_aws_env(tmp_path, **moto_server.env)
    scan = ["--stack", "dev", "--region", "us-nowhere-1", "--cluster-name", "c"]
    proc = run_raygpu(env, "orphans", *scan)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(
        "raygpu orphans: error: --region: 'us-nowhere-1' is not an AWS region; "
    )
    assert "newer boto3" in line
    # From the stack's outputs: named as such, with the region it resembles.
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"region": "eu-wset-1", "cluster_name": "c"}))
    proc = run_raygpu(env, "orphans", "--stack", "dev", "--outputs", str(outputs))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(
        "raygpu orphans: error: stack output 'region': 'eu-wset-1' is not an AWS "
        "region; did you mean eu-west-1? "
    )
    assert len(proc.stderr.splitlines()) == 1


def test_the_target_takes_flags_then_outputs_and_names_the_regions_source():
    outputs = {"region": "eu-west-1", "cluster_name": "c-out", "data_bucket": "b"}
    target = orphans_mod.target_for("nofile", outputs, "us-west-2", "c-flag")
    assert (target.region, target.region_source) == ("us-west-2", "--region")
    assert (target.cluster_name, target.data_bucket) == ("c-flag", "b")
    target = orphans_mod.target_for("nofile", outputs)
    assert (target.region, target.region_source) == (
        "eu-west-1",
        "stack output 'region'",
    )
    assert target.cluster_name == "c-out"
    with pytest.raises(UsageError, match="^--region: no region for stack 'nofile'"):
        orphans_mod.target_for("nofile", {})


def test_the_data_bucket_is_known_by_its_tag_then_by_its_name(aws):
    session, _, _ = aws
    scan = OrphanScanner(session, "dev", clock=FakeClock())
    assert scan.is_data_bucket("b", {"raygpu:bucket": "data", "Name": "x"})
    # The tag wins over a Name that happens to end in -data.
    assert not scan.is_data_bucket(
        "b", {"raygpu:bucket": "artifacts", "Name": "a-data"}
    )
    # A bucket made before the tag: its Name.
    assert scan.is_data_bucket("b", {"Name": "raygpu-dev-storage-data"})
    assert not scan.is_data_bucket("b", {"Name": "raygpu-dev-storage-artifacts"})
    # With the stack's outputs at hand, the output's name decides.
    named = OrphanScanner(session, "dev", data_bucket="b", clock=FakeClock())
    assert named.is_data_bucket("b", {})
    assert not named.is_data_bucket("c", {"raygpu:bucket": "data"})
    # The data bucket's access logs are kept with it, by their tag.
    for scanner in (scan, named):
        assert scanner.is_data_bucket("logs", {"raygpu:bucket": "access-logs"})


def test_iam_arns_are_left_to_the_iam_scan():
    # In us-east-1 the Tagging API also returns global IAM resources; scan_iam
    # lists them with the region check, so the tagged scan skips them.
    arn = (
        "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/X"
    )
    assert orphans_mod.is_iam_arn(arn)
    assert orphans_mod.is_iam_arn("arn:aws-cn:iam::123456789012:role/r")
    assert not orphans_mod.is_iam_arn("arn:aws:s3:::dev-data")
    assert not orphans_mod.is_iam_arn("not-an-arn")


def test_iam_the_tagging_api_returns_gets_the_region_check(aws):
    # In us-east-1 the Tagging API also returns IAM resources. A role of the
    # same stack name in another region must not come back through it.
    from botocore.stub import Stubber

    session, _, _ = aws
    iam = session.client("iam")
    stack = f"t{uuid.uuid4().hex[:6]}"
    theirs = make_role(iam, f"{stack}-eu", stack, "eu-west-1")
    arn = iam.get_role(RoleName=theirs)["Role"]["Arn"]
    scan = OrphanScanner(session, stack, clock=FakeClock(), log=lambda line: None)
    tagging = session.client("resourcegroupstaggingapi")
    scan._clients["resourcegroupstaggingapi"] = tagging  # stubbed below
    tags = [{"Key": "raygpu:stack", "Value": stack}]
    with Stubber(tagging) as stub:
        stub.add_response(
            "get_resources",
            {"ResourceTagMappingList": [{"ResourceARN": arn, "Tags": tags}]},
        )
        assert scan.scan() == []
    assert exists(session, "iam-role", theirs)


def test_cluster_reason_and_arn_classes():
    assert cluster_reason({"kubernetes.io/cluster/c": "owned"}, "c")
    assert cluster_reason({"kubernetes.io/cluster/c": "shared"}, "c") is None
    assert cluster_reason({"elbv2.k8s.aws/cluster": "c2"}, "c") is None
    assert cluster_reason({"elbv2.k8s.aws/cluster": "c"}, None) is None
    assert cluster_reason({"ebs.csi.aws.com/cluster": "true"}, "c") is None
    arn = "arn:aws:elasticloadbalancing:r:1:loadbalancer/app/n/1"
    assert classify_arn(arn) == ("load-balancer", arn)
    assert classify_arn("arn:aws:elasticloadbalancing:r:1:loadbalancer/old") == (
        "classic-load-balancer",
        "old",
    )
    assert classify_arn("arn:aws:ec2:r:1:volume/vol-1") == ("volume", "vol-1")
    assert classify_arn("arn:aws:ec2:r:1:natgateway/nat-1") == (
        "ec2:natgateway",
        "nat-1",
    )
    assert classify_arn("arn:aws:s3:::b") == ("s3-bucket", "b")
    assert classify_arn("arn:aws:logs:r:1:log-group:/a/b:*") == ("log-group", "/a/b")
    assert classify_arn("arn:aws:kms:r:1:key/k")[0] == "kms-key"
    assert classify_arn("arn:aws:eks:r:1:cluster/c")[0] == "eks:cluster"
    shuffled = sort_for_deletion(
        [
            orphans_mod.Orphan(kind, kind, kind, "r")
            for kind in reversed([*DELETE_ORDER, "ec2:vpc"])
        ]
    )
    assert [o.kind for o in shuffled] == [*DELETE_ORDER, "ec2:vpc"]
