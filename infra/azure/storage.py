"""AzureStorage: one storage account with the data container (datasets) and the
artifacts container (checkpoints, results, job packages).

The account: HTTPS only, TLS 1.2 at least, no public blob access, infrastructure
encryption (a second layer under the service's own), and no shared-key access:
jobs authenticate with Entra ID (pyarrow's AzureFileSystem with
DefaultAzureCredential, through workload identity), so no account key exists to
leak and every request is an identity's. Blob versioning, soft delete of blobs
and containers, and a lifecycle rule that expires noncurrent versions.

`protect_data` keeps the account and the data container on `pulumi destroy`; the
artifacts container is kept unless `artifacts_force_destroy` (Azure deletes a
container with its blobs, so keeping it is the only refusal there is).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
from pulumi_azure_native import storage

TYPE_TOKEN = "raygpu:azure:Storage"
CONTAINERS = ("data", "artifacts")
SOFT_DELETE_DAYS = 7
DFS_SUFFIX = "dfs.core.windows.net"


@dataclass(frozen=True)
class AzureStorageArgs:
    """What storage takes from the stack config (defaults live there only)."""

    resource_group_name: pulumi.Input[str]
    location: str
    account_name: str
    protect_data: bool
    artifacts_force_destroy: bool
    noncurrent_version_expiration_days: int
    tags: Mapping[str, str]

    @classmethod
    def from_config(cls, cfg, *, resource_group_name) -> AzureStorageArgs:
        return cls(
            resource_group_name=resource_group_name,
            location=cfg.region,
            account_name=account_name(cfg.name_prefix, cfg.subscription_id),
            protect_data=cfg.protect_data_bucket,
            artifacts_force_destroy=cfg.artifacts_force_destroy,
            noncurrent_version_expiration_days=cfg.noncurrent_version_expiration_days,
            tags=cfg.tags,
        )

    @property
    def keeps_account(self) -> bool:
        return keeps_account(self.protect_data, self.artifacts_force_destroy)


def keeps_account(protect_data: bool, artifacts_force_destroy: bool) -> bool:
    """Whether `pulumi destroy` keeps the account: it holds a kept container."""
    return protect_data or not artifacts_force_destroy


def account_name(prefix: str, subscription_id: str) -> str:
    """Storage account names are global, 3-24 lowercase letters and digits: the
    stack's prefix without dashes (14 at most) and a hash of the subscription and
    prefix (another subscription's stack of the same name gets another name)."""
    digest = hashlib.sha256(f"{subscription_id}/{prefix}".encode()).hexdigest()[:10]
    return f"{re.sub(r'[^a-z0-9]', '', prefix)[:14]}{digest}"


def container_address(container: str, account: str) -> str:
    """`<container>@<account>.dfs.core.windows.net`: what follows `abfs://` in the
    jobs' paths (ray_jobs/mlcore/storage.py), as a bucket name does `s3://`."""
    return f"{container}@{account}.{DFS_SUFFIX}"


class AzureStorage(pulumi.ComponentResource):
    account_name: pulumi.Output[str]
    account_id: pulumi.Output[str]
    data_container: pulumi.Output[str]
    artifacts_container: pulumi.Output[str]
    # `container@account.dfs...` of each container (the jobs' bucket values).
    data_bucket: pulumi.Output[str]
    artifacts_bucket: pulumi.Output[str]
    # The containers' resource IDs: the scopes of Ray's role assignments.
    container_ids: dict[str, pulumi.Output[str]]

    def __init__(
        self,
        name: str,
        args: AzureStorageArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TYPE_TOKEN, name, {}, opts)
        rg = args.resource_group_name
        keep_account = pulumi.ResourceOptions(
            parent=self, retain_on_delete=args.keeps_account
        )
        account = storage.StorageAccount(
            f"{name}-account",
            resource_group_name=rg,
            account_name=args.account_name,
            location=args.location,
            kind="StorageV2",
            sku=storage.SkuArgs(name="Standard_LRS"),
            access_tier="Hot",
            enable_https_traffic_only=True,
            minimum_tls_version="TLS1_2",
            allow_blob_public_access=False,
            allow_shared_key_access=False,
            default_to_o_auth_authentication=True,
            allow_cross_tenant_replication=False,
            encryption=storage.EncryptionArgs(
                key_source="Microsoft.Storage",
                require_infrastructure_encryption=True,
                services=storage.EncryptionServicesArgs(
                    blob=storage.EncryptionServiceArgs(
                        enabled=True, key_type="Account"
                    ),
                    file=storage.EncryptionServiceArgs(
                        enabled=True, key_type="Account"
                    ),
                ),
            ),
            tags=dict(args.tags),
            opts=keep_account,
        )
        service = storage.BlobServiceProperties(
            f"{name}-blob-service",
            resource_group_name=rg,
            account_name=account.name,
            blob_services_name="default",
            is_versioning_enabled=True,
            delete_retention_policy=storage.DeleteRetentionPolicyArgs(
                enabled=True, days=SOFT_DELETE_DAYS
            ),
            container_delete_retention_policy=storage.DeleteRetentionPolicyArgs(
                enabled=True, days=SOFT_DELETE_DAYS
            ),
            opts=keep_account,
        )
        storage.ManagementPolicy(
            f"{name}-lifecycle",
            resource_group_name=rg,
            account_name=account.name,
            management_policy_name="default",
            policy=storage.ManagementPolicySchemaArgs(
                rules=[
                    storage.ManagementPolicyRuleArgs(
                        name="expire-noncurrent-artifacts",
                        type="Lifecycle",
                        enabled=True,
                        definition=storage.ManagementPolicyDefinitionArgs(
                            filters=storage.ManagementPolicyFilterArgs(
                                blob_types=["blockBlob"], prefix_match=["artifacts/"]
                            ),
                            actions=storage.ManagementPolicyActionArgs(
                                version=storage.ManagementPolicyVersionArgs(
                                    delete=storage.DateAfterCreationArgs(
                                        days_after_creation_greater_than=(
                                            args.noncurrent_version_expiration_days
                                        )
                                    )
                                )
                            ),
                        ),
                    )
                ]
            ),
            opts=keep_account,
        )
        kept = {
            "data": args.protect_data,
            "artifacts": not args.artifacts_force_destroy,
        }
        containers = {
            kind: storage.BlobContainer(
                f"{name}-{kind}",
                resource_group_name=rg,
                account_name=account.name,
                container_name=kind,
                public_access="None",
                metadata={"raygpu_container": kind},
                opts=pulumi.ResourceOptions(
                    parent=self, retain_on_delete=kept[kind], depends_on=[service]
                ),
            )
            for kind in CONTAINERS
        }
        self.account_name = account.name
        self.account_id = account.id
        self.data_container = containers["data"].name
        self.artifacts_container = containers["artifacts"].name
        self.container_ids = {k: c.id for k, c in containers.items()}
        self.data_bucket, self.artifacts_bucket = (
            pulumi.Output.all(containers[k].name, account.name).apply(
                lambda a: container_address(*a)
            )
            for k in CONTAINERS
        )
        self.register_outputs(
            {
                "account_name": self.account_name,
                "data_container": self.data_container,
                "artifacts_container": self.artifacts_container,
            }
        )
