"""raygpu plan: the offline plan, its cost estimate and its error handling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from raygpu import cli
from raygpu import instance_types as it
from raygpu.config import StackConfig, load_stack_file
from raygpu.config.monitoring_keys import monitoring_keys
from tests.infra.infra_helpers import CONTRACT_OUTPUTS

ROOT = Path(__file__).resolve().parents[2]
PLANS: dict[str, dict] = {}


def json_plan(stack: str, capsys) -> dict:
    if stack not in PLANS:
        assert cli.main(["plan", "--stack", stack, "--json"]) == 0
        PLANS[stack] = json.loads(capsys.readouterr().out)
    return PLANS[stack]


def expected_cost(cfg: StackConfig) -> tuple[float, float]:
    """Idle and full-scale $/h computed from the config alone, by hand."""
    fixed = it.EKS_CONTROL_PLANE_USD_HOUR
    fixed += cfg.nat_gateway_count * (it.NAT_GATEWAY_USD_HOUR + it.PUBLIC_IPV4_USD_HOUR)
    fixed += 2 * it.KMS_KEY_USD_MONTH / it.HOURS_PER_MONTH  # storage + secrets keys
    disk = it.EBS_GP3_USD_GIB_MONTH / it.HOURS_PER_MONTH
    sys_node = cfg.system_pool.node_usd_hour() + cfg.system_pool.disk_size_gib * disk
    if monitoring_keys(cfg).monitoring:  # the Prometheus volume (gp3)
        fixed += monitoring_keys(cfg).monitoring_storage_gib * disk
    idle = fixed + cfg.system_pool.min_size * sys_node
    full = fixed + cfg.system_pool.max_size * sys_node
    for pool in cfg.gpu_pools:
        node = pool.node_usd_hour() + pool.disk_size_gib * disk
        idle += pool.min_size * node
        full += pool.max_size * node
    return idle, full


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_json_plan_has_resources_outputs_and_cost(stack, capsys):
    result = json_plan(stack, capsys)
    assert set(result) >= {"resources", "outputs", "cost"}
    types = {r["type"] for r in result["resources"]}
    assert {"aws:eks/cluster:Cluster", "aws:eks/nodeGroup:NodeGroup"} <= types
    for r in result["resources"]:
        assert set(r) == {"type", "name", "parent", "inputs"}
    names = {r["name"] for r in result["resources"]}
    assert all(r["parent"] is None or r["parent"] in names for r in result["resources"])
    cluster = next(
        r for r in result["resources"] if r["type"] == "aws:eks/cluster:Cluster"
    )
    assert cluster["inputs"]["vpcConfig"]["endpointPrivateAccess"] is True
    assert CONTRACT_OUTPUTS <= set(result["outputs"])
    assert result["outputs"]["kubeconfig"] == "[secret]"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_no_secret_reaches_the_plan(stack, capsys):
    text = json.dumps(json_plan(stack, capsys))
    # The kubeconfig is secret as an output and as the Kubernetes provider's input.
    assert "certificate-authority-data" not in text
    assert "get-token" not in text


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_cost_matches_a_hand_computation_from_the_config(stack, capsys):
    cost = json_plan(stack, capsys)["cost"]
    cfg = load_stack_file(ROOT / f"Pulumi.{stack}.yaml")
    idle, full = expected_cost(cfg)
    assert cost["idle_usd_hour"] == pytest.approx(idle, abs=0.01)
    assert cost["full_usd_hour"] == pytest.approx(full, abs=0.01)
    assert cost["full_usd_hour"] > cost["idle_usd_hour"] > 0
    assert cost["idle_usd_month"] == pytest.approx(cost["idle_usd_hour"] * 730, abs=1)
    assert cost["price_table"]["region"] == it.PRICE_TABLE_REGION
    assert cost["price_table"]["date"] == it.PRICE_TABLE_DATE
    assert cost["price_table"]["source"] == it.PRICE_TABLE_SOURCE


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_cost_is_itemised_per_node_group_and_fixed_item(stack, capsys):
    cost = json_plan(stack, capsys)["cost"]
    cfg = load_stack_file(ROOT / f"Pulumi.{stack}.yaml")
    kinds = [i["item"] for i in cost["items"]]
    assert kinds.count("EKS control plane") == 1
    assert kinds.count("NAT gateway") == cfg.nat_gateway_count
    assert kinds.count("node group instances") == 1 + len(cfg.gpu_pools)
    for pool in cfg.gpu_pools:
        (item,) = [
            i
            for i in cost["items"]
            if i["item"] == "node group instances" and i["resource"].endswith(pool.name)
        ]
        assert item["idle_usd_hour"] == 0  # scale to zero
        assert item["full_count"] == pool.max_size
        assert item["full_usd_hour"] == pytest.approx(
            pool.max_size * pool.node_usd_hour(), abs=1e-3
        )
        assert ("spot" in item["note"]) is (pool.capacity_type == "SPOT")
    assert sum(i["idle_usd_hour"] for i in cost["items"]) == pytest.approx(
        cost["idle_usd_hour"], abs=0.01
    )
    assert cost["excluded"]


def test_the_prometheus_volume_is_priced_awake_and_asleep(capsys):
    cost = json_plan("prod", capsys)["cost"]
    (item,) = [i for i in cost["items"] if i["item"] == "Prometheus volume (gp3)"]
    gib = monitoring_keys(
        load_stack_file(ROOT / "Pulumi.prod.yaml")
    ).monitoring_storage_gib
    assert item["unit_usd_hour"] == pytest.approx(
        gib * it.EBS_GP3_USD_GIB_MONTH / it.HOURS_PER_MONTH, rel=1e-3
    )
    assert item["pool_role"] is None  # not a node: it stays while the stack sleeps


def test_text_plan_prints_the_tree_and_totals(capsys):
    assert cli.main(["plan", "--stack", "dev"]) == 0
    out = capsys.readouterr().out
    assert "raygpu:cluster:EksCluster  raygpu-dev-cluster" in out
    assert "    aws:eks/nodeGroup:NodeGroup  raygpu-dev-cluster-gpu-l4-spot" in out
    assert "TOTAL" in out and "idle" in out and "full" in out
    assert 'kubeconfig = "[secret]"' in out
    assert "us-east-1" in out and it.PRICE_TABLE_DATE in out


def test_other_region_is_flagged(tmp_path, capsys):
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"]["aws:region"] = "eu-west-1"
    path = tmp_path / "Pulumi.euro.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert cli.main(["plan", "--stack", "euro", "--config", str(path), "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)["cost"]
    assert "eu-west-1" in cost["region_note"]


@pytest.mark.parametrize(("budget", "warned"), [(250, True), (1000, False)])
def test_a_budget_the_idle_cost_alone_would_trip_is_flagged(
    tmp_path, capsys, budget, warned
):
    # dev idles at about $241/month: an 80 % alert on $250 ($200) fires anyway.
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"]["raygpu:budgetMonthlyUsd"] = budget
    path = tmp_path / "Pulumi.tight.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert cli.main(["plan", "--stack", "tight", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    if warned:
        assert "warning: raygpu:budgetMonthlyUsd (250): its actual alert at 80 %" in out
        assert "fires every month" in out
    else:
        assert "warning:" not in out


def test_shipped_stacks_budgets_clear_their_idle_cost(capsys):
    for stack in ("dev", "prod"):
        assert cli.main(["plan", "--stack", stack, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["cost"]["budget_note"] is None


def write_bad_stack(tmp_path: Path) -> Path:
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"]["raygpu:gpuPools"][0]["instanceTypes"] = ["m6i.xlarge"]
    doc["config"]["raygpu:publicEndpointCidrs"] = ["0.0.0.0/0"]
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_bad_config_exits_non_zero_with_one_line(tmp_path, capsys):
    path = write_bad_stack(tmp_path)
    assert cli.main(["plan", "--stack", "bad", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert "\n" not in err
    assert "raygpu:gpuPools[0].instanceTypes[0]" in err
    assert "raygpu:publicEndpointCidrs[0]" in err


def test_missing_stack_file_is_a_clear_error(capsys):
    assert cli.main(["plan", "--stack", "nosuchstack"]) == 2
    assert "no stack file" in capsys.readouterr().err


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """No AWS credentials, no Pulumi CLI on PATH, an empty HOME."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "PULUMI_")) and k != "PATH"
    }
    env.update(PATH="/usr/bin:/bin", HOME=str(tmp_path))
    return env


def test_cli_runs_in_seconds_without_credentials_or_pulumi(tmp_path):
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "raygpu",
            "plan",
            "--stack",
            "prod",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=_clean_env(tmp_path),
        cwd=tmp_path,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["cost"]["full_usd_hour"] > 0
    assert elapsed < 30, elapsed


def test_cli_bad_config_has_no_traceback(tmp_path):
    path = write_bad_stack(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "raygpu",
            "plan",
            "--stack",
            "bad",
            "--config",
            str(path),
        ],
        capture_output=True,
        text=True,
        env=_clean_env(tmp_path),
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("raygpu plan: error: ")
    assert "raygpu:gpuPools[0].instanceTypes[0]" in proc.stderr
