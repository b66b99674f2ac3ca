"""The raygpu Pulumi program: read the stack's config, create the components
(network, storage, EKS cluster, identity, cost guard, Ray on Kubernetes, cluster
autoscaler) and export the outputs that scripts/ use. It creates no cloud resource
itself; the explicit AWS provider it builds carries the stack's region and default
tags to every child.

`raygpu:cloud: gcp` builds the same stack on Google Cloud from infra/gcp/ (VPC and
Cloud NAT, GCS and Cloud KMS, GKE, Workload Identity, a billing budget) with the
same Kubernetes layer; its provider carries the project, region and labels.
`raygpu:cloud: azure` builds it on Azure from infra/azure/ (resource group, VNet
and NAT gateway, a storage account, AKS, workload identity, a consumption budget),
again with the same Kubernetes layer; its provider is pinned to the stack's
subscription and location.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `pulumi up` runs this file with infra/ as the program directory; the package
# imports below need the repository root on sys.path.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pulumi  # noqa: E402
import pulumi_aws as aws  # noqa: E402
import pulumi_azure_native as azure_native  # noqa: E402
import pulumi_gcp as gcp  # noqa: E402

from infra.autoscaler import ClusterAutoscaler, ClusterAutoscalerArgs  # noqa: E402
from infra.azure.budget import AzureBudget, AzureBudgetArgs  # noqa: E402
from infra.azure.cluster import AksCluster, AksClusterArgs  # noqa: E402
from infra.azure.identity import AzureIdentity, AzureIdentityArgs  # noqa: E402
from infra.azure.network import AzureNetwork, AzureNetworkArgs  # noqa: E402
from infra.azure.storage import (  # noqa: E402
    AzureStorage,
    AzureStorageArgs,
    keeps_account,
)
from infra.budget import CostGuard, CostGuardArgs  # noqa: E402
from infra.cluster import EksCluster, EksClusterArgs  # noqa: E402
from infra.ebs_csi import EbsCsiDriver, EbsCsiDriverArgs  # noqa: E402
from infra.gcp.budget import GcpBudget, GcpBudgetArgs  # noqa: E402
from infra.gcp.cluster import GkeCluster, GkeClusterArgs  # noqa: E402
from infra.gcp.identity import GcpIdentity, GcpIdentityArgs  # noqa: E402
from infra.gcp.network import GcpNetwork, GcpNetworkArgs  # noqa: E402
from infra.gcp.storage import GcpStorage, GcpStorageArgs  # noqa: E402
from infra.identity import Identity, IdentityArgs  # noqa: E402
from infra.kuberay import RayOnKubernetes, RayOnKubernetesArgs  # noqa: E402
from infra.monitoring import Monitoring, MonitoringArgs  # noqa: E402
from infra.network import Network, NetworkArgs  # noqa: E402
from infra.storage import Storage, StorageArgs  # noqa: E402
from raygpu import config as config_mod  # noqa: E402


def main() -> dict[str, object]:
    try:
        cfg = config_mod.from_pulumi()
    except config_mod.ConfigError as exc:
        # One line naming every bad key, no traceback.
        raise pulumi.RunError(f"invalid stack config: {exc}") from None

    build = {"gcp": _gcp, "azure": _azure}.get(cfg.cloud, _aws)
    outputs = build(cfg)
    for name, value in outputs.items():
        pulumi.export(name, value)
    return outputs


def _aws(cfg: config_mod.StackConfig) -> dict[str, object]:
    provider = aws.Provider(
        f"{cfg.name_prefix}-aws",
        region=cfg.region,
        default_tags=aws.ProviderDefaultTagsArgs(tags=cfg.tags),
    )
    opts = pulumi.ResourceOptions(providers=[provider])
    prefix = cfg.name_prefix

    network = Network(f"{prefix}-net", NetworkArgs.from_config(cfg), opts)
    storage = Storage(f"{prefix}-storage", StorageArgs.from_config(cfg), opts)
    cluster = EksCluster(
        f"{prefix}-cluster",
        EksClusterArgs.from_config(cfg, network.private_subnet_ids),
        opts,
    )
    identity = Identity(
        f"{prefix}-identity",
        IdentityArgs.from_config(
            cfg,
            oidc_issuer_url=cluster.oidc_issuer_url,
            data_bucket_arn=storage.data_bucket_arn,
            artifacts_bucket_arn=storage.artifacts_bucket_arn,
            kms_key_arn=storage.kms_key_arn,
            kms_key_id=storage.kms_key_id,
        ),
        opts,
    )
    CostGuard(f"{prefix}-cost", CostGuardArgs.from_config(cfg), opts)
    ray = RayOnKubernetes(
        f"{prefix}-ray",
        RayOnKubernetesArgs(
            config=cfg,
            kubeconfig=cluster.kubeconfig,
            node_groups=cluster.node_groups,
            data_bucket=storage.data_bucket,
            artifacts_bucket=storage.artifacts_bucket,
            irsa_role_arn=identity.irsa_role_arn,
        ),
    )
    # Grows the GPU node groups from zero for Ray's pending worker pods and
    # shrinks them back; it reuses the Kubernetes provider of the Ray layer.
    autoscaler = ClusterAutoscaler(
        f"{prefix}-autoscaler",
        ClusterAutoscalerArgs(
            config=cfg,
            cluster_name=cluster.cluster_name,
            oidc_provider_arn=identity.oidc_provider_arn,
            oidc_issuer_url=cluster.oidc_issuer_url,
            k8s_provider=ray.provider,
        ),
        opts,
    )

    outputs: dict[str, object] = {}
    if cfg.monitoring:
        # Prometheus's volume needs the EBS CSI driver, which EKS does not install.
        ebs_csi = EbsCsiDriver(
            f"{prefix}-ebs-csi",
            EbsCsiDriverArgs.from_config(
                cfg,
                cluster_name=cluster.cluster_name,
                oidc_provider_arn=identity.oidc_provider_arn,
                oidc_issuer_url=cluster.oidc_issuer_url,
                node_groups=[cluster.system_node_group],
            ),
            opts,
        )
        mon = Monitoring(
            f"{prefix}-monitoring",
            MonitoringArgs.from_config(
                cfg,
                k8s_provider=ray.provider,
                storage_ready=[ebs_csi.addon],
                oidc_provider_arn=identity.oidc_provider_arn,
                oidc_issuer_url=cluster.oidc_issuer_url,
            ),
            opts,
        )
        outputs.update(
            monitoring_namespace=mon.monitoring_namespace,
            prometheus_service=mon.prometheus_service,
            grafana_service=mon.grafana_service,
            ebs_csi_role_arn=ebs_csi.role_arn,
        )
        if mon.amp_role_arn is not None:
            outputs["amp_remote_write_role_arn"] = mon.amp_role_arn

    outputs |= {
        "cluster_name": cluster.cluster_name,
        "region": cfg.region,
        "kubeconfig": cluster.kubeconfig,
        "vpc_id": network.vpc_id,
        "data_bucket": storage.data_bucket,
        "artifacts_bucket": storage.artifacts_bucket,
        "ray_namespace": ray.ray_namespace,
        "ray_service_account": ray.ray_service_account,
        "irsa_role_arn": identity.irsa_role_arn,
        "ray_cluster_name": ray.ray_cluster_name,
        "ray_head_service": ray.ray_head_service,
        "oidc_provider_arn": identity.oidc_provider_arn,
        "cluster_autoscaler_role_arn": autoscaler.role_arn,
        "private_subnet_ids": network.private_subnet_ids,
        "gpu_node_groups": {
            pool: group.node_group_name
            for pool, group in cluster.gpu_node_groups.items()
        },
    }
    return outputs


def _gcp(cfg) -> dict[str, object]:
    provider = gcp.Provider(
        f"{cfg.name_prefix}-gcp",
        project=cfg.gcp_project,
        region=cfg.region,
        default_labels=cfg.labels,
    )
    opts = pulumi.ResourceOptions(providers=[provider])
    prefix = cfg.name_prefix

    network = GcpNetwork(f"{prefix}-net", GcpNetworkArgs.from_config(cfg), opts)
    storage = GcpStorage(f"{prefix}-storage", GcpStorageArgs.from_config(cfg), opts)
    cluster = GkeCluster(
        f"{prefix}-cluster", GkeClusterArgs.from_config(cfg, network), opts
    )
    identity = GcpIdentity(
        f"{prefix}-identity",
        GcpIdentityArgs.from_config(
            cfg,
            data_bucket=storage.data_bucket,
            artifacts_bucket=storage.artifacts_bucket,
        ),
        opts,
    )
    GcpBudget(f"{prefix}-cost", GcpBudgetArgs.from_config(cfg), opts)
    # GKE's own cluster autoscaler grows the GPU pools from zero: no chart here.
    ray = RayOnKubernetes(
        f"{prefix}-ray",
        RayOnKubernetesArgs(
            config=cfg,
            kubeconfig=cluster.kubeconfig,
            node_groups=cluster.node_pools,
            data_bucket=storage.data_bucket,
            artifacts_bucket=storage.artifacts_bucket,
            irsa_role_arn=identity.email,
        ),
    )
    return {
        "cloud": cfg.cloud,
        "cluster_name": cluster.cluster_name,
        "region": cfg.region,
        "gcp_project": cfg.gcp_project,
        "kubeconfig": cluster.kubeconfig,
        "vpc_id": network.network_id,
        "data_bucket": storage.data_bucket,
        "artifacts_bucket": storage.artifacts_bucket,
        "ray_namespace": ray.ray_namespace,
        "ray_service_account": ray.ray_service_account,
        "ray_google_service_account": identity.email,
        "ray_cluster_name": ray.ray_cluster_name,
        "ray_head_service": ray.ray_head_service,
        "gpu_node_pools": {
            pool: node_pool.name for pool, node_pool in cluster.gpu_node_pools.items()
        },
    }


def _azure(cfg) -> dict[str, object]:
    provider = azure_native.Provider(
        f"{cfg.name_prefix}-azure",
        subscription_id=cfg.subscription_id,
        location=cfg.region,
    )
    opts = pulumi.ResourceOptions(providers=[provider])
    prefix = cfg.name_prefix

    # Deleting a resource group deletes what it holds: it stays with the account.
    keep = keeps_account(cfg.protect_data_bucket, cfg.artifacts_force_destroy)
    network = AzureNetwork(
        f"{prefix}-net", AzureNetworkArgs.from_config(cfg, keep_group=keep), opts
    )
    storage = AzureStorage(
        f"{prefix}-storage",
        AzureStorageArgs.from_config(
            cfg, resource_group_name=network.resource_group_name
        ),
        opts,
    )
    cluster_args = AksClusterArgs.from_config(cfg, network)
    cluster = AksCluster(f"{prefix}-cluster", cluster_args, opts)
    identity = AzureIdentity(
        f"{prefix}-identity",
        AzureIdentityArgs.from_config(
            cfg,
            resource_group_name=network.resource_group_name,
            oidc_issuer_url=cluster.oidc_issuer_url,
            container_ids=storage.container_ids,
        ),
        opts,
    )
    AzureBudget(
        f"{prefix}-cost",
        AzureBudgetArgs.from_config(
            cfg, node_resource_group=cluster_args.node_resource_group
        ),
        opts,
    )
    # AKS's own cluster autoscaler grows the GPU pools from zero: no chart here.
    ray = RayOnKubernetes(
        f"{prefix}-ray",
        RayOnKubernetesArgs(
            config=cfg,
            kubeconfig=cluster.kubeconfig,
            node_groups=cluster.node_pools,
            data_bucket=storage.data_bucket,
            artifacts_bucket=storage.artifacts_bucket,
            irsa_role_arn=identity.client_id,
        ),
    )
    return {
        "cloud": cfg.cloud,
        "cluster_name": cluster.cluster_name,
        "region": cfg.region,
        "subscription_id": cfg.subscription_id,
        "resource_group": network.resource_group_name,
        "node_resource_group": cluster_args.node_resource_group,
        "kubeconfig": cluster.kubeconfig,
        "vnet_id": network.vnet_id,
        "egress_ip": network.egress_ip,
        "storage_account": storage.account_name,
        "data_bucket": storage.data_bucket,
        "artifacts_bucket": storage.artifacts_bucket,
        "data_container": storage.data_container,
        "artifacts_container": storage.artifacts_container,
        "ray_namespace": ray.ray_namespace,
        "ray_service_account": ray.ray_service_account,
        "ray_identity_client_id": identity.client_id,
        "oidc_issuer_url": cluster.oidc_issuer_url,
        "ray_cluster_name": ray.ray_cluster_name,
        "ray_head_service": ray.ray_head_service,
        "gpu_node_pools": {
            pool: agent_pool.name for pool, agent_pool in cluster.gpu_node_pools.items()
        },
    }


if __name__ == "__main__":
    main()
