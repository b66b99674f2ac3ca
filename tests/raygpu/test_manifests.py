"""Dict-level tests of the Kubernetes manifests and Helm values (no Pulumi)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from raygpu import (
    config,
    helm_values,
    manifests,
    names,
    serve_ingress,
    sizing,
    versions,
    workloads,
)
from raygpu.manifests import ClusterRefs, ManifestError

REPO = Path(__file__).resolve().parents[2]
STACKS = ("dev", "prod")
REFS = ClusterRefs(
    data_bucket="raygpu-dev-data-0123",
    artifacts_bucket="raygpu-dev-artifacts-0123",
    irsa_role_arn="arn:aws:iam::123456789012:role/raygpu-dev-ray",
)


def stack_config(stack: str) -> config.StackConfig:
    return config.load_stack_file(REPO / f"Pulumi.{stack}.yaml")


@pytest.fixture(params=STACKS)
def cfg(request) -> config.StackConfig:
    return stack_config(request.param)


def pool_config(name: str, instance_types: tuple[str, ...], max_size: int = 2):
    return config.GpuPoolConfig(
        name=name, instance_types=instance_types, max_size=max_size
    )


# ------------------------------------------------------------------ RayCluster


def test_raycluster_identity_and_versions(cfg):
    rc = manifests.raycluster_manifest(cfg, REFS)
    assert rc["apiVersion"] == "ray.io/v1"
    assert rc["kind"] == "RayCluster"
    assert rc["metadata"]["name"] == f"{cfg.project}-{cfg.stack}"
    assert rc["metadata"]["namespace"] == cfg.ray_namespace
    spec = rc["spec"]
    assert spec["rayVersion"] == versions.RAY_VERSION
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == f"rayproject/ray:{versions.RAY_VERSION}-py311"
    for group in spec["workerGroupSpecs"]:
        image = group["template"]["spec"]["containers"][0]["image"]
        assert image == f"rayproject/ray:{versions.RAY_VERSION}-py311-gpu"


def test_head_runs_no_work_on_system_nodes_with_guaranteed_resources(cfg):
    head = manifests.raycluster_manifest(cfg, REFS)["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    pod = head["template"]["spec"]
    assert pod["nodeSelector"] == {names.NODE_ROLE_LABEL: names.SYSTEM_NODE_ROLE}
    assert "tolerations" not in pod
    res = pod["containers"][0]["resources"]
    assert res["requests"] == res["limits"]
    assert res["limits"] == {"cpu": cfg.ray_head_cpu, "memory": cfg.ray_head_memory}


def test_autoscaler_v2_with_idle_timeout_from_config(cfg):
    spec = manifests.raycluster_manifest(cfg, REFS)["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["version"] == "v2"
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] == (
        cfg.ray_idle_timeout_seconds
    )


def test_one_worker_group_per_gpu_pool(cfg):
    groups = manifests.raycluster_manifest(cfg, REFS)["spec"]["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == [p.name for p in cfg.gpu_pools]
    for group, pool in zip(groups, cfg.gpu_pools, strict=True):
        assert group["minReplicas"] == 0
        assert group["replicas"] == 0
        assert group["maxReplicas"] == pool.max_size
        pod = group["template"]["spec"]
        assert pod["nodeSelector"] == {names.POOL_LABEL: pool.name}
        assert pod["tolerations"] == [
            {
                "key": "nvidia.com/gpu",
                "operator": "Equal",
                "value": "true",
                "effect": "NoSchedule",
            }
        ]
        # The toleration matches the taint the node group carries.
        (taint,) = pool.taints
        tol = pod["tolerations"][0]
        assert (tol["key"], tol["value"], tol["effect"]) == taint
        res = pod["containers"][0]["resources"]
        assert res["requests"] == res["limits"]
        assert res["limits"]["nvidia.com/gpu"] == pool.gpus_per_node


def test_worker_pods_fit_their_smallest_instance_with_headroom(cfg):
    for pool in cfg.gpu_pools:
        size = manifests.worker_size(pool)
        assert 1 <= size.cpu < pool.vcpus
        # At least 1 vCPU and 2 GiB stay free for kubelet, OS and DaemonSets.
        assert pool.vcpus - size.cpu >= 1
        assert pool.memory_gib * 1024 - size.memory_mib >= 2048
        assert size.memory_mib >= manifests.MIN_WORKER_MEMORY_GIB * 1024


@pytest.mark.parametrize(
    ("instance", "cpu", "memory_gib", "gpus"),
    [
        ("g5.xlarge", 3, 13, 1),  # 4 vCPU / 16 GiB
        ("g6.2xlarge", 7, 28, 1),  # 8 vCPU / 32 GiB
        ("g5.12xlarge", 47, 182, 4),  # 48 vCPU / 192 GiB
    ],
)
def test_worker_size_by_instance_type(instance, cpu, memory_gib, gpus):
    size = manifests.worker_size(pool_config("p", (instance,)))
    assert (size.cpu, size.memory_mib, size.gpus) == (cpu, memory_gib * 1024, gpus)


def test_mixed_instance_pool_is_sized_for_the_smallest_type():
    mixed = manifests.worker_size(pool_config("p", ("g6.2xlarge", "g6.xlarge")))
    small = manifests.worker_size(pool_config("p", ("g6.xlarge",)))
    assert mixed == small


def test_head_that_does_not_fit_a_system_node_is_refused():
    # One rule (raygpu.sizing): the config refuses such a head, naming both keys...
    values = config.stack_file_values(REPO / "Pulumi.dev.yaml")
    with pytest.raises(config.ConfigError) as info:
        config.load_config(
            "dev", {**values, "rayHeadCpu": "4", "rayHeadMemory": "15Gi"}
        )
    assert {"raygpu:rayHeadCpu", "raygpu:rayHeadMemory"} <= set(info.value.keys)
    # ...and so does the manifest builder, for a config that skipped validation.
    too_big = stack_config("dev").model_copy(
        update={"ray_head_cpu": "4", "ray_head_memory": "15Gi"}
    )
    with pytest.raises(ManifestError, match="rayHeadCpu/rayHeadMemory"):
        manifests.raycluster_manifest(too_big, REFS)


def test_token_auth_clusterip_only_and_no_ingress(cfg):
    spec = manifests.raycluster_manifest(cfg, REFS)["spec"]
    assert spec["authOptions"] == {"mode": "token"}
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
    assert spec["headGroupSpec"]["enableIngress"] is False
    ann = spec["headServiceAnnotations"]
    assert ann["service.beta.kubernetes.io/aws-load-balancer-internal"] == "true"


def test_pods_use_the_irsa_service_accounts_and_see_buckets_and_region(cfg):
    spec = manifests.raycluster_manifest(cfg, REFS)["spec"]
    head = spec["headGroupSpec"]["template"]["spec"]
    assert head["serviceAccountName"] == cfg.ray_service_account
    assert "automountServiceAccountToken" not in head  # the autoscaler needs it
    workers = [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    for pod in workers:
        assert pod["serviceAccountName"] == cfg.ray_worker_service_account
        assert pod["automountServiceAccountToken"] is False
    for pod in [head, *workers]:
        env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
        assert env["AWS_REGION"] == cfg.region
        assert env["RAYGPU_DATA_BUCKET"] == REFS.data_bucket
        assert env["RAYGPU_ARTIFACTS_BUCKET"] == REFS.artifacts_bucket


def test_pods_run_unprivileged_as_the_ray_user(cfg):
    spec = manifests.raycluster_manifest(cfg, REFS)["spec"]
    templates = [spec["headGroupSpec"]["template"]] + [
        g["template"] for g in spec["workerGroupSpecs"]
    ]
    for template in templates:
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 1000
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert "privileged" not in c["securityContext"]
        assert not pod.get("hostNetwork")
        # /dev/shm sized for Ray's object store, inside the memory limit.
        (shm,) = [v for v in pod["volumes"] if v["name"] == "dshm"]
        limit = sizing.memory_bytes(
            pod["containers"][0]["resources"]["limits"]["memory"]
        )
        assert sizing.memory_bytes(shm["emptyDir"]["sizeLimit"]) < limit


def test_service_accounts_carry_the_irsa_role(cfg):
    sa = manifests.service_account_manifest(cfg, REFS)
    worker = manifests.worker_service_account_manifest(cfg, REFS)
    assert sa["metadata"]["name"] == cfg.ray_service_account
    assert worker["metadata"]["name"] == cfg.ray_worker_service_account
    for account in (sa, worker):
        assert account["metadata"]["namespace"] == cfg.ray_namespace
        assert account["metadata"]["annotations"] == {
            "eks.amazonaws.com/role-arn": REFS.irsa_role_arn
        }
    assert worker["automountServiceAccountToken"] is False
    assert "automountServiceAccountToken" not in sa


def test_namespaces_enforce_pod_security(cfg):
    ray_ns = manifests.namespace_manifest(cfg)["metadata"]
    assert ray_ns["name"] == cfg.ray_namespace
    assert ray_ns["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    op_ns = manifests.kuberay_namespace_manifest(cfg)["metadata"]
    assert op_ns["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_names_of_objects_scripts_rely_on(cfg):
    name = manifests.ray_cluster_name(cfg)
    assert manifests.head_service_name(cfg) == f"{name}-head-svc"
    assert names.auth_secret_name(name) == name
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 53


# ------------------------------------------------------------------ templates


def test_rayjob_template(cfg):
    job = workloads.rayjob_manifest(
        cfg,
        REFS,
        name="train-abc",
        entrypoint="python train.py --epochs 2",
        runtime_env={"working_dir": "s3://bucket/pkg.zip", "pip": ["tqdm"]},
        ttl_seconds_after_finished=120,
        active_deadline_seconds=3600,
    )
    spec = job["spec"]
    assert job["kind"] == "RayJob" and job["metadata"]["name"] == "train-abc"
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] == 120
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["entrypoint"] == "python train.py --epochs 2"
    assert yaml.safe_load(spec["runtimeEnvYAML"]) == {
        "working_dir": "s3://bucket/pkg.zip",
        "pip": ["tqdm"],
    }
    # The very same cluster spec as the stack's RayCluster.
    assert spec["rayClusterSpec"] == manifests.raycluster_spec(cfg, REFS)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"entrypoint": "  "}, "entrypoint"),
        ({"submission_mode": "Batch"}, "submission_mode"),
        ({"active_deadline_seconds": 0}, "active_deadline_seconds"),
        ({"active_deadline_seconds": True}, "active_deadline_seconds"),
        ({"ttl_seconds_after_finished": -1}, "ttl_seconds_after_finished"),
    ],
)
def test_rayjob_template_rejects_bad_arguments(kwargs, field):
    args = {"name": "job", "entrypoint": "python x.py", **kwargs}
    with pytest.raises(ManifestError, match=field):
        workloads.rayjob_manifest(stack_config("dev"), REFS, **args)


def test_rayservice_template(cfg):
    svc = workloads.rayservice_manifest(
        cfg,
        REFS,
        name="serve",
        working_dir="s3://bucket/pkg-abc.zip",
        checkpoint="s3://bucket/run/checkpoint_000002",
    )
    assert svc["kind"] == "RayService"
    serve = yaml.safe_load(svc["spec"]["serveConfigV2"])
    (app,) = serve["applications"]
    assert app["import_path"] == "serve_app:build_app"
    assert app["args"] == {"checkpoint": "s3://bucket/run/checkpoint_000002"}
    assert app["runtime_env"] == {"working_dir": "s3://bucket/pkg-abc.zip"}
    assert svc["spec"]["rayClusterConfig"] == manifests.raycluster_spec(cfg, REFS)


def test_rayservice_without_checkpoint_uses_the_ready_app():
    svc = workloads.rayservice_manifest(
        stack_config("dev"), REFS, name="serve", working_dir="s3://b/p.zip"
    )
    (app,) = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"]
    assert app["import_path"] == "serve_app:app"
    assert "args" not in app


def test_rayservice_refuses_args_for_the_ready_app():
    with pytest.raises(ManifestError, match="import_path"):
        workloads.rayservice_manifest(
            stack_config("dev"),
            REFS,
            name="serve",
            working_dir="s3://b/p.zip",
            checkpoint="s3://b/ckpt",
            import_path="serve_app:app",
        )


# ----------------------------------------------------------------- Helm values


def test_device_plugin_only_on_gpu_nodes_tolerating_the_taint(cfg):
    (plugin,) = [
        r for r in helm_values.helm_releases(cfg) if r.chart == "nvidia-device-plugin"
    ]
    assert plugin.version == versions.NVIDIA_DEVICE_PLUGIN_CHART_VERSION
    assert plugin.repo == versions.NVIDIA_DEVICE_PLUGIN_HELM_REPO
    terms = plugin.values["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert terms == [
        {
            "matchExpressions": [
                {
                    "key": names.POOL_LABEL,
                    "operator": "In",
                    "values": [p.name for p in cfg.gpu_pools],
                }
            ]
        }
    ]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
        plugin.values["tolerations"]
    )
    assert plugin.values["securityContext"]["allowPrivilegeEscalation"] is False
    assert plugin.values["gfd"] == {"enabled": False}


def test_kuberay_operator_release(cfg):
    (op,) = [r for r in helm_values.helm_releases(cfg) if r.chart == "kuberay-operator"]
    assert op.version == versions.KUBERAY_CHART_VERSION == "1.7.0"
    assert op.repo == versions.KUBERAY_HELM_REPO
    assert op.skip_crds is False
    assert op.namespace == manifests.KUBERAY_NAMESPACE
    values = op.values
    assert values["image"]["tag"].split("@")[0] == "v1.7.0"
    assert values["nodeSelector"] == {names.NODE_ROLE_LABEL: names.SYSTEM_NODE_ROLE}
    assert values["watchNamespace"] == [cfg.ray_namespace]
    assert values["service"]["type"] == "ClusterIP"


def test_nothing_is_exposed_outside_the_vpc(cfg):
    objects = manifests.cluster_objects(cfg, REFS) + [
        workloads.rayjob_manifest(cfg, REFS, name="j", entrypoint="python x.py"),
        workloads.rayservice_manifest(cfg, REFS, name="s", working_dir="s3://b/p.zip"),
    ]
    values = [r.values for r in helm_values.helm_releases(cfg)]
    assert manifests.public_exposure(objects + values) == []


def test_exposure_audit_finds_load_balancers_node_ports_and_ingress():
    rc = manifests.raycluster_manifest(stack_config("dev"), REFS)
    broken = copy.deepcopy(rc)
    broken["spec"]["headGroupSpec"]["serviceType"] = "LoadBalancer"
    broken["spec"]["headGroupSpec"]["enableIngress"] = True
    values = {"service": {"type": "NodePort"}}
    ingress = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress"}
    found = manifests.public_exposure([broken, values, ingress])
    assert found == [
        "[0].spec.headGroupSpec.serviceType: LoadBalancer",
        "[0].spec.headGroupSpec.enableIngress: true",
        "[1].service.type: NodePort",
        "[2]: kind Ingress",
    ]


# -------------------------------------------------------------------- versions


def test_ray_version_agrees_everywhere(cfg):
    """requirements.txt == raygpu.versions == rayVersion == every image tag."""
    text = (REPO / "requirements.txt").read_text()
    (pinned,) = re.findall(r"^ray\[[^\]]*\]==([^\s#]+)", text, flags=re.M)
    assert pinned == versions.RAY_VERSION
    spec = manifests.raycluster_manifest(cfg, REFS)["spec"]
    assert spec["rayVersion"] == pinned
    pods = [spec["headGroupSpec"]["template"]] + [
        g["template"] for g in spec["workerGroupSpecs"]
    ]
    tags = {c["image"].split(":", 1)[1] for p in pods for c in p["spec"]["containers"]}
    assert tags and all(t.split("-")[0] == pinned for t in tags)


# ------------------------------------------------------------------ Serve ingress


def _ray_containers(manifest: dict) -> list[dict]:
    spec = manifest["spec"].get("rayClusterConfig", manifest["spec"])
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [g["template"]["spec"]["containers"][0] for g in groups]


@pytest.mark.parametrize("stack", STACKS)
def test_the_stacks_serve_behind_haproxy_and_proxy_leaves_rays_default(stack):
    cfg = stack_config(stack)
    assert cfg.serve_ingress == "haproxy" == serve_ingress.DEFAULT_INGRESS
    proxy = config.load_config(
        stack,
        {
            **config.stack_file_values(REPO / f"Pulumi.{stack}.yaml"),
            "serveIngress": "proxy",
        },
    )
    for c in _ray_containers(manifests.raycluster_manifest(proxy, REFS)):
        assert not [e for e in c["env"] if e["name"].startswith("RAY_SERVE_")]


def test_serve_ingress_haproxy_reaches_every_ray_node():
    values = config.stack_file_values(REPO / "Pulumi.dev.yaml")
    cfg = config.load_config("dev", {**values, "serveIngress": "haproxy"})
    assert cfg.serve_ingress == "haproxy"
    svc = workloads.rayservice_manifest(
        cfg, REFS, name="serve", working_dir="s3://b/p.zip"
    )
    for manifest in (manifests.raycluster_manifest(cfg, REFS), svc):
        containers = _ray_containers(manifest)
        assert len(containers) == 1 + len(cfg.gpu_pools)
        for c in containers:
            env = {e["name"]: e["value"] for e in c["env"]}
            assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
            assert env["RAYGPU_STACK"] == cfg.stack  # the other variables stay
