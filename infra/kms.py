"""Key policies of the stack's two KMS keys, as JSON.

Without its own policy a key gets the default one, which lets every principal of
the account that IAM allows use it. Here the account (that is, its IAM
administrators) may only manage a key, so that a broken policy can be repaired,
and named roles alone may use it on data:
- the storage key: the Ray role and the listed operators, through S3 only;
- the secrets key: the EKS cluster role, and grants only for AWS services (EKS
  creates one for itself when the cluster is created).
An administrator who may call kms:PutKeyPolicy can still rewrite a policy; that
is the anti-lockout escape hatch AWS requires, and CloudTrail records it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

# Managing a key, never using it: no Encrypt/Decrypt/GenerateDataKey/ReEncrypt,
# no CreateGrant (a grant can hand out use).
ADMIN_ACTIONS = (
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListAliases",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListKeyRotations",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:RevokeGrant",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
)
S3_DATA_ACTIONS = (
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:DescribeKey",
)
EKS_SECRETS_ACTIONS = (
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:ListGrants",
)
GRANT_ACTIONS = ("kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant")


def _admin(partition: str, account: str) -> dict:
    return {
        "Sid": "AccountManagesTheKey",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:{partition}:iam::{account}:root"},
        "Action": list(ADMIN_ACTIONS),
        "Resource": "*",
    }


def storage_key_policy(
    partition: str, account: str, region: str, users: Sequence[str]
) -> str:
    """The storage key: `users` (role/user ARNs) may use it through S3 only."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                _admin(partition, account),
                {
                    "Sid": "NamedRolesUseTheKeyThroughS3",
                    "Effect": "Allow",
                    "Principal": {"AWS": sorted(set(users))},
                    "Action": list(S3_DATA_ACTIONS),
                    "Resource": "*",
                    "Condition": {
                        "StringEquals": {
                            "kms:ViaService": f"s3.{region}.amazonaws.com",
                            "kms:CallerAccount": account,
                        }
                    },
                },
            ],
        }
    )


def secrets_key_policy(partition: str, account: str, cluster_role_arn: str) -> str:
    """The EKS secrets key: the cluster role uses it; grants only for AWS services."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                _admin(partition, account),
                {
                    "Sid": "ClusterRoleUsesTheKey",
                    "Effect": "Allow",
                    "Principal": {"AWS": cluster_role_arn},
                    "Action": list(EKS_SECRETS_ACTIONS),
                    "Resource": "*",
                },
                {
                    "Sid": "GrantsOnlyForAwsServices",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:{partition}:iam::{account}:root"},
                    "Action": list(GRANT_ACTIONS),
                    "Resource": "*",
                    "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
                },
            ],
        }
    )
