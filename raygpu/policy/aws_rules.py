"""The AWS infrastructure rules: S3, EKS, launch templates and the VPC (IAM and
KMS are in iam_rules).

Each check takes one subject resource and the whole stack and yields one message
per problem. Controls cite AWS Foundational Security Best Practices (FSBP), the
CIS AWS Foundations Benchmark and the CIS Amazon EKS Benchmark v1.0.1.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from typing import Any

from raygpu.config.fields import MIN_PUBLIC_ENDPOINT_PREFIX, is_private
from raygpu.config.model import MIN_CLUSTER_MINOR
from raygpu.names import BUCKET_TAG
from raygpu.policy.model import (
    ADVISORY,
    Resource,
    Rule,
    Stack,
    as_list,
    number,
    policy_document,
    statements,
    truthy,
)

BUCKET = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
PUBLIC_ACCESS_BLOCK = ("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",)
ENCRYPTION = (
    "aws:s3/bucketServerSideEncryptionConfiguration:"
    "BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketServerSideEncryptionConfigurationV2:"
    "BucketServerSideEncryptionConfigurationV2",
)
BUCKET_POLICY = ("aws:s3/bucketPolicy:BucketPolicy",)
VERSIONING = (
    "aws:s3/bucketVersioning:BucketVersioning",
    "aws:s3/bucketVersioningV2:BucketVersioningV2",
)
OWNERSHIP = ("aws:s3/bucketOwnershipControls:BucketOwnershipControls",)
LOGGING = (
    "aws:s3/bucketLogging:BucketLogging",
    "aws:s3/bucketLoggingV2:BucketLoggingV2",
)
EKS_CLUSTER = ("aws:eks/cluster:Cluster",)
EKS_ADDON = ("aws:eks/addon:Addon",)
LAUNCH_TEMPLATE = ("aws:ec2/launchTemplate:LaunchTemplate",)
VPC = ("aws:ec2/vpc:Vpc",)
FLOW_LOG = ("aws:ec2/flowLog:FlowLog",)
SUBNET = ("aws:ec2/subnet:Subnet",)
DEFAULT_SG = ("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",)
SECURITY_GROUP = ("aws:ec2/securityGroup:SecurityGroup",)
SG_RULE = ("aws:ec2/securityGroupRule:SecurityGroupRule",)
SG_INGRESS_RULE = ("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",)
# S3 delivers server access logs only into buckets encrypted with S3's own keys.
ACCESS_LOG_BUCKET = "access-logs"

EKS_LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")
WORLD = ("0.0.0.0/0", "::/0")
# An IPv6 endpoint network no wider than one site's /64.
IPV6_ENDPOINT_PREFIX = 64
# ------------------------------------------------------------------------- S3


def s3_public_access(bucket: Resource, stack: Stack) -> Iterator[str]:
    if bucket.get("acl") in ("public-read", "public-read-write"):
        yield f"has the public ACL {bucket.get('acl')!r}"
    blocks = stack.referring(bucket, PUBLIC_ACCESS_BLOCK, "bucket")
    if not blocks:
        yield "has no BucketPublicAccessBlock"
    for block in blocks:
        for flag in (
            "blockPublicAcls",
            "blockPublicPolicy",
            "ignorePublicAcls",
            "restrictPublicBuckets",
        ):
            if not truthy(block.get(flag)):
                yield f"{block.name}: {flag} is not true"


def s3_encryption(bucket: Resource, stack: Stack) -> Iterator[str]:
    allowed = ("aws:kms", "aws:kms:dsse")
    if (bucket.get("tags") or {}).get(BUCKET_TAG) == ACCESS_LOG_BUCKET:
        allowed += ("AES256",)
    configs = stack.referring(bucket, ENCRYPTION, "bucket")
    if not configs:
        yield "has no default encryption configuration"
    for config in configs:
        rules = as_list(config.get("rules"))
        algorithms = [
            r.get("applyServerSideEncryptionByDefault", {}).get("sseAlgorithm")
            for r in rules
            if isinstance(r, Mapping)
        ]
        keys = [
            r.get("applyServerSideEncryptionByDefault", {}).get("kmsMasterKeyId")
            for r in rules
            if isinstance(r, Mapping)
        ]
        if not any(a in allowed for a in algorithms):
            shown = algorithms or "unset"
            yield f"{config.name}: default encryption is {shown}, not KMS"
        elif "AES256" not in algorithms and not any(keys):
            yield f"{config.name}: KMS encryption names no customer managed key"


def _denies_plain_http(statement: Mapping[str, Any]) -> bool:
    condition = statement.get("Condition") or {}
    insecure = (condition.get("Bool") or {}).get("aws:SecureTransport")
    principal = statement.get("Principal")
    everyone = principal == "*" or (
        isinstance(principal, Mapping) and "*" in as_list(principal.get("AWS"))
    )
    actions = set(as_list(statement.get("Action")))
    return (
        statement.get("Effect") == "Deny"
        and everyone
        and str(insecure).lower() == "false"
        and bool(actions & {"s3:*", "*"})
    )


def s3_tls_only(bucket: Resource, stack: Stack) -> Iterator[str]:
    policies = stack.referring(bucket, BUCKET_POLICY, "bucket")
    if not policies:
        yield "has no bucket policy denying requests without TLS"
    for policy in policies:
        doc = policy_document(policy.get("policy"))
        denies = [s for s in statements(doc) if _denies_plain_http(s)]
        resources = {str(r) for s in denies for r in as_list(s.get("Resource"))}
        if not denies:
            yield f"{policy.name}: no statement denies aws:SecureTransport=false"
        elif not (any(r.endswith("/*") for r in resources)) or not any(
            not r.endswith("/*") for r in resources
        ):
            yield f"{policy.name}: the TLS deny must cover the bucket and its objects"


def s3_versioning(bucket: Resource, stack: Stack) -> Iterator[str]:
    found = stack.referring(bucket, VERSIONING, "bucket")
    if not found:
        yield "has no versioning configuration"
    for v in found:
        status = v.get("versioningConfiguration", "status")
        if status != "Enabled":
            yield f"{v.name}: versioning is {status!r}, not 'Enabled'"


def s3_acls_disabled(bucket: Resource, stack: Stack) -> Iterator[str]:
    found = stack.referring(bucket, OWNERSHIP, "bucket")
    if not found:
        yield "has no ownership controls (ACLs stay enabled)"
    for o in found:
        if o.get("rule", "objectOwnership") != "BucketOwnerEnforced":
            yield f"{o.name}: objectOwnership is not BucketOwnerEnforced"


def s3_data_access_logging(bucket: Resource, stack: Stack) -> Iterator[str]:
    if (bucket.get("tags") or {}).get(BUCKET_TAG) != "data":
        return
    if not stack.referring(bucket, LOGGING, "bucket"):
        yield "the data bucket has no server access logging (dataBucketAccessLogging)"


# ------------------------------------------------------------------------ EKS


def eks_endpoint(cluster: Resource, _stack: Stack) -> Iterator[str]:
    vpc = cluster.get("vpcConfig") or {}
    if not truthy(vpc.get("endpointPrivateAccess")):
        yield "vpcConfig.endpointPrivateAccess is not true"
    # EKS opens the public endpoint unless told not to.
    if not truthy(vpc.get("endpointPublicAccess", True)):
        return
    cidrs = [str(c) for c in as_list(vpc.get("publicAccessCidrs"))]
    if not cidrs:
        yield "the public endpoint is open to every address (no publicAccessCidrs)"
    for cidr in cidrs:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            yield f"publicAccessCidrs: {cidr!r} is not a CIDR"
            continue
        if cidr in WORLD or net.prefixlen == 0:
            yield f"publicAccessCidrs: {cidr} opens the API to the internet"
        elif net.version == 6 and net.prefixlen < IPV6_ENDPOINT_PREFIX:
            yield f"publicAccessCidrs: {cidr} is wider than a /{IPV6_ENDPOINT_PREFIX}"
        elif net.version == 4 and not is_private(str(net)):
            if net.prefixlen < MIN_PUBLIC_ENDPOINT_PREFIX:
                yield (
                    f"publicAccessCidrs: {cidr} is wider than a "
                    f"/{MIN_PUBLIC_ENDPOINT_PREFIX}"
                )


def eks_secrets_encryption(cluster: Resource, _stack: Stack) -> Iterator[str]:
    configs = as_list(cluster.get("encryptionConfig"))
    covered = [
        c
        for c in configs
        if isinstance(c, Mapping) and "secrets" in as_list(c.get("resources"))
    ]
    if not covered:
        yield "Kubernetes secrets are not envelope-encrypted (encryptionConfig)"
    elif not all((c.get("provider") or {}).get("keyArn") for c in covered):
        yield "encryptionConfig names no KMS key"


def eks_logging(cluster: Resource, _stack: Stack) -> Iterator[str]:
    enabled = set(as_list(cluster.get("enabledClusterLogTypes")))
    missing = [t for t in EKS_LOG_TYPES if t not in enabled]
    if missing:
        yield f"control-plane log types off: {', '.join(missing)}"


def eks_supported_version(cluster: Resource, _stack: Stack) -> Iterator[str]:
    version = str(cluster.get("version") or "")
    parts = version.split(".")
    if len(parts) != 2 or not parts[1].isdigit():
        yield f"version {version!r} is not pinned to a Kubernetes minor"
    elif int(parts[1]) < MIN_CLUSTER_MINOR:
        yield f"version {version} is older than 1.{MIN_CLUSTER_MINOR}"


def eks_access_entries(cluster: Resource, _stack: Stack) -> Iterator[str]:
    mode = (cluster.get("accessConfig") or {}).get("authenticationMode")
    if mode != "API":
        yield f"authenticationMode is {mode!r}: use API (access entries, no aws-auth)"


def eks_network_policy(cluster: Resource, stack: Stack) -> Iterator[str]:
    addons = [
        a
        for a in stack.referring(cluster, EKS_ADDON, "clusterName")
        if a.get("addonName") == "vpc-cni"
    ]
    if not addons:
        yield "no vpc-cni add-on enforcing network policies"
    for addon in addons:
        values = policy_document(addon.get("configurationValues")) or {}
        if str(values.get("enableNetworkPolicy")).lower() != "true":
            yield f"{addon.name}: configurationValues.enableNetworkPolicy is not 'true'"


# ------------------------------------------------------------ EC2 and the VPC


def lt_imdsv2(template: Resource, _stack: Stack) -> Iterator[str]:
    options = template.get("metadataOptions") or {}
    if options.get("httpTokens") != "required":
        yield "metadataOptions.httpTokens is not 'required' (IMDSv1 allowed)"
    hops = number(options.get("httpPutResponseHopLimit"))
    if hops != 1:
        yield (
            f"metadataOptions.httpPutResponseHopLimit is {hops}, not 1 (pods could "
            "reach the node's credentials)"
        )


def lt_encrypted_volumes(template: Resource, _stack: Stack) -> Iterator[str]:
    mappings = as_list(template.get("blockDeviceMappings"))
    if not mappings:
        yield "no block device mapping: the root volume is not set to encrypted"
    for i, mapping in enumerate(mappings):
        ebs = mapping.get("ebs") if isinstance(mapping, Mapping) else None
        if isinstance(ebs, Mapping) and not truthy(ebs.get("encrypted")):
            yield f"blockDeviceMappings[{i}].ebs.encrypted is not true"


def _world_ingress(entries: Any) -> list[str]:
    found = []
    for entry in as_list(entries):
        if not isinstance(entry, Mapping):
            continue
        blocks = as_list(entry.get("cidrBlocks")) + as_list(entry.get("ipv6CidrBlocks"))
        found += [b for b in blocks if b in WORLD]
    return found


def no_world_ingress(resource: Resource, _stack: Stack) -> Iterator[str]:
    if resource.type in SECURITY_GROUP + DEFAULT_SG:
        for cidr in _world_ingress(resource.get("ingress")):
            yield f"an ingress rule allows {cidr}"
    elif resource.type in SG_RULE:
        if resource.get("type") == "ingress":
            for cidr in _world_ingress([resource.props]):
                yield f"the ingress rule allows {cidr}"
    elif resource.type in SG_INGRESS_RULE:
        for key in ("cidrIpv4", "cidrIpv6"):
            if resource.get(key) in WORLD:
                yield f"the ingress rule allows {resource.get(key)}"


def default_sg_closed(group: Resource, _stack: Stack) -> Iterator[str]:
    for direction in ("ingress", "egress"):
        if as_list(group.get(direction)):
            yield f"the default security group keeps {direction} rules"


def vpc_flow_logs(vpc: Resource, stack: Stack) -> Iterator[str]:
    logs = stack.referring(vpc, FLOW_LOG, "vpcId")
    if not logs:
        yield "has no flow log"
    for log in logs:
        if log.get("trafficType") != "ALL":
            yield f"{log.name}: trafficType is {log.get('trafficType')!r}, not ALL"


def subnet_no_public_ip(subnet: Resource, _stack: Stack) -> Iterator[str]:
    if truthy(subnet.get("mapPublicIpOnLaunch")):
        yield "mapPublicIpOnLaunch is true"


RULES = (
    Rule("RG-S3-01", "S3 public access blocked",
         "every bucket has a public access block with all four settings on and no "
         "public ACL", "AWS FSBP S3.8; CIS AWS Foundations 2.1.4", BUCKET,
         s3_public_access),
    Rule("RG-S3-02", "S3 encrypted with KMS",
         "every bucket's default encryption is SSE-KMS with a customer managed key",
         "AWS FSBP S3.17", BUCKET, s3_encryption),
    Rule("RG-S3-03", "S3 TLS only",
         "every bucket policy denies requests without TLS, on the bucket and its "
         "objects", "AWS FSBP S3.5; CIS AWS Foundations 2.1.1", BUCKET, s3_tls_only),
    Rule("RG-S3-04", "S3 versioning", "every bucket has versioning enabled",
         "AWS FSBP S3.14", BUCKET, s3_versioning),
    Rule("RG-S3-05", "S3 ACLs disabled",
         "every bucket enforces bucket-owner object ownership (ACLs disabled)",
         "AWS FSBP S3.12", BUCKET, s3_acls_disabled),
    Rule("RG-S3-06", "Data bucket access logging",
         "the data bucket logs server access (raygpu:dataBucketAccessLogging)",
         "AWS FSBP S3.9", BUCKET, s3_data_access_logging, ADVISORY),
    Rule("RG-EKS-01", "EKS endpoint private",
         "the API endpoint is private, or public only to listed networks no wider "
         "than a /24 (never 0.0.0.0/0)",
         "AWS FSBP EKS.1; CIS Amazon EKS 5.4.1, 5.4.2", EKS_CLUSTER, eks_endpoint),
    Rule("RG-EKS-02", "EKS secrets encrypted",
         "Kubernetes secrets are envelope-encrypted with a KMS key",
         "AWS FSBP EKS.3; CIS Amazon EKS 5.3.1", EKS_CLUSTER, eks_secrets_encryption),
    Rule("RG-EKS-03", "EKS control-plane logging",
         "all five control-plane log types go to CloudWatch Logs",
         "AWS FSBP EKS.8; CIS Amazon EKS 2.1.1", EKS_CLUSTER, eks_logging),
    Rule("RG-EKS-04", "EKS supported version",
         f"the cluster pins a Kubernetes minor of 1.{MIN_CLUSTER_MINOR} or newer",
         "AWS FSBP EKS.2", EKS_CLUSTER, eks_supported_version),
    Rule("RG-EKS-05", "EKS access entries",
         "authentication by EKS access entries (IAM), not the aws-auth ConfigMap",
         "CIS Amazon EKS 5.5.1", EKS_CLUSTER, eks_access_entries),
    Rule("RG-EKS-06", "Network policies enforced",
         "the VPC CNI add-on enforces Kubernetes NetworkPolicies",
         "CIS Amazon EKS 5.4.4", EKS_CLUSTER, eks_network_policy),
    Rule("RG-EC2-01", "IMDSv2, hop limit 1",
         "launch templates require IMDSv2 tokens with a hop limit of 1",
         "AWS FSBP EC2.170 (Config ec2-launch-template-imdsv2-check); AWS Control "
         "Tower CT.EC2.PR.1, CT.EC2.PR.2", LAUNCH_TEMPLATE, lt_imdsv2),
    Rule("RG-EC2-02", "Encrypted node volumes",
         "launch templates encrypt every EBS volume they map",
         "AWS FSBP EC2.3; CIS AWS Foundations 2.2.1", LAUNCH_TEMPLATE,
         lt_encrypted_volumes),
    Rule("RG-NET-01", "No ingress from anywhere",
         "no security group or rule admits 0.0.0.0/0 or ::/0",
         "AWS FSBP EC2.18, EC2.19, EC2.53; CIS AWS Foundations 5.2, 5.3",
         SECURITY_GROUP + DEFAULT_SG + SG_RULE + SG_INGRESS_RULE, no_world_ingress),
    Rule("RG-NET-02", "Default security group closed",
         "the VPC's default security group has no rules",
         "AWS FSBP EC2.2; CIS AWS Foundations 5.4", DEFAULT_SG, default_sg_closed),
    Rule("RG-NET-03", "VPC flow logs", "every VPC logs all traffic",
         "AWS FSBP EC2.6; CIS AWS Foundations 3.7", VPC, vpc_flow_logs),
    Rule("RG-NET-04", "No public IPs on launch",
         "no subnet gives instances public addresses",
         "AWS FSBP EC2.15; CIS Amazon EKS 5.4.3", SUBNET, subnet_no_public_ip),
)  # fmt: skip
