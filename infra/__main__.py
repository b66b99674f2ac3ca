"""The raygpu Pulumi program: read the stack's config, create the components
(network, storage, EKS cluster, identity, cost guard, Ray on Kubernetes, cluster
autoscaler) and export the outputs that scripts/ use. It creates no cloud resource
itself; the explicit AWS provider it builds carries the stack's region and default
tags to every child.

`raygpu:cloud: gcp` builds the same stack on Google Cloud from infra/gcp/ (VPC and
Cloud NAT, GCS and Cloud KMS, GKE, Workload Identity, a billing budget) with the
same Kubernetes layer; its provider carries the project, region and labels.
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
import pulumi_gcp as gcp  # noqa: E402

from infra.autoscaler import ClusterAutoscaler, ClusterAutoscalerArgs  # noqa: E402
from infra.budget import CostGuard, CostGuardArgs  # noqa: E402
from infra.cluster import EksCluster, EksClusterArgs  # noqa: E402
from infra.gcp.budget import GcpBudget, GcpBudgetArgs  # noqa: E402
from infra.gcp.cluster import GkeCluster, GkeClusterArgs  # noqa: E402
from infra.gcp.identity import GcpIdentity, GcpIdentityArgs  # noqa: E402
from infra.gcp.network import GcpNetwork, GcpNetworkArgs  # noqa: E402
from infra.gcp.storage import GcpStorage, GcpStorageArgs  # noqa: E402
from infra.identity import Identity, IdentityArgs  # noqa: E402
from infra.kuberay import RayOnKubernetes, RayOnKubernetesArgs  # noqa: E402
from infra.network import Network, NetworkArgs  # noqa: E402
from infra.storage import Storage, StorageArgs  # noqa: E402
from raygpu import config as config_mod  # noqa: E402


def main() -> dict[str, object]:
    try:
        cfg = config_mod.from_pulumi()
    except config_mod.ConfigError as exc:
        # One line naming every bad key, no traceback.
        raise pulumi.RunError(f"invalid stack config: {exc}") from None

    outputs = _gcp(cfg) if cfg.cloud == "gcp" else _aws(cfg)
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

    outputs: dict[str, object] = {
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


if __name__ == "__main__":
    main()
