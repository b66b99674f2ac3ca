"""ClusterAutoscaler: the Kubernetes Cluster Autoscaler and its IAM role (IRSA).

KubeRay's autoscaler creates GPU worker pods on demand; the Cluster Autoscaler
grows the EKS node group those pods need (from zero: it reads the node-template
tags `infra/cluster.py` puts on each GPU pool's Auto Scaling group) and shrinks it
back to zero once Ray removed its idle workers.

The role trusts one service account (`kube-system/cluster-autoscaler`, audience
`sts.amazonaws.com`) through the stack's OIDC provider. Its policy:

- `DescribeWithoutResourceScope`, Resource `*`: the only actions the Cluster
  Autoscaler 1.33 calls for managed node groups that AWS cannot scope to a
  resource (the Service Authorization Reference lists no resource type for them):
  `autoscaling:DescribeAutoScalingGroups` (discovery by tag),
  `autoscaling:DescribeScalingActivities` (notices failed scale-ups, e.g. no spot
  capacity), `ec2:DescribeInstanceTypes` (CPU, memory and GPUs of an instance type
  for a group at zero nodes), `ec2:DescribeLaunchTemplateVersions` (a group's
  instance type). Left out of the upstream example policy because CA 1.33 calls
  them only for what these node groups never use: launch configurations
  (`autoscaling:DescribeLaunchConfigurations`), attribute-based instance types
  (`ec2:DescribeImages`, `ec2:GetInstanceTypesFromInstanceRequirements`), and
  nothing at all (`autoscaling:DescribeAutoScalingInstances`).
- `DescribeOwnNodegroups`: `eks:DescribeNodegroup` (labels and taints of a managed
  node group at zero nodes) on this cluster's node groups only.
- `ScaleOwnNodeGroups`: `autoscaling:SetDesiredCapacity` and
  `autoscaling:TerminateInstanceInAutoScalingGroup` on Auto Scaling groups of this
  account and region, and only where the group carries
  `k8s.io/cluster-autoscaler/<cluster>=owned` and
  `k8s.io/cluster-autoscaler/enabled=true`, the tags EKS gives this cluster's
  managed node groups, and `raygpu.io/autoscaled=true`, which only the GPU pools'
  groups carry (the stack owns the system pool's size).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra import helm
from infra.identity import trust_policy
from raygpu import autoscaler_values as values_mod
from raygpu.config import StackConfig

TYPE_TOKEN = "raygpu:autoscaler:ClusterAutoscaler"
HELM_TIMEOUT_SECONDS = 600
# Read-only actions without resource-level permissions (Resource must be "*").
UNSCOPED_READ_ACTIONS = values_mod.UNSCOPED_READ_ACTIONS
NODEGROUP_READ_ACTIONS = ("eks:DescribeNodegroup",)
SCALING_ACTIONS = (
    "autoscaling:SetDesiredCapacity",
    "autoscaling:TerminateInstanceInAutoScalingGroup",
)


def autoscaler_policy(
    partition: str, region: str, account: str, cluster_name: str
) -> str:
    """The Cluster Autoscaler's permissions (see the module docstring)."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DescribeWithoutResourceScope",
                    "Effect": "Allow",
                    "Action": list(UNSCOPED_READ_ACTIONS),
                    "Resource": "*",
                },
                {
                    "Sid": "DescribeOwnNodegroups",
                    "Effect": "Allow",
                    "Action": list(NODEGROUP_READ_ACTIONS),
                    "Resource": [
                        f"arn:{partition}:eks:{region}:{account}:nodegroup/"
                        f"{cluster_name}/*/*"
                    ],
                },
                {
                    "Sid": "ScaleOwnNodeGroups",
                    "Effect": "Allow",
                    "Action": list(SCALING_ACTIONS),
                    "Resource": [
                        f"arn:{partition}:autoscaling:{region}:{account}:"
                        "autoScalingGroup:*:autoScalingGroupName/*"
                    ],
                    "Condition": {
                        "StringEquals": {
                            "aws:ResourceTag/"
                            + values_mod.cluster_tag(
                                cluster_name
                            ): values_mod.CLUSTER_TAG_VALUE,
                            f"aws:ResourceTag/{values_mod.ENABLED_TAG}": (
                                values_mod.ENABLED_TAG_VALUE
                            ),
                            f"aws:ResourceTag/{values_mod.AUTOSCALED_TAG}": (
                                values_mod.AUTOSCALED_TAG_VALUE
                            ),
                        }
                    },
                },
            ],
        }
    )


@dataclass(frozen=True)
class ClusterAutoscalerArgs:
    config: StackConfig
    # The EKS cluster's name (an Output of the cluster, so the release waits for it).
    cluster_name: pulumi.Input[str]
    # From Identity and EksCluster: the OIDC provider IRSA trusts.
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]
    # RayOnKubernetes.provider: built from the kubeconfig, after the node groups.
    k8s_provider: k8s.Provider
    scale_down_unneeded_time: str = values_mod.DEFAULT_SCALE_DOWN_UNNEEDED_TIME


class ClusterAutoscaler(pulumi.ComponentResource):
    role_arn: pulumi.Output[str]
    release: k8s.helm.v3.Release

    def __init__(
        self,
        name: str,
        args: ClusterAutoscalerArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TYPE_TOKEN, name, {}, opts)
        cfg = args.config
        # A stack these values cannot serve fails before any resource.
        values_mod.check_cluster_version(cfg)
        child = pulumi.ResourceOptions(parent=self)
        invoke = pulumi.InvokeOptions(parent=self)
        partition = aws.get_partition(opts=invoke).partition
        account = aws.get_caller_identity(opts=invoke).account_id

        def tags(resource_name: str) -> dict[str, str]:
            return {**cfg.tags, "Name": resource_name}

        role = aws.iam.Role(
            f"{name}-role",
            description=(
                f"IRSA role of {values_mod.NAMESPACE}/{values_mod.SERVICE_ACCOUNT}: "
                "scale this cluster's node groups"
            ),
            assume_role_policy=pulumi.Output.all(
                pulumi.Output.from_input(args.oidc_provider_arn),
                pulumi.Output.from_input(args.oidc_issuer_url),
            ).apply(
                lambda v: trust_policy(
                    v[0], v[1], values_mod.NAMESPACE, values_mod.SERVICE_ACCOUNT
                )
            ),
            max_session_duration=3600,
            tags={**tags(f"{name}-role"), **cfg.iam_tags},
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-scaling",
            role=role.id,
            policy=pulumi.Output.from_input(args.cluster_name).apply(
                lambda cluster: autoscaler_policy(
                    partition, cfg.region, account, cluster
                )
            ),
            opts=child,
        )
        release = values_mod.cluster_autoscaler_release(
            cfg,
            role_arn=role.arn,
            cluster_name=args.cluster_name,
            scale_down_unneeded_time=args.scale_down_unneeded_time,
        )
        self.release = k8s.helm.v3.Release(
            f"{name}-release",
            helm.release_args(release, timeout_seconds=HELM_TIMEOUT_SECONDS),
            # The role's permissions exist before the autoscaler starts.
            opts=pulumi.ResourceOptions(
                parent=self, provider=args.k8s_provider, depends_on=[policy]
            ),
        )
        self.role_arn = role.arn
        self.register_outputs({"role_arn": self.role_arn})
