"""GcpStorage: the data bucket (datasets) and the artifacts bucket (checkpoints,
results, job packages) in GCS, with a Cloud KMS key of the stack.

Both buckets: uniform bucket-level access (no object ACLs), public access
prevention enforced, versioning, and the stack's key as their default encryption
key (CMEK). Cloud Storage encrypts with the key through its project service agent,
so that agent gets encrypter/decrypter on the key, and the buckets wait for it.

`protect_data` keeps the data bucket and the key that encrypts it when the stack
is destroyed (`retain_on_delete`), as on AWS: the bucket stays readable. Key rings
cannot be deleted in Cloud KMS at all; destroying the stack only forgets it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from raygpu.names import GCP_BUCKET_LABEL

TYPE_TOKEN = "raygpu:gcp:Storage"
KEY_ROTATION = "7776000s"  # 90 days
KMS_ENCRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter"


@dataclass(frozen=True)
class GcpStorageArgs:
    """What storage takes from the stack config (defaults live there only)."""

    project: str
    region: str
    prefix: str  # of the bucket names: `<project>-<stack>`, at most 41 characters
    protect_data: bool
    artifacts_force_destroy: bool
    noncurrent_version_expiration_days: int
    labels: Mapping[str, str]

    @classmethod
    def from_config(cls, cfg) -> GcpStorageArgs:
        return cls(
            project=cfg.gcp_project,
            region=cfg.region,
            prefix=cfg.name_prefix,
            protect_data=cfg.protect_data_bucket,
            artifacts_force_destroy=cfg.artifacts_force_destroy,
            noncurrent_version_expiration_days=cfg.noncurrent_version_expiration_days,
            labels=cfg.labels,
        )


def bucket_name(prefix: str, kind: str, project: str) -> str:
    """Bucket names are global: the stack's prefix, the kind and a short hash of
    the project (another project's stack of the same name gets another name);
    at most 41 + 11 + 8 characters, within GCS's 63."""
    digest = hashlib.sha256(project.encode()).hexdigest()[:8]
    return f"{prefix}-{kind}-{digest}"


class GcpStorage(pulumi.ComponentResource):
    data_bucket: pulumi.Output[str]
    artifacts_bucket: pulumi.Output[str]
    kms_key_id: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: GcpStorageArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TYPE_TOKEN, name, {}, opts)
        keep = pulumi.ResourceOptions(parent=self, retain_on_delete=args.protect_data)
        ring = gcp.kms.KeyRing(
            f"{name}-keyring",
            name=name,
            location=args.region,
            opts=keep,
        )
        key = gcp.kms.CryptoKey(
            f"{name}-key",
            name=f"{name}-buckets",
            key_ring=ring.id,
            purpose="ENCRYPT_DECRYPT",
            rotation_period=KEY_ROTATION,
            labels=dict(args.labels),
            opts=keep,
        )
        agent = gcp.storage.get_project_service_account_output(
            project=args.project, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        agent_grant = gcp.kms.CryptoKeyIAMMember(
            f"{name}-key-gcs-agent",
            crypto_key_id=key.id,
            role=KMS_ENCRYPTER,
            member=agent.member,
            opts=keep,
        )

        def bucket(kind: str, **extra) -> gcp.storage.Bucket:
            protect = kind == "data" and args.protect_data
            return gcp.storage.Bucket(
                f"{name}-{kind}",
                name=bucket_name(args.prefix, kind, args.project),
                location=args.region,
                uniform_bucket_level_access=True,
                public_access_prevention="enforced",
                versioning=gcp.storage.BucketVersioningArgs(enabled=True),
                encryption=gcp.storage.BucketEncryptionArgs(
                    default_kms_key_name=key.id
                ),
                labels={**args.labels, GCP_BUCKET_LABEL: kind},
                opts=pulumi.ResourceOptions(
                    parent=self, retain_on_delete=protect, depends_on=[agent_grant]
                ),
                **extra,
            )

        data = bucket("data", force_destroy=False)
        artifacts = bucket(
            "artifacts",
            force_destroy=args.artifacts_force_destroy,
            lifecycle_rules=[
                gcp.storage.BucketLifecycleRuleArgs(
                    action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
                    condition=gcp.storage.BucketLifecycleRuleConditionArgs(
                        days_since_noncurrent_time=(
                            args.noncurrent_version_expiration_days
                        ),
                        with_state="ARCHIVED",
                    ),
                )
            ],
        )
        self.data_bucket = data.name
        self.artifacts_bucket = artifacts.name
        self.kms_key_id = key.id
        self.register_outputs(
            {
                "data_bucket": self.data_bucket,
                "artifacts_bucket": self.artifacts_bucket,
                "kms_key_id": self.kms_key_id,
            }
        )
