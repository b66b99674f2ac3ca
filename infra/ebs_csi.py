"""EbsCsiDriver: the Amazon EBS CSI driver as an EKS add-on, with its IRSA role.

Prometheus's volume (raygpu/monitoring/stack.py: a PersistentVolumeClaim of an
encrypted gp3 StorageClass, provisioner ebs.csi.aws.com) binds only where this
driver runs; EKS does not install it. The add-on's controller runs as
`kube-system/ebs-csi-controller-sa`, which the role trusts through the stack's OIDC
provider (audience sts.amazonaws.com). Its permissions: the AWS managed policy
AmazonEBSCSIDriverPolicy and, when the StorageClass names a customer managed KMS key
(`kmsKeyId`), the use of that one key for EBS (AWS's EBS CSI user guide); the
account's default aws/ebs key needs no grant.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.identity import trust_policy
from raygpu import versions
from raygpu.config import StackConfig
from raygpu.monitoring import stack as monitoring

TYPE_TOKEN = "raygpu:ebs_csi:EbsCsiDriver"
ADDON_NAME = "aws-ebs-csi-driver"
NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "ebs-csi-controller-sa"
MANAGED_POLICY = "service-role/AmazonEBSCSIDriverPolicy"
# What EBS needs of a customer managed key to encrypt volumes with it.
KMS_GRANT_ACTIONS = ("kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant")
KMS_USE_ACTIONS = (
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncrypt*",
    "kms:GenerateDataKey*",
    "kms:DescribeKey",
)


def kms_policy(key_arn: str) -> str:
    """Use of one KMS key for EBS volumes: grants only for AWS resources."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "GrantsForEbs",
                    "Effect": "Allow",
                    "Action": list(KMS_GRANT_ACTIONS),
                    "Resource": key_arn,
                    "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
                },
                {
                    "Sid": "UseVolumeKey",
                    "Effect": "Allow",
                    "Action": list(KMS_USE_ACTIONS),
                    "Resource": key_arn,
                },
            ],
        }
    )


def volume_tagging(cluster_name: str, tags: dict[str, str]) -> str:
    """The add-on's configuration: every volume it creates carries the cluster's
    name (`KubernetesCluster`, which `raygpu orphans` looks for) and the stack's
    tags, so a volume a claim left behind is found and billed to the stack."""
    return json.dumps(
        {"controller": {"k8sTagClusterId": cluster_name, "extraVolumeTags": tags}},
        sort_keys=True,
    )


@dataclass(frozen=True)
class EbsCsiDriverArgs:
    config: StackConfig
    cluster_name: pulumi.Input[str]
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]
    # The controller needs nodes to run on (the system node group).
    node_groups: Sequence[pulumi.Resource] = ()
    # The StorageClass's `kmsKeyId`, when it names a key (None: aws/ebs).
    kms_key_arn: str | None = None
    addon_version: str = versions.EBS_CSI_ADDON_VERSION

    @classmethod
    def from_config(
        cls,
        cfg: StackConfig,
        *,
        cluster_name: pulumi.Input[str],
        oidc_provider_arn: pulumi.Input[str],
        oidc_issuer_url: pulumi.Input[str],
        node_groups: Sequence[pulumi.Resource] = (),
    ) -> EbsCsiDriverArgs:
        params = monitoring.storage_class_manifest(cfg)["parameters"]
        return cls(
            config=cfg,
            cluster_name=cluster_name,
            oidc_provider_arn=oidc_provider_arn,
            oidc_issuer_url=oidc_issuer_url,
            node_groups=tuple(node_groups),
            kms_key_arn=params.get("kmsKeyId"),
        )


class EbsCsiDriver(pulumi.ComponentResource):
    role_arn: pulumi.Output[str]
    addon: aws.eks.Addon

    def __init__(
        self,
        name: str,
        args: EbsCsiDriverArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TYPE_TOKEN, name, {}, opts)
        cfg = args.config
        child = pulumi.ResourceOptions(parent=self)
        partition = aws.get_partition(opts=pulumi.InvokeOptions(parent=self)).partition

        role = aws.iam.Role(
            f"{name}-role",
            description=f"IRSA role of {NAMESPACE}/{SERVICE_ACCOUNT}: EBS volumes",
            assume_role_policy=pulumi.Output.all(
                pulumi.Output.from_input(args.oidc_provider_arn),
                pulumi.Output.from_input(args.oidc_issuer_url),
            ).apply(lambda v: trust_policy(v[0], v[1], NAMESPACE, SERVICE_ACCOUNT)),
            max_session_duration=3600,
            tags={**cfg.tags, "Name": f"{name}-role", **cfg.iam_tags},
            opts=child,
        )
        permissions: list[pulumi.Resource] = [
            aws.iam.RolePolicyAttachment(
                f"{name}-managed",
                role=role.name,
                policy_arn=f"arn:{partition}:iam::aws:policy/{MANAGED_POLICY}",
                opts=child,
            )
        ]
        if args.kms_key_arn:
            permissions.append(
                aws.iam.RolePolicy(
                    f"{name}-kms",
                    role=role.id,
                    policy=kms_policy(args.kms_key_arn),
                    opts=child,
                )
            )
        self.addon = aws.eks.Addon(
            f"{name}-addon",
            cluster_name=args.cluster_name,
            addon_name=ADDON_NAME,
            addon_version=args.addon_version,
            service_account_role_arn=role.arn,
            configuration_values=pulumi.Output.from_input(args.cluster_name).apply(
                lambda cluster: volume_tagging(cluster, cfg.tags)
            ),
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            tags={**cfg.tags, "Name": f"{name}-addon"},
            # Its permissions first; its controller runs on the system nodes.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[*permissions, *args.node_groups]
            ),
        )
        self.role_arn = role.arn
        self.register_outputs({"role_arn": self.role_arn})
