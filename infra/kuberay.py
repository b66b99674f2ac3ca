"""RayOnKubernetes: the Kubernetes layer of the stack.

Installs, through a Kubernetes provider built from the cluster's kubeconfig (EKS,
GKE or AKS): the NVIDIA device plugin (GPU nodes only; not on GKE, which installs
its own with the driver: raygpu/clouds.py), the KubeRay operator with its CRDs
(system nodes), the Ray namespace, its two service accounts bound to the cloud's
workload identity (the head's, and the workers' without an API token), the
NetworkPolicies of both namespaces (raygpu/network_policies.py), and the RayCluster.
Every object comes from `raygpu/manifests.py`; this file only wires resources.

The provider depends on the node groups, so `pulumi destroy` removes every
Kubernetes object (and with it anything the cluster's controllers made) before
the nodes, the cluster and the network go.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra import helm
from raygpu import clouds, helm_values, manifests, network_policies
from raygpu.config import StackConfig
from raygpu.names import KUBERAY_NAMESPACE

TYPE_TOKEN = "raygpu:kuberay:RayOnKubernetes"
HELM_TIMEOUT_SECONDS = 900


@dataclass(frozen=True)
class RayOnKubernetesArgs:
    config: StackConfig
    kubeconfig: pulumi.Input[str]
    # Resources the Kubernetes provider waits for (the node groups or pools).
    node_groups: Sequence[pulumi.Resource]
    data_bucket: pulumi.Input[str]
    artifacts_bucket: pulumi.Input[str]
    # The cloud identity of Ray's service accounts (manifests.ClusterRefs).
    irsa_role_arn: pulumi.Input[str]


class RayOnKubernetes(pulumi.ComponentResource):
    """Device plugin, KubeRay operator, Ray namespace/service account, RayCluster."""

    provider: k8s.Provider
    ray_cluster_name: pulumi.Output[str]
    ray_head_service: pulumi.Output[str]
    ray_namespace: pulumi.Output[str]
    ray_service_account: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: RayOnKubernetesArgs,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__(TYPE_TOKEN, name, {}, opts)
        cfg = args.config
        refs = manifests.ClusterRefs(
            data_bucket=args.data_bucket,
            artifacts_bucket=args.artifacts_bucket,
            irsa_role_arn=args.irsa_role_arn,
        )
        # Build every manifest first: a config no manifest can express fails here,
        # before any resource is registered.
        kuberay_ns_obj = manifests.kuberay_namespace_manifest(cfg)
        ray_ns_obj = manifests.namespace_manifest(cfg)
        sa_obj = manifests.service_account_manifest(cfg, refs)
        worker_sa_obj = manifests.worker_service_account_manifest(cfg, refs)
        policy_objs = network_policies.network_policies(cfg)
        raycluster_obj = manifests.raycluster_manifest(cfg, refs)
        releases = {r.name: r for r in helm_values.helm_releases(cfg)}

        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=args.kubeconfig,
            # Server-side apply lets the API server merge fields that controllers
            # (KubeRay, the autoscaler) own.
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.node_groups)),
        )

        def k8s_opts(*depends_on: pulumi.Resource) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(
                parent=self, provider=self.provider, depends_on=list(depends_on)
            )

        kuberay_ns = k8s.core.v1.Namespace(
            f"{name}-kuberay-ns",
            metadata=kuberay_ns_obj["metadata"],
            opts=k8s_opts(),
        )
        ray_ns = k8s.core.v1.Namespace(
            f"{name}-ray-ns", metadata=ray_ns_obj["metadata"], opts=k8s_opts()
        )
        service_account = k8s.core.v1.ServiceAccount(
            f"{name}-ray-sa", metadata=sa_obj["metadata"], opts=k8s_opts(ray_ns)
        )
        worker_service_account = k8s.core.v1.ServiceAccount(
            f"{name}-ray-worker-sa",
            metadata=worker_sa_obj["metadata"],
            automount_service_account_token=False,
            opts=k8s_opts(ray_ns),
        )
        namespaces = {KUBERAY_NAMESPACE: kuberay_ns, cfg.ray_namespace: ray_ns}
        for obj in policy_objs:
            meta = obj["metadata"]
            k8s.networking.v1.NetworkPolicy(
                f"{name}-netpol-{meta['namespace']}-{meta['name']}",
                metadata=meta,
                spec=obj["spec"],
                opts=k8s_opts(namespaces[meta["namespace"]]),
            )
        gpu_ready = []  # what GPU workers wait for to see nvidia.com/gpu
        if clouds.of(cfg).installs_device_plugin:
            device_plugin = self._release(
                f"{name}-device-plugin",
                releases[helm_values.DEVICE_PLUGIN_RELEASE],
                k8s_opts(),
            )
            gpu_ready.append(device_plugin)
        # The operator's namespaced RBAC lands in the Ray namespace: create it first.
        operator = self._release(
            f"{name}-kuberay-operator",
            releases[helm_values.KUBERAY_RELEASE],
            k8s_opts(kuberay_ns, ray_ns),
        )
        raycluster = k8s.apiextensions.CustomResource(
            f"{name}-raycluster",
            api_version=raycluster_obj["apiVersion"],
            kind=raycluster_obj["kind"],
            metadata=raycluster_obj["metadata"],
            spec=raycluster_obj["spec"],
            # The CRDs and the operator come with the chart; GPU workers need the
            # device plugin to advertise nvidia.com/gpu.
            opts=k8s_opts(
                operator, *gpu_ready, service_account, worker_service_account
            ),
        )

        cluster_name = manifests.ray_cluster_name(cfg)
        head_service = manifests.head_service_name(cfg)
        self.raycluster = raycluster
        self.ray_cluster_name = raycluster.id.apply(lambda _: cluster_name)
        self.ray_head_service = raycluster.id.apply(lambda _: head_service)
        self.ray_namespace = ray_ns.id.apply(lambda _: cfg.ray_namespace)
        self.ray_service_account = service_account.id.apply(
            lambda _: cfg.ray_service_account
        )
        self.register_outputs(
            {
                "ray_cluster_name": self.ray_cluster_name,
                "ray_head_service": self.ray_head_service,
                "ray_namespace": self.ray_namespace,
                "ray_service_account": self.ray_service_account,
            }
        )

    def _release(
        self,
        resource_name: str,
        release: helm_values.HelmRelease,
        opts: pulumi.ResourceOptions,
    ) -> k8s.helm.v3.Release:
        return k8s.helm.v3.Release(
            resource_name,
            helm.release_args(release, timeout_seconds=HELM_TIMEOUT_SECONDS),
            opts=opts,
        )
