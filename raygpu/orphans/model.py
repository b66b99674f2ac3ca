"""What the leftover scan reports: kinds of resource, an orphan, an outcome, and
the tags by which a resource belongs to a stack or its cluster."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from raygpu.names import REGION_TAG

# The kinds the scan can delete; raygpu.orphans.kinds holds how, in order.
LOAD_BALANCER = "load-balancer"  # ELBv2: application, network, gateway
CLASSIC_LOAD_BALANCER = "classic-load-balancer"
TARGET_GROUP = "target-group"
NETWORK_INTERFACE = "network-interface"
VOLUME = "volume"
SECURITY_GROUP = "security-group"
S3_BUCKET = "s3-bucket"
LOG_GROUP = "log-group"
KMS_KEY = "kms-key"
IAM_ROLE = "iam-role"
OIDC_PROVIDER = "iam-oidc-provider"
IAM_KINDS = (IAM_ROLE, OIDC_PROVIDER)
LB_KINDS = (LOAD_BALANCER, CLASSIC_LOAD_BALANCER)

# Tag keys whose value names the cluster that made the resource.
CLUSTER_NAME_TAGS = (
    "elbv2.k8s.aws/cluster",  # AWS Load Balancer Controller
    "cluster.k8s.amazonaws.com/name",  # VPC CNI interfaces
    "KubernetesCluster",  # legacy in-tree cloud provider, EBS CSI driver
    "eks:cluster-name",  # EKS managed node groups
    "aws:eks:cluster-name",  # EKS itself (cluster security group)
)
CLUSTER_NAME = re.compile(r"^[0-9A-Za-z][A-Za-z0-9\-_]{0,99}$")

NO_REGION_DETAIL = (
    f"names no region ({REGION_TAG}); IAM is account-wide, so a stack of this "
    "name in another region may still use it: not deleted. If such a stack "
    "exists, `pulumi up` there adds the tag; if none does, delete it by hand"
)


@dataclass(frozen=True)
class Orphan:
    kind: str
    id: str  # what the kind's API takes: name, id or ARN
    arn: str
    reason: str  # the tag that makes it the stack's
    protected: bool = False  # kept unless explicitly asked (the data bucket)
    detail: str = ""

    def describe(self) -> str:
        text = f"{self.kind} {self.id} ({self.reason})"
        return f"{text}: {self.detail}" if self.detail else text


@dataclass(frozen=True)
class Outcome:
    orphan: Orphan
    action: str  # deleted | kept | failed | not-deleted
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.action in ("deleted", "kept")

    def line(self) -> str:
        text = f"{self.action:<11} {self.orphan.kind} {self.orphan.id}"
        return f"{text}: {self.message}" if self.message else text


def cluster_reason(tags: Mapping[str, str], cluster_name: str | None) -> str | None:
    """The tag that marks a resource as made by/for `cluster_name`, or None.

    `kubernetes.io/cluster/<name>=shared` marks what the cluster only uses: not ours.
    """
    if not cluster_name:
        return None
    if tags.get(f"kubernetes.io/cluster/{cluster_name}") == "owned":
        return f"kubernetes.io/cluster/{cluster_name}=owned"
    for key in CLUSTER_NAME_TAGS:
        if tags.get(key) == cluster_name:
            return f"{key}={cluster_name}"
    return None


def tag_dict(items: Iterable[Mapping[str, str]] | None) -> dict[str, str]:
    """AWS's [{"Key": k, "Value": v}] as {k: v}."""
    return {t["Key"]: t.get("Value", "") for t in items or ()}


def classify_arn(arn: str) -> tuple[str, str]:
    """(kind, id) of an ARN from the Tagging API; unknown kinds as service:type."""
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return "unknown", arn
    service, resource = parts[2], parts[5]
    if service == "elasticloadbalancing":
        if resource.startswith("targetgroup/"):
            return TARGET_GROUP, arn
        if resource.startswith(("loadbalancer/app/", "loadbalancer/net/")):
            return LOAD_BALANCER, arn
        if resource.startswith("loadbalancer/gwy/"):
            return LOAD_BALANCER, arn
        if resource.startswith("loadbalancer/"):
            return CLASSIC_LOAD_BALANCER, resource.split("/", 1)[1]
    if service == "ec2" and "/" in resource:
        rtype, rid = resource.split("/", 1)
        kinds = {
            "network-interface": NETWORK_INTERFACE,
            "volume": VOLUME,
            "security-group": SECURITY_GROUP,
        }
        return kinds.get(rtype, f"ec2:{rtype}"), rid
    if service == "s3":
        return S3_BUCKET, resource
    if service == "kms" and resource.startswith("key/"):
        return KMS_KEY, arn
    if service == "logs" and resource.startswith("log-group:"):
        name = resource.split(":", 1)[1]
        return LOG_GROUP, name[:-2] if name.endswith(":*") else name
    rtype = re.split(r"[/:]", resource, maxsplit=1)[0]
    return f"{service}:{rtype}", arn


def is_iam_arn(arn: str) -> bool:
    parts = arn.split(":", 3)
    return len(parts) > 2 and parts[2] == "iam"
