"""The whole program (infra/__main__.py) under mocks, on both stacks: the Kubernetes
layer against the real EKS node groups it runs on."""

from __future__ import annotations

import pytest
from pulumi.runtime import rpc

from raygpu import config, crd_schema, helm_values, manifests, names
from raygpu.offline import OfflineRun, run_offline
from tests.raygpu.test_manifests import STACKS, stack_config

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
K8S_PROVIDER = "pulumi:providers:kubernetes"
RAYCLUSTER = "kubernetes:ray.io/v1:RayCluster"


@pytest.fixture(scope="module", params=STACKS)
def program(request) -> tuple[config.StackConfig, OfflineRun]:
    return stack_config(request.param), run_offline(request.param)


def k8s_resources(run: OfflineRun) -> list[dict]:
    return [r for r in run.resources if r["type"].startswith("kubernetes:")]


def test_program_installs_the_kubernetes_layer(program):
    _, run = program
    # The monitoring stack's own objects: tests/infra/test_monitoring.py.
    types = sorted(
        r["type"]
        for r in k8s_resources(run)
        if r["parent_type"] != "raygpu:monitoring:Monitoring"
    )
    assert types == [
        "kubernetes:core/v1:Namespace",
        "kubernetes:core/v1:Namespace",
        "kubernetes:core/v1:ServiceAccount",
        "kubernetes:core/v1:ServiceAccount",
        "kubernetes:helm.sh/v3:Release",
        "kubernetes:helm.sh/v3:Release",
        "kubernetes:helm.sh/v3:Release",  # cluster-autoscaler (infra/autoscaler.py)
        *["kubernetes:networking.k8s.io/v1:NetworkPolicy"] * 7,
        RAYCLUSTER,
    ]


def test_every_kubernetes_resource_uses_the_clusters_provider(program):
    _, run = program
    (provider,) = run.of_type(K8S_PROVIDER)
    for res in k8s_resources(run):
        assert res["options"]["provider"].startswith(provider["urn"] + "::"), res[
            "name"
        ]


def test_provider_is_built_from_the_clusters_kubeconfig_after_the_node_groups(
    program,
):
    cfg, run = program
    (provider,) = run.of_type(K8S_PROVIDER)
    groups = run.of_type(NODE_GROUP)
    assert len(groups) == 1 + len(cfg.gpu_pools)  # system + one per GPU pool
    assert {g["urn"] for g in groups} <= set(provider["options"]["depends_on"])
    # The kubeconfig points at this stack's EKS API endpoint and cluster.
    # The kubeconfig is passed as a secret and points at this stack's EKS API.
    kubeconfig = provider["inputs"]["kubeconfig"]
    assert kubeconfig[rpc._special_sig_key] == rpc._special_secret_sig
    kubeconfig = kubeconfig["value"]
    assert cfg.cluster_name in kubeconfig
    assert ".eks.amazonaws.com" in kubeconfig


def test_worker_groups_match_the_gpu_node_groups(program):
    cfg, run = program
    (rc,) = run.of_type(RAYCLUSTER)
    groups = {g["groupName"]: g for g in rc["inputs"]["spec"]["workerGroupSpecs"]}
    gpu_node_groups = [
        g
        for g in run.of_type(NODE_GROUP)
        if g["inputs"].get("labels", {}).get(names.NODE_ROLE_LABEL)
        == names.GPU_NODE_ROLE
    ]
    assert sorted(groups) == sorted(
        g["inputs"]["labels"][names.POOL_LABEL] for g in gpu_node_groups
    )
    for node_group in gpu_node_groups:
        labels = node_group["inputs"]["labels"]
        pool = next(p for p in cfg.gpu_pools if p.name == labels[names.POOL_LABEL])
        group = groups[pool.name]
        pod = group["template"]["spec"]
        # The node selector picks exactly this node group's nodes.
        assert pod["nodeSelector"].items() <= labels.items()
        # Every taint of the node group is tolerated.
        for taint in node_group["inputs"]["taints"]:
            assert any(
                t["key"] == taint["key"]
                and t.get("value") == taint["value"]
                and t["effect"] == "NoSchedule"
                for t in pod["tolerations"]
            ), taint
            assert taint["effect"] == "NO_SCHEDULE"
        # GPUs per pod = GPUs of the smallest instance type the group may launch.
        gpus = pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
        assert gpus == min(
            manifests.worker_size(
                config.GpuPoolConfig(name="x", instance_types=(t,))
            ).gpus
            for t in node_group["inputs"]["instanceTypes"]
        )
        assert group["maxReplicas"] == node_group["inputs"]["scalingConfig"]["maxSize"]
        assert group["minReplicas"] == 0


def test_head_and_operator_go_to_the_system_node_group(program):
    _, run = program
    system = [
        g
        for g in run.of_type(NODE_GROUP)
        if g["inputs"].get("labels", {}).get(names.NODE_ROLE_LABEL)
        == names.SYSTEM_NODE_ROLE
    ]
    (system,) = system
    assert not system["inputs"].get("taints")
    (rc,) = run.of_type(RAYCLUSTER)
    head = rc["inputs"]["spec"]["headGroupSpec"]["template"]["spec"]
    assert head["nodeSelector"].items() <= system["inputs"]["labels"].items()
    releases = {
        r["inputs"]["name"]: r for r in run.of_type("kubernetes:helm.sh/v3:Release")
    }
    operator = releases[helm_values.KUBERAY_RELEASE]["inputs"]["values"]
    assert operator["nodeSelector"].items() <= system["inputs"]["labels"].items()


def test_no_load_balancer_anywhere(program):
    _, run = program
    for res in k8s_resources(run):
        assert manifests.public_exposure(res["inputs"]) == [], res["name"]


def test_service_accounts_use_the_irsa_role_the_program_made(program):
    cfg, run = program
    accounts = {
        sa["inputs"]["metadata"]["name"]: sa
        for sa in run.of_type("kubernetes:core/v1:ServiceAccount")
    }
    head = accounts[cfg.ray_service_account]
    worker = accounts[cfg.ray_worker_service_account]
    for sa in (head, worker):
        arn = sa["inputs"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        assert arn == run.outputs["irsa_role_arn"]
    assert head["inputs"]["metadata"]["name"] == cfg.ray_service_account
    assert worker["inputs"]["metadata"]["name"] == cfg.ray_worker_service_account
    assert worker["inputs"]["automountServiceAccountToken"] is False
    assert "automountServiceAccountToken" not in head["inputs"]


def test_program_outputs_name_the_ray_cluster_and_head_service(program):
    cfg, run = program
    assert run.outputs["ray_cluster_name"] == f"{cfg.project}-{cfg.stack}"
    assert run.outputs["ray_head_service"] == f"{cfg.project}-{cfg.stack}-head-svc"


@pytest.mark.skipif(
    crd_schema.crd_dir_problem() is not None, reason=str(crd_schema.crd_dir_problem())
)
def test_the_raycluster_the_program_applies_is_valid(program):
    _, run = program
    (rc,) = run.of_type(RAYCLUSTER)
    crd_schema.validate_manifest(rc["inputs"])
    env = rc["inputs"]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0][
        "env"
    ]
    values = {e["name"]: e["value"] for e in env}
    assert values["RAYGPU_DATA_BUCKET"] == run.outputs["data_bucket"]
    assert values["RAYGPU_ARTIFACTS_BUCKET"] == run.outputs["artifacts_bucket"]
