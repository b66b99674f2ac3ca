"""The policy over whole stacks: both committed stacks pass every mandatory rule;
stacks derived from dev by one bad edit each fail with the rule that edit breaks,
naming the resource.

Most edits change the resource list the offline run registered (what a changed
program would register); the last ones change the stack config past its own
validation (a config the model would refuse, run through the real program), to
show the policy stands behind the config's checks rather than relying on them.
"""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest

import raygpu.config
from raygpu import cli, policy
from raygpu.config import load_stack_file
from raygpu.offline import ROOT, run_offline

RUNS: dict[str, object] = {}


def offline(stack: str):
    if stack not in RUNS:
        RUNS[stack] = run_offline(stack)
    return RUNS[stack]


def blocking(records: list[dict]) -> list[policy.Violation]:
    run = SimpleNamespace(resources=records)
    return policy.check(policy.resources_from_run(run)).blocking


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_committed_stacks_pass_every_mandatory_rule(stack):
    report = policy.check(policy.resources_from_run(offline(stack)))
    assert report.blocking == [], policy.report_lines(report)
    assert report.skipped == []
    # Every rule had something to look at in prod (dev logs no data access).
    if stack == "prod":
        checked = {t for r in policy.RULES for t in r.types}
        assert {r.type for r in policy.resources_from_run(offline(stack))} & checked


# ------------------------------------------------------------ resource edits


def one(records, typ, suffix):
    found = [r for r in records if r["type"] == typ and r["name"].endswith(suffix)]
    assert len(found) == 1, (typ, suffix, [r["name"] for r in found])
    return found[0]


def drop(records, typ, suffix):
    records.remove(one(records, typ, suffix))


def spec(records):
    return one(records, "kubernetes:ray.io/v1:RayCluster", "raycluster")["inputs"][
        "spec"
    ]


def worker(records):
    return spec(records)["workerGroupSpecs"][0]["template"]["spec"]


def head(records):
    return spec(records)["headGroupSpec"]["template"]["spec"]


def edit_json(record, key, fn):
    doc = json.loads(record["inputs"][key])
    fn(doc)
    record["inputs"][key] = json.dumps(doc)


S3 = "aws:s3/"
PAB = f"{S3}bucketPublicAccessBlock:BucketPublicAccessBlock"
SSE = f"{S3}bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"  # noqa: E501
EKS = "aws:eks/cluster:Cluster"
LT = "aws:ec2/launchTemplate:LaunchTemplate"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
SECURITY_GROUP = {
    "type": "aws:ec2/securityGroup:SecurityGroup",
    "name": "open-sg",
    "urn": "urn:pulumi:dev::raygpu::aws:ec2/securityGroup:SecurityGroup::open-sg",
    "id": "sg-open",
    "inputs": {"ingress": [{"cidrBlocks": ["0.0.0.0/0"], "fromPort": 22}]},
}

EDITS = {
    "data bucket without public access block": (
        "RG-S3-01", "raygpu-dev-storage-data",
        lambda rs: drop(rs, PAB, "storage-data-public-access")),
    "artifacts bucket public buckets not restricted": (
        "RG-S3-01", "raygpu-dev-storage-artifacts",
        lambda rs: one(rs, PAB, "artifacts-public-access")["inputs"].update(
            restrictPublicBuckets=False)),
    "data bucket on S3-managed keys": (
        "RG-S3-02", "raygpu-dev-storage-data",
        lambda rs: one(rs, SSE, "data-encryption")["inputs"]["rules"][0][
            "applyServerSideEncryptionByDefault"].update(sseAlgorithm="AES256")),
    "artifacts bucket without its TLS policy": (
        "RG-S3-03", "raygpu-dev-storage-artifacts",
        lambda rs: drop(rs, f"{S3}bucketPolicy:BucketPolicy", "artifacts-policy")),
    "data bucket versioning suspended": (
        "RG-S3-04", "raygpu-dev-storage-data",
        lambda rs: one(rs, f"{S3}bucketVersioning:BucketVersioning", "data-versioning")[
            "inputs"]["versioningConfiguration"].update(status="Suspended")),
    "data bucket with ACLs": (
        "RG-S3-05", "raygpu-dev-storage-data",
        lambda rs: one(rs, f"{S3}bucketOwnershipControls:BucketOwnershipControls",
                       "data-ownership")["inputs"]["rule"].update(
            objectOwnership="ObjectWriter")),
    "API endpoint open to the internet": (
        "RG-EKS-01", "raygpu-dev-cluster-eks",
        lambda rs: one(rs, EKS, "eks")["inputs"]["vpcConfig"].update(
            publicAccessCidrs=["0.0.0.0/0"])),
    "secrets not encrypted": (
        "RG-EKS-02", "raygpu-dev-cluster-eks",
        lambda rs: one(rs, EKS, "eks")["inputs"].pop("encryptionConfig")),
    "no audit log": (
        "RG-EKS-03", "raygpu-dev-cluster-eks",
        lambda rs: one(rs, EKS, "eks")["inputs"]["enabledClusterLogTypes"].remove(
            "audit")),
    "aws-auth ConfigMap": (
        "RG-EKS-05", "raygpu-dev-cluster-eks",
        lambda rs: one(rs, EKS, "eks")["inputs"]["accessConfig"].update(
            authenticationMode="API_AND_CONFIG_MAP")),
    "VPC CNI not enforcing policies": (
        "RG-EKS-06", "raygpu-dev-cluster-eks",
        lambda rs: one(rs, "aws:eks/addon:Addon", "vpc-cni")["inputs"].pop(
            "configurationValues")),
    "GPU nodes' metadata one hop further": (
        "RG-EC2-01", "raygpu-dev-cluster-gpu-l4-spot-lt",
        lambda rs: one(rs, LT, "gpu-l4-spot-lt")["inputs"]["metadataOptions"].update(
            httpPutResponseHopLimit=2)),
    "system nodes' volume unencrypted": (
        "RG-EC2-02", "raygpu-dev-cluster-system-lt",
        lambda rs: one(rs, LT, "system-lt")["inputs"]["blockDeviceMappings"][0][
            "ebs"].update(encrypted="false")),
    "a security group open to the world": (
        "RG-NET-01", "open-sg", lambda rs: rs.append(copy.deepcopy(SECURITY_GROUP))),
    "default security group with a rule": (
        "RG-NET-02", "raygpu-dev-net-default-sg",
        lambda rs: one(rs, "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",
                       "default-sg")["inputs"].update(
            ingress=[{"self": True, "protocol": "-1"}])),
    "no flow log": (
        "RG-NET-03", "raygpu-dev-net-vpc",
        lambda rs: drop(rs, "aws:ec2/flowLog:FlowLog", "flow-log")),
    "public IPs on launch": (
        "RG-NET-04", "raygpu-dev-net-public-us-east-1a",
        lambda rs: one(rs, "aws:ec2/subnet:Subnet", "public-us-east-1a")[
            "inputs"].update(mapPublicIpOnLaunch=True)),
    "Ray role may do anything to S3": (
        "RG-IAM-01", "raygpu-dev-identity-ray-buckets",
        lambda rs: edit_json(one(rs, "aws:iam/rolePolicy:RolePolicy", "ray-buckets"),
                             "policy", lambda d: d["Statement"][1].update(
                                 Action="s3:*"))),
    "IRSA trust without audience": (
        "RG-IAM-02", "raygpu-dev-identity-ray",
        lambda rs: edit_json(one(rs, "aws:iam/role:Role", "identity-ray"),
                             "assumeRolePolicy", lambda d: [
                                 d["Statement"][0]["Condition"]["StringEquals"].pop(k)
                                 for k in list(d["Statement"][0]["Condition"][
                                     "StringEquals"]) if k.endswith(":aud")])),
    "storage key never rotated": (
        "RG-KMS-01", "raygpu-dev-storage-kms",
        lambda rs: one(rs, "aws:kms/key:Key", "storage-kms")["inputs"].update(
            enableKeyRotation=False)),
    "storage key on the default policy": (
        "RG-KMS-02", "raygpu-dev-storage-kms",
        lambda rs: drop(rs, "aws:kms/keyPolicy:KeyPolicy", "storage-key-policy")),
    "head Service on a load balancer": (
        "RG-K8S-01", "raygpu-dev-ray-raycluster",
        lambda rs: spec(rs)["headGroupSpec"].update(serviceType="LoadBalancer")),
    "no Ray token auth": (
        "RG-K8S-02", "raygpu-dev-ray-raycluster",
        lambda rs: spec(rs).pop("authOptions")),
    "privileged worker": (
        "RG-K8S-03", "raygpu-dev-ray-raycluster",
        lambda rs: worker(rs)["containers"][0]["securityContext"].update(
            privileged=True)),
    "head image floating on latest": (
        "RG-K8S-04", "raygpu-dev-ray-raycluster",
        lambda rs: head(rs)["containers"][0].update(image="rayproject/ray:latest")),
    "writable root filesystem": (
        "RG-K8S-05", "raygpu-dev-ray-raycluster",
        lambda rs: worker(rs)["containers"][0]["securityContext"].pop(
            "readOnlyRootFilesystem")),
    "workers mount an API token": (
        "RG-K8S-06", "raygpu-dev-ray-raycluster",
        lambda rs: worker(rs).update(automountServiceAccountToken=True)),
    "Ray namespace without default deny": (
        "RG-K8S-07", "raygpu-dev-ray-ray-ns",
        lambda rs: drop(rs, NETPOL, "netpol-ray-default-deny-ingress")),
    "Ray namespace at baseline": (
        "RG-K8S-08", "raygpu-dev-ray-ray-ns",
        lambda rs: one(rs, "kubernetes:core/v1:Namespace", "ray-ray-ns")["inputs"][
            "metadata"]["labels"].update(
            {"pod-security.kubernetes.io/enforce": "baseline"})),
    "Serve open to every namespace": (
        "RG-K8S-09", "raygpu-dev-ray-netpol-ray-ray-serve",
        lambda rs: one(rs, NETPOL, "ray-ray-serve")["inputs"]["spec"]["ingress"][0][
            "from"].append({"namespaceSelector": {}})),
}  # fmt: skip


def test_at_least_twenty_bad_stacks_cover_most_rules():
    assert len(EDITS) >= 20
    mandatory = {r.id for r in policy.RULES if r.level == policy.MANDATORY}
    assert len({rule for rule, _, _ in EDITS.values()} & mandatory) >= 25


@pytest.mark.parametrize("case", sorted(EDITS))
def test_a_bad_edit_fails_with_its_rule_naming_the_resource(case):
    rule, resource, edit = EDITS[case]
    records = copy.deepcopy(offline("dev").resources)
    edit(records)
    found = blocking(records)
    assert {v.rule for v in found} == {rule}, [v.line() for v in found]
    assert resource in {v.resource_name for v in found}, [v.line() for v in found]


# ------------------------------------------------------- config edits (model_copy)

CONFIG_EDITS = {
    "endpoint open to 0.0.0.0/0": (
        {"public_endpoint_cidrs": ("0.0.0.0/0",)}, "RG-EKS-01", "raygpu-dev-cluster-eks"
    ),
    "endpoint open to a /16": (
        {"public_endpoint_cidrs": ("8.8.0.0/16",)}, "RG-EKS-01",
        "raygpu-dev-cluster-eks",
    ),
    "workers share the head's account": (
        {"ray_worker_service_account": "ray-workload"}, "RG-K8S-06",
        "raygpu-dev-ray-raycluster",
    ),
    "Serve open to the internet": (
        {"serve_allowed_cidrs": ("0.0.0.0/0",)}, "RG-K8S-09",
        "raygpu-dev-ray-netpol-ray-ray-serve",
    ),
}  # fmt: skip


def program_config(monkeypatch, update):
    """Run the real program on dev's config changed past validation."""
    cfg = load_stack_file(ROOT / "Pulumi.dev.yaml").model_copy(update=update)
    monkeypatch.setattr(raygpu.config, "from_pulumi", lambda: cfg)


@pytest.mark.parametrize("case", sorted(CONFIG_EDITS))
def test_a_config_past_validation_fails_the_policy(case, monkeypatch):
    update, rule, resource = CONFIG_EDITS[case]
    program_config(monkeypatch, update)
    found = policy.check(policy.resources_from_run(run_offline("dev"))).blocking
    assert {v.rule for v in found} == {rule}, [v.line() for v in found]
    assert resource in {v.resource_name for v in found}


def test_plan_policy_exits_1_naming_rule_and_resource(monkeypatch, capsys):
    program_config(monkeypatch, {"public_endpoint_cidrs": ("0.0.0.0/0",)})
    assert cli.main(["plan", "--stack", "dev", "--policy"]) == 1
    out = capsys.readouterr().out
    assert (
        "policy: mandatory RG-EKS-01 aws:eks/cluster:Cluster raygpu-dev-cluster-eks: "
        "publicAccessCidrs: 0.0.0.0/0 opens the API to the internet"
    ) in out
    assert "1 mandatory violation(s)" in out


def test_plan_policy_passes_both_stacks_in_text_and_json(capsys):
    assert cli.main(["plan", "--stack", "dev", "--policy"]) == 0
    captured = capsys.readouterr()
    assert "every mandatory rule passes" in captured.out
    # The committed example keeps its placeholders: plan warns, once each.
    assert "warning: raygpu:publicEndpointCidrs[0]: 203.0.113.0/24" in captured.err
    assert cli.main(["plan", "--stack", "prod", "--policy", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["policy"]["passed"] is True
    assert result["policy"]["mandatory_rules"] >= 20
    assert result["policy"]["violations"] == []
    assert any("budgetAlertEmail" in w for w in result["warnings"])
