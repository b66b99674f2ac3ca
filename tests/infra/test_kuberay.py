"""RayOnKubernetes under Pulumi's mock runtime: what the engine is asked to create.

A recording mock monitor (Pulumi's MockMonitor, which `set_mocks` accepts) keeps
every RegisterResource request, so the tests see the provider reference and the
`dependsOn` URNs that the real engine would get.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pytest
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor

from raygpu import config, helm_values, manifests, versions
from tests.raygpu.test_manifests import STACKS, stack_config


@dataclass
class Registration:
    type: str
    name: str
    urn: str
    parent: str
    provider: str
    dependencies: list[str]
    inputs: dict[str, Any]


class Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        return [f"{args.name}-id", dict(args.inputs)]

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


class RecordingMonitor(MockMonitor):
    def __init__(self, mocks: pulumi.runtime.Mocks):
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def RegisterResource(self, request):  # noqa: N802 (gRPC method name)
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.registrations.append(
                Registration(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent,
                    provider=request.provider,
                    dependencies=list(request.dependencies),
                    inputs=self.resources[response.urn].state,
                )
            )
        return response


def deploy(build) -> RecordingMonitor:
    """Run `build()` (which creates resources and returns an Output) under fresh
    mocks and return the monitor with every registration."""
    mocks = Mocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, preview=False, monitor=monitor)
    pulumi.runtime.test(build)()
    return monitor


@dataclass
class Deployed:
    cfg: config.StackConfig
    monitor: RecordingMonitor
    outputs: dict[str, Any]

    def of_type(self, prefix: str) -> list[Registration]:
        return [r for r in self.monitor.registrations if r.type.startswith(prefix)]

    def one(self, type_: str, name_suffix: str) -> Registration:
        (found,) = [
            r
            for r in self.monitor.registrations
            if r.type == type_ and r.name.endswith(name_suffix)
        ]
        return found


def deploy_component(stack: str) -> Deployed:
    """The component alone, with node groups registered as the EKS ones are."""
    import pulumi_aws as aws

    from infra.kuberay import RayOnKubernetes, RayOnKubernetesArgs

    cfg = stack_config(stack)
    outputs: dict[str, Any] = {}

    def build():
        groups = [
            aws.eks.NodeGroup(
                f"ng-{p.name}",
                cluster_name="c",
                node_role_arn="arn:aws:iam::123456789012:role/node",
                subnet_ids=["subnet-1"],
                scaling_config={"min_size": 0, "max_size": 1, "desired_size": 0},
            )
            for p in cfg.gpu_pools
        ]
        ray = RayOnKubernetes(
            "raygpu",
            RayOnKubernetesArgs(
                config=cfg,
                kubeconfig=pulumi.Output.secret("apiVersion: v1\nkind: Config\n"),
                node_groups=groups,
                data_bucket=pulumi.Output.from_input("data-bucket"),
                artifacts_bucket=pulumi.Output.from_input("artifacts-bucket"),
                irsa_role_arn=pulumi.Output.from_input(
                    "arn:aws:iam::123456789012:role/ray"
                ),
            ),
        )
        outs = {
            "ray_cluster_name": ray.ray_cluster_name,
            "ray_head_service": ray.ray_head_service,
            "ray_namespace": ray.ray_namespace,
            "ray_service_account": ray.ray_service_account,
        }
        return pulumi.Output.all(**outs).apply(outputs.update)

    monitor = deploy(build)
    return Deployed(cfg, monitor, outputs)


@pytest.fixture(scope="module", params=STACKS)
def deployed(request) -> Deployed:
    return deploy_component(request.param)


def test_every_kubernetes_resource_uses_the_clusters_provider(deployed):
    (provider,) = deployed.of_type("pulumi:providers:kubernetes")
    component = deployed.one("raygpu:kuberay:RayOnKubernetes", "raygpu")
    k8s = deployed.of_type("kubernetes:")
    # 2 namespaces, 2 service accounts, 7 NetworkPolicies, 2 releases, RayCluster
    assert len(k8s) == 14
    for reg in k8s:
        assert reg.provider.startswith(provider.urn + "::"), reg.name
        assert reg.parent == component.urn, reg.name
    assert provider.parent == component.urn


def test_provider_depends_on_the_node_groups(deployed):
    (provider,) = deployed.of_type("pulumi:providers:kubernetes")
    groups = deployed.of_type("aws:eks/nodeGroup:NodeGroup")
    assert groups and {g.urn for g in groups} <= set(provider.dependencies)


def test_kubeconfig_reaches_the_provider_and_stays_secret(deployed):
    (provider,) = deployed.of_type("pulumi:providers:kubernetes")
    kubeconfig = provider.inputs["kubeconfig"]
    assert kubeconfig[rpc._special_sig_key] == rpc._special_secret_sig
    assert kubeconfig["value"].startswith("apiVersion: v1")


def test_helm_releases_are_pinned_and_placed(deployed):
    releases = {
        r.inputs["name"]: r.inputs for r in deployed.of_type("kubernetes:helm.sh/v3")
    }
    plugin = releases["nvidia-device-plugin"]
    assert plugin["chart"] == "nvidia-device-plugin"
    assert plugin["version"] == versions.NVIDIA_DEVICE_PLUGIN_CHART_VERSION
    assert plugin["repositoryOpts"]["repo"] == versions.NVIDIA_DEVICE_PLUGIN_HELM_REPO
    assert plugin["namespace"] == "kube-system"
    assert plugin["values"] == helm_values.device_plugin_values(deployed.cfg)
    operator = releases["kuberay-operator"]
    assert operator["chart"] == "kuberay-operator"
    assert operator["version"] == "1.7.0"
    assert operator["repositoryOpts"]["repo"] == versions.KUBERAY_HELM_REPO
    assert operator["namespace"] == manifests.KUBERAY_NAMESPACE
    assert operator.get("skipCrds", False) is False
    assert operator["values"] == helm_values.kuberay_operator_values(deployed.cfg)


def test_raycluster_waits_for_operator_device_plugin_and_service_account(deployed):
    rc = deployed.one("kubernetes:ray.io/v1:RayCluster", "-raycluster")
    needed = [
        deployed.one("kubernetes:helm.sh/v3:Release", "-kuberay-operator"),
        deployed.one("kubernetes:helm.sh/v3:Release", "-device-plugin"),
        deployed.one("kubernetes:core/v1:ServiceAccount", "-ray-sa"),
    ]
    assert {r.urn for r in needed} <= set(rc.dependencies)
    operator = needed[0]
    ns = {r.urn for r in deployed.of_type("kubernetes:core/v1:Namespace")}
    assert ns <= set(operator.dependencies)


def test_raycluster_spec_reaches_the_engine_with_resolved_refs(deployed):
    rc = deployed.one("kubernetes:ray.io/v1:RayCluster", "-raycluster")
    refs = manifests.ClusterRefs(
        "data-bucket", "artifacts-bucket", "arn:aws:iam::123456789012:role/ray"
    )
    expected = manifests.raycluster_manifest(deployed.cfg, refs)
    assert rc.inputs["apiVersion"] == "ray.io/v1"
    assert rc.inputs["kind"] == "RayCluster"
    assert rc.inputs["metadata"] == expected["metadata"]
    assert rc.inputs["spec"] == expected["spec"]
    sa = deployed.one("kubernetes:core/v1:ServiceAccount", "-ray-sa")
    assert sa.inputs["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/ray"
    }


def test_no_load_balancer_anywhere(deployed):
    for reg in deployed.of_type("kubernetes:"):
        assert manifests.public_exposure(reg.inputs) == [], reg.name
        if reg.type == "kubernetes:core/v1:Service":
            assert reg.inputs["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_outputs_for_scripts(deployed):
    cfg = deployed.cfg
    assert deployed.outputs == {
        "ray_cluster_name": f"raygpu-{cfg.stack}",
        "ray_head_service": f"raygpu-{cfg.stack}-head-svc",
        "ray_namespace": cfg.ray_namespace,
        "ray_service_account": cfg.ray_service_account,
    }


def test_a_config_no_manifest_can_express_registers_nothing():
    from infra.kuberay import RayOnKubernetes, RayOnKubernetesArgs

    cfg = stack_config("dev")
    # The config model refuses such a head too; this one skips validation.
    bad = cfg.model_copy(update={"ray_head_memory": "64Gi"})

    def build():
        RayOnKubernetes(
            "raygpu",
            RayOnKubernetesArgs(
                config=bad,
                kubeconfig="k",
                node_groups=[],
                data_bucket="d",
                artifacts_bucket="a",
                irsa_role_arn="arn:aws:iam::123456789012:role/ray",
            ),
        )
        return pulumi.Output.from_input(None)

    mocks = Mocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, preview=False, monitor=monitor)
    with pytest.raises(manifests.ManifestError, match="rayHeadMemory"):
        pulumi.runtime.test(build)()
    # Only the component itself was registered: no provider, no Kubernetes object.
    assert [r.type for r in monitor.registrations] == ["raygpu:kuberay:RayOnKubernetes"]
