"""Find, and delete in order, the resources of one stack (and its cluster) in one
region. What is done per kind comes from raygpu.orphans.kinds; this holds what
spans kinds: merging what several searches find, the protected data bucket and
its key, IAM kept while the cluster lives, and waits between dependent kinds."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from botocore.exceptions import ClientError

from raygpu.errors import CommandError
from raygpu.names import BUCKET_TAG, STACK_TAG
from raygpu.orphans.aws import ACCESS_DENIED, AwsContext, error_code, short
from raygpu.orphans.kinds import (
    KINDS,
    UNCHECKED_DETAIL,
    Kind,
    exists,
    kind_of,
    sort_for_deletion,
    wait_gone,
)
from raygpu.orphans.model import (
    CLASSIC_LOAD_BALANCER,
    CLUSTER_NAME,
    IAM_KINDS,
    KMS_KEY,
    LOAD_BALANCER,
    NO_REGION_DETAIL,
    S3_BUCKET,
    TARGET_GROUP,
    Orphan,
    Outcome,
    classify_arn,
    is_iam_arn,
    tag_dict,
)
from raygpu.stack import Clock

_NO_ENCRYPTION = "ServerSideEncryptionConfigurationNotFoundError"
_EKS_MISSING = "ResourceNotFoundException"


class OrphanScanner(AwsContext):
    """Finds and deletes the resources of one stack (and its cluster) in one region."""

    cloud_title = "AWS"
    # The teardown's wait for what the cluster's Services made, in AWS's words.
    load_balancer_step = (
        "wait until AWS has deleted the cluster's load balancers, target groups "
        "and their network interfaces"
    )

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
        if cluster_name is not None and not CLUSTER_NAME.match(cluster_name):
            raise CommandError(
                f"--cluster-name: {cluster_name!r} is not an EKS cluster name "
                "(letters, digits, - and _, up to 100)"
            )
        super().__init__(session, clock, wait_timeout_s, interval_s, log)
        self.stack = stack
        self.cluster_name = cluster_name
        self.data_bucket = data_bucket

    # ------------------------------------------------------------------- scan

    def scan(self) -> list[Orphan]:
        """Everything of the stack that still exists, in deletion order."""
        found: dict[tuple[str, str], Orphan] = {}
        searches = (self.scan_cluster_made, self.scan_tagged, self.scan_iam)
        for orphan in [o for search in searches for o in search()]:
            key = (orphan.kind, orphan.id)
            first = found.get(key)
            if first is None:
                found[key] = orphan
            elif orphan.reason not in first.reason:
                found[key] = replace(first, reason=f"{first.reason}, {orphan.reason}")
        return sort_for_deletion(found.values())

    def _find(self, kinds: Iterable[Kind]) -> list[Orphan]:
        return [o for kind in kinds if kind.find is not None for o in kind.find(self)]

    def scan_cluster_made(self) -> list[Orphan]:
        """What Kubernetes and its controllers made for the cluster, by their tags."""
        return self._find(k for k in KINDS.values() if k.name not in IAM_KINDS)

    def scan_iam(self) -> list[Orphan]:
        """IAM roles and OIDC providers of the stack (see raygpu.orphans.find)."""
        return self._find(KINDS[name] for name in IAM_KINDS)

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
                tags = tag_dict(item.get("Tags"))
                protected = kind == S3_BUCKET and self.is_data_bucket(rid, tags)
                orphan = Orphan(kind, rid, arn, reason, protected=protected)
                if kind_of(kind).exists is None:
                    orphan = replace(orphan, detail=UNCHECKED_DETAIL)
                elif not exists(self, orphan):
                    continue  # the Tagging API lags deletions
                result.append(orphan)
        return self._protect_keys(result)

    def load_balancers_left(self) -> list[Orphan]:
        """The cluster's load balancers and target groups that still exist."""
        kinds = (LOAD_BALANCER, TARGET_GROUP, CLASSIC_LOAD_BALANCER)
        return self._find(KINDS[name] for name in kinds)

    def load_balancer_interfaces(self, lb_names: Iterable[str]) -> list[str]:
        """Interfaces AWS made for these load balancers (they outlive them a while)."""
        names = set(lb_names)
        if not names:
            return []
        found = []
        filters = [{"Name": "description", "Values": ["ELB *"]}]
        pages = (
            self.client("ec2")
            .get_paginator("describe_network_interfaces")
            .paginate(Filters=filters)
        )
        for page in pages:
            for eni in page["NetworkInterfaces"]:
                words = (eni.get("Description") or "").split(" ", 1)
                owner = words[1] if len(words) == 2 else ""
                # "ELB app/<name>/<id>", "ELB net/<name>/<id>" or "ELB <name>"
                name = owner.split("/")[1] if "/" in owner else owner
                if name in names:
                    found.append(eni["NetworkInterfaceId"])
        return found

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
        except ClientError as exc:
            code = error_code(exc)
            if code == _EKS_MISSING:
                return None
            if code in ACCESS_DENIED:  # cannot tell: keep IAM
                return (
                    f"cannot tell whether EKS cluster {self.cluster_name} still "
                    f"exists (eks:DescribeCluster: {code})"
                )
            raise
        return f"EKS cluster {self.cluster_name} still exists"

    def is_data_bucket(self, name: str, tags: Mapping[str, str]) -> bool:
        """The stack's data bucket: the output's name, or (after a destroy, when
        there are no outputs) its raygpu:bucket=data tag; a bucket made before
        that tag existed, by the `<storage>-data` Name tag infra/storage.py sets.
        The data bucket's access logs (raygpu:bucket=access-logs) are kept with it."""
        if tags.get(BUCKET_TAG) == "access-logs":
            return True
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
        except ClientError as exc:
            if error_code(exc) == _NO_ENCRYPTION:
                return set()
            raise
        rules = found.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
        ids = set()
        for rule in rules:
            default = rule.get("ApplyServerSideEncryptionByDefault", {})
            if key := default.get("KMSMasterKeyID"):
                ids |= {key, key.split("/")[-1]}
        return ids

    # ----------------------------------------------------------------- delete

    def delete(
        self, orphans: Iterable[Orphan], delete_data_bucket: bool = False
    ) -> list[Outcome]:
        """Delete in dependency order; one Outcome per orphan, logged as it goes."""
        outcomes = []
        blocking: list[Orphan] = []  # deleted, and later kinds wait for them
        prepared: set[str] = set()
        ordered = sort_for_deletion(orphans)
        alive = None
        if any(o.kind in IAM_KINDS for o in ordered):
            alive = self.cluster_still_exists(ordered)
        for orphan in ordered:
            kind = kind_of(orphan.kind)
            if orphan.kind in IAM_KINDS and (
                alive or orphan.detail == NO_REGION_DETAIL
            ):
                why = f"{alive}: run `make destroy` first" if alive else orphan.detail
                outcomes.append(self._outcome(orphan, "not-deleted", why))
                continue
            if blocking and not kind.blocks_later:
                self._wait_gone(blocking, "deleted load balancers to go")
                blocking = []
            if kind.before is not None and kind.name not in prepared:
                prepared.add(kind.name)
                kind.before(self, [o for o in ordered if o.kind == orphan.kind])
            outcome = self._delete_one(orphan, kind, delete_data_bucket)
            self.log(outcome.line())
            outcomes.append(outcome)
            if kind.blocks_later and outcome.action == "deleted":
                blocking.append(orphan)
        # AWS may accept a delete before the resource is gone: return only once
        # each has gone (a warning names any that has not).
        deleted = [o.orphan for o in outcomes if o.action == "deleted"]
        if deleted:
            self._wait_gone(deleted, "deleted resources to go")
        return outcomes

    def _outcome(self, orphan: Orphan, action: str, message: str) -> Outcome:
        outcome = Outcome(orphan, action, message)
        self.log(outcome.line())
        return outcome

    def _wait_gone(self, orphans: Sequence[Orphan], what: str) -> None:
        try:
            wait_gone(self, orphans, what)
        except CommandError as exc:
            self.log(f"warning: {exc}")

    def _delete_one(self, orphan: Orphan, kind: Kind, delete_data: bool) -> Outcome:
        if orphan.protected and not delete_data:
            what = "data bucket" if orphan.kind == S3_BUCKET else "data bucket's key"
            return Outcome(
                orphan, "kept", f"protected {what} (pass --delete-data-bucket)"
            )
        if kind.delete is None:
            return Outcome(
                orphan,
                "not-deleted",
                "no automatic deletion for this kind; `make destroy` removes what "
                "Pulumi created, else delete it in the AWS console",
            )
        delete = kind.delete
        try:
            if kind.release is not None and (why := kind.release(self, orphan)):
                return Outcome(orphan, "not-deleted", why)
            if kind.in_use:
                self.retry(
                    lambda: delete(self, orphan),
                    kind.in_use,
                    kind.busy.format(id=orphan.id),
                )
            else:
                delete(self, orphan)
        except CommandError as exc:
            return Outcome(orphan, "failed", str(exc))
        except ClientError as exc:
            if error_code(exc) in kind.missing and not exists(self, orphan):
                return Outcome(orphan, "deleted", "already gone")
            return Outcome(orphan, "failed", short(exc))
        return Outcome(orphan, "deleted")
