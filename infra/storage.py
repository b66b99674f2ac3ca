"""Storage: the data bucket (datasets) and the artifacts bucket (checkpoints,
results, job packages), both private, KMS-encrypted and versioned; optionally
(`dataBucketAccessLogging`) a private bucket holding the data bucket's S3 server
access logs. S3 delivers access logs only into buckets encrypted with S3-managed
keys, so that one bucket uses SSE-S3; its policy lets only S3's log delivery
write, and only for the data bucket of this account.

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
    access_logging: bool
    log_retention_days: int
    tags: Mapping[str, str]
    abort_multipart_days: int = 7  # not a config key: a fixed housekeeping rule

    @classmethod
    def from_config(cls, cfg: StackConfig) -> StorageArgs:
        return cls(
            protect_data=cfg.protect_data_bucket,
            artifacts_force_destroy=cfg.artifacts_force_destroy,
            noncurrent_version_expiration_days=cfg.noncurrent_version_expiration_days,
            access_logging=cfg.data_bucket_access_logging,
            log_retention_days=cfg.flow_log_retention_days,
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


def log_delivery_policy(logs_arn: str, data_arn: str, account: str) -> str:
    """TLS only, and S3's log delivery may write the data bucket's logs, nothing
    else (AWS's documented policy for server access logging)."""
    doc = json.loads(deny_insecure_transport_policy(logs_arn))
    doc["Statement"].append(
        {
            "Sid": "S3ServerAccessLogsOfTheDataBucket",
            "Effect": "Allow",
            "Principal": {"Service": "logging.s3.amazonaws.com"},
            "Action": "s3:PutObject",
            "Resource": f"{logs_arn}/{ACCESS_LOG_PREFIX}*",
            "Condition": {
                "ArnLike": {"aws:SourceArn": data_arn},
                "StringEquals": {"aws:SourceAccount": account},
            },
        }
    )
    return json.dumps(doc)


ACCESS_LOG_PREFIX = "data-bucket/"


class Storage(pulumi.ComponentResource):
    data_bucket: pulumi.Output[str]
    data_bucket_arn: pulumi.Output[str]
    artifacts_bucket: pulumi.Output[str]
    artifacts_bucket_arn: pulumi.Output[str]
    kms_key_arn: pulumi.Output[str]
    kms_key_id: pulumi.Output[str]

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

        if args.access_logging:
            self._access_logs(name, data, args, tags, keep)

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
        self.kms_key_id = key.key_id
        self.register_outputs(
            {
                "data_bucket": self.data_bucket,
                "data_bucket_arn": self.data_bucket_arn,
                "artifacts_bucket": self.artifacts_bucket,
                "artifacts_bucket_arn": self.artifacts_bucket_arn,
                "kms_key_arn": self.kms_key_arn,
            }
        )

    def _access_logs(self, name, data, args, tags, keep) -> None:
        account = aws.get_caller_identity(
            opts=pulumi.InvokeOptions(parent=self)
        ).account_id
        logs = self._bucket(
            f"{name}-access-logs",
            None,
            force_destroy=not args.protect_data,
            tags=tags(f"{name}-access-logs", **{BUCKET_TAG: "access-logs"}),
            opts=keep,
            log_source_arn=data.arn,
            account=account,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-access-logs-lifecycle",
            bucket=logs.id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-access-logs",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(
                        days=args.log_retention_days
                    ),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(  # noqa: E501
                        noncurrent_days=1
                    ),
                )
            ],
            opts=keep,
        )
        aws.s3.BucketLogging(
            f"{name}-data-logging",
            bucket=data.id,
            target_bucket=logs.id,
            target_prefix=ACCESS_LOG_PREFIX,
            opts=keep,
        )

    def _bucket(
        self,
        name: str,
        key: aws.kms.Key | None,
        *,
        force_destroy: bool,
        tags: dict[str, str],
        opts: pulumi.ResourceOptions,
        log_source_arn: pulumi.Output[str] | None = None,
        account: str = "",
    ) -> aws.s3.Bucket:
        """A private, versioned bucket; KMS-encrypted with `key`, or with S3's own
        keys when `key` is None (an access log bucket receiving the logs of the
        bucket `log_source_arn` of `account`)."""
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
                        sse_algorithm="aws:kms" if key else "AES256",
                        kms_master_key_id=key.arn if key else None,
                    ),
                    bucket_key_enabled=bool(key),
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
            policy=bucket.arn.apply(deny_insecure_transport_policy)
            if log_source_arn is None
            else pulumi.Output.all(bucket.arn, log_source_arn).apply(
                lambda v: log_delivery_policy(v[0], v[1], account)
            ),
            opts=pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(depends_on=[bpa])
            ),
        )
        return bucket
