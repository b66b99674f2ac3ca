"""EksCluster: the EKS control plane, its access entries and add-ons, a CPU system
node group and one managed GPU node group per pool.

Security defaults: private API endpoint always on, public endpoint off or limited to
listed CIDRs; Kubernetes secrets envelope-encrypted with a KMS key that only the
cluster role may use (infra/kms.py); the VPC CNI enforcing NetworkPolicies; all five
control-plane log types on; API-mode authentication (access entries, no aws-auth
ConfigMap); nodes in private subnets with IMDSv2 required (hop limit 1, so pods
cannot reach the node's credentials), encrypted gp3 root volumes and no SSH.

GPU pools scale to zero: min size 0 by default, Pulumi ignores the desired size
that autoscalers change, and every pool's Auto Scaling group carries the
`k8s.io/cluster-autoscaler/node-template/...` tags that let a cluster autoscaler
plan a scale-up from zero nodes (it cannot see the labels, taints and GPU count of
a node that does not exist).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra import kms
from raygpu.autoscaler_values import AUTOSCALED_TAG, AUTOSCALED_TAG_VALUE
from raygpu.config import GpuPoolConfig, StackConfig, SystemPoolConfig
from raygpu.names import REGION_TAG

CONTROL_PLANE_LOG_TYPES = (
    "api",
    "audit",
    "authenticator",
    "controllerManager",
    "scheduler",
)
GPU_AMI_TYPE = "AL2023_x86_64_NVIDIA"
SYSTEM_AMI_TYPE = "AL2023_x86_64_STANDARD"
ROOT_DEVICE = "/dev/xvda"  # AL2023 EKS AMIs
NODE_MANAGED_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
)
CLUSTER_MANAGED_POLICIES = ("AmazonEKSClusterPolicy",)
ADMIN_ACCESS_POLICY = (
    "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
)
AUTOSCALER_TEMPLATE = "k8s.io/cluster-autoscaler/node-template"
# The VPC CNI enforces NetworkPolicies (raygpu/network_policies.py) only when told.
ADDON_CONFIGURATION = {"vpc-cni": json.dumps({"enableNetworkPolicy": "true"})}
# Taint effects: the EKS API spelling for each Kubernetes spelling.
_EKS_EFFECT = {
    "NoSchedule": "NO_SCHEDULE",
    "NoExecute": "NO_EXECUTE",
    "PreferNoSchedule": "PREFER_NO_SCHEDULE",
}


@dataclass(frozen=True)
class EksClusterArgs:
    """What the cluster takes from the stack config (defaults live there only)
    and from the network."""

    cluster_name: str
    region: str
    private_subnet_ids: Sequence[pulumi.Input[str]]
    version: str
    public_endpoint_cidrs: tuple[str, ...]
    admin_principal_arns: tuple[str, ...]
    cluster_creator_admin: bool
    system_pool: SystemPoolConfig
    system_sizes: tuple[int, int, int]  # (min, desired, max): zero while asleep
    gpu_pools: tuple[GpuPoolConfig, ...]
    log_retention_days: int
    tags: Mapping[str, str]

    @classmethod
    def from_config(
        cls, cfg: StackConfig, private_subnet_ids: Sequence[pulumi.Input[str]]
    ) -> EksClusterArgs:
        return cls(
            cluster_name=cfg.cluster_name,
            region=cfg.region,
            private_subnet_ids=private_subnet_ids,
            version=cfg.cluster_version,
            public_endpoint_cidrs=cfg.public_endpoint_cidrs,
            admin_principal_arns=cfg.admin_principal_arns,
            cluster_creator_admin=cfg.cluster_creator_admin,
            system_pool=cfg.system_pool,
            system_sizes=cfg.system_sizes,
            gpu_pools=cfg.gpu_pools,
            log_retention_days=cfg.flow_log_retention_days,
            tags=cfg.tags,
        )


def _assume_role_policy(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )


def autoscaler_template_tags(
    labels: Mapping[str, str],
    taints: Sequence[tuple[str, str, str]] = (),
    gpus: int = 0,
) -> dict[str, str]:
    """The node-template tags a cluster autoscaler reads to scale up from zero."""
    tags = {f"{AUTOSCALER_TEMPLATE}/label/{k}": v for k, v in labels.items()}
    for key, value, effect in taints:
        tags[f"{AUTOSCALER_TEMPLATE}/taint/{key}"] = f"{value}:{effect}"
    if gpus:
        tags[f"{AUTOSCALER_TEMPLATE}/resources/nvidia.com/gpu"] = str(gpus)
    return tags


def kubeconfig(cluster_name: str, endpoint: str, ca_data: str, region: str) -> str:
    """A kubeconfig (JSON is valid YAML) that gets a token from `aws eks get-token`."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": cluster_name,
                    "cluster": {
                        "server": endpoint,
                        "certificate-authority-data": ca_data,
                    },
                }
            ],
            "contexts": [
                {
                    "name": cluster_name,
                    "context": {"cluster": cluster_name, "user": cluster_name},
                }
            ],
            "current-context": cluster_name,
            "users": [
                {
                    "name": cluster_name,
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": "aws",
                            "args": [
                                "eks",
                                "get-token",
                                "--cluster-name",
                                cluster_name,
                                "--region",
                                region,
                                "--output",
                                "json",
                            ],
                            "interactiveMode": "Never",
                        }
                    },
                }
            ],
        },
        indent=2,
    )


class EksCluster(pulumi.ComponentResource):
    cluster_name: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    certificate_authority_data: pulumi.Output[str]
    oidc_issuer_url: pulumi.Output[str]
    cluster_security_group_id: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    node_role_arn: pulumi.Output[str]
    system_node_group: aws.eks.NodeGroup
    gpu_node_groups: dict[str, aws.eks.NodeGroup]
    node_groups: list[aws.eks.NodeGroup]

    def __init__(
        self,
        name: str,
        args: EksClusterArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("raygpu:cluster:EksCluster", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        partition = aws.get_partition(opts=pulumi.InvokeOptions(parent=self)).partition

        def tags(resource_name: str, **extra: str) -> dict[str, str]:
            return {**args.tags, "Name": resource_name, **extra}

        def managed_policy(policy: str) -> str:
            return f"arn:{partition}:iam::aws:policy/{policy}"

        # ---- control plane
        cluster_role = aws.iam.Role(
            f"{name}-cluster",
            assume_role_policy=_assume_role_policy("eks.amazonaws.com"),
            tags=tags(f"{name}-cluster", **{REGION_TAG: args.region}),
            opts=child,
        )
        account = aws.get_caller_identity(
            opts=pulumi.InvokeOptions(parent=self)
        ).account_id
        # Only the cluster role uses the key; the account may manage it.
        secrets_key = aws.kms.Key(
            f"{name}-secrets",
            description=f"{args.cluster_name}: encryption of Kubernetes secrets",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=cluster_role.arn.apply(
                lambda arn: kms.secrets_key_policy(partition, account, arn)
            ),
            tags=tags(f"{name}-secrets"),
            opts=child,
        )
        attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-cluster-{policy}",
                role=cluster_role.name,
                policy_arn=managed_policy(policy),
                opts=child,
            )
            for policy in CLUSTER_MANAGED_POLICIES
        ]
        # EKS would create this group itself, without retention and tags.
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-control-plane-logs",
            name=f"/aws/eks/{args.cluster_name}/cluster",
            retention_in_days=args.log_retention_days,
            tags=tags(f"{name}-control-plane-logs"),
            opts=child,
        )
        public = bool(args.public_endpoint_cidrs)
        cluster = aws.eks.Cluster(
            f"{name}-eks",
            name=args.cluster_name,
            version=args.version,
            role_arn=cluster_role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=list(args.private_subnet_ids),
                endpoint_private_access=True,
                endpoint_public_access=public,
                public_access_cidrs=list(args.public_endpoint_cidrs)
                if public
                else None,
            ),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API",
                bootstrap_cluster_creator_admin_permissions=args.cluster_creator_admin,
            ),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(
                    key_arn=secrets_key.arn
                ),
                resources=["secrets"],
            ),
            enabled_cluster_log_types=list(CONTROL_PLANE_LOG_TYPES),
            # Standard support only: extended support bills 6x per cluster hour.
            upgrade_policy=aws.eks.ClusterUpgradePolicyArgs(support_type="STANDARD"),
            tags=tags(args.cluster_name),
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[*attachments, log_group]
            ),
        )

        for i, principal in enumerate(args.admin_principal_arns):
            entry = aws.eks.AccessEntry(
                f"{name}-admin-{i}",
                cluster_name=cluster.name,
                principal_arn=principal,
                type="STANDARD",
                tags=tags(f"{name}-admin-{i}"),
                opts=child,
            )
            aws.eks.AccessPolicyAssociation(
                f"{name}-admin-{i}",
                cluster_name=cluster.name,
                principal_arn=principal,
                policy_arn=ADMIN_ACCESS_POLICY,
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(
                    type="cluster"
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[entry]),
            )

        # ---- nodes: one role for all node groups, only what a node needs. With
        # API authentication EKS adds the EC2_LINUX access entry for it itself.
        node_role = aws.iam.Role(
            f"{name}-node",
            assume_role_policy=_assume_role_policy("ec2.amazonaws.com"),
            tags=tags(f"{name}-node", **{REGION_TAG: args.region}),
            opts=child,
        )
        node_attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-node-{policy}",
                role=node_role.name,
                policy_arn=managed_policy(policy),
                opts=child,
            )
            for policy in NODE_MANAGED_POLICIES
        ]
        for addon in ("vpc-cni", "kube-proxy"):
            aws.eks.Addon(
                f"{name}-{addon}",
                cluster_name=cluster.name,
                addon_name=addon,
                configuration_values=ADDON_CONFIGURATION.get(addon),
                resolve_conflicts_on_create="OVERWRITE",
                resolve_conflicts_on_update="OVERWRITE",
                tags=tags(f"{name}-{addon}"),
                opts=child,
            )

        system = args.system_pool
        self.system_node_group = self._node_group(
            f"{name}-system",
            cluster=cluster,
            node_role=node_role,
            subnet_ids=args.private_subnet_ids,
            instance_types=system.instance_types,
            capacity_type="ON_DEMAND",
            ami_type=SYSTEM_AMI_TYPE,
            sizes=args.system_sizes,
            disk_size_gib=system.disk_size_gib,
            labels=system.node_labels,
            taints=(),
            gpus=0,
            autoscaled=False,
            tags=tags,
            depends_on=node_attachments,
        )
        # CoreDNS needs nodes to run on.
        aws.eks.Addon(
            f"{name}-coredns",
            cluster_name=cluster.name,
            addon_name="coredns",
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            tags=tags(f"{name}-coredns"),
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self.system_node_group]
            ),
        )
        self.gpu_node_groups = {}
        for pool in args.gpu_pools:
            self.gpu_node_groups[pool.name] = self._node_group(
                f"{name}-gpu-{pool.name}",
                cluster=cluster,
                node_role=node_role,
                subnet_ids=args.private_subnet_ids,
                instance_types=pool.instance_types,
                capacity_type=pool.capacity_type,
                ami_type=GPU_AMI_TYPE,
                sizes=(pool.min_size, pool.desired_size, pool.max_size),
                disk_size_gib=pool.disk_size_gib,
                labels=pool.node_labels,
                taints=pool.taints,
                gpus=pool.gpus_per_node,
                autoscaled=True,
                tags=tags,
                depends_on=node_attachments,
            )
        self.node_groups = [self.system_node_group, *self.gpu_node_groups.values()]

        self.cluster_name = cluster.name
        self.endpoint = cluster.endpoint
        self.certificate_authority_data = cluster.certificate_authority.data
        self.oidc_issuer_url = cluster.identities[0].oidcs[0].issuer
        self.cluster_security_group_id = cluster.vpc_config.cluster_security_group_id
        self.node_role_arn = node_role.arn
        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(
                cluster.name, cluster.endpoint, self.certificate_authority_data
            ).apply(lambda v: kubeconfig(v[0], v[1], v[2], args.region))
        )
        self.register_outputs(
            {
                "cluster_name": self.cluster_name,
                "endpoint": self.endpoint,
                "oidc_issuer_url": self.oidc_issuer_url,
                "kubeconfig": self.kubeconfig,
                "node_role_arn": self.node_role_arn,
            }
        )

    def _node_group(
        self,
        name: str,
        *,
        cluster: aws.eks.Cluster,
        node_role: aws.iam.Role,
        subnet_ids: Sequence[pulumi.Input[str]],
        instance_types: Sequence[str],
        capacity_type: str,
        ami_type: str,
        sizes: tuple[int, int, int],
        disk_size_gib: int,
        labels: Mapping[str, str],
        taints: Sequence[tuple[str, str, str]],
        gpus: int,
        autoscaled: bool,
        tags,
        depends_on: Sequence[pulumi.Resource],
    ) -> aws.eks.NodeGroup:
        child = pulumi.ResourceOptions(parent=self)
        node_tags = tags(name)
        # No key pair and no remote access: there is no SSH into nodes.
        template = aws.ec2.LaunchTemplate(
            f"{name}-lt",
            description=f"{name}: IMDSv2 only, encrypted gp3 root volume",
            update_default_version=True,
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                http_put_response_hop_limit=1,
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name=ROOT_DEVICE,
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=disk_size_gib,
                        volume_type="gp3",
                        encrypted="true",
                        delete_on_termination="true",
                    ),
                )
            ],
            # Instances, their volumes and interfaces carry the stack's tags too, so
            # that a leftover scan finds them (default_tags do not reach them).
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(
                    resource_type=kind, tags=node_tags
                )
                for kind in ("instance", "volume", "network-interface")
            ],
            tags=tags(f"{name}-lt"),
            opts=child,
        )
        template_tags = autoscaler_template_tags(labels, taints, gpus)
        if autoscaled:
            template_tags[AUTOSCALED_TAG] = AUTOSCALED_TAG_VALUE
        min_size, desired_size, max_size = sizes
        group = aws.eks.NodeGroup(
            name,
            cluster_name=cluster.name,
            node_group_name_prefix=f"{name}-",
            node_role_arn=node_role.arn,
            subnet_ids=list(subnet_ids),
            ami_type=ami_type,
            capacity_type=capacity_type,
            instance_types=list(instance_types),
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=min_size, desired_size=desired_size, max_size=max_size
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            labels=dict(labels),
            taints=[
                aws.eks.NodeGroupTaintArgs(
                    key=key, value=value, effect=_EKS_EFFECT[effect]
                )
                for key, value, effect in taints
            ],
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=template.id, version=template.latest_version.apply(str)
            ),
            tags={**node_tags, **template_tags},
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(depends_on),
                # The Cluster Autoscaler owns a GPU pool's desired size once the
                # group exists; the stack owns the system pool's (sleep and wake).
                ignore_changes=["scalingConfig.desiredSize"] if autoscaled else [],
            ),
        )
        # EKS does not copy node group tags to the Auto Scaling group, where a
        # cluster autoscaler looks for them.
        asg_name = group.resources.apply(lambda r: r[0].autoscaling_groups[0].name)
        for i, (key, value) in enumerate(sorted(template_tags.items())):
            aws.autoscaling.Tag(
                f"{name}-asg-tag-{i}",
                autoscaling_group_name=asg_name,
                tag=aws.autoscaling.TagTagArgs(
                    key=key, value=value, propagate_at_launch=False
                ),
                opts=child,
            )
        return group
