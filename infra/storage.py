"""Storage: the data bucket (datasets) and the artifacts bucket (checkpoints,
results, job packages), both private, KMS-encrypted and versioned.

`protect_data` keeps the data bucket, its settings and the KMS key that encrypts
it when the stack is destroyed (`retain_on_delete`): `pulumi destroy` still
completes, and the bucket stays readable afterwards. (Pulumi's `protect` would make
`pulumi destroy` fail for the whole stack instead.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from raygpu.config import StackConfig
from raygpu.names import BUCKET_TAG


@dataclass(frozen=True)
class StorageArgs:
    """What storage takes from the stack config (defaults live there only)."""

    protect_data: bool
    artifacts_force_destroy: bool
    noncurrent_version_expiration_days: int
    tags: Mapping[str, str]
    abort_multipart_days: int = 7  # not a config key: a fixed housekeeping rule

    @classmethod
    def from_config(cls, cfg: StackConfig) -> StorageArgs:
        return cls(
            protect_data=cfg.protect_data_bucket,
            artifacts_force_destroy=cfg.artifacts_force_destroy,
            noncurrent_version_expiration_days=cfg.noncurrent_version_expiration_days,
            tags=cfg.tags,
        )


def deny_insecure_transport_policy(bucket_arn: str) -> str:
    """Deny every request that does not use TLS 1.2 or newer."""
    resources = [bucket_arn, f"{bucket_arn}/*"]
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": resources,
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                },
                {
                    "Sid": "DenyOutdatedTLS",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": resources,
                    "Condition": {"NumericLessThan": {"s3:TlsVersion": "1.2"}},
                },
            ],
        }
    )


class Storage(pulumi.ComponentResource):
    data_bucket: pulumi.Output[str]
    data_bucket_arn: pulumi.Output[str]
    artifacts_bucket: pulumi.Output[str]
    artifacts_bucket_arn: pulumi.Output[str]
    kms_key_arn: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: StorageArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("raygpu:storage:Storage", name, {}, opts)

        def tags(resource_name: str, **extra: str) -> dict[str, str]:
            return {**args.tags, "Name": resource_name, **extra}

        # The data bucket and everything that keeps it private and readable share
        # these options; the key too, or retained data could not be decrypted.
        keep = pulumi.ResourceOptions(parent=self, retain_on_delete=args.protect_data)
        child = pulumi.ResourceOptions(parent=self)

        key = aws.kms.Key(
            f"{name}-kms",
            description=f"{name}: S3 default encryption (data and artifacts buckets)",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            tags=tags(f"{name}-kms"),
            opts=keep,
        )
        aws.kms.Alias(
            f"{name}-kms", name=f"alias/{name}", target_key_id=key.key_id, opts=child
        )

        data = self._bucket(
            f"{name}-data",
            key,
            force_destroy=not args.protect_data,
            tags=tags(f"{name}-data", **{BUCKET_TAG: "data"}),
            opts=keep,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-data-lifecycle",
            bucket=data.id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="abort-incomplete-multipart-uploads",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(  # noqa: E501
                        days_after_initiation=args.abort_multipart_days
                    ),
                )
            ],
            opts=keep,
        )

        artifacts = self._bucket(
            f"{name}-artifacts",
            key,
            force_destroy=args.artifacts_force_destroy,
            tags=tags(f"{name}-artifacts", **{BUCKET_TAG: "artifacts"}),
            opts=child,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-artifacts-lifecycle",
            bucket=artifacts.id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-noncurrent-versions",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(  # noqa: E501
                        noncurrent_days=args.noncurrent_version_expiration_days
                    ),
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(
                        expired_object_delete_marker=True
                    ),
                ),
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="abort-incomplete-multipart-uploads",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(  # noqa: E501
                        days_after_initiation=args.abort_multipart_days
                    ),
                ),
            ],
            opts=child,
        )

        self.data_bucket = data.bucket
        self.data_bucket_arn = data.arn
        self.artifacts_bucket = artifacts.bucket
        self.artifacts_bucket_arn = artifacts.arn
        self.kms_key_arn = key.arn
        self.register_outputs(
            {
                "data_bucket": self.data_bucket,
                "data_bucket_arn": self.data_bucket_arn,
                "artifacts_bucket": self.artifacts_bucket,
                "artifacts_bucket_arn": self.artifacts_bucket_arn,
                "kms_key_arn": self.kms_key_arn,
            }
        )

    def _bucket(
        self,
        name: str,
        key: aws.kms.Key,
        *,
        force_destroy: bool,
        tags: dict[str, str],
        opts: pulumi.ResourceOptions,
    ) -> aws.s3.Bucket:
        bucket = aws.s3.Bucket(name, force_destroy=force_destroy, tags=tags, opts=opts)
        bpa = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=opts,
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(
                object_ownership="BucketOwnerEnforced"
            ),
            opts=opts,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(  # noqa: E501
                        sse_algorithm="aws:kms", kms_master_key_id=key.arn
                    ),
                    bucket_key_enabled=True,
                )
            ],
            opts=opts,
        )
        aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(
                status="Enabled"
            ),
            opts=opts,
        )
        # After the public access block, so that a deny-only policy never races it.
        aws.s3.BucketPolicy(
            f"{name}-policy",
            bucket=bucket.id,
            policy=bucket.arn.apply(deny_insecure_transport_policy),
            opts=pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(depends_on=[bpa])
            ),
        )
        return bucket
