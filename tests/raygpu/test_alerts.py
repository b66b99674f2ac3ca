"""The alert rules: promtool's own checks and unit tests on synthetic series.

Each rule has cases where it fires (with the labels and summary it fires with)
and cases where it must not, computed from the default thresholds, run through
`promtool test rules` against the rules file Prometheus would load.
"""

from __future__ import annotations

import copy
import subprocess
from dataclasses import dataclass, field

import pytest
import yaml

from raygpu import cli, render
from raygpu.monitoring import alerts, rulecheck
from tests.raygpu.test_manifests import stack_config

T = alerts.DEFAULTS
GPU_GROUP = "eks-raygpu-dev-gpu-a10g-20260101-1a2b"
SYSTEM_GROUP = "eks-raygpu-dev-system-20260101-3c4d"
HEAD = {"container": "ray-head"}


def series(metric: str, **labels: str) -> str:
    """promtool's series notation: `metric{a="1",b="2"}`."""
    inside = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{metric}{{{inside}}}"


@dataclass
class Case:
    """Input series and, at `at` minutes, the alerts expected (labels, summary)."""

    name: str
    series: dict[str, str]
    at: int
    fires: list[tuple[dict[str, str], str]] = field(default_factory=list)


def _disk(mountpoint: str, fstype: str, avail: int, readonly: int) -> dict[str, str]:
    """node-exporter's series of one filesystem of 100 bytes, `avail` free."""
    labels = (
        f'instance="10.0.1.5:9100",mountpoint="{mountpoint}",fstype="{fstype}",'
        'device="/dev/disk"'
    )
    return {
        f"node_filesystem_avail_bytes{{{labels}}}": f"{avail}x30",
        f"node_filesystem_size_bytes{{{labels}}}": "100x30",
        f"node_filesystem_readonly{{{labels}}}": f"{readonly}x30",
    }


CASES: dict[str, list[Case]] = {
    "GpuNodeIdle": [
        Case(
            "both GPUs of a node idle past the limit; one busy GPU keeps another "
            "node quiet",
            {
                series("DCGM_FI_DEV_GPU_UTIL", Hostname="gpu-a", gpu="0"): "1x60",
                series("DCGM_FI_DEV_GPU_UTIL", Hostname="gpu-a", gpu="1"): "3x60",
                series("DCGM_FI_DEV_GPU_UTIL", Hostname="gpu-b", gpu="0"): "0x60",
                series("DCGM_FI_DEV_GPU_UTIL", Hostname="gpu-b", gpu="1"): "90x60",
            },
            T.gpu_idle_minutes + 5,
            [
                (
                    {"Hostname": "gpu-a"},
                    f"GPU node gpu-a: every GPU under 5% busy for "
                    f"{T.gpu_idle_minutes} min; it bills while idle",
                )
            ],
        ),
        Case(
            "idle for less than the limit",
            {series("DCGM_FI_DEV_GPU_UTIL", Hostname="gpu-a", gpu="0"): "1x60"},
            T.gpu_idle_minutes - 5,
        ),
        Case(
            "busy until recently",
            {series("DCGM_FI_DEV_GPU_UTIL", Hostname="gpu-a", gpu="0"): "80x30 1x30"},
            30 + T.gpu_idle_minutes - 5,
        ),
    ],
    "GpuPoolAtMaximum": [
        Case(
            "a GPU group at maxSize past the limit; the system group is not a GPU pool",
            {
                series(
                    "cluster_autoscaler_node_group_target_count", node_group=GPU_GROUP
                ): "4x60",
                series(
                    "cluster_autoscaler_node_group_max_count", node_group=GPU_GROUP
                ): "4x60",
                series(
                    "cluster_autoscaler_node_group_target_count",
                    node_group=SYSTEM_GROUP,
                ): "3x60",
                series(
                    "cluster_autoscaler_node_group_max_count", node_group=SYSTEM_GROUP
                ): "3x60",
            },
            T.pool_at_max_minutes + 5,
            [
                (
                    {"node_group": GPU_GROUP},
                    f"GPU node group {GPU_GROUP} at its maxSize for "
                    f"{T.pool_at_max_minutes} min: more work waits for capacity",
                )
            ],
        ),
        Case(
            "below its maximum",
            {
                series(
                    "cluster_autoscaler_node_group_target_count", node_group=GPU_GROUP
                ): "3x60",
                series(
                    "cluster_autoscaler_node_group_max_count", node_group=GPU_GROUP
                ): "4x60",
            },
            T.pool_at_max_minutes + 5,
        ),
        Case(
            "at its maximum for less than the limit",
            {
                series(
                    "cluster_autoscaler_node_group_target_count", node_group=GPU_GROUP
                ): "2x30 4x30",
                series(
                    "cluster_autoscaler_node_group_max_count", node_group=GPU_GROUP
                ): "4x60",
            },
            30 + T.pool_at_max_minutes - 5,
        ),
    ],
    "RayHeadDown": [
        Case(
            "the head's target fails its scrapes",
            {
                series(
                    "up", **HEAD, instance="10.0.0.5:8080", job="ray-head"
                ): "1x5 0x20"
            },
            5 + T.head_down_minutes + 2,
            [
                (
                    {**HEAD, "instance": "10.0.0.5:8080", "job": "ray-head"},
                    f"Ray head (GCS, job API, Serve controller) unreachable for "
                    f"{T.head_down_minutes} min",
                )
            ],
        ),
        Case(
            "no head target at all",
            {series("up", container="prometheus", job="prometheus"): "1x20"},
            T.head_down_minutes + 2,
            [
                (
                    {"container": "ray-head"},
                    f"Ray head (GCS, job API, Serve controller) unreachable for "
                    f"{T.head_down_minutes} min",
                )
            ],
        ),
        Case(
            "a failed scrape shorter than the limit",
            {
                series(
                    "up", **HEAD, instance="10.0.0.5:8080", job="ray-head"
                ): "1x5 0x20"
            },
            5 + T.head_down_minutes - 1,
        ),
        Case(
            "the head answers",
            {series("up", **HEAD, instance="10.0.0.5:8080", job="ray-head"): "1x20"},
            15,
        ),
    ],
    "RayJobFailed": [
        Case(
            "one RayJob Failed, another Complete",
            {
                series(
                    "kuberay_job_deployment_status",
                    namespace="ray",
                    name="train-1",
                    deployment_status="Failed",
                ): "1x10",
                series(
                    "kuberay_job_deployment_status",
                    namespace="ray",
                    name="train-2",
                    deployment_status="Complete",
                ): "1x10",
            },
            5,
            [({"namespace": "ray", "name": "train-1"}, "RayJob ray/train-1 failed")],
        ),
        Case(
            "Running, then Complete",
            {
                series(
                    "kuberay_job_deployment_status",
                    namespace="ray",
                    name="train-2",
                    deployment_status="Running",
                ): "1x5 _x5",
                series(
                    "kuberay_job_deployment_status",
                    namespace="ray",
                    name="train-2",
                    deployment_status="Complete",
                ): "_x5 1x5",
            },
            8,
        ),
    ],
    "RayTrainRunErrored": [
        Case(
            "a run ERRORED a few minutes ago (its controller has exited since)",
            {
                series(
                    "ray_train_controller_state",
                    ray_train_run_name="digits",
                    ray_train_controller_state="RUNNING",
                ): "1x5 0 _x30",
                series(
                    "ray_train_controller_state",
                    ray_train_run_name="digits",
                    ray_train_controller_state="ERRORED",
                ): "0x5 1 _x30",
            },
            6 + T.failed_run_window_minutes - 5,
            [
                (
                    {"ray_train_run_name": "digits"},
                    "Ray Train run digits ended in ERRORED",
                )
            ],
        ),
        Case(
            "the error is older than the window",
            {
                series(
                    "ray_train_controller_state",
                    ray_train_run_name="digits",
                    ray_train_controller_state="ERRORED",
                ): "0x5 1 _x40",
            },
            6 + T.failed_run_window_minutes + 5,
        ),
        Case(
            "a run that finished",
            {
                series(
                    "ray_train_controller_state",
                    ray_train_run_name="ok",
                    ray_train_controller_state="FINISHED",
                ): "0x5 1x5",
                series(
                    "ray_train_controller_state",
                    ray_train_run_name="ok",
                    ray_train_controller_state="ERRORED",
                ): "0x10",
            },
            8,
        ),
    ],
    "ServeHigh5xxRatio": [
        Case(
            "10 % of one app's requests answered 500; 1 % of another's",
            {
                series(
                    "ray_serve_num_http_requests_total",
                    application="digits",
                    status_code="200",
                ): "0+90x30",
                series(
                    "ray_serve_num_http_requests_total",
                    application="digits",
                    status_code="500",
                ): "0+10x30",
                series(
                    "ray_serve_num_http_requests_total",
                    application="calm",
                    status_code="200",
                ): "0+99x30",
                series(
                    "ray_serve_num_http_requests_total",
                    application="calm",
                    status_code="503",
                ): "0+1x30",
            },
            2 * T.serve_window_minutes + 5,
            [
                (
                    {"application": "digits"},
                    "Serve app digits: 10.0% of requests answered 5xx over "
                    f"{T.serve_window_minutes} min",
                )
            ],
        ),
        Case(
            "only 4xx",
            {
                series(
                    "ray_serve_num_http_requests_total",
                    application="digits",
                    status_code="200",
                ): "0+50x30",
                series(
                    "ray_serve_num_http_requests_total",
                    application="digits",
                    status_code="404",
                ): "0+50x30",
            },
            2 * T.serve_window_minutes + 5,
        ),
        Case(
            "5xx for less than the limit",
            {
                series(
                    "ray_serve_num_http_requests_total",
                    application="digits",
                    status_code="200",
                ): "0+90x30",
                series(
                    "ray_serve_num_http_requests_total",
                    application="digits",
                    status_code="500",
                ): "0x20 0+50x10",
            },
            22,
        ),
    ],
    "ServeHighP99Latency": [
        Case(
            "one app's requests all take 1-2 s; another's under 100 ms",
            {
                series(
                    "ray_serve_http_request_latency_ms_bucket",
                    application="slow",
                    le="1000.0",
                ): "0x30",
                series(
                    "ray_serve_http_request_latency_ms_bucket",
                    application="slow",
                    le="2000.0",
                ): "0+10x30",
                series(
                    "ray_serve_http_request_latency_ms_bucket",
                    application="slow",
                    le="+Inf",
                ): "0+10x30",
                series(
                    "ray_serve_http_request_latency_ms_bucket",
                    application="fast",
                    le="100.0",
                ): "0+10x30",
                series(
                    "ray_serve_http_request_latency_ms_bucket",
                    application="fast",
                    le="1000.0",
                ): "0+10x30",
                series(
                    "ray_serve_http_request_latency_ms_bucket",
                    application="fast",
                    le="+Inf",
                ): "0+10x30",
            },
            2 * T.serve_window_minutes + 5,
            [
                (
                    {"application": "slow"},
                    "Serve app slow: p99 latency 1990 ms over "
                    f"{T.serve_window_minutes} min",
                )
            ],
        ),
        Case(
            "no traffic",
            {
                series(
                    "ray_serve_http_request_latency_ms_bucket",
                    application="slow",
                    le="2000.0",
                ): "5x30",
                series(
                    "ray_serve_http_request_latency_ms_bucket",
                    application="slow",
                    le="+Inf",
                ): "5x30",
            },
            2 * T.serve_window_minutes + 5,
        ),
    ],
    "ServeReplicaRestarts": [
        Case(
            "the first failure of a deployment (its counter appears at 1)",
            {
                series(
                    "ray_serve_health_check_failures_total",
                    application="digits",
                    deployment="Model",
                ): "_x10 1x20",
            },
            12,
            [
                (
                    {"application": "digits", "deployment": "Model"},
                    "Serve deployment digits/Model: 1 failed health checks in "
                    f"{T.replica_window_minutes} min; Serve replaces such replicas",
                )
            ],
        ),
        Case(
            "two more failures of a deployment that failed before",
            {
                series(
                    "ray_serve_health_check_failures_total",
                    application="digits",
                    deployment="Model",
                ): "3x10 5x40",
            },
            T.replica_window_minutes + 5,
            [
                (
                    {"application": "digits", "deployment": "Model"},
                    "Serve deployment digits/Model: 2 failed health checks in "
                    f"{T.replica_window_minutes} min; Serve replaces such replicas",
                )
            ],
        ),
        Case(
            "failures older than the window",
            {
                series(
                    "ray_serve_health_check_failures_total",
                    application="digits",
                    deployment="Model",
                ): "_x5 1 2x60",
            },
            6 + T.replica_window_minutes + 5,
        ),
    ],
    "NodeNotReady": [
        Case(
            "a node not Ready past the limit; another Ready",
            {
                series(
                    "kube_node_status_condition",
                    node="ip-10-0-1-5",
                    condition="Ready",
                    status="true",
                ): "1x5 0x20",
                series(
                    "kube_node_status_condition",
                    node="ip-10-0-1-6",
                    condition="Ready",
                    status="true",
                ): "1x25",
            },
            5 + T.node_not_ready_minutes + 2,
            [
                (
                    {"node": "ip-10-0-1-5", "condition": "Ready", "status": "true"},
                    f"Node ip-10-0-1-5 not Ready for {T.node_not_ready_minutes} min",
                )
            ],
        ),
        Case(
            "not Ready for less than the limit",
            {
                series(
                    "kube_node_status_condition",
                    node="ip-10-0-1-5",
                    condition="Ready",
                    status="true",
                ): "1x5 0x20",
            },
            5 + T.node_not_ready_minutes - 2,
        ),
    ],
    "NodeDiskNearlyFull": [
        Case(
            "5 % free on a node's root; full tmpfs and read-only filesystems ignored",
            {
                **_disk("/", "ext4", avail=5, readonly=0),
                **_disk("/run", "tmpfs", avail=1, readonly=0),
                **_disk("/mnt/iso", "ext4", avail=1, readonly=1),
                **_disk("/data", "xfs", avail=60, readonly=0),
            },
            T.disk_minutes + 5,
            [
                (
                    {
                        "instance": "10.0.1.5:9100",
                        "mountpoint": "/",
                        "fstype": "ext4",
                        "device": "/dev/disk",
                    },
                    "10.0.1.5:9100 /: 5.0% free",
                )
            ],
        ),
        Case(
            "nearly full for less than the limit",
            {**_disk("/", "ext4", avail=5, readonly=0)},
            T.disk_minutes - 2,
        ),
    ],
}


def promtool_tests(cases: dict[str, list[Case]]) -> dict:
    """A `promtool test rules` file: one test per case."""
    severity = {a.name: a.severity for a in alerts.alerts()}
    tests = []
    for alert, alert_cases in cases.items():
        for case in alert_cases:
            tests.append(
                {
                    "name": f"{alert}: {case.name}",
                    "interval": "1m",
                    "input_series": [
                        {"series": s, "values": v} for s, v in case.series.items()
                    ],
                    "alert_rule_test": [
                        {
                            "eval_time": f"{case.at}m",
                            "alertname": alert,
                            "exp_alerts": [
                                {
                                    "exp_labels": {
                                        **labels,
                                        "severity": severity[alert],
                                    },
                                    "exp_annotations": {"summary": summary},
                                }
                                for labels, summary in case.fires
                            ],
                        }
                    ],
                }
            )
    return {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}


def run_promtool_tests(promtool, tmp_path, cases, rules_text=None):
    (tmp_path / "rules.yml").write_text(rules_text or alerts.rules_file())
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(promtool_tests(cases)))
    return subprocess.run(
        [promtool, "test", "rules", "tests.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_rule_has_cases_that_fire_and_cases_that_do_not():
    assert set(CASES) == {a.name for a in alerts.alerts()}
    for alert, cases in CASES.items():
        assert any(c.fires for c in cases), f"{alert}: no case where it fires"
        assert any(not c.fires for c in cases), f"{alert}: no case where it is quiet"


def test_the_rules_file_passes_promtool_check_rules(promtool, tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text(alerts.rules_file())
    done = subprocess.run(
        [promtool, "check", "rules", "--lint=all", "--lint-fatal", str(rules)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts.alerts())} rules found" in done.stdout
    assert rulecheck.rule_problems(alerts.rule_groups(), promtool) == []


@pytest.mark.parametrize("alert", sorted(CASES))
def test_promtool_unit_tests_fire_and_stay_quiet(alert, promtool, tmp_path):
    done = run_promtool_tests(promtool, tmp_path, {alert: CASES[alert]})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests_catch_a_wrong_expectation(promtool, tmp_path):
    """The harness can fail: a quiet case expected to fire, and a firing case
    given the wrong threshold, both fail promtool."""
    quiet = CASES["GpuNodeIdle"][1]
    wrong = Case(quiet.name, quiet.series, quiet.at, CASES["GpuNodeIdle"][0].fires)
    done = run_promtool_tests(promtool, tmp_path, {"GpuNodeIdle": [wrong]})
    assert done.returncode != 0 and "FAILED" in done.stdout + done.stderr
    stricter = alerts.rules_file(alerts.Thresholds(gpu_idle_percent=1))
    done = run_promtool_tests(
        promtool, tmp_path, {"GpuNodeIdle": CASES["GpuNodeIdle"][:1]}, stricter
    )
    assert done.returncode != 0


def test_thresholds_change_the_rules():
    t = alerts.Thresholds(serve_p99_ms=250, gpu_idle_minutes=45, disk_free_percent=5)
    by_name = {r["alert"]: r for r in alerts.rule_groups(t)[0]["rules"]}
    assert by_name["ServeHighP99Latency"]["expr"].endswith("> 250")
    assert by_name["GpuNodeIdle"]["for"] == "45m"
    assert "\n< 5\n" in by_name["NodeDiskNearlyFull"]["expr"]


# ------------------------------------------------------------------ structure


def broken(change) -> list[dict]:
    groups = copy.deepcopy(alerts.rule_groups())
    change(groups[0]["rules"])
    return groups


@pytest.mark.parametrize(
    "change, problem",
    [
        (
            lambda rules: rules[0].update(expr="max by (Hostname) (x < 5"),
            "groups[0].rules[0] (GpuNodeIdle): expr: unclosed '('",
        ),
        (
            lambda rules: rules[1].update({"for": "30 min"}),
            "groups[0].rules[1] (GpuPoolAtMaximum): for must be a duration like 5m, "
            "got '30 min'",
        ),
        (
            lambda rules: rules[2]["labels"].pop("severity"),
            "groups[0].rules[2] (RayHeadDown): labels.severity must be one of "
            "warning, critical, got None",
        ),
        (
            lambda rules: rules[3].update(alert="Ray Job Failed"),
            "groups[0].rules[3]: alert 'Ray Job Failed' is not a valid name",
        ),
        (
            lambda rules: rules[4].update(record="x"),
            "groups[0].rules[4]: needs exactly one of alert or record",
        ),
        (
            lambda rules: rules[5].update(exprr="1"),
            "groups[0].rules[5] (ServeHigh5xxRatio): unknown key 'exprr'",
        ),
        (
            lambda rules: rules[6]["annotations"].update(summary=""),
            "groups[0].rules[6] (ServeHighP99Latency): annotations.summary is missing",
        ),
        (
            lambda rules: rules[7]["labels"].update(severity=3),
            "groups[0].rules[7] (ServeReplicaRestarts): labels.severity: must be a "
            "string, got 3",
        ),
        (
            lambda rules: rules[8].update(expr='up{job="x}'),
            'groups[0].rules[8] (NodeNotReady): expr: unclosed " string',
        ),
    ],
)
def test_structure_check_names_the_rule_and_what_is_wrong(change, problem):
    assert problem in rulecheck.structure_problems(broken(change))


def test_structure_check_of_groups():
    assert rulecheck.structure_problems([]) == ["groups: must be a non-empty list"]
    twice = alerts.rule_groups() * 2
    assert rulecheck.structure_problems(twice) == [
        "groups[1]: group name 'raygpu' is used twice"
    ]
    assert rulecheck.structure_problems([{"name": "g", "rules": []}]) == [
        "groups[0]: rules must be a non-empty list"
    ]


def test_promtool_finds_what_the_structure_check_cannot(promtool):
    groups = broken(lambda rules: rules[0].update(expr="max by (Hostname) (x) <"))
    assert rulecheck.structure_problems(groups) == []
    [problem] = rulecheck.rule_problems(groups, promtool)
    assert problem.startswith("promtool check rules: ")
    assert '"GpuNodeIdle": could not parse expression' in problem


# ------------------------------------------------------------------ render


def test_render_writes_the_rules_as_a_prometheus_rule(tmp_path):
    out = tmp_path / "dev"
    assert cli.main(["render", "--stack", "dev", "--out", str(out)]) == 0
    obj = yaml.safe_load((out / "40-prometheusrule-raygpu-alerts.yaml").read_text())
    cfg = stack_config("dev")
    assert obj == alerts.prometheus_rule_manifest(cfg)
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert obj["metadata"]["namespace"] == cfg.monitoring_namespace
    assert obj["spec"]["groups"] == yaml.safe_load(alerts.rules_file())["groups"]


def test_a_sleeping_stack_has_no_head_down_alert():
    cfg = stack_config("dev")
    awake = alerts.prometheus_rule_manifest(cfg.model_copy(update={"asleep": False}))
    asleep = alerts.prometheus_rule_manifest(cfg.model_copy(update={"asleep": True}))
    names = lambda obj: [r["alert"] for r in obj["spec"]["groups"][0]["rules"]]  # noqa: E731
    assert "RayHeadDown" in names(awake)
    assert names(asleep) == [n for n in names(awake) if n != "RayHeadDown"]


@pytest.mark.parametrize("with_promtool", [False, True], ids=["structure", "promtool"])
def test_a_broken_rule_fails_render(with_promtool, request, tmp_path, monkeypatch):
    if with_promtool:
        request.getfixturevalue("promtool")
        bad = "max by (Hostname) (DCGM_FI_DEV_GPU_UTIL) <"  # only promtool sees it
        expected = '"GpuNodeIdle": could not parse expression'
    else:
        monkeypatch.setattr(rulecheck, "find_promtool", lambda: None)
        bad = "max by (Hostname) (DCGM_FI_DEV_GPU_UTIL < 5"
        expected = "GpuNodeIdle): expr: unclosed '('"
    real = alerts.alerts

    def with_a_typo(t=alerts.DEFAULTS):
        found = real(t)
        found[0] = alerts.Alert(**{**found[0].__dict__, "expr": bad})
        return found

    monkeypatch.setattr(alerts, "alerts", with_a_typo)
    result = render.render("dev", tmp_path / "out")
    assert len(result.problems) == 1
    assert result.problems[0].startswith("PrometheusRule raygpu-alerts: ")
    assert expected in result.problems[0]


# ------------------------------------------------------------------ docs


def test_the_docs_table_is_the_generated_one():
    text = alerts.DOC.read_text(encoding="utf-8")
    assert alerts.with_table(text) == text, (
        "docs/operations.md's alerts table is stale: "
        "python -m raygpu.monitoring.alerts --write"
    )
    for a in alerts.alerts():
        assert f"`{a.name}`" in text
