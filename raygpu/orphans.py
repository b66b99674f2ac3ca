"""Find, and with --delete remove, what a stack left behind in its AWS account.

    scripts/orphans.py --stack dev              # list; exit 1 when something is left
    scripts/orphans.py --stack dev --delete     # delete in dependency order

A resource belongs to the stack when it carries the stack's tag
(`raygpu:stack=<name>`, found through the Resource Groups Tagging API) or a tag by
which Kubernetes or one of its controllers marks what it made for the stack's
cluster: `kubernetes.io/cluster/<cluster>=owned`, `elbv2.k8s.aws/cluster`,
`cluster.k8s.amazonaws.com/name`, `KubernetesCluster`, `eks:cluster-name` (load
balancers, target groups, network interfaces, EBS volumes, security groups). Nothing
else is ever touched; `kubernetes.io/cluster/<cluster>=shared` marks a resource the
cluster only uses, and is not enough. The stack's data bucket is reported and kept
unless --delete-data-bucket is given. IAM roles and OIDC providers, which the
Tagging API does not list and which are account-wide, are listed through IAM and
deleted only when their `raygpu:region` tag (or the provider's URL) names the
stack's region.

AWS is reached with boto3 in the stack's region; AWS_ENDPOINT_URL and the usual
credential chain apply.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from raygpu.errors import CommandError
from raygpu.names import BUCKET_TAG, REGION_TAG, STACK_TAG
from raygpu.stack import REPO_ROOT, Clock, load_outputs, wait_until

# Kinds this script can delete, in the order they must go: a target group is in
# use until its load balancer is gone, a security group until the interfaces and
# load balancers using it are gone.
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
_IAM_KINDS = (IAM_ROLE, OIDC_PROVIDER)
_LB_KINDS = (LOAD_BALANCER, CLASSIC_LOAD_BALANCER)
DELETE_ORDER = (
    LOAD_BALANCER,
    CLASSIC_LOAD_BALANCER,
    TARGET_GROUP,
    NETWORK_INTERFACE,
    VOLUME,
    SECURITY_GROUP,
    S3_BUCKET,
    LOG_GROUP,
    KMS_KEY,  # after the buckets it encrypts
    IAM_ROLE,
    OIDC_PROVIDER,  # roles trusting it do not block it; kept last anyway
)
_OIDC_REGION = re.compile(r"(?:^|/)oidc\.eks\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/")
# Tag keys whose value names the cluster that made the resource.
CLUSTER_NAME_TAGS = (
    "elbv2.k8s.aws/cluster",  # AWS Load Balancer Controller
    "cluster.k8s.amazonaws.com/name",  # VPC CNI interfaces
    "KubernetesCluster",  # legacy in-tree cloud provider, EBS CSI driver
    "eks:cluster-name",  # EKS managed node groups
    "aws:eks:cluster-name",  # EKS itself (cluster security group)
)
KMS_PENDING_DAYS = 30
_CLUSTER_NAME = re.compile(r"^[0-9A-Za-z][A-Za-z0-9\-_]{0,99}$")


class _Missing(Exception):
    """The resource no longer exists."""


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
    """The tag that marks a resource as made by/for `cluster_name`, or None."""
    if not cluster_name:
        return None
    if tags.get(f"kubernetes.io/cluster/{cluster_name}") == "owned":
        return f"kubernetes.io/cluster/{cluster_name}=owned"
    for key in CLUSTER_NAME_TAGS:
        if tags.get(key) == cluster_name:
            return f"{key}={cluster_name}"
    return None


def _tags(items: Iterable[Mapping[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in items or ()}


def _code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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


class OrphanScanner:
    """Finds and deletes the resources of one stack (and its cluster) in one region."""

    def __init__(
        self,
        session: Any,  # boto3.Session
        stack: str,
        cluster_name: str | None = None,
        data_bucket: str | None = None,
        clock: Clock | None = None,
        wait_timeout_s: float = 600.0,
        interval_s: float = 10.0,
        log: Callable[[str], None] = print,
    ) -> None:
        if not stack:
            raise CommandError("--stack: a stack name is required")
        if cluster_name is not None and not _CLUSTER_NAME.match(cluster_name):
            raise CommandError(
                f"--cluster-name: {cluster_name!r} is not an EKS cluster name "
                "(letters, digits, - and _, up to 100)"
            )
        self.session = session
        self.stack = stack
        self.cluster_name = cluster_name
        self.data_bucket = data_bucket
        self.clock = clock or Clock()
        self.wait_timeout_s = wait_timeout_s
        self.interval_s = interval_s
        self.log = log
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(service)
        return self._clients[service]

    # ------------------------------------------------------------------- scan

    def scan(self) -> list[Orphan]:
        """Everything of the stack that still exists, in deletion order."""
        found: dict[str, Orphan] = {}
        scans = [*self.scan_cluster_made(), *self.scan_tagged(), *self.scan_iam()]
        for orphan in scans:
            key = f"{orphan.kind}|{orphan.id}"
            if key in found:
                first = found[key]
                if orphan.reason not in first.reason:
                    found[key] = replace(
                        first, reason=f"{first.reason}, {orphan.reason}"
                    )
            else:
                found[key] = orphan
        return sort_for_deletion(found.values())

    def scan_tagged(self) -> list[Orphan]:
        """Resources tagged raygpu:stack=<stack>, checked to exist where we can."""
        tagging = self.client("resourcegroupstaggingapi")
        reason = f"{STACK_TAG}={self.stack}"
        result = []
        pages = tagging.get_paginator("get_resources").paginate(
            TagFilters=[{"Key": STACK_TAG, "Values": [self.stack]}]
        )
        for page in pages:
            for item in page.get("ResourceTagMappingList", []):
                arn = item["ResourceARN"]
                if is_iam_arn(arn):
                    continue  # scan_iam lists IAM, with the region check
                kind, rid = classify_arn(arn)
                tags = _tags(item.get("Tags"))
                protected = kind == S3_BUCKET and self.is_data_bucket(rid, tags)
                orphan = Orphan(kind, rid, arn, reason, protected=protected)
                try:
                    orphan = self._confirm(orphan)
                except _Missing:
                    continue  # the Tagging API lags deletions
                result.append(orphan)
        return self._protect_keys(result)

    def scan_iam(self) -> list[Orphan]:
        """IAM roles and OIDC providers tagged raygpu:stack=<stack>.

        The Tagging API does not return IAM roles, so they are listed here (and
        the IAM entries it does return, in us-east-1, are left to this). IAM is
        account-wide: one that names another region in raygpu:region (or, for an
        OIDC provider without the tag, in its URL) belongs to a stack of the
        same name there and is left out; one naming no region (made before the
        tag existed) is listed but not deleted. A scan IAM refuses fails naming
        the permission rather than report an incomplete "nothing left".
        """
        iam = self.client("iam")
        found = []
        with _iam_access("iam:ListRoles"):
            roles = [
                role
                for page in iam.get_paginator("list_roles").paginate()
                for role in page.get("Roles", [])
            ]
        for role in roles:
            name = role["RoleName"]
            tags = _iam_tags("iam:ListRoleTags", iam.list_role_tags, RoleName=name)
            if tags is not None and tags.get(STACK_TAG) == self.stack:
                found.append(self._iam_orphan(IAM_ROLE, name, role["Arn"], tags))
        with _iam_access("iam:ListOpenIDConnectProviders"):
            listed = iam.list_open_id_connect_providers()
        for item in listed.get("OpenIDConnectProviderList", []):
            arn = item["Arn"]
            tags = _iam_tags(
                "iam:ListOpenIDConnectProviderTags",
                iam.list_open_id_connect_provider_tags,
                OpenIDConnectProviderArn=arn,
            )
            if tags is not None and tags.get(STACK_TAG) == self.stack:
                found.append(self._iam_orphan(OIDC_PROVIDER, arn, arn, tags))
        return [o for o in found if o is not None]

    def _iam_orphan(
        self, kind: str, rid: str, arn: str, tags: Mapping[str, str]
    ) -> Orphan | None:
        reason = f"{STACK_TAG}={self.stack}"
        region = tags.get(REGION_TAG)
        if region is not None:
            reason = f"{reason}, {REGION_TAG}={region}"
        elif kind == OIDC_PROVIDER and (match := _OIDC_REGION.search(arn)):
            region = match.group(1)
            reason = f"{reason}, region {region} in its URL"
        if region is None:
            return Orphan(kind, rid, arn, reason, detail=NO_REGION_DETAIL)
        if region != self.session.region_name:
            return None  # a stack of the same name in another region
        return Orphan(kind, rid, arn, reason)

    def cluster_still_exists(self, orphans: Sequence[Orphan]) -> str | None:
        """Why the stack's EKS cluster still looks alive, or None: its IAM roles
        are then still in use (deleting them is instant and final)."""
        eks = [o for o in orphans if o.kind.startswith("eks:")]
        if eks:
            return f"the stack still has {eks[0].kind} {eks[0].id}"
        if not self.cluster_name:
            return None
        try:
            self.client("eks").describe_cluster(name=self.cluster_name)
        except Exception as exc:
            if _is_not_found(exc):
                return None
            if _code(exc) in _ACCESS_DENIED:  # cannot tell: keep IAM
                return (
                    f"cannot tell whether EKS cluster {self.cluster_name} still "
                    f"exists (eks:DescribeCluster: {_code(exc)})"
                )
            raise
        return f"EKS cluster {self.cluster_name} still exists"

    def is_data_bucket(self, name: str, tags: Mapping[str, str]) -> bool:
        """The stack's data bucket: the output's name, or (after a destroy, when
        there are no outputs) its raygpu:bucket=data tag; a bucket made before
        that tag existed, by the `<storage>-data` Name tag infra/storage.py sets."""
        if self.data_bucket:
            return name == self.data_bucket
        if BUCKET_TAG in tags:
            return tags[BUCKET_TAG] == "data"
        return tags.get("Name", "").endswith("-data")

    def _protect_keys(self, orphans: list[Orphan]) -> list[Orphan]:
        """Keep the KMS keys that encrypt a kept bucket (or it could not be read)."""
        keys: set[str] = set()
        for orphan in orphans:
            if orphan.kind == S3_BUCKET and orphan.protected:
                keys |= self._bucket_keys(orphan.id)
        if not keys:
            return orphans
        return [
            replace(o, protected=True, detail="encrypts the protected data bucket")
            if o.kind == KMS_KEY and (o.id in keys or o.id.split("/")[-1] in keys)
            else o
            for o in orphans
        ]

    def _bucket_keys(self, bucket: str) -> set[str]:
        try:
            found = self.client("s3").get_bucket_encryption(Bucket=bucket)
        except Exception as exc:
            if _code(exc) in ("ServerSideEncryptionConfigurationNotFoundError",):
                return set()
            raise
        rules = found.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
        ids = set()
        for rule in rules:
            key = rule.get("ApplyServerSideEncryptionByDefault", {}).get(
                "KMSMasterKeyID"
            )
            if key:
                ids |= {key, key.split("/")[-1]}
        return ids

    def _confirm(self, orphan: Orphan) -> Orphan:
        """Check that a resource from the Tagging API still exists."""
        try:
            if orphan.kind == LOAD_BALANCER:
                self.client("elbv2").describe_load_balancers(
                    LoadBalancerArns=[orphan.id]
                )
            elif orphan.kind == TARGET_GROUP:
                self.client("elbv2").describe_target_groups(TargetGroupArns=[orphan.id])
            elif orphan.kind == CLASSIC_LOAD_BALANCER:
                self.client("elb").describe_load_balancers(
                    LoadBalancerNames=[orphan.id]
                )
            elif orphan.kind == S3_BUCKET:
                self.client("s3").head_bucket(Bucket=orphan.id)
            elif orphan.kind == KMS_KEY:
                key = self.client("kms").describe_key(KeyId=orphan.id)["KeyMetadata"]
                if key.get("KeyState") in ("PendingDeletion", "PendingReplicaDeletion"):
                    raise _Missing
            elif orphan.kind == LOG_GROUP:
                groups = self.client("logs").describe_log_groups(
                    logGroupNamePrefix=orphan.id
                )["logGroups"]
                if not any(g["logGroupName"] == orphan.id for g in groups):
                    raise _Missing
            elif orphan.kind == IAM_ROLE:
                self.client("iam").get_role(RoleName=orphan.id)
            elif orphan.kind == OIDC_PROVIDER:
                self.client("iam").get_open_id_connect_provider(
                    OpenIDConnectProviderArn=orphan.id
                )
            elif orphan.kind.startswith("ec2:") or orphan.kind in (
                NETWORK_INTERFACE,
                VOLUME,
                SECURITY_GROUP,
            ):
                tags = self.client("ec2").describe_tags(
                    Filters=[{"Name": "resource-id", "Values": [orphan.id]}]
                )["Tags"]
                if not tags:
                    raise _Missing
            else:
                return replace(
                    orphan, detail="listed by the Tagging API (it may lag a deletion)"
                )
        except _Missing:
            raise
        except Exception as exc:  # botocore ClientError
            if _is_not_found(exc):
                raise _Missing from None
            raise
        return orphan

    def scan_cluster_made(self) -> list[Orphan]:
        """What Kubernetes and its controllers made for the cluster, by their tags."""
        if not self.cluster_name:
            return []
        return [
            *self._elbv2(),
            *self._classic_elbs(),
            *self._ec2(
                NETWORK_INTERFACE,
                "describe_network_interfaces",
                "NetworkInterfaces",
                "NetworkInterfaceId",
                "TagSet",
            ),
            *self._ec2(VOLUME, "describe_volumes", "Volumes", "VolumeId", "Tags"),
            *self._ec2(
                SECURITY_GROUP,
                "describe_security_groups",
                "SecurityGroups",
                "GroupId",
                "Tags",
            ),
            *self._eks_log_group(),
        ]

    def _elbv2(self) -> list[Orphan]:
        elbv2 = self.client("elbv2")
        items = []
        for page in elbv2.get_paginator("describe_load_balancers").paginate():
            items += [
                (LOAD_BALANCER, lb["LoadBalancerArn"]) for lb in page["LoadBalancers"]
            ]
        for page in elbv2.get_paginator("describe_target_groups").paginate():
            items += [
                (TARGET_GROUP, tg["TargetGroupArn"]) for tg in page["TargetGroups"]
            ]
        kinds = {arn: kind for kind, arn in items}
        result = []
        for chunk in _chunks([arn for _, arn in items], 20):
            for desc in elbv2.describe_tags(ResourceArns=list(chunk))[
                "TagDescriptions"
            ]:
                reason = cluster_reason(_tags(desc.get("Tags")), self.cluster_name)
                arn = desc["ResourceArn"]
                if reason:
                    result.append(Orphan(kinds[arn], arn, arn, reason))
        return result

    def _classic_elbs(self) -> list[Orphan]:
        elb = self.client("elb")
        names = []
        for page in elb.get_paginator("describe_load_balancers").paginate():
            names += [lb["LoadBalancerName"] for lb in page["LoadBalancerDescriptions"]]
        result = []
        region = self.session.region_name
        for chunk in _chunks(names, 20):
            for desc in elb.describe_tags(LoadBalancerNames=list(chunk))[
                "TagDescriptions"
            ]:
                reason = cluster_reason(_tags(desc.get("Tags")), self.cluster_name)
                name = desc["LoadBalancerName"]
                if reason:
                    arn = f"arn:aws:elasticloadbalancing:{region}::loadbalancer/{name}"
                    result.append(Orphan(CLASSIC_LOAD_BALANCER, name, arn, reason))
        return result

    def _ec2(
        self, kind: str, method: str, key: str, id_key: str, tags_key: str
    ) -> list[Orphan]:
        ec2 = self.client("ec2")
        # One exact tag filter per marking tag: what AWS matches is what is ours.
        wanted = [(f"kubernetes.io/cluster/{self.cluster_name}", "owned")]
        wanted += [(key, str(self.cluster_name)) for key in CLUSTER_NAME_TAGS]
        result = []
        seen = set()
        region = self.session.region_name
        arn_type = {NETWORK_INTERFACE: "network-interface"}.get(kind, kind)
        for tag_key, tag_value in wanted:
            filters = [{"Name": f"tag:{tag_key}", "Values": [tag_value]}]
            for page in ec2.get_paginator(method).paginate(Filters=filters):
                for item in page[key]:
                    rid = item[id_key]
                    reason = cluster_reason(
                        _tags(item.get(tags_key)), self.cluster_name
                    )
                    if reason and rid not in seen:
                        seen.add(rid)
                        arn = f"arn:aws:ec2:{region}::{arn_type}/{rid}"
                        result.append(Orphan(kind, rid, arn, reason))
        return result

    def _eks_log_group(self) -> list[Orphan]:
        # EKS writes control-plane logs to this group and leaves it behind.
        name = f"/aws/eks/{self.cluster_name}/cluster"
        groups = self.client("logs").describe_log_groups(logGroupNamePrefix=name)
        return [
            Orphan(LOG_GROUP, g["logGroupName"], g.get("arn", ""), "EKS log group")
            for g in groups["logGroups"]
            if g["logGroupName"] == name
        ]

    def load_balancers_left(self) -> list[Orphan]:
        """The cluster's load balancers and target groups that still exist."""
        if not self.cluster_name:
            return []
        return [*self._elbv2(), *self._classic_elbs()]

    def load_balancer_interfaces(self, lb_names: Iterable[str]) -> list[str]:
        """Interfaces AWS made for these load balancers (they outlive them a while)."""
        names = set(lb_names)
        if not names:
            return []
        ec2 = self.client("ec2")
        found = []
        filters = [{"Name": "description", "Values": ["ELB *"]}]
        for page in ec2.get_paginator("describe_network_interfaces").paginate(
            Filters=filters
        ):
            for eni in page["NetworkInterfaces"]:
                words = (eni.get("Description") or "").split(" ", 1)
                owner = words[1] if len(words) == 2 else ""
                # "ELB app/<name>/<id>", "ELB net/<name>/<id>" or "ELB <name>"
                name = owner.split("/")[1] if "/" in owner else owner
                if name in names:
                    found.append(eni["NetworkInterfaceId"])
        return found

    # ----------------------------------------------------------------- delete

    def delete(
        self, orphans: Iterable[Orphan], delete_data_bucket: bool = False
    ) -> list[Outcome]:
        """Delete in dependency order; one Outcome per orphan, logged as it goes."""
        outcomes = []
        deleted_lbs: list[Orphan] = []
        unlinked = False
        ordered = sort_for_deletion(orphans)
        alive = None
        if any(o.kind in _IAM_KINDS for o in ordered):
            alive = self.cluster_still_exists(ordered)
        for orphan in ordered:
            no_region = orphan.detail == NO_REGION_DETAIL
            if orphan.kind in _IAM_KINDS and (alive or no_region):
                why = f"{alive}: run `make destroy` first" if alive else orphan.detail
                outcome = Outcome(orphan, "not-deleted", why)
                self.log(outcome.line())
                outcomes.append(outcome)
                continue
            if deleted_lbs and orphan.kind not in _LB_KINDS:
                # Their target groups and security groups stay in use until then.
                self._wait_gone(deleted_lbs, "deleted load balancers to go")
                deleted_lbs = []
            if orphan.kind == SECURITY_GROUP and not unlinked:
                unlinked = True
                groups = [o for o in ordered if o.kind == SECURITY_GROUP]
                self._unlink_security_groups(groups)
            outcome = self._delete_one(orphan, delete_data_bucket)
            self.log(outcome.line())
            outcomes.append(outcome)
            if orphan.kind in _LB_KINDS and outcome.action == "deleted":
                deleted_lbs.append(orphan)
        return outcomes

    def _exists(self, orphan: Orphan) -> bool:
        try:
            self._confirm(orphan)
        except _Missing:
            return False
        return True

    def _wait_gone(self, orphans: Sequence[Orphan], what: str) -> None:
        def gone() -> bool:
            return not any(self._exists(o) for o in orphans)

        try:
            wait_until(gone, self.wait_timeout_s, what, self.interval_s, self.clock)
        except CommandError as exc:
            self.log(f"warning: {exc}")

    def _delete_one(self, orphan: Orphan, delete_data_bucket: bool) -> Outcome:
        if orphan.protected and not delete_data_bucket:
            what = "data bucket" if orphan.kind == S3_BUCKET else "data bucket's key"
            return Outcome(
                orphan, "kept", f"protected {what} (pass --delete-data-bucket)"
            )
        handler = {
            LOAD_BALANCER: self._delete_load_balancer,
            CLASSIC_LOAD_BALANCER: self._delete_classic_load_balancer,
            TARGET_GROUP: self._delete_target_group,
            NETWORK_INTERFACE: self._delete_interface,
            VOLUME: self._delete_volume,
            SECURITY_GROUP: self._delete_security_group,
            S3_BUCKET: self._delete_bucket,
            LOG_GROUP: self._delete_log_group,
            KMS_KEY: self._delete_key,
            IAM_ROLE: self._delete_role,
            OIDC_PROVIDER: self._delete_oidc_provider,
        }.get(orphan.kind)
        if handler is None:
            return Outcome(
                orphan,
                "not-deleted",
                "no automatic deletion for this kind; `make destroy` removes what "
                "Pulumi created, else delete it in the AWS console",
            )
        try:
            message = handler(orphan)
        except _Missing:
            return Outcome(orphan, "deleted", "already gone")
        except CommandError as exc:
            return Outcome(orphan, "failed", str(exc))
        except Exception as exc:  # botocore ClientError and friends
            if _is_not_found(exc) and not self._exists(orphan):
                return Outcome(orphan, "deleted", "already gone")
            return Outcome(orphan, "failed", _short(exc))
        if message:
            return Outcome(orphan, "not-deleted", message)
        return Outcome(orphan, "deleted")

    def _retry(
        self, call: Callable[[], Any], codes: tuple[str, ...], what: str
    ) -> None:
        """Retry `call` while AWS says a dependency is still there (bounded)."""
        last: list[str] = []

        def attempt() -> bool:
            try:
                call()
                return True
            except Exception as exc:
                if _code(exc) in codes:
                    last[:] = [_short(exc)]
                    return False
                raise

        wait_until(
            attempt,
            self.wait_timeout_s,
            lambda: f"{what} ({last[0] if last else 'still in use'})",
            self.interval_s,
            self.clock,
        )

    def _delete_load_balancer(self, orphan: Orphan) -> None:
        self.client("elbv2").delete_load_balancer(LoadBalancerArn=orphan.id)

    def _delete_classic_load_balancer(self, orphan: Orphan) -> None:
        self.client("elb").delete_load_balancer(LoadBalancerName=orphan.id)

    def _delete_target_group(self, orphan: Orphan) -> None:
        elbv2 = self.client("elbv2")
        self._retry(
            lambda: elbv2.delete_target_group(TargetGroupArn=orphan.id),
            ("ResourceInUse",),
            f"target group {orphan.id} to be released by its load balancer",
        )

    def _delete_interface(self, orphan: Orphan) -> str | None:
        ec2 = self.client("ec2")
        enis = ec2.describe_network_interfaces(NetworkInterfaceIds=[orphan.id])
        eni = enis["NetworkInterfaces"][0]
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
            self.log(f"detached   {NETWORK_INTERFACE} {orphan.id}")

            def available() -> bool:
                found = ec2.describe_network_interfaces(NetworkInterfaceIds=[orphan.id])
                return found["NetworkInterfaces"][0].get("Status") == "available"

            wait_until(
                available,
                self.wait_timeout_s,
                f"{orphan.id} to detach",
                self.interval_s,
                self.clock,
            )
        self._retry(
            lambda: ec2.delete_network_interface(NetworkInterfaceId=orphan.id),
            ("InvalidNetworkInterface.InUse",),
            f"{orphan.id} to be released",
        )
        return None

    def _delete_volume(self, orphan: Orphan) -> str | None:
        ec2 = self.client("ec2")
        volume = ec2.describe_volumes(VolumeIds=[orphan.id])["Volumes"][0]
        for attachment in volume.get("Attachments") or []:
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
            ec2.detach_volume(VolumeId=orphan.id, InstanceId=instance_id)
            self.log(f"detached   {VOLUME} {orphan.id} from {instance_id}")
        if volume.get("Attachments"):

            def available() -> bool:
                found = ec2.describe_volumes(VolumeIds=[orphan.id])["Volumes"][0]
                return found["State"] == "available"

            wait_until(
                available,
                self.wait_timeout_s,
                f"{orphan.id} to detach",
                self.interval_s,
                self.clock,
            )
        self._retry(
            lambda: ec2.delete_volume(VolumeId=orphan.id),
            ("VolumeInUse",),
            f"{orphan.id} to be released",
        )
        return None

    def _unlink_security_groups(self, groups: Sequence[Orphan]) -> None:
        """Revoke the rules by which our groups point at other groups.

        A group that another group's rule names cannot be deleted; these rules
        belong to groups we are deleting anyway. Groups that are not ours are left
        as they are (a rule there keeps our group, and is reported).
        """
        ec2 = self.client("ec2")
        for orphan in groups:
            try:
                found = ec2.describe_security_groups(GroupIds=[orphan.id])
            except Exception as exc:
                if _is_not_found(exc):
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
                    except Exception as exc:  # reported by the delete that follows
                        self.log(f"warning: {orphan.id}: {_short(exc)}")

    def _delete_security_group(self, orphan: Orphan) -> None:
        ec2 = self.client("ec2")
        self._retry(
            lambda: ec2.delete_security_group(GroupId=orphan.id),
            ("DependencyViolation", "InvalidGroup.InUse"),
            f"{orphan.id} to be free of interfaces and references",
        )

    def _delete_bucket(self, orphan: Orphan) -> None:
        s3 = self.client("s3")
        pages = s3.get_paginator("list_object_versions").paginate(Bucket=orphan.id)
        for page in pages:
            keys = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            ]
            for chunk in _chunks(keys, 1000):
                s3.delete_objects(Bucket=orphan.id, Delete={"Objects": list(chunk)})
        s3.delete_bucket(Bucket=orphan.id)

    def _delete_log_group(self, orphan: Orphan) -> None:
        self.client("logs").delete_log_group(logGroupName=orphan.id)

    def _delete_role(self, orphan: Orphan) -> None:
        """Detach and delete its policies, take it out of instance profiles,
        then delete the role."""
        iam = self.client("iam")
        name = orphan.id
        pages = iam.get_paginator("list_attached_role_policies").paginate(RoleName=name)
        for page in pages:
            for policy in page.get("AttachedPolicies", []):
                iam.detach_role_policy(RoleName=name, PolicyArn=policy["PolicyArn"])
        for page in iam.get_paginator("list_role_policies").paginate(RoleName=name):
            for policy in page.get("PolicyNames", []):
                iam.delete_role_policy(RoleName=name, PolicyName=policy)
        pages = iam.get_paginator("list_instance_profiles_for_role").paginate(
            RoleName=name
        )
        for page in pages:
            for profile in page.get("InstanceProfiles", []):
                iam.remove_role_from_instance_profile(
                    InstanceProfileName=profile["InstanceProfileName"], RoleName=name
                )
        iam.delete_role(RoleName=name)

    def _delete_oidc_provider(self, orphan: Orphan) -> None:
        self.client("iam").delete_open_id_connect_provider(
            OpenIDConnectProviderArn=orphan.id
        )

    def _delete_key(self, orphan: Orphan) -> None:
        # KMS deletes a key only after a waiting period (7 to 30 days); until
        # then it can be cancelled, and the scan no longer counts it.
        key_id = orphan.id.rsplit("/", 1)[-1]  # the key's id, from its ARN
        self.client("kms").schedule_key_deletion(
            KeyId=key_id, PendingWindowInDays=KMS_PENDING_DAYS
        )


NO_REGION_DETAIL = (
    f"names no region ({REGION_TAG}); IAM is account-wide, so a stack of this "
    "name in another region may still use it: not deleted. If such a stack "
    "exists, `pulumi up` there adds the tag; if none does, delete it by hand"
)
_ACCESS_DENIED = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation")


@contextlib.contextmanager
def _iam_access(permission: str) -> Iterator[None]:
    """Turns IAM's refusal of `permission` into a one-line CommandError."""
    try:
        yield
    except Exception as exc:
        if _code(exc) not in _ACCESS_DENIED:
            raise
        raise CommandError(
            f"IAM refused {permission} ({_code(exc)}): the leftover scan lists the "
            "stack's IAM roles and OIDC provider and needs iam:ListRoles, "
            "iam:ListRoleTags, iam:ListOpenIDConnectProviders and "
            "iam:ListOpenIDConnectProviderTags; nothing was deleted"
        ) from None


def _iam_tags(
    permission: str, call: Callable[..., Any], **kwargs: str
) -> dict[str, str] | None:
    """The tags `call` lists for one IAM resource; None if it was deleted
    meanwhile."""
    with _iam_access(permission):
        try:
            return _tags(call(**kwargs).get("Tags"))
        except Exception as exc:
            if _is_not_found(exc):
                return None
            raise


def is_iam_arn(arn: str) -> bool:
    parts = arn.split(":", 3)
    return len(parts) > 2 and parts[2] == "iam"


_NOT_FOUND = (
    "NoSuchEntity",
    "LoadBalancerNotFound",
    "TargetGroupNotFound",
    "AccessPointNotFound",
    "InvalidNetworkInterfaceID.NotFound",
    "InvalidVolume.NotFound",
    "InvalidGroup.NotFound",
    "NoSuchBucket",
    "404",
    "ResourceNotFoundException",
)


def _is_not_found(exc: Exception) -> bool:
    code = _code(exc)
    return code in _NOT_FOUND or "NotFound" in code


def _short(exc: Exception) -> str:
    code = _code(exc)
    message = getattr(exc, "response", {}).get("Error", {}).get("Message", "")
    return f"{code}: {message}" if code else str(exc).splitlines()[0]


def sort_for_deletion(orphans: Iterable[Orphan]) -> list[Orphan]:
    rank = {kind: i for i, kind in enumerate(DELETE_ORDER)}
    return sorted(orphans, key=lambda o: (rank.get(o.kind, len(rank)), o.kind, o.id))


def from_stack_file(stack: str) -> tuple[str | None, str | None]:
    """(region, cluster name) from Pulumi.<stack>.yaml, which outlives a destroy.

    The cluster's name derives from the stack's config (infra/config.py), so the
    leftovers of a destroyed stack can still be found by its cluster's tags.
    """
    path = REPO_ROOT / f"Pulumi.{stack}.yaml"
    if not path.exists():
        return None, None
    from raygpu.config import ConfigError, load_stack_file

    try:
        cfg = load_stack_file(path, stack)
    except (ConfigError, OSError, ValueError):
        return None, None
    return cfg.region, cfg.cluster_name


@dataclass(frozen=True)
class Target:
    """Where to look: from the stack's outputs, overridable by flags."""

    stack: str
    region: str
    cluster_name: str | None
    data_bucket: str | None


def resolve_target(args: argparse.Namespace) -> Target:
    outputs: Mapping[str, Any] = {}
    if args.outputs or not (args.region and args.cluster_name):
        try:
            outputs = load_outputs(args.stack, args.outputs).values
        except CommandError as exc:
            if args.outputs:
                raise
            print(
                f"note: {exc}; using flags and Pulumi.{args.stack}.yaml",
                file=sys.stderr,
            )
    file_region, file_cluster = from_stack_file(args.stack)
    region = args.region or outputs.get("region") or file_region
    if not region:
        raise CommandError(
            f"--region: no region for stack {args.stack!r} (no stack output "
            f"'region', no valid Pulumi.{args.stack}.yaml); pass --region"
        )
    cluster = args.cluster_name or outputs.get("cluster_name") or file_cluster
    data_bucket = args.data_bucket or outputs.get("data_bucket")
    return Target(args.stack, region, cluster, data_bucket)


def scanner_for(target: Target, **kwargs: Any) -> OrphanScanner:
    import boto3

    session = boto3.Session(region_name=target.region)
    return OrphanScanner(
        session,
        target.stack,
        cluster_name=target.cluster_name,
        data_bucket=target.data_bucket,
        **kwargs,
    )


def report(orphans: Sequence[Orphan], out: Any = None) -> None:
    out = out or sys.stdout
    for orphan in orphans:
        mark = "kept (protected)" if orphan.protected else "left"
        print(f"{mark:<16} {orphan.describe()}", file=out)


def add_target_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", required=True, help="Pulumi stack name")
    parser.add_argument(
        "--outputs", help="stack outputs as JSON instead of `pulumi stack output`"
    )
    parser.add_argument("--region", help="AWS region (default: the stack's)")
    parser.add_argument(
        "--cluster-name",
        help="EKS cluster name (default: the stack output cluster_name); needed "
        "after a destroy, when the stack has no outputs any more",
    )
    parser.add_argument("--data-bucket", help="the stack's data bucket (protected)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_args(parser)
    parser.add_argument(
        "--delete", action="store_true", help="delete what is found, in order"
    )
    parser.add_argument(
        "--delete-data-bucket",
        action="store_true",
        help="with --delete: delete the protected data bucket and every object "
        "version in it too",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.delete_data_bucket and not args.delete:
        parser.error("--delete-data-bucket needs --delete")


def run(args: argparse.Namespace) -> int:
    target = resolve_target(args)
    scanner = scanner_for(target, log=(lambda line: None) if args.json else print)
    where = f"stack {target.stack!r} in {target.region}"
    if target.cluster_name:
        where += f", cluster {target.cluster_name!r}"
    else:
        print(
            "note: no cluster name: only resources tagged "
            f"{STACK_TAG}={target.stack} are searched",
            file=sys.stderr,
        )
    orphans = scanner.scan()
    if not args.delete:
        if args.json:
            print(json.dumps([asdict(o) for o in orphans], indent=2))
        elif not orphans:
            print(f"nothing left of {where}")
        else:
            print(f"{len(orphans)} resource(s) left of {where}:")
            report(orphans)
        return 1 if any(not o.protected for o in orphans) else 0
    if not orphans:
        print(f"nothing left of {where}")
        return 0
    outcomes = scanner.delete(orphans, delete_data_bucket=args.delete_data_bucket)
    failed = [o for o in outcomes if not o.ok]
    if args.json:
        print(
            json.dumps(
                [
                    {**asdict(o.orphan), "action": o.action, "message": o.message}
                    for o in outcomes
                ],
                indent=2,
            )
        )
    else:
        print(
            f"{sum(o.action == 'deleted' for o in outcomes)} deleted, "
            f"{sum(o.action == 'kept' for o in outcomes)} kept, {len(failed)} left"
        )
    return 1 if failed else 0
