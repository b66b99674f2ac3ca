"""Monitoring: the stack's monitoring layer (raygpu/monitoring/stack.py), installed
through the Kubernetes provider of RayOnKubernetes, in this order:

1. the monitoring namespace (`restricted`) and its host agents' namespace
   (`privileged`, for node-exporter and the DCGM exporter only:
   raygpu/monitoring/pod_security.py), each with its NetworkPolicies
   (raygpu/monitoring/network.py), and the encrypted gp3 StorageClass (after the
   EBS CSI add-on, infra/ebs_csi.py, so Prometheus's volume binds);
2. kube-prometheus-stack (it installs prometheus-operator's CRDs; node-exporter
   goes to the agents' namespace), then the DCGM exporter on GPU nodes, there too;
3. after the chart, what its CRDs define or its Grafana reads: the PrometheusRule
   (raygpu/monitoring/alerts.py), the PodMonitors and ServiceMonitors, and Ray's
   dashboards as ConfigMaps.

With an AMP workspace configured (`raygpu:ampWorkspaceArn`/`Url`), Prometheus
remote-writes to it through an IRSA role that trusts only its service account
(remote_write.service_account_subject) and may only aps:RemoteWrite that workspace.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra import helm
from infra.identity import trust_policy
from raygpu.config import StackConfig
from raygpu.helm_values import HelmRelease
from raygpu.monitoring import alerts, network, remote_write
from raygpu.monitoring import stack as monitoring

TYPE_TOKEN = "raygpu:monitoring:Monitoring"
HELM_TIMEOUT_SECONDS = 900


@dataclass(frozen=True)
class MonitoringArgs:
    config: StackConfig
    # RayOnKubernetes.provider: built from the kubeconfig, after the node groups.
    k8s_provider: k8s.Provider
    # What the StorageClass's volumes need first (the EBS CSI add-on).
    storage_ready: Sequence[pulumi.Resource] = ()
    # The OIDC provider the AMP role trusts (only read when AMP is configured).
    oidc_provider_arn: pulumi.Input[str] | None = None
    oidc_issuer_url: pulumi.Input[str] | None = None

    @classmethod
    def from_config(
        cls,
        cfg: StackConfig,
        *,
        k8s_provider: k8s.Provider,
        storage_ready: Sequence[pulumi.Resource] = (),
        oidc_provider_arn: pulumi.Input[str] | None = None,
        oidc_issuer_url: pulumi.Input[str] | None = None,
    ) -> MonitoringArgs:
        return cls(
            config=cfg,
            k8s_provider=k8s_provider,
            storage_ready=tuple(storage_ready),
            oidc_provider_arn=oidc_provider_arn,
            oidc_issuer_url=oidc_issuer_url,
        )

    def chart_options(self, amp_role_arn: str | None = None) -> dict[str, Any]:
        """The chart's retention, volume and remote write, from the stack config."""
        cfg = self.config
        amp = None
        if cfg.amp_configured and amp_role_arn is not None:
            amp = remote_write.AmpTarget(
                cfg.amp_workspace_arn, cfg.amp_workspace_url, amp_role_arn
            )
        return {
            "retention": cfg.monitoring_retention,
            "storage_gib": cfg.monitoring_storage_gib,
            "amp": amp,
        }


class Monitoring(pulumi.ComponentResource):
    monitoring_namespace: pulumi.Output[str]
    prometheus_service: pulumi.Output[str]
    grafana_service: pulumi.Output[str]
    amp_role_arn: pulumi.Output[str] | None

    def __init__(
        self,
        name: str,
        args: MonitoringArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TYPE_TOKEN, name, {}, opts)
        cfg = args.config
        # Every object first: a config they cannot express fails before any resource.
        namespace_obj, agents_obj, storage_class_obj = monitoring.core_objects(cfg)
        policy_objs = network.monitoring_network_policies(cfg)
        agents_policy_objs = network.agents_network_policies(cfg)
        chart, dcgm = monitoring.helm_releases(cfg, **args.chart_options())
        rule_obj = alerts.prometheus_rule_manifest(cfg)
        objects = monitoring.monitoring_objects(cfg)

        def k8s_opts(*depends_on: pulumi.Resource) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(
                parent=self, provider=args.k8s_provider, depends_on=list(depends_on)
            )

        self.amp_role_arn = None
        if cfg.amp_configured:
            role, policy = self._amp_role(name, args)
            self.amp_role_arn = role.arn
            # The values name the role: they wait for its ARN (and its policy).
            values = pulumi.Output.all(role.arn, policy.id).apply(
                lambda v: monitoring.kube_prometheus_stack_values(
                    cfg, **args.chart_options(v[0])
                )
            )
            chart = dataclasses.replace(chart, values=values)

        namespace = k8s.core.v1.Namespace(
            f"{name}-ns", metadata=namespace_obj["metadata"], opts=k8s_opts()
        )
        agents_namespace = k8s.core.v1.Namespace(
            f"{name}-agents-ns", metadata=agents_obj["metadata"], opts=k8s_opts()
        )
        # Each namespace's pods start under its policies.
        policies = self._policies(f"{name}-netpol", policy_objs, k8s_opts(namespace))
        agents_policies = self._policies(
            f"{name}-agents-netpol", agents_policy_objs, k8s_opts(agents_namespace)
        )
        storage_class = k8s.storage.v1.StorageClass(
            f"{name}-storage-class",
            metadata=storage_class_obj["metadata"],
            provisioner=storage_class_obj["provisioner"],
            parameters=storage_class_obj["parameters"],
            reclaim_policy=storage_class_obj["reclaimPolicy"],
            volume_binding_mode=storage_class_obj["volumeBindingMode"],
            allow_volume_expansion=storage_class_obj["allowVolumeExpansion"],
            opts=k8s_opts(*args.storage_ready),
        )
        stack_release = self._release(
            f"{name}-kube-prometheus-stack",
            chart,
            k8s_opts(
                namespace, agents_namespace, storage_class, *policies, *agents_policies
            ),
        )
        dcgm_release = self._release(
            f"{name}-dcgm-exporter",
            dcgm,
            k8s_opts(agents_namespace, *agents_policies, stack_release),
        )
        after_charts = k8s_opts(stack_release, dcgm_release)
        for obj in [rule_obj, *objects]:
            self._object(name, obj, after_charts)

        self.monitoring_namespace = namespace.id.apply(
            lambda _: cfg.monitoring_namespace
        )
        self.prometheus_service = stack_release.id.apply(
            lambda _: monitoring.PROMETHEUS_SERVICE
        )
        self.grafana_service = stack_release.id.apply(
            lambda _: monitoring.GRAFANA_SERVICE
        )
        self.register_outputs(
            {
                "monitoring_namespace": self.monitoring_namespace,
                "prometheus_service": self.prometheus_service,
                "grafana_service": self.grafana_service,
            }
        )

    def _amp_role(
        self, name: str, args: MonitoringArgs
    ) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
        cfg = args.config
        if args.oidc_provider_arn is None or args.oidc_issuer_url is None:
            raise ValueError("AMP remote write needs the OIDC provider and issuer")
        namespace = cfg.monitoring_namespace
        account = remote_write.PROMETHEUS_SERVICE_ACCOUNT
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{name}-amp-role",
            description=f"IRSA role of {namespace}/{account}: AMP remote write",
            assume_role_policy=pulumi.Output.all(
                pulumi.Output.from_input(args.oidc_provider_arn),
                pulumi.Output.from_input(args.oidc_issuer_url),
            ).apply(lambda v: trust_policy(v[0], v[1], namespace, account)),
            max_session_duration=3600,
            tags={**cfg.tags, "Name": f"{name}-amp-role", **cfg.iam_tags},
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-amp-remote-write",
            role=role.id,
            policy=json.dumps(remote_write.remote_write_policy(cfg.amp_workspace_arn)),
            opts=child,
        )
        return role, policy

    def _policies(
        self,
        prefix: str,
        objs: Sequence[dict[str, Any]],
        opts: pulumi.ResourceOptions,
    ) -> list[k8s.networking.v1.NetworkPolicy]:
        return [
            k8s.networking.v1.NetworkPolicy(
                f"{prefix}-{obj['metadata']['name']}",
                metadata=obj["metadata"],
                spec=obj["spec"],
                opts=opts,
            )
            for obj in objs
        ]

    def _release(
        self, resource_name: str, release: HelmRelease, opts: pulumi.ResourceOptions
    ) -> k8s.helm.v3.Release:
        return k8s.helm.v3.Release(
            resource_name,
            helm.release_args(release, timeout_seconds=HELM_TIMEOUT_SECONDS),
            opts=opts,
        )

    def _object(
        self, name: str, obj: dict[str, Any], opts: pulumi.ResourceOptions
    ) -> pulumi.Resource:
        meta = obj["metadata"]
        resource_name = f"{name}-{obj['kind'].lower()}-{meta['name']}"
        if obj["kind"] == "ConfigMap":
            return k8s.core.v1.ConfigMap(
                resource_name, metadata=meta, data=obj["data"], opts=opts
            )
        return k8s.apiextensions.CustomResource(
            resource_name,
            api_version=obj["apiVersion"],
            kind=obj["kind"],
            metadata=meta,
            spec=obj["spec"],
            opts=opts,
        )
