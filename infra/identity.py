"""Identity: the cluster's OIDC provider, the IAM role that Ray's Kubernetes
service accounts assume (IRSA), and the storage key's policy.

The role trusts exactly the Ray head's and the Ray workers' service accounts
(`system:serviceaccount:<ns>:<sa>`, audience `sts.amazonaws.com`). Its policy
names the two bucket ARNs and the KMS key; no action and no resource is `*`
(object ARNs end in `/*`, which is the bucket's own object space). The data
bucket is read-only but for its `prepared/` prefix, where the preparation job
writes (and rewrites) datasets: raw data that `raygpu data push` uploaded under
`raw/` stays out of the cluster's reach for writing. The storage
key may be used, through S3 only, by this role, the admin principals and the
listed data key users (infra/kms.py); it is set here because the role exists only
now.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra import kms
from raygpu.config import StackConfig
from raygpu.names import PREPARED_PREFIX, STS_AUDIENCE

DATA_READ_ACTIONS = ("s3:GetObject", "s3:GetObjectVersion")
ARTIFACTS_OBJECT_ACTIONS = (
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
)
# prepare.py writes shards and the manifest, deletes a stale manifest and shards
# of an earlier run, and its multipart uploads may need aborting.
PREPARED_WRITE_ACTIONS = (
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
)
BUCKET_LIST_ACTIONS = ("s3:ListBucket", "s3:GetBucketLocation")
KMS_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey")


@dataclass(frozen=True)
class IdentityArgs:
    """What identity takes from the stack config (defaults live there only), the
    cluster and storage."""

    oidc_issuer_url: pulumi.Input[str]
    data_bucket_arn: pulumi.Input[str]
    artifacts_bucket_arn: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    kms_key_id: pulumi.Input[str]
    namespace: str
    service_accounts: tuple[str, ...]
    key_users: tuple[str, ...]  # besides the Ray role
    keep_key_policy: bool  # with the retained data key
    region: str
    tags: Mapping[str, str]

    @classmethod
    def from_config(
        cls,
        cfg: StackConfig,
        *,
        oidc_issuer_url: pulumi.Input[str],
        data_bucket_arn: pulumi.Input[str],
        artifacts_bucket_arn: pulumi.Input[str],
        kms_key_arn: pulumi.Input[str],
        kms_key_id: pulumi.Input[str],
    ) -> IdentityArgs:
        return cls(
            oidc_issuer_url=oidc_issuer_url,
            data_bucket_arn=data_bucket_arn,
            artifacts_bucket_arn=artifacts_bucket_arn,
            kms_key_arn=kms_key_arn,
            kms_key_id=kms_key_id,
            namespace=cfg.ray_namespace,
            service_accounts=(cfg.ray_service_account, cfg.ray_worker_service_account),
            key_users=cfg.admin_principal_arns + cfg.data_key_user_arns,
            keep_key_policy=cfg.protect_data_bucket,
            region=cfg.region,
            tags=cfg.iam_tags,
        )


def as_tuple(value: str | Sequence[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def trust_policy(
    provider_arn: str, issuer_url: str, namespace: str, sa: str | Sequence[str]
) -> str:
    """Web-identity trust of exactly the service accounts `sa` of `namespace`."""
    issuer = issuer_url.removeprefix("https://")
    subs = [f"system:serviceaccount:{namespace}:{a}" for a in as_tuple(sa)]
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Federated": provider_arn},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {
                        "StringEquals": {
                            f"{issuer}:sub": subs[0] if len(subs) == 1 else subs,
                            f"{issuer}:aud": STS_AUDIENCE,
                        }
                    },
                }
            ],
        }
    )


def bucket_access_policy(data_arn: str, artifacts_arn: str, key_arn: str) -> str:
    """Read the data bucket and write its prepared/ prefix, read and write the
    artifacts bucket, use the key."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "ListBuckets",
                    "Effect": "Allow",
                    "Action": list(BUCKET_LIST_ACTIONS),
                    "Resource": [data_arn, artifacts_arn],
                },
                {
                    "Sid": "ReadData",
                    "Effect": "Allow",
                    "Action": list(DATA_READ_ACTIONS),
                    "Resource": [f"{data_arn}/*"],
                },
                {
                    "Sid": "WritePreparedData",
                    "Effect": "Allow",
                    "Action": list(PREPARED_WRITE_ACTIONS),
                    "Resource": [f"{data_arn}/{PREPARED_PREFIX}/*"],
                },
                {
                    "Sid": "ReadWriteArtifacts",
                    "Effect": "Allow",
                    "Action": list(ARTIFACTS_OBJECT_ACTIONS),
                    "Resource": [f"{artifacts_arn}/*"],
                },
                {
                    "Sid": "UseBucketKey",
                    "Effect": "Allow",
                    "Action": list(KMS_ACTIONS),
                    "Resource": [key_arn],
                },
            ],
        }
    )


class Identity(pulumi.ComponentResource):
    oidc_provider_arn: pulumi.Output[str]
    irsa_role_arn: pulumi.Output[str]
    irsa_role_name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: IdentityArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("raygpu:identity:Identity", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)

        def tags(resource_name: str) -> dict[str, str]:
            return {**args.tags, "Name": resource_name}

        provider = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc",
            url=args.oidc_issuer_url,
            client_id_lists=[STS_AUDIENCE],
            tags=tags(f"{name}-oidc"),
            opts=child,
        )
        accounts = ", ".join(f"{args.namespace}/{a}" for a in args.service_accounts)
        role = aws.iam.Role(
            f"{name}-ray",
            description=f"IRSA role of {accounts}: read data, read/write artifacts",
            assume_role_policy=pulumi.Output.all(
                provider.arn, pulumi.Output.from_input(args.oidc_issuer_url)
            ).apply(
                lambda v: trust_policy(
                    v[0], v[1], args.namespace, args.service_accounts
                )
            ),
            max_session_duration=3600,
            tags=tags(f"{name}-ray"),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-ray-buckets",
            role=role.id,
            policy=pulumi.Output.all(
                args.data_bucket_arn, args.artifacts_bucket_arn, args.kms_key_arn
            ).apply(lambda v: bucket_access_policy(v[0], v[1], v[2])),
            opts=child,
        )

        invoke = pulumi.InvokeOptions(parent=self)
        partition = aws.get_partition(opts=invoke).partition
        account = aws.get_caller_identity(opts=invoke).account_id
        aws.kms.KeyPolicy(
            f"{name}-storage-key-policy",
            key_id=args.kms_key_id,
            policy=role.arn.apply(
                lambda arn: kms.storage_key_policy(
                    partition, account, args.region, [arn, *args.key_users]
                )
            ),
            opts=pulumi.ResourceOptions(
                parent=self, retain_on_delete=args.keep_key_policy
            ),
        )

        self.oidc_provider_arn = provider.arn
        self.irsa_role_arn = role.arn
        self.irsa_role_name = role.name
        self.register_outputs(
            {
                "oidc_provider_arn": self.oidc_provider_arn,
                "irsa_role_arn": self.irsa_role_arn,
            }
        )
