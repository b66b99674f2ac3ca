"""raygpu render on an Azure stack: the same Kubernetes objects with what AKS
differs in (workload identity's client-id annotation and pod label, the GPU and
Spot taints, the stack's device plugin, no Cluster Autoscaler chart, abfs://
paths), checked against the vendored CRDs and the rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from raygpu import cli, clouds, crd_schema, helm_values, offline, render
from raygpu.config import load_stack_file
from raygpu.config.azure_pools import SPOT_TAINT
from raygpu.names import GPU_TAINT_KEY, POOL_LABEL

STACK = "azure-dev"
AKS = clouds.AZURE
CLIENT_ID = "b6d7208f-35cc-2fd7-803e-8bfc0056890d"
BUCKETS = {
    "data_bucket": "data@raygpuazuredev0123456789.dfs.core.windows.net",
    "artifacts_bucket": "artifacts@raygpuazuredev0123456789.dfs.core.windows.net",
}


def load(path: Path) -> dict:
    with path.open("rb") as fh:
        return yaml.load(fh, Loader=yaml.CSafeLoader)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("render") / STACK
    result = render.render(STACK, out)
    assert result.problems == []
    return out


def test_render_of_the_azure_stack_passes_its_checks(tmp_path, capsys):
    assert cli.main(["render", "--stack", STACK, "--out", str(tmp_path / "o")]) == 0
    assert "problem" not in capsys.readouterr().err


def test_ray_objects_validate_against_the_crds_and_the_rules(rendered):
    ray_files = [rendered / f"20-raycluster-raygpu-{STACK}.yaml"]
    ray_files += sorted((rendered / "templates").glob("*.yaml"))
    kinds = []
    for path in ray_files:
        obj = load(path)
        crd_schema.validate_manifest(obj)
        assert crd_schema.operator_problems(obj) == []
        kinds.append(obj["kind"])
    assert kinds[0] == "RayCluster" and "RayJob" in kinds and "RayService" in kinds


def test_service_accounts_carry_the_identity_client_id(rendered):
    for name in ("02-serviceaccount-ray-workload", "03-serviceaccount-ray-worker"):
        annotations = load(rendered / f"{name}.yaml")["metadata"]["annotations"]
        assert annotations == {AKS.identity_annotation: "${ray_identity_client_id}"}
    assert AKS.identity_annotation == "azure.workload.identity/client-id"
    text = "".join(p.read_text() for p in rendered.rglob("*.yaml"))
    assert "eks.amazonaws.com" not in text and "${irsa_role_arn}" not in text


def test_every_ray_pod_is_labelled_for_the_identity_webhook(rendered):
    rc = load(rendered / f"20-raycluster-raygpu-{STACK}.yaml")
    templates = [rc["spec"]["headGroupSpec"]["template"]]
    templates += [g["template"] for g in rc["spec"]["workerGroupSpecs"]]
    for template in templates:
        assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"


def test_gpu_workers_tolerate_the_gpu_and_spot_taints_and_select_their_pool(
    rendered,
):
    cfg = load_stack_file(offline.stack_path(STACK), STACK)
    rc = load(rendered / f"20-raycluster-raygpu-{STACK}.yaml")
    (group,) = rc["spec"]["workerGroupSpecs"]
    spec = group["template"]["spec"]
    (pool,) = cfg.gpu_pools
    assert pool.spot and group["groupName"] == pool.name
    assert spec["nodeSelector"] == {POOL_LABEL: pool.name}
    tolerations = spec["tolerations"]
    for key, value in ((GPU_TAINT_KEY, AKS.gpu_taint_value), SPOT_TAINT[:2]):
        assert {
            "key": key,
            "operator": "Equal",
            "value": value,
            "effect": "NoSchedule",
        } in tolerations
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env[AKS.region_env] == cfg.region
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_device_plugin_but_no_cluster_autoscaler_on_aks(rendered):
    names = {r["name"] for r in load(rendered / "helm-releases.yaml")["releases"]}
    assert helm_values.DEVICE_PLUGIN_RELEASE in names
    assert "cluster-autoscaler" not in names
    assert AKS.installs_cluster_autoscaler is False
    assert clouds.AWS.installs_cluster_autoscaler is True


def test_job_templates_address_the_containers_over_abfs(rendered):
    text = "".join(p.read_text() for p in (rendered / "templates").glob("*.yaml"))
    assert "abfs://${artifacts_bucket}/jobs/ray_jobs.zip" in text
    assert "abfs://${artifacts_bucket}/runs" in text
    assert "abfs://${data_bucket}/prepared/example" in text
    assert "s3://" not in text


def test_outputs_file_of_an_azure_stack_fills_in_the_client_id(tmp_path):
    outputs = {"cloud": "azure", **BUCKETS, "ray_identity_client_id": CLIENT_ID}
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    out = tmp_path / "out"
    argv = ["render", "--stack", STACK, "--out", str(out), "--outputs", str(path)]
    assert cli.main(argv) == 0
    sa = load(out / "02-serviceaccount-ray-workload.yaml")
    assert sa["metadata"]["annotations"] == {AKS.identity_annotation: CLIENT_ID}
    job = load(out / "templates" / "rayjob-tune.yaml")
    assert f"abfs://{BUCKETS['artifacts_bucket']}/runs" in job["spec"]["entrypoint"]
    del outputs["ray_identity_client_id"]
    path.write_text(json.dumps(outputs))
    with pytest.raises(render.RenderError, match="lacks ray_identity_client_id"):
        render.refs_from_outputs(path)
