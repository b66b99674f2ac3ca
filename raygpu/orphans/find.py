"""How the scan finds a kind besides the Tagging API: what the cluster's
controllers made, by their cluster tags, and the stack's IAM, which IAM lists.

Each `find_*` takes the scanner (its clients, stack, cluster name and region) and
returns the resources of one kind; raygpu.orphans.kinds names them per kind.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from raygpu.errors import CommandError
from raygpu.names import REGION_TAG, STACK_TAG
from raygpu.orphans.aws import ACCESS_DENIED, error_code
from raygpu.orphans.model import (
    CLASSIC_LOAD_BALANCER,
    CLUSTER_NAME_TAGS,
    IAM_ROLE,
    LOAD_BALANCER,
    LOG_GROUP,
    NETWORK_INTERFACE,
    NO_REGION_DETAIL,
    OIDC_PROVIDER,
    SECURITY_GROUP,
    TARGET_GROUP,
    VOLUME,
    Orphan,
    cluster_reason,
    tag_dict,
)

if TYPE_CHECKING:
    from raygpu.orphans.scan import OrphanScanner

_OIDC_REGION = re.compile(r"(?:^|/)oidc\.eks\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/")
# IAM answers this when a role or provider was deleted between two calls.
IAM_MISSING = frozenset({"NoSuchEntity"})


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ------------------------------------------------------- made by the cluster


def _elbv2(ctx: OrphanScanner, kind: str, method: str, key: str, arn_key: str):
    if not ctx.cluster_name:
        return []
    elbv2 = ctx.client("elbv2")
    arns = [
        item[arn_key]
        for page in elbv2.get_paginator(method).paginate()
        for item in page[key]
    ]
    result = []
    for chunk in chunks(arns, 20):  # describe_tags takes 20 at most
        for desc in elbv2.describe_tags(ResourceArns=list(chunk))["TagDescriptions"]:
            reason = cluster_reason(tag_dict(desc.get("Tags")), ctx.cluster_name)
            if reason:
                arn = desc["ResourceArn"]
                result.append(Orphan(kind, arn, arn, reason))
    return result


def find_load_balancers(ctx: OrphanScanner) -> list[Orphan]:
    return _elbv2(
        ctx,
        LOAD_BALANCER,
        "describe_load_balancers",
        "LoadBalancers",
        "LoadBalancerArn",
    )


def find_target_groups(ctx: OrphanScanner) -> list[Orphan]:
    return _elbv2(
        ctx, TARGET_GROUP, "describe_target_groups", "TargetGroups", "TargetGroupArn"
    )


def find_classic_load_balancers(ctx: OrphanScanner) -> list[Orphan]:
    if not ctx.cluster_name:
        return []
    elb = ctx.client("elb")
    names = [
        lb["LoadBalancerName"]
        for page in elb.get_paginator("describe_load_balancers").paginate()
        for lb in page["LoadBalancerDescriptions"]
    ]
    result = []
    for chunk in chunks(names, 20):
        for desc in elb.describe_tags(LoadBalancerNames=list(chunk))["TagDescriptions"]:
            reason = cluster_reason(tag_dict(desc.get("Tags")), ctx.cluster_name)
            if reason:
                name = desc["LoadBalancerName"]
                arn = f"arn:aws:elasticloadbalancing:{ctx.region}::loadbalancer/{name}"
                result.append(Orphan(CLASSIC_LOAD_BALANCER, name, arn, reason))
    return result


def _ec2(ctx: OrphanScanner, kind: str, method: str, key: str, id_key: str, tags_key):
    if not ctx.cluster_name:
        return []
    ec2 = ctx.client("ec2")
    # One exact tag filter per marking tag: what AWS matches is what is ours.
    wanted = [(f"kubernetes.io/cluster/{ctx.cluster_name}", "owned")]
    wanted += [(tag, ctx.cluster_name) for tag in CLUSTER_NAME_TAGS]
    result: list[Orphan] = []
    seen: set[str] = set()
    for tag_key, tag_value in wanted:
        filters = [{"Name": f"tag:{tag_key}", "Values": [tag_value]}]
        for page in ec2.get_paginator(method).paginate(Filters=filters):
            for item in page[key]:
                rid = item[id_key]
                reason = cluster_reason(tag_dict(item.get(tags_key)), ctx.cluster_name)
                if reason and rid not in seen:
                    seen.add(rid)
                    arn = f"arn:aws:ec2:{ctx.region}::{kind}/{rid}"
                    result.append(Orphan(kind, rid, arn, reason))
    return result


def find_interfaces(ctx: OrphanScanner) -> list[Orphan]:
    return _ec2(
        ctx,
        NETWORK_INTERFACE,
        "describe_network_interfaces",
        "NetworkInterfaces",
        "NetworkInterfaceId",
        "TagSet",
    )


def find_volumes(ctx: OrphanScanner) -> list[Orphan]:
    return _ec2(ctx, VOLUME, "describe_volumes", "Volumes", "VolumeId", "Tags")


def find_security_groups(ctx: OrphanScanner) -> list[Orphan]:
    return _ec2(
        ctx,
        SECURITY_GROUP,
        "describe_security_groups",
        "SecurityGroups",
        "GroupId",
        "Tags",
    )


def find_eks_log_group(ctx: OrphanScanner) -> list[Orphan]:
    """EKS writes control-plane logs to this group and leaves it behind."""
    if not ctx.cluster_name:
        return []
    name = f"/aws/eks/{ctx.cluster_name}/cluster"
    groups = ctx.client("logs").describe_log_groups(logGroupNamePrefix=name)
    return [
        Orphan(LOG_GROUP, g["logGroupName"], g.get("arn", ""), "EKS log group")
        for g in groups["logGroups"]
        if g["logGroupName"] == name
    ]


# ----------------------------------------------------------------------- IAM
#
# The Tagging API does not return IAM roles, so IAM lists them (the IAM entries it
# does return, in us-east-1, are left to this). IAM is account-wide: one that
# names another region in raygpu:region (or, for an OIDC provider without the
# tag, in its URL) belongs to a stack of the same name there and is left out; one
# naming no region (made before the tag existed) is listed but not deleted. A scan
# IAM refuses fails naming the permission rather than report "nothing left".


@contextlib.contextmanager
def iam_access(permission: str) -> Iterator[None]:
    """Turns IAM's refusal of `permission` into a one-line CommandError."""
    try:
        yield
    except ClientError as exc:
        if error_code(exc) not in ACCESS_DENIED:
            raise
        raise CommandError(
            f"IAM refused {permission} ({error_code(exc)}): the leftover scan lists "
            "the stack's IAM roles and OIDC provider and needs iam:ListRoles, "
            "iam:ListRoleTags, iam:ListOpenIDConnectProviders and "
            "iam:ListOpenIDConnectProviderTags; nothing was deleted"
        ) from None


def _iam_tags(
    permission: str, call: Callable[..., Any], **kwargs: str
) -> dict[str, str] | None:
    """The tags `call` lists for one IAM resource; None if it is gone meanwhile."""
    with iam_access(permission):
        try:
            return tag_dict(call(**kwargs).get("Tags"))
        except ClientError as exc:
            if error_code(exc) in IAM_MISSING:
                return None
            raise


def _iam_orphan(ctx: OrphanScanner, kind: str, rid: str, arn: str, tags) -> list:
    if tags is None or tags.get(STACK_TAG) != ctx.stack:
        return []
    reason = f"{STACK_TAG}={ctx.stack}"
    region = tags.get(REGION_TAG)
    if region is not None:
        reason = f"{reason}, {REGION_TAG}={region}"
    elif kind == OIDC_PROVIDER and (match := _OIDC_REGION.search(arn)):
        region = match.group(1)
        reason = f"{reason}, region {region} in its URL"
    if region is None:
        return [Orphan(kind, rid, arn, reason, detail=NO_REGION_DETAIL)]
    if region != ctx.region:
        return []  # a stack of the same name in another region
    return [Orphan(kind, rid, arn, reason)]


def find_roles(ctx: OrphanScanner) -> list[Orphan]:
    iam = ctx.client("iam")
    with iam_access("iam:ListRoles"):
        roles = [
            role
            for page in iam.get_paginator("list_roles").paginate()
            for role in page.get("Roles", [])
        ]
    found = []
    for role in roles:
        name = role["RoleName"]
        tags = _iam_tags("iam:ListRoleTags", iam.list_role_tags, RoleName=name)
        found += _iam_orphan(ctx, IAM_ROLE, name, role["Arn"], tags)
    return found


def find_oidc_providers(ctx: OrphanScanner) -> list[Orphan]:
    iam = ctx.client("iam")
    with iam_access("iam:ListOpenIDConnectProviders"):
        listed = iam.list_open_id_connect_providers()
    found = []
    for item in listed.get("OpenIDConnectProviderList", []):
        arn = item["Arn"]
        tags = _iam_tags(
            "iam:ListOpenIDConnectProviderTags",
            iam.list_open_id_connect_provider_tags,
            OpenIDConnectProviderArn=arn,
        )
        found += _iam_orphan(ctx, OIDC_PROVIDER, arn, arn, tags)
    return found
