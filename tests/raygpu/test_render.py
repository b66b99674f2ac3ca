"""raygpu render: offline YAML of every object a stack applies, checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from raygpu import cli, crd_schema, manifests, render, versions
from raygpu.monitoring import dashboards
from tests.raygpu.test_manifests import REPO, STACKS, stack_config

CRDS_MISSING = crd_schema.crd_dir_problem()


def load(path: Path) -> dict:
    with path.open("rb") as fh:
        return yaml.load(fh, Loader=yaml.CSafeLoader)


@pytest.mark.parametrize("stack", STACKS)
def test_render_writes_every_object_and_values_file(stack, tmp_path, capsys):
    out = tmp_path / stack
    assert cli.main(["render", "--stack", stack, "--out", str(out)]) == 0
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*.yaml") if p.is_file())
    name = f"raygpu-{stack}"
    assert files == [
        "00-namespace-kuberay-system.yaml",
        "01-namespace-ray.yaml",
        "02-serviceaccount-ray-workload.yaml",
        "03-serviceaccount-ray-worker.yaml",
        "04-namespace-monitoring.yaml",
        "05-namespace-monitoring-agents.yaml",
        "06-storageclass-raygpu-gp3-encrypted.yaml",
        "10-helm-nvidia-device-plugin.values.yaml",
        "11-helm-kuberay-operator.values.yaml",
        "12-helm-cluster-autoscaler.values.yaml",
        "13-helm-kube-prometheus-stack.values.yaml",
        "14-helm-dcgm-exporter.values.yaml",
        f"20-raycluster-{name}.yaml",
        "30-networkpolicy-ray-default-deny-ingress.yaml",
        "31-networkpolicy-ray-ray-internal.yaml",
        "32-networkpolicy-ray-ray-head-api.yaml",
        "33-networkpolicy-ray-ray-serve.yaml",
        "34-networkpolicy-ray-ray-metrics.yaml",
        "35-networkpolicy-kuberay-system-default-deny-ingress.yaml",
        "36-networkpolicy-kuberay-system-operator-metrics.yaml",
        "40-prometheusrule-raygpu-alerts.yaml",
        "41-podmonitor-ray-head.yaml",
        "42-podmonitor-ray-workers.yaml",
        "43-servicemonitor-dcgm-exporter.yaml",
        "44-podmonitor-kuberay-operator.yaml",
        "45-servicemonitor-cluster-autoscaler.yaml",
        *sorted(
            f"46-configmap-{dashboards.configmap_name(key)}.yaml"
            for key in dashboards.GENERATORS
        ),
        "helm-releases.yaml",
        "templates/rayjob-lm.yaml",
        "templates/rayjob-prepare.yaml",
        "templates/rayjob-train-prepared.yaml",
        "templates/rayjob-tune.yaml",
        "templates/rayjob.yaml",
        "templates/rayservice.yaml",
    ]
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {len(files)} files to {out}")

    cfg = stack_config(stack)
    rc = load(out / f"20-raycluster-{name}.yaml")
    assert rc == manifests.raycluster_manifest(cfg, render.PLACEHOLDER_REFS)
    assert len(rc["spec"]["workerGroupSpecs"]) == len(cfg.gpu_pools)
    releases = load(out / "helm-releases.yaml")["releases"]
    assert [(r["chart"], r["version"]) for r in releases] == [
        ("nvidia-device-plugin", versions.NVIDIA_DEVICE_PLUGIN_CHART_VERSION),
        ("kuberay-operator", versions.KUBERAY_CHART_VERSION),
        ("cluster-autoscaler", versions.CLUSTER_AUTOSCALER_CHART_VERSION),
        ("kube-prometheus-stack", versions.KUBE_PROMETHEUS_STACK_CHART_VERSION),
        ("dcgm-exporter", versions.DCGM_EXPORTER_CHART_VERSION),
    ]
    for release in releases:
        values = load(out / release["valuesFile"])
        assert manifests.public_exposure(values) == []
    sa = load(out / "02-serviceaccount-ray-workload.yaml")
    assert sa["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "${irsa_role_arn}"
    }


@pytest.mark.skipif(CRDS_MISSING is not None, reason=str(CRDS_MISSING))
@pytest.mark.parametrize("stack", STACKS)
def test_rendered_ray_objects_validate_against_the_crds(stack, tmp_path):
    out = tmp_path / stack
    assert cli.main(["render", "--stack", stack, "--out", str(out)]) == 0
    ray_files = [out / f"20-raycluster-raygpu-{stack}.yaml"]
    ray_files += sorted((out / "templates").glob("*.yaml"))
    kinds = []
    for path in ray_files:
        obj = load(path)
        crd_schema.validate_manifest(obj)
        kinds.append(obj["kind"])
    # sorted file names: rayjob-lm, rayjob-prepare, rayjob-train-prepared,
    # rayjob-tune, rayjob, rayservice
    assert kinds == ["RayCluster", *["RayJob"] * 5, "RayService"]


def test_outputs_file_fills_in_real_values(tmp_path):
    outputs = {
        "data_bucket": "raygpu-dev-data-abc",
        "artifacts_bucket": "raygpu-dev-artifacts-abc",
        "irsa_role_arn": "arn:aws:iam::123456789012:role/raygpu-dev-ray",
        "cluster_autoscaler_role_arn": "arn:aws:iam::123456789012:role/raygpu-dev-ca",
        "kubeconfig": "[secret]",
    }
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    out = tmp_path / "out"
    assert (
        cli.main(
            ["render", "--stack", "dev", "--out", str(out), "--outputs", str(path)]
        )
        == 0
    )
    # Ray's Grafana dashboards use Grafana's own ${datasource} variables.
    text = "".join(
        p.read_text()
        for p in out.rglob("*.yaml")
        if "-configmap-ray-dashboard-" not in p.name
    )
    assert "${" not in text
    rc = load(out / "20-raycluster-raygpu-dev.yaml")
    env = rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "RAYGPU_DATA_BUCKET", "value": "raygpu-dev-data-abc"} in env
    job = load(out / "templates" / "rayjob.yaml")
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert runtime_env["working_dir"].startswith("s3://raygpu-dev-artifacts-abc/")


def test_rerender_replaces_stale_files_but_never_clobbers_other_dirs(tmp_path):
    out = tmp_path / "out"
    assert cli.main(["render", "--stack", "prod", "--out", str(out)]) == 0
    assert cli.main(["render", "--stack", "dev", "--out", str(out)]) == 0
    assert not list(out.glob("*prod*"))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert cli.main(["render", "--stack", "dev", "--out", str(foreign)]) == 2
    assert (foreign / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--stack", "nope"], "no stack file"),
        (["--stack", "dev", "--outputs", "/nonexistent/o.json"], "--outputs"),
    ],
)
def test_user_errors_exit_2_with_one_line(argv, message, tmp_path, capsys):
    assert cli.main(["render", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_bad_config_exits_2_naming_the_key(tmp_path, capsys):
    text = (REPO / "Pulumi.dev.yaml").read_text()
    bad = tmp_path / "Pulumi.dev.yaml"
    bad.write_text(text.replace("raygpu:rayHeadMemory: 8Gi", "raygpu:rayHeadMemory: 8"))
    code = cli.main(
        [
            "render",
            "--stack",
            "dev",
            "--stack-file",
            str(bad),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert "raygpu:rayHeadMemory" in capsys.readouterr().err


def test_check_reports_schema_rule_and_exposure_problems():
    cfg = stack_config("dev")
    rc = manifests.raycluster_manifest(cfg, render.PLACEHOLDER_REFS)
    rc["spec"]["headGroupSpec"]["serviceType"] = "LoadBalancer"
    rc["spec"]["workerGroupSpecs"][0]["minReplicas"] = 7
    problems = render.check([rc], [rc], [{"service": {"type": "LoadBalancer"}}], None)
    assert (
        "public exposure: [0].spec.headGroupSpec.serviceType: LoadBalancer" in problems
    )
    assert "public exposure: [1].service.type: LoadBalancer" in problems
    assert any("minReplicas: 7 is greater than maxReplicas" in p for p in problems)


def test_cluster_autoscaler_values_are_rendered_with_the_role_placeholder(tmp_path):
    import yaml

    from raygpu.render import render

    out = tmp_path / "dev"
    render("dev", out)
    index = yaml.safe_load((out / "helm-releases.yaml").read_text())["releases"]
    names = {r["name"]: r for r in index}
    assert "cluster-autoscaler" in names
    values = yaml.safe_load(
        (out / names["cluster-autoscaler"]["valuesFile"]).read_text()
    )
    text = yaml.safe_dump(values)
    assert "${cluster_autoscaler_role_arn}" in text
    assert "raygpu-dev" in text
