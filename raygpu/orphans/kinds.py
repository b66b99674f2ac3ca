"""The one table of resource kinds the scan can delete, in the order they must go.

For each kind: how the scan finds it besides the Tagging API, how to tell that it
still exists (and the error codes that say it does not), what must happen before
it can be deleted (detach, empty), the delete call and the codes that mean "still
in use, try again", and how to wait until it is gone (boto3's own waiter where
boto3 has one). A target group is in use until its load balancer is gone, a
security group until the interfaces and load balancers using it are gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from raygpu.orphans.aws import error_code, short
from raygpu.orphans.find import (
    IAM_MISSING,
    chunks,
    find_classic_load_balancers,
    find_eks_log_group,
    find_interfaces,
    find_load_balancers,
    find_oidc_providers,
    find_roles,
    find_security_groups,
    find_target_groups,
    find_volumes,
)
from raygpu.orphans.model import (
    CLASSIC_LOAD_BALANCER,
    IAM_ROLE,
    KMS_KEY,
    LOAD_BALANCER,
    LOG_GROUP,
    NETWORK_INTERFACE,
    OIDC_PROVIDER,
    S3_BUCKET,
    SECURITY_GROUP,
    TARGET_GROUP,
    VOLUME,
    Orphan,
)

if TYPE_CHECKING:
    from raygpu.orphans.scan import OrphanScanner as Ctx

# KMS deletes a key only after a waiting period (7 to 30 days); until then it can
# be cancelled, and the scan no longer counts it.
KMS_PENDING_DAYS = 30


@dataclass(frozen=True)
class Kind:
    name: str
    # Does it still exist? A ClientError with a code in `missing` says no.
    exists: Callable[[Ctx, Orphan], bool] | None
    missing: frozenset[str] = frozenset()
    # Found by the cluster's tags (or, for IAM, by IAM's listing).
    find: Callable[[Ctx], list[Orphan]] | None = None
    # Once for all of the kind, before the first is deleted.
    before: Callable[[Ctx, Sequence[Orphan]], None] | None = None
    # Before its delete call: why it cannot go (left as it is), or None.
    release: Callable[[Ctx, Orphan], str | None] | None = None
    delete: Callable[[Ctx, Orphan], Any] | None = None
    in_use: tuple[str, ...] = ()  # delete retried while AWS answers these
    busy: str = "{id} to be released"  # what a retried delete waits for
    # Until gone (default: poll `exists`); later kinds wait when `blocks_later`.
    wait_gone: Callable[[Ctx, Sequence[Orphan]], None] | None = None
    blocks_later: bool = False


# ------------------------------------------------------------------- exists


def _lb_exists(ctx: Ctx, o: Orphan) -> bool:
    ctx.client("elbv2").describe_load_balancers(LoadBalancerArns=[o.id])
    return True


def _classic_exists(ctx: Ctx, o: Orphan) -> bool:
    ctx.client("elb").describe_load_balancers(LoadBalancerNames=[o.id])
    return True


def _tg_exists(ctx: Ctx, o: Orphan) -> bool:
    ctx.client("elbv2").describe_target_groups(TargetGroupArns=[o.id])
    return True


def _eni_exists(ctx: Ctx, o: Orphan) -> bool:
    found = ctx.client("ec2").describe_network_interfaces(NetworkInterfaceIds=[o.id])
    return bool(found["NetworkInterfaces"])


def _volume_exists(ctx: Ctx, o: Orphan) -> bool:
    found = ctx.client("ec2").describe_volumes(VolumeIds=[o.id])["Volumes"]
    return any(v["State"] != "deleted" for v in found)


def _group_exists(ctx: Ctx, o: Orphan) -> bool:
    found = ctx.client("ec2").describe_security_groups(GroupIds=[o.id])
    return bool(found["SecurityGroups"])


def _ec2_exists(ctx: Ctx, o: Orphan) -> bool:
    """Any EC2 resource by its id: it has tags (the stack's) while it exists."""
    filters = [{"Name": "resource-id", "Values": [o.id]}]
    return bool(ctx.client("ec2").describe_tags(Filters=filters)["Tags"])


def _bucket_exists(ctx: Ctx, o: Orphan) -> bool:
    ctx.client("s3").head_bucket(Bucket=o.id)
    return True


def _log_group_exists(ctx: Ctx, o: Orphan) -> bool:
    groups = ctx.client("logs").describe_log_groups(logGroupNamePrefix=o.id)
    return any(g["logGroupName"] == o.id for g in groups["logGroups"])


def _key_exists(ctx: Ctx, o: Orphan) -> bool:
    key = ctx.client("kms").describe_key(KeyId=o.id)["KeyMetadata"]
    return key.get("KeyState") not in ("PendingDeletion", "PendingReplicaDeletion")


def _role_exists(ctx: Ctx, o: Orphan) -> bool:
    ctx.client("iam").get_role(RoleName=o.id)
    return True


def _oidc_exists(ctx: Ctx, o: Orphan) -> bool:
    ctx.client("iam").get_open_id_connect_provider(OpenIDConnectProviderArn=o.id)
    return True


# ---------------------------------------------------------- release, delete


def _release_interface(ctx: Ctx, o: Orphan) -> str | None:
    ec2 = ctx.client("ec2")
    eni = ec2.describe_network_interfaces(NetworkInterfaceIds=[o.id])
    eni = eni["NetworkInterfaces"][0]
    if eni.get("RequesterManaged"):
        return "managed by an AWS service; it goes with the resource that owns it"
    attachment = eni.get("Attachment") or {}
    if attachment.get("AttachmentId") and eni.get("Status") != "available":
        if attachment.get("DeviceIndex", 0) == 0:
            return (
                f"primary interface of instance {attachment.get('InstanceId')}; "
                "it goes with the instance"
            )
        ec2.detach_network_interface(AttachmentId=attachment["AttachmentId"])
        ctx.log(f"detached   {NETWORK_INTERFACE} {o.id}")
        ctx.wait(
            "ec2",
            "network_interface_available",
            f"{o.id} to detach",
            NetworkInterfaceIds=[o.id],
        )
    return None


def _release_volume(ctx: Ctx, o: Orphan) -> str | None:
    ec2 = ctx.client("ec2")
    volume = ec2.describe_volumes(VolumeIds=[o.id])["Volumes"][0]
    attachments = volume.get("Attachments") or []
    for attachment in attachments:
        instance_id = attachment["InstanceId"]
        reservations = ec2.describe_instances(InstanceIds=[instance_id])
        states = [
            i["State"]["Name"]
            for r in reservations["Reservations"]
            for i in r["Instances"]
        ]
        if any(s not in ("stopped", "terminated", "shutting-down") for s in states):
            return (
                f"attached to running instance {instance_id}; stop or "
                "terminate the instance first"
            )
        ec2.detach_volume(VolumeId=o.id, InstanceId=instance_id)
        ctx.log(f"detached   {VOLUME} {o.id} from {instance_id}")
    if attachments:
        ctx.wait("ec2", "volume_available", f"{o.id} to detach", VolumeIds=[o.id])
    return None


def _unlink_security_groups(ctx: Ctx, groups: Sequence[Orphan]) -> None:
    """Revoke the rules by which our groups point at other groups.

    A group that another group's rule names cannot be deleted; these rules belong
    to groups we are deleting anyway. Groups that are not ours are left as they
    are (a rule there keeps our group, and is reported).
    """
    ec2 = ctx.client("ec2")
    for orphan in groups:
        try:
            found = ec2.describe_security_groups(GroupIds=[orphan.id])
        except ClientError as exc:
            if error_code(exc) in KINDS[SECURITY_GROUP].missing:
                continue
            raise
        for group in found["SecurityGroups"]:
            for direction, permissions in (
                ("ingress", group.get("IpPermissions") or []),
                ("egress", group.get("IpPermissionsEgress") or []),
            ):
                linked = [p for p in permissions if p.get("UserIdGroupPairs")]
                if not linked:
                    continue
                revoke = getattr(ec2, f"revoke_security_group_{direction}")
                try:
                    revoke(GroupId=orphan.id, IpPermissions=linked)
                except ClientError as exc:  # reported by the delete that follows
                    ctx.log(f"warning: {orphan.id}: {short(exc)}")


def _empty_bucket(ctx: Ctx, o: Orphan) -> None:
    """Every object version and delete marker: a versioned bucket keeps them."""
    s3 = ctx.client("s3")
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=o.id):
        keys = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
        ]
        for chunk in chunks(keys, 1000):
            s3.delete_objects(Bucket=o.id, Delete={"Objects": list(chunk)})
    return None


def _release_role(ctx: Ctx, o: Orphan) -> None:
    """Detach and delete its policies and take it out of instance profiles."""
    iam = ctx.client("iam")
    name = o.id
    for page in iam.get_paginator("list_attached_role_policies").paginate(
        RoleName=name
    ):
        for policy in page.get("AttachedPolicies", []):
            iam.detach_role_policy(RoleName=name, PolicyArn=policy["PolicyArn"])
    for page in iam.get_paginator("list_role_policies").paginate(RoleName=name):
        for policy in page.get("PolicyNames", []):
            iam.delete_role_policy(RoleName=name, PolicyName=policy)
    for page in iam.get_paginator("list_instance_profiles_for_role").paginate(
        RoleName=name
    ):
        for profile in page.get("InstanceProfiles", []):
            iam.remove_role_from_instance_profile(
                InstanceProfileName=profile["InstanceProfileName"], RoleName=name
            )
    return None


def _schedule_key_deletion(ctx: Ctx, o: Orphan) -> None:
    ctx.client("kms").schedule_key_deletion(
        KeyId=o.id.rsplit("/", 1)[-1],  # the key's id, from its ARN
        PendingWindowInDays=KMS_PENDING_DAYS,
    )


# --------------------------------------------------------------- wait gone


def _load_balancers_deleted(ctx: Ctx, lbs: Sequence[Orphan]) -> None:
    # One ARN per call, as for volumes.
    for o in lbs:
        ctx.wait(
            "elbv2",
            "load_balancers_deleted",
            f"load balancer {o.id} to go",
            LoadBalancerArns=[o.id],
        )


def _volumes_deleted(ctx: Ctx, volumes: Sequence[Orphan]) -> None:
    # One id per call: AWS answers NotFound (the waiter's success) for the whole
    # call once any id it asks about is gone.
    for o in volumes:
        ctx.wait("ec2", "volume_deleted", f"volume {o.id} to go", VolumeIds=[o.id])


def _buckets_deleted(ctx: Ctx, buckets: Sequence[Orphan]) -> None:
    for o in buckets:
        ctx.wait("s3", "bucket_not_exists", f"bucket {o.id} to go", Bucket=o.id)


# -------------------------------------------------------------------- table

_TABLE = (
    Kind(
        LOAD_BALANCER,
        _lb_exists,
        frozenset({"LoadBalancerNotFound"}),
        find=find_load_balancers,
        delete=lambda ctx, o: ctx.client("elbv2").delete_load_balancer(
            LoadBalancerArn=o.id
        ),
        wait_gone=_load_balancers_deleted,
        blocks_later=True,
    ),
    Kind(
        CLASSIC_LOAD_BALANCER,
        _classic_exists,
        frozenset({"LoadBalancerNotFound"}),  # AccessPointNotFoundException's code
        find=find_classic_load_balancers,
        delete=lambda ctx, o: ctx.client("elb").delete_load_balancer(
            LoadBalancerName=o.id
        ),
        blocks_later=True,  # boto3 has no waiter for its deletion: polled
    ),
    Kind(
        TARGET_GROUP,
        _tg_exists,
        frozenset({"TargetGroupNotFound"}),
        find=find_target_groups,
        delete=lambda ctx, o: ctx.client("elbv2").delete_target_group(
            TargetGroupArn=o.id
        ),
        in_use=("ResourceInUse",),
        busy="target group {id} to be released by its load balancer",
    ),
    Kind(
        NETWORK_INTERFACE,
        _eni_exists,
        frozenset({"InvalidNetworkInterfaceID.NotFound"}),
        find=find_interfaces,
        release=_release_interface,
        delete=lambda ctx, o: ctx.client("ec2").delete_network_interface(
            NetworkInterfaceId=o.id
        ),
        in_use=("InvalidNetworkInterface.InUse",),
    ),
    Kind(
        VOLUME,
        _volume_exists,
        frozenset({"InvalidVolume.NotFound"}),
        find=find_volumes,
        release=_release_volume,
        delete=lambda ctx, o: ctx.client("ec2").delete_volume(VolumeId=o.id),
        in_use=("VolumeInUse",),
        wait_gone=_volumes_deleted,
    ),
    Kind(
        SECURITY_GROUP,
        _group_exists,
        frozenset({"InvalidGroup.NotFound"}),
        find=find_security_groups,
        before=_unlink_security_groups,
        delete=lambda ctx, o: ctx.client("ec2").delete_security_group(GroupId=o.id),
        in_use=("DependencyViolation", "InvalidGroup.InUse"),
        busy="{id} to be free of interfaces and references",
    ),
    Kind(
        S3_BUCKET,
        _bucket_exists,
        frozenset({"404", "NoSuchBucket"}),  # head_bucket answers a bare 404
        release=_empty_bucket,
        delete=lambda ctx, o: ctx.client("s3").delete_bucket(Bucket=o.id),
        wait_gone=_buckets_deleted,
    ),
    Kind(
        LOG_GROUP,
        _log_group_exists,
        frozenset({"ResourceNotFoundException"}),
        find=find_eks_log_group,
        delete=lambda ctx, o: ctx.client("logs").delete_log_group(logGroupName=o.id),
    ),
    Kind(  # after the buckets it encrypts
        KMS_KEY,
        _key_exists,
        frozenset({"NotFoundException"}),
        delete=_schedule_key_deletion,
    ),
    Kind(
        IAM_ROLE,
        _role_exists,
        IAM_MISSING,
        find=find_roles,
        release=_release_role,
        delete=lambda ctx, o: ctx.client("iam").delete_role(RoleName=o.id),
    ),
    Kind(  # roles trusting it do not block it; kept last anyway
        OIDC_PROVIDER,
        _oidc_exists,
        IAM_MISSING,
        find=find_oidc_providers,
        delete=lambda ctx, o: ctx.client("iam").delete_open_id_connect_provider(
            OpenIDConnectProviderArn=o.id
        ),
    ),
)
KINDS: dict[str, Kind] = {kind.name: kind for kind in _TABLE}
DELETE_ORDER = tuple(KINDS)
# Kinds the Tagging API lists that have no entry: any other EC2 resource can
# still be checked by its tags; the rest are reported as the API lists them.
_OTHER_EC2 = Kind("ec2:*", _ec2_exists)
_UNKNOWN = Kind("*", None)
UNCHECKED_DETAIL = "listed by the Tagging API (it may lag a deletion)"


def kind_of(name: str) -> Kind:
    if name in KINDS:
        return KINDS[name]
    return _OTHER_EC2 if name.startswith("ec2:") else _UNKNOWN


def exists(ctx: Ctx, orphan: Orphan) -> bool:
    kind = kind_of(orphan.kind)
    if kind.exists is None:
        return True
    try:
        return kind.exists(ctx, orphan)
    except ClientError as exc:
        if error_code(exc) in kind.missing:
            return False
        raise


def wait_gone(ctx: Ctx, orphans: Sequence[Orphan], what: str) -> None:
    """Until every one of `orphans` is gone, kind by kind; CommandError on timeout."""
    for name in dict.fromkeys(o.kind for o in orphans):
        group = [o for o in orphans if o.kind == name]
        kind = kind_of(name)
        if kind.wait_gone is not None:
            kind.wait_gone(ctx, group)
        else:
            ctx.poll(lambda g=group: not any(exists(ctx, o) for o in g), what)


def sort_for_deletion(orphans: Iterable[Orphan]) -> list[Orphan]:
    rank = {kind: i for i, kind in enumerate(DELETE_ORDER)}
    return sorted(orphans, key=lambda o: (rank.get(o.kind, len(rank)), o.kind, o.id))
