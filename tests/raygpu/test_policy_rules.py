"""Every policy rule on a compliant and on a violating resource set.

CASES maps each rule ID to (compliant resources, violating resources, the name of
the resource the violation must name). A test checks that CASES covers every rule.
"""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest

from raygpu import helm_values, manifests, network_policies, policy, versions
from raygpu.policy import MANDATORY, Resource
from raygpu.policy.runner import stack_validation
from raygpu.render import PLACEHOLDER_REFS
from tests.infra.infra_helpers import stack_config

CFG = stack_config("dev")


def res(typ: str, name: str, rid: str | None = None, /, *, _deps=None, **props):
    """A planned resource; `rid` its ID (default: its name), `_deps` its inputs'
    property dependencies."""
    return Resource(
        type=typ,
        name=name,
        urn=f"urn:pulumi:t::p::{typ}::{name}",
        props=props,
        id=rid if rid is not None else name,
        property_dependencies=_deps or {},
    )


BUCKET = "aws:s3/bucket:Bucket"
BUCKET_ARN = "arn:aws:s3:::data-1"


def bucket(**props):
    return res(BUCKET, "data", "data-1", arn=BUCKET_ARN, **props)


def on_bucket(typ, name, **props):
    # Linked by the engine's property dependency, as under `pulumi preview`.
    return res(typ, name, _deps={"bucket": (bucket().urn,)}, bucket="unknown", **props)


PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
FLAGS = dict.fromkeys(
    (
        "blockPublicAcls",
        "blockPublicPolicy",
        "ignorePublicAcls",
        "restrictPublicBuckets",
    ),
    True,
)
SSE = (
    "aws:s3/bucketServerSideEncryptionConfiguration:"
    "BucketServerSideEncryptionConfiguration"
)


def sse(algorithm="aws:kms", key="arn:aws:kms:us-east-1:1:key/k"):
    rule = {"sseAlgorithm": algorithm, "kmsMasterKeyId": key}
    return on_bucket(SSE, "enc", rules=[{"applyServerSideEncryptionByDefault": rule}])


def tls_policy(resources):
    return json.dumps(
        {
            "Statement": [
                {
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": resources,
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                }
            ]
        }
    )


CLUSTER = "aws:eks/cluster:Cluster"


def cluster(**over):
    props = {
        "name": "c1",
        "version": "1.33",
        "vpcConfig": {"endpointPrivateAccess": True, "endpointPublicAccess": False},
        "encryptionConfig": {"provider": {"keyArn": "arn:k"}, "resources": ["secrets"]},
        "enabledClusterLogTypes": [
            "api",
            "audit",
            "authenticator",
            "controllerManager",
            "scheduler",
        ],
        "accessConfig": {"authenticationMode": "API"},
    }
    props.update(over)
    return res(CLUSTER, "eks", "c1", **props)


def vpc_cni(config):
    return res(
        "aws:eks/addon:Addon",
        "vpc-cni",
        _deps={"clusterName": (cluster().urn,)},
        clusterName="c1",
        addonName="vpc-cni",
        **({"configurationValues": config} if config else {}),
    )


LT = "aws:ec2/launchTemplate:LaunchTemplate"


def template(hops=1, tokens="required", encrypted="true"):
    return res(
        LT,
        "lt",
        metadataOptions={"httpTokens": tokens, "httpPutResponseHopLimit": hops},
        blockDeviceMappings=[{"ebs": {"encrypted": encrypted, "volumeSize": 50}}],
    )


def role_policy(statements):
    doc = json.dumps({"Version": "2012-10-17", "Statement": statements})
    return res("aws:iam/rolePolicy:RolePolicy", "pol", role="r", policy=doc)


def trust(condition):
    doc = {
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": "arn:aws:iam::1:oidc-provider/x"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": condition,
            }
        ]
    }
    return res("aws:iam/role:Role", "irsa", assumeRolePolicy=json.dumps(doc))


OIDC = "oidc.eks.us-east-1.amazonaws.com/id/X"
GOOD_TRUST = {
    "StringEquals": {
        f"{OIDC}:sub": [
            "system:serviceaccount:ray:head",
            "system:serviceaccount:ray:w",
        ],
        f"{OIDC}:aud": "sts.amazonaws.com",
    }
}
KEY = "aws:kms/key:Key"
ROOT = "arn:aws:iam::1:root"


def key_policy(statements):
    key = res(KEY, "kms", "k1", enableKeyRotation=True)
    doc = json.dumps({"Statement": statements})
    linked = res(
        "aws:kms/keyPolicy:KeyPolicy",
        "kp",
        _deps={"keyId": (key.urn,)},
        keyId="k1",
        policy=doc,
    )
    return [key, linked]


ADMIN_ONLY = {
    "Effect": "Allow",
    "Principal": {"AWS": ROOT},
    "Action": ["kms:DescribeKey", "kms:PutKeyPolicy"],
    "Resource": "*",
}
ROLE_USES = {
    "Effect": "Allow",
    "Principal": {"AWS": ["arn:aws:iam::1:role/ray"]},
    "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
    "Resource": "*",
}
RAYCLUSTER = "kubernetes:ray.io/v1:RayCluster"
RC = manifests.raycluster_manifest(CFG, PLACEHOLDER_REFS)


def raycluster(edit=None):
    obj = copy.deepcopy(RC)
    if edit:
        edit(obj["spec"])
    return res(RAYCLUSTER, "rc", **obj)


def head(spec):
    return spec["headGroupSpec"]["template"]["spec"]


def worker(spec):
    return spec["workerGroupSpecs"][0]["template"]["spec"]


def edit(fn):
    """An edit of a RayCluster spec that returns nothing."""
    return lambda spec: (fn(spec), None)[1]


NS = "kubernetes:core/v1:Namespace"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
POLICIES = network_policies.network_policies(CFG)


def namespace(level="restricted"):
    obj = manifests.namespace_manifest(CFG)
    obj["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = level
    return res(NS, "ray-ns", **obj)


def netpol(obj, name=None):
    return res(NETPOL, name or obj["metadata"]["name"], **obj)


RELEASE = "kubernetes:helm.sh/v3:Release"
OPERATOR_VALUES = helm_values.kuberay_operator_values(CFG)


def operator_release(**values):
    return res(RELEASE, "operator", values={**OPERATOR_VALUES, **values})


CASES = {
    "RG-S3-01": (
        [bucket(), on_bucket(PAB, "pab", **FLAGS)],
        [bucket(), on_bucket(PAB, "pab", **{**FLAGS, "blockPublicPolicy": False})],
        "data",
    ),
    "RG-S3-02": ([bucket(), sse()], [bucket(), sse("AES256", None)], "data"),
    "RG-S3-03": (
        [bucket(), on_bucket("aws:s3/bucketPolicy:BucketPolicy", "p",
                             policy=tls_policy([BUCKET_ARN, f"{BUCKET_ARN}/*"]))],
        [bucket(), on_bucket("aws:s3/bucketPolicy:BucketPolicy", "p",
                             policy=tls_policy([BUCKET_ARN]))],
        "data",
    ),
    "RG-S3-04": (
        [bucket(), on_bucket("aws:s3/bucketVersioning:BucketVersioning", "v",
                             versioningConfiguration={"status": "Enabled"})],
        [bucket(), on_bucket("aws:s3/bucketVersioning:BucketVersioning", "v",
                             versioningConfiguration={"status": "Suspended"})],
        "data",
    ),
    "RG-S3-05": (
        [bucket(), on_bucket("aws:s3/bucketOwnershipControls:BucketOwnershipControls",
                             "o", rule={"objectOwnership": "BucketOwnerEnforced"})],
        [bucket(), on_bucket("aws:s3/bucketOwnershipControls:BucketOwnershipControls",
                             "o", rule={"objectOwnership": "ObjectWriter"})],
        "data",
    ),
    "RG-S3-06": (
        [bucket(tags={"raygpu:bucket": "data"}),
         on_bucket("aws:s3/bucketLogging:BucketLogging", "log", targetBucket="l")],
        [bucket(tags={"raygpu:bucket": "data"})],
        "data",
    ),
    "RG-EKS-01": (
        [cluster()],
        [cluster(vpcConfig={"endpointPrivateAccess": True,
                            "publicAccessCidrs": ["0.0.0.0/0"]})],
        "eks",
    ),
    "RG-EKS-02": ([cluster()], [cluster(encryptionConfig=None)], "eks"),
    "RG-EKS-03": ([cluster()], [cluster(enabledClusterLogTypes=["api"])], "eks"),
    "RG-EKS-04": ([cluster()], [cluster(version="1.28")], "eks"),
    "RG-EKS-05": (
        [cluster()], [cluster(accessConfig={"authenticationMode": "CONFIG_MAP"})], "eks"
    ),
    "RG-EKS-06": (
        [cluster(), vpc_cni(json.dumps({"enableNetworkPolicy": "true"}))],
        [cluster(), vpc_cni(None)],
        "eks",
    ),
    "RG-EC2-01": ([template()], [template(hops=2)], "lt"),
    "RG-EC2-02": ([template()], [template(encrypted="false")], "lt"),
    "RG-NET-01": (
        [res("aws:ec2/securityGroup:SecurityGroup", "sg",
             ingress=[{"cidrBlocks": ["10.0.0.0/16"], "fromPort": 443}])],
        [res("aws:ec2/securityGroupRule:SecurityGroupRule", "sg", type="ingress",
             cidrBlocks=["0.0.0.0/0"], fromPort=22, toPort=22)],
        "sg",
    ),
    "RG-NET-02": (
        [res("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup", "dsg", ingress=[],
             egress=[])],
        [res("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup", "dsg",
             ingress=[{"self": True, "protocol": "-1"}], egress=[])],
        "dsg",
    ),
    "RG-NET-03": (
        [res("aws:ec2/vpc:Vpc", "vpc", "vpc-1"),
         res("aws:ec2/flowLog:FlowLog", "fl", vpcId="vpc-1", trafficType="ALL")],
        [res("aws:ec2/vpc:Vpc", "vpc", "vpc-1"),
         res("aws:ec2/flowLog:FlowLog", "fl", vpcId="vpc-1", trafficType="REJECT")],
        "vpc",
    ),
    "RG-NET-04": (
        [res("aws:ec2/subnet:Subnet", "sn", mapPublicIpOnLaunch=False)],
        [res("aws:ec2/subnet:Subnet", "sn", mapPublicIpOnLaunch=True)],
        "sn",
    ),
    "RG-IAM-01": (
        [role_policy([{"Effect": "Allow", "Resource": "*",
                       "Action": ["ec2:DescribeInstanceTypes"]},
                      {"Effect": "Allow", "Resource": [f"{BUCKET_ARN}/*"],
                       "Action": ["s3:GetObject"]}])],
        [role_policy([{"Effect": "Allow", "Resource": "*",
                       "Action": ["ec2:DescribeInstanceTypes", "s3:GetObject"]}])],
        "pol",
    ),
    "RG-IAM-02": (
        [trust(GOOD_TRUST)],
        [trust({"StringLike": {f"{OIDC}:sub": "system:serviceaccount:ray:*"}})],
        "irsa",
    ),
    "RG-KMS-01": (
        [res(KEY, "kms", enableKeyRotation=True)],
        [res(KEY, "kms", enableKeyRotation=False)],
        "kms",
    ),
    "RG-KMS-02": (
        key_policy([ADMIN_ONLY, ROLE_USES]),
        key_policy([{**ADMIN_ONLY, "Action": "kms:*"}, ROLE_USES]),
        "kms",
    ),
    "RG-K8S-01": (
        [raycluster()],
        [raycluster(edit(lambda s: s["headGroupSpec"].update(serviceType="NodePort")))],
        "rc",
    ),
    "RG-K8S-02": (
        [raycluster()], [raycluster(edit(lambda s: s.pop("authOptions")))], "rc"
    ),
    "RG-K8S-03": (
        [raycluster(), operator_release()],
        [raycluster(edit(lambda s: worker(s)["containers"][0]["securityContext"]
                         .update(privileged=True)))],
        "rc",
    ),
    "RG-K8S-04": (
        [raycluster(), operator_release()],
        # The tag without the digest versions.py records for it.
        [operator_release(image={**OPERATOR_VALUES["image"],
                                 "tag": versions.KUBERAY_OPERATOR_IMAGE_TAG})],
        "operator",
    ),
    "RG-K8S-05": (
        [raycluster()],
        [raycluster(edit(lambda s: head(s)["containers"][0]["securityContext"]
                         .pop("readOnlyRootFilesystem")))],
        "rc",
    ),
    "RG-K8S-06": (
        [raycluster()],
        [raycluster(edit(lambda s: worker(s).update(
            serviceAccountName=CFG.ray_service_account)))],
        "rc",
    ),
    "RG-K8S-07": (
        [namespace(), *(netpol(p, f"np{i}") for i, p in enumerate(POLICIES))],
        [namespace(), *(netpol(p, f"np{i}") for i, p in enumerate(POLICIES[1:]))],
        "ray-ns",
    ),
    "RG-K8S-08": ([namespace()], [namespace("baseline")], "ray-ns"),
    "RG-K8S-09": (
        [netpol(p) for p in POLICIES[1:5]],
        [netpol({**POLICIES[3], "spec": {**POLICIES[3]["spec"], "ingress": [
            {"from": [{"namespaceSelector": {}}], "ports": [{"port": 8000}]}]}})],
        "ray-serve",
    ),
}  # fmt: skip


def test_every_rule_has_a_case_an_id_a_description_and_a_control():
    assert set(CASES) == set(policy.RULES_BY_ID)
    assert len(policy.RULES) == len(policy.RULES_BY_ID)  # IDs are unique
    mandatory = [r for r in policy.RULES if r.level == MANDATORY]
    assert len(mandatory) >= 20
    for rule in policy.RULES:
        assert rule.id.startswith("RG-") and rule.description and rule.control
        assert rule.types


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_passes_the_compliant_and_names_the_violating(rule_id):
    good, bad, subject = CASES[rule_id]
    rule = policy.RULES_BY_ID[rule_id]
    assert policy.check(good, [rule]).violations == []
    found = policy.check(bad, [rule]).violations
    assert found, f"{rule_id} found nothing in the violating case"
    assert {v.rule for v in found} == {rule_id}
    assert subject in {v.resource_name for v in found}


def test_access_log_buckets_may_use_s3_managed_keys():
    tags = {"raygpu:bucket": "access-logs"}
    logs = res(BUCKET, "logs", "l", arn="arn:aws:s3:::l", tags=tags)
    s3_keys = {"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}
    enc = res(SSE, "enc", bucket="l", rules=[s3_keys])
    assert policy.check([logs, enc], [policy.RULES_BY_ID["RG-S3-02"]]).violations == []


@pytest.mark.parametrize(
    "cidrs, ok",
    [
        (["203.0.113.7/32"], True),
        (["198.51.100.0/24"], True),
        (["10.0.0.0/8"], True),  # private: not reachable from the internet anyway
        (["8.8.0.0/16"], False),
        (["::/0"], False),
        (["2001:db8::/32"], False),
        ([], False),  # public endpoint with no list: open to all
    ],
)
def test_public_endpoint_networks(cidrs, ok):
    vpc = {"endpointPrivateAccess": True, "endpointPublicAccess": True}
    found = policy.check(
        [cluster(vpcConfig={**vpc, "publicAccessCidrs": cidrs})],
        [policy.RULES_BY_ID["RG-EKS-01"]],
    ).violations
    assert (found == []) is ok, found


def test_images_from_elsewhere_or_latest_are_refused():
    rule = policy.RULES_BY_ID["RG-K8S-04"]
    ray = versions.RAY_IMAGE_REPOSITORY
    for image in ("docker.io/evil/ray:2.60.0", f"{ray}:latest", ray):
        bad = raycluster(
            edit(lambda s, i=image: head(s)["containers"][0].update(image=i))
        )
        assert [v.rule for v in policy.check([bad], [rule]).violations] == [rule.id]


# ------------------------------------------------------ the CrossGuard adapter


class Unknown(Exception):
    """Stands for pulumi_policy's UnknownValueError (a value known only later)."""


class Props(dict):
    """Properties as pulumi_policy hands them over: reading an unknown raises."""

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if value == "<unknown>":
            raise Unknown(key)
        return value

    def get(self, key, default=None):
        return self[key] if key in self else default


def policy_resource(r: Resource, props=None):
    return SimpleNamespace(
        resource_type=r.type,
        name=r.name,
        urn=r.urn,
        props=Props(props if props is not None else r.props),
        parent=None,
        property_dependencies={
            k: [SimpleNamespace(urn=u) for u in v]
            for k, v in r.property_dependencies.items()
        },
    )


def test_crossguard_validation_reports_each_violation_with_its_urn():
    rule = policy.RULES_BY_ID["RG-S3-01"]
    _, bad, _ = CASES["RG-S3-01"]
    reported = []
    stack_validation(rule, (Unknown,))(
        SimpleNamespace(resources=[policy_resource(r) for r in bad]),
        lambda message, urn=None: reported.append((message, urn)),
    )
    assert reported == [
        (f"{BUCKET} data: pab: blockPublicPolicy is not true", bad[0].urn)
    ]


def test_crossguard_skips_a_check_whose_input_is_unknown_in_a_preview():
    rule = policy.RULES_BY_ID["RG-IAM-02"]
    role = trust(GOOD_TRUST)
    reported = []
    stack_validation(rule, (Unknown,))(
        SimpleNamespace(
            resources=[policy_resource(role, {"assumeRolePolicy": "<unknown>"})]
        ),
        lambda message, urn=None: reported.append(message),
    )
    assert reported == []
    report = policy.check(
        [policy.runner.from_policy_resource(
            policy_resource(role, {"assumeRolePolicy": "<unknown>"}))],
        [rule],
        unknown=(Unknown,),
    )  # fmt: skip
    assert [s.rule for s in report.skipped] == ["RG-IAM-02"]


def test_docs_security_holds_the_generated_rules_table():
    from raygpu.policy.__main__ import DOC, END, START, with_table

    doc = DOC.read_text()
    assert START in doc and END in doc
    assert with_table(doc) == doc, "run `python -m raygpu.policy --write`"
    for rule in policy.RULES:
        assert f"| `{rule.id}` |" in doc


def test_helm_values_images_count_their_registry():
    """kube-prometheus-stack splits `registry` from `repository`: the rule reads
    both, so the chart's real values pass and another registry is refused."""
    from raygpu.monitoring.stack import kube_prometheus_stack_values

    rule = policy.RULES_BY_ID["RG-K8S-04"]
    values = kube_prometheus_stack_values(CFG)
    good = res(RELEASE, "monitoring", values=values)
    assert policy.check([good], [rule]).violations == []
    image = values["prometheus"]["prometheusSpec"]["image"]
    assert image.get("registry"), "the chart's values should name a registry"
    moved = {**image, "registry": "docker.io"}
    values["prometheus"]["prometheusSpec"]["image"] = moved
    bad = res(RELEASE, "monitoring", values=values)
    assert [v.rule for v in policy.check([bad], [rule]).violations] == [rule.id]


# ------------------------------------ RG-K8S-08: the host agents' namespace


def monitoring_resources():
    """The monitoring stack's namespaces and its two charts, as built for dev."""
    from raygpu.monitoring import dcgm, pod_security
    from raygpu.monitoring import stack as monitoring_stack

    served, agents = pod_security.namespace_manifests(CFG)
    found = [res(NS, "mon-ns", **served), res(NS, "agents-ns", **agents)]
    for release in monitoring_stack.helm_releases(CFG):
        found.append(
            res(RELEASE, release.name, name=release.name, chart=release.chart,
                namespace=release.namespace, values=release.values)
        )  # fmt: skip
    assert {r.props.get("chart") for r in found} >= {
        dcgm.CHART,
        "kube-prometheus-stack",
    }
    return found


def k8s_08(resources):
    rule = policy.RULES_BY_ID["RG-K8S-08"]
    return [
        (v.resource_name, v.message) for v in policy.check(resources, [rule]).violations
    ]


def test_the_host_agents_namespace_may_be_privileged_with_the_two_agents_only():
    from raygpu.monitoring import pod_security

    resources = monitoring_resources()
    assert k8s_08(resources) == []
    agents = pod_security.agents_namespace(CFG.monitoring_namespace)
    # A third chart there, or a pod of anything else, ends the exception.
    other = res(RELEASE, "extra", name="extra", chart="extra", namespace=agents)
    pod = res("kubernetes:core/v1:Pod", "shell", metadata={"namespace": agents})
    for extra in (other, pod):
        ((name, message),) = k8s_08([*resources, extra])
        assert name == "agents-ns" and extra.name in message
    # A NetworkPolicy there runs nothing: still admitted.
    policy_obj = res(NETPOL, "deny", metadata={"namespace": agents})
    assert k8s_08([*resources, policy_obj]) == []


def test_the_host_agents_label_admits_no_other_namespace():
    from raygpu.monitoring import pod_security

    resources = monitoring_resources()
    served = resources[0].props["metadata"]
    enforce, label = pod_security.PSA_ENFORCE, pod_security.HOST_AGENTS_LABEL
    # The monitoring namespace privileged, with or without the label.
    for extra in ({}, {label: CFG.monitoring_namespace}):
        meta = {
            **served,
            "labels": {**served["labels"], enforce: "privileged", **extra},
        }
        edited = [res(NS, "mon-ns", metadata=meta), *resources[1:]]
        assert [name for name, _ in k8s_08(edited)] == ["mon-ns"], extra
    # The agents' namespace without the monitoring namespace beside it.
    ((name, message),) = k8s_08(resources[1:])
    assert name == "agents-ns" and "creates no namespace monitoring" in message
