"""GcpIdentity: the Google service account of Ray's pods, bound through Workload
Identity to the Ray head's and the workers' Kubernetes service accounts, with
access to the stack's two buckets only.

The grants are bucket-level IAM (roles/storage.objectUser: read, write, list and
delete objects; no bucket settings, no IAM), never a project-wide storage role.
The buckets' CMEK needs nothing of it: Cloud Storage's own service agent uses the
key (infra/gcp/storage.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from infra.gcp.cluster import account_id

TYPE_TOKEN = "raygpu:gcp:Identity"
WORKLOAD_IDENTITY_USER = "roles/iam.workloadIdentityUser"
BUCKET_ROLE = "roles/storage.objectUser"


def workload_member(workload_pool: str, namespace: str, service_account: str) -> str:
    """The IAM member of a Kubernetes service account under Workload Identity."""
    return f"serviceAccount:{workload_pool}[{namespace}/{service_account}]"


@dataclass(frozen=True)
class GcpIdentityArgs:
    cluster_name: str
    workload_pool: str
    namespace: str
    service_accounts: tuple[str, ...]  # the head's and the workers'
    buckets: tuple[pulumi.Input[str], ...]

    @classmethod
    def from_config(cls, cfg, *, data_bucket, artifacts_bucket) -> GcpIdentityArgs:
        return cls(
            cluster_name=cfg.cluster_name,
            workload_pool=cfg.workload_pool,
            namespace=cfg.ray_namespace,
            service_accounts=(cfg.ray_service_account, cfg.ray_worker_service_account),
            buckets=(data_bucket, artifacts_bucket),
        )


class GcpIdentity(pulumi.ComponentResource):
    email: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: GcpIdentityArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TYPE_TOKEN, name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        account = gcp.serviceaccount.Account(
            f"{name}-ray-sa",
            account_id=account_id("ray", args.cluster_name),
            display_name=f"Ray pods of {args.cluster_name}",
            opts=child,
        )
        for ksa in args.service_accounts:
            gcp.serviceaccount.IAMMember(
                f"{name}-wi-{ksa}",
                service_account_id=account.name,
                role=WORKLOAD_IDENTITY_USER,
                member=workload_member(args.workload_pool, args.namespace, ksa),
                opts=child,
            )
        for i, bucket in enumerate(args.buckets):
            gcp.storage.BucketIAMMember(
                f"{name}-bucket-{i}",
                bucket=bucket,
                role=BUCKET_ROLE,
                member=account.member,
                opts=child,
            )
        self.email = account.email
        self.register_outputs({"email": self.email})
