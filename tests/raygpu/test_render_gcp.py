"""raygpu render on a Google Cloud stack: the same Kubernetes objects with what GKE
differs in (the Workload Identity annotation, GKE's GPU taint, no device plugin,
no Cluster Autoscaler chart), checked against the vendored CRDs and the rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from raygpu import cli, clouds, crd_schema, helm_values, offline, render
from raygpu.config import load_stack_file
from raygpu.names import GPU_TAINT_KEY, POOL_LABEL

STACK = "gcp-dev"
GKE = clouds.GCP


def load(path: Path) -> dict:
    with path.open("rb") as fh:
        return yaml.load(fh, Loader=yaml.CSafeLoader)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("render") / STACK
    result = render.render(STACK, out)
    assert result.problems == []
    return out


def test_render_of_the_gcp_stack_passes_its_checks(tmp_path, capsys):
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


def test_service_accounts_carry_gkes_workload_identity_annotation(rendered):
    for name in ("02-serviceaccount-ray-workload", "03-serviceaccount-ray-worker"):
        annotations = load(rendered / f"{name}.yaml")["metadata"]["annotations"]
        assert annotations == {GKE.identity_annotation: "${ray_google_service_account}"}
    text = "".join(p.read_text() for p in rendered.rglob("*.yaml"))
    assert "eks.amazonaws.com" not in text and "${irsa_role_arn}" not in text


def test_gpu_workers_tolerate_gkes_taint_and_select_their_pool(rendered):
    cfg = load_stack_file(offline.stack_path(STACK), STACK)
    rc = load(rendered / f"20-raycluster-raygpu-{STACK}.yaml")
    (group,) = rc["spec"]["workerGroupSpecs"]
    spec = group["template"]["spec"]
    (pool,) = cfg.gpu_pools
    assert group["groupName"] == pool.name
    assert spec["nodeSelector"] == {POOL_LABEL: pool.name}
    assert {
        "key": GPU_TAINT_KEY,
        "operator": "Equal",
        "value": GKE.gpu_taint_value,
        "effect": "NoSchedule",
    } in spec["tolerations"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env[GKE.region_env] == cfg.region
    limits = spec["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == pool.accelerator_count


def test_no_device_plugin_and_no_cluster_autoscaler_on_gke(rendered):
    index = load(rendered / "helm-releases.yaml")["releases"]
    names = {r["name"] for r in index}
    assert helm_values.DEVICE_PLUGIN_RELEASE not in names
    assert "cluster-autoscaler" not in names
    assert helm_values.KUBERAY_RELEASE in names
    assert not list(rendered.glob("*-helm-nvidia-device-plugin.values.yaml"))


def test_outputs_file_of_a_gcp_stack_fills_in_the_google_service_account(tmp_path):
    email = "ray-abc@my-raygpu-project.iam.gserviceaccount.com"
    outputs = {
        "cloud": "gcp",
        "data_bucket": "raygpu-gcp-dev-data-abc",
        "artifacts_bucket": "raygpu-gcp-dev-artifacts-abc",
        "ray_google_service_account": email,
        "gcp_project": "my-raygpu-project",
        "kubeconfig": "[secret]",
    }
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    out = tmp_path / "out"
    argv = ["render", "--stack", STACK, "--out", str(out), "--outputs", str(path)]
    assert cli.main(argv) == 0
    sa = load(out / "02-serviceaccount-ray-workload.yaml")
    assert sa["metadata"]["annotations"] == {GKE.identity_annotation: email}
    # No irsa_role_arn is asked of a GCP stack's outputs; its own output is.
    del outputs["ray_google_service_account"]
    path.write_text(json.dumps(outputs))
    with pytest.raises(render.RenderError, match="lacks ray_google_service_account"):
        render.refs_from_outputs(path)
