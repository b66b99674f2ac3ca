"""Every rendered RayCluster/RayJob/RayService against KubeRay v1.7.0's CRD schema
and the operator's own rules, and proof that the validator catches broken ones."""

from __future__ import annotations

import copy
import json
import time

import pytest

from raygpu import config, crd_schema, kuberay_rules, manifests, workloads
from raygpu.crd_schema import ManifestValidationError
from tests.raygpu.test_manifests import REFS, REPO, STACKS, stack_config

_MISSING = crd_schema.crd_dir_problem()
pytestmark = pytest.mark.skipif(
    _MISSING is not None, reason=f"{_MISSING} (needed for schema validation)"
)


def rendered(stack: str) -> list[dict]:
    cfg = stack_config(stack)
    return [
        manifests.raycluster_manifest(cfg, REFS),
        workloads.rayjob_manifest(
            cfg,
            REFS,
            name="train-20260101-abcdef",
            entrypoint="python train.py --epochs 2",
            runtime_env={"working_dir": "s3://bucket/jobs/pkg.zip"},
        ),
        workloads.rayservice_manifest(
            cfg,
            REFS,
            name="serve",
            working_dir="s3://bucket/jobs/pkg.zip",
            checkpoint="s3://bucket/runs/r1/checkpoint_000001",
        ),
    ]


@pytest.fixture(scope="module")
def cluster() -> dict:
    return manifests.raycluster_manifest(stack_config("dev"), REFS)


@pytest.mark.parametrize("stack", STACKS)
def test_every_rendered_manifest_is_valid(stack):
    kinds = []
    for manifest in rendered(stack):
        crd_schema.validate_manifest(manifest)  # raises with every problem listed
        kinds.append(manifest["kind"])
    assert kinds == ["RayCluster", "RayJob", "RayService"]


def test_haproxy_ingress_manifests_are_valid():
    values = config.stack_file_values(REPO / "Pulumi.prod.yaml")
    cfg = config.load_config("prod", {**values, "serveIngress": "haproxy"})
    crd_schema.validate_manifest(manifests.raycluster_manifest(cfg, REFS))
    crd_schema.validate_manifest(
        workloads.rayservice_manifest(
            cfg, REFS, name="serve", working_dir="s3://b/p.zip", checkpoint="s3://b/c"
        )
    )


def test_schema_is_cached_in_memory_and_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    crd_schema.spec_schema.cache_clear()
    crd_schema._validator.cache_clear()
    try:
        first = crd_schema.spec_schema("RayCluster")
        (cached,) = (tmp_path / "raygpu" / "crd-schema").glob("RayCluster-*.json")
        assert json.loads(cached.read_text()) == first
        crd_schema.spec_schema.cache_clear()
        start = time.perf_counter()
        again = crd_schema.spec_schema("RayCluster")
        assert time.perf_counter() - start < 1.0
        assert again == first
        assert crd_schema.spec_schema("RayCluster") is again  # in-memory hit
    finally:
        crd_schema.spec_schema.cache_clear()
        crd_schema._validator.cache_clear()


def test_int_or_string_and_strict_fields_are_mapped():
    spec = crd_schema.spec_schema("RayCluster")
    head = spec["properties"]["headGroupSpec"]
    assert head["additionalProperties"] is False
    limits = head["properties"]["template"]["properties"]["spec"]["properties"][
        "containers"
    ]["items"]["properties"]["resources"]["properties"]["limits"]
    assert limits["additionalProperties"]["anyOf"] == [
        {"type": "integer"},
        {"type": "string"},
    ]


# --------------------------------------------------------------- broken on purpose


def problems(manifest: dict) -> list[str]:
    return crd_schema.manifest_problems(manifest)


def test_wrong_type_is_caught(cluster):
    broken = copy.deepcopy(cluster)
    broken["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "two"
    found = problems(broken)
    assert any(
        p.startswith("spec.workerGroupSpecs[0].maxReplicas:") and "integer" in p
        for p in found
    ), found


def test_misspelt_field_is_caught(cluster):
    broken = copy.deepcopy(cluster)
    broken["spec"]["autoscalerOption"] = broken["spec"].pop("autoscalerOptions")
    assert any("autoscalerOption" in p for p in problems(broken))


def test_bad_enum_is_caught(cluster):
    broken = copy.deepcopy(cluster)
    broken["spec"]["autoscalerOptions"]["version"] = "v3"
    assert any(
        p.startswith("spec.autoscalerOptions.version:") for p in problems(broken)
    )


def test_quantities_accept_int_or_string(cluster):
    ok = copy.deepcopy(cluster)
    res = ok["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    res["resources"]["limits"]["cpu"] = 3  # an int is a valid quantity
    res["resources"]["requests"]["cpu"] = 3
    assert problems(ok) == []
    res["resources"]["limits"]["cpu"] = 3.5  # a float is not
    assert any("limits.cpu" in p for p in problems(ok))


def test_min_replicas_above_max_is_caught(cluster):
    broken = copy.deepcopy(cluster)
    broken["spec"]["workerGroupSpecs"][0]["minReplicas"] = 5
    broken["spec"]["workerGroupSpecs"][0]["maxReplicas"] = 2
    assert problems(broken) == [
        "spec.workerGroupSpecs[0].minReplicas: 5 is greater than maxReplicas (2)"
    ]


def test_token_auth_with_old_ray_is_caught(cluster):
    broken = copy.deepcopy(cluster)
    broken["spec"]["rayVersion"] = "2.51.1"
    found = problems(broken)
    assert found == [
        "spec.rayVersion: authOptions.mode 'token' needs Ray 2.52.0 or later, "
        "got 2.51.1"
    ]
    broken["spec"].pop("rayVersion")
    assert any("rayVersion: required" in p for p in problems(broken))


def test_restart_policy_with_autoscaler_v2_is_caught(cluster):
    broken = copy.deepcopy(cluster)
    broken["spec"]["workerGroupSpecs"][0]["template"]["spec"]["restartPolicy"] = (
        "Always"
    )
    broken["spec"]["headGroupSpec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    found = problems(broken)
    assert len(found) == 2
    assert all("must be Never or unset with autoscaler v2" in p for p in found)
    ok = copy.deepcopy(cluster)
    ok["spec"]["headGroupSpec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert problems(ok) == []


def test_long_and_malformed_names_are_caught(cluster):
    broken = copy.deepcopy(cluster)
    broken["metadata"]["name"] = "r" * 54
    assert problems(broken) == [
        f"metadata.name: RayCluster names are at most 53 characters, "
        f"{'r' * 54!r} has 54"
    ]
    cfg = stack_config("dev")
    job = workloads.rayjob_manifest(cfg, REFS, name="j" * 48, entrypoint="python x.py")
    assert any("at most 47" in p for p in problems(job))
    svc = workloads.rayservice_manifest(
        cfg, REFS, name="Serve_App", working_dir="s3://b/p.zip"
    )
    assert any("DNS-1035" in p for p in problems(svc))


def test_resources_in_two_places_and_duplicate_groups_are_caught(cluster):
    broken = copy.deepcopy(cluster)
    broken["spec"]["headGroupSpec"]["resources"] = {"CPU": "1"}
    broken["spec"]["workerGroupSpecs"].append(
        copy.deepcopy(broken["spec"]["workerGroupSpecs"][0])
    )
    found = problems(broken)
    assert any("not both" in p for p in found)
    assert any("used by another worker group" in p for p in found)


def test_rayjob_rules_are_caught():
    cfg = stack_config("dev")
    job = workloads.rayjob_manifest(cfg, REFS, name="job", entrypoint="python x.py")
    job["spec"]["shutdownAfterJobFinishes"] = False  # yet a TTL is set
    job["spec"]["activeDeadlineSeconds"] = 0
    job["spec"]["runtimeEnvYAML"] = "working_dir: [unclosed"
    found = problems(job)
    assert "spec.ttlSecondsAfterFinished: needs shutdownAfterJobFinishes: true" in found
    assert "spec.activeDeadlineSeconds: must be > 0, got 0" in found
    assert any(p.startswith("spec.runtimeEnvYAML: not valid YAML") for p in found)
    # A problem inside the embedded cluster spec names its full path.
    job = workloads.rayjob_manifest(cfg, REFS, name="job", entrypoint="python x.py")
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["minReplicas"] = 9
    assert any(
        p.startswith("spec.rayClusterSpec.workerGroupSpecs[0].minReplicas")
        for p in problems(job)
    )


def test_rayservice_rules_are_caught():
    cfg = stack_config("dev")
    svc = workloads.rayservice_manifest(cfg, REFS, name="s", working_dir="s3://b/p")
    head = svc["spec"]["rayClusterConfig"]["headGroupSpec"]
    head["headService"] = {"metadata": {"name": "custom"}}
    svc["spec"]["serveConfigV2"] = "applications: [oops"
    found = problems(svc)
    assert any("headService.metadata.name: must not be set" in p for p in found)
    assert any(p.startswith("spec.serveConfigV2: not valid YAML") for p in found)


def test_validate_manifest_raises_one_error_listing_every_problem(cluster):
    broken = copy.deepcopy(cluster)
    broken["apiVersion"] = "ray.io/v1alpha1"
    broken["spec"]["workerGroupSpecs"][0]["minReplicas"] = 3
    broken["spec"]["workerGroupSpecs"][0]["maxReplicas"] = 1
    with pytest.raises(ManifestValidationError) as info:
        crd_schema.validate_manifest(broken)
    err = info.value
    assert err.kind == "RayCluster" and err.name == cluster["metadata"]["name"]
    assert len(err.problems) == 2
    assert "apiVersion" in str(err) and "minReplicas" in str(err)


def test_unknown_kind_is_refused():
    assert crd_schema.manifest_problems({"kind": "Deployment"})[0].startswith("kind:")


def test_version_parsing():
    assert kuberay_rules.parse_version("2.60.0") == (2, 60, 0)
    assert kuberay_rules.parse_version("v2.52") == (2, 52, 0)
    assert kuberay_rules.parse_version("latest") is None


@pytest.mark.parametrize("stack", STACKS)
def test_the_lm_job_trains_with_fsdp_on_a_gpu_pool_and_validates(stack):
    cfg = stack_config(stack)
    pool = cfg.gpu_pools[0]
    job = workloads.lm_rayjob_manifest(cfg, REFS, name="lm", preset="base")
    crd_schema.validate_manifest(job)
    words = job["spec"]["entrypoint"].split()
    assert words[:6] == ["python", "train.py", "--model", "gpt", "--strategy", "fsdp"]
    assert "--use-gpu" in words
    workers = words[words.index("--num-workers") + 1]
    assert int(workers) == pool.max_size * pool.gpus_per_node
    storage = words[words.index("--storage-path") + 1]
    assert storage == f"s3://{REFS.artifacts_bucket}/runs"
    with pytest.raises(manifests.ManifestError, match="pool: 'nope' is not one"):
        workloads.lm_rayjob_manifest(cfg, REFS, name="lm", preset="base", pool="nope")
