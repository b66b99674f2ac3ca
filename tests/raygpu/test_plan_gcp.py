"""raygpu plan on a Google Cloud stack: the product's GCP mocks, the resource tree,
GCP's outputs, and the hourly cost from raygpu/prices_gcp.py at idle and full scale."""

from __future__ import annotations

import json

import pytest

from raygpu import cli, offline, plan
from raygpu import prices_gcp as gcp
from raygpu.config import load_stack_file

STACK = "gcp-dev"
PLANS: dict[str, dict] = {}


def json_plan(capsys) -> dict:
    if STACK not in PLANS:
        assert cli.main(["plan", "--stack", STACK, "--json"]) == 0
        PLANS[STACK] = json.loads(capsys.readouterr().out)
    return PLANS[STACK]


def test_plan_runs_the_gcp_program_under_the_products_mocks(capsys):
    result = json_plan(capsys)
    types = {r["type"] for r in result["resources"]}
    assert {
        "gcp:container/cluster:Cluster",
        "gcp:container/nodePool:NodePool",
        "gcp:compute/routerNat:RouterNat",
        "gcp:storage/bucket:Bucket",
        "gcp:kms/cryptoKey:CryptoKey",
        "gcp:billing/budget:Budget",
    } <= types
    assert not any(t.startswith("aws:") for t in types)
    outputs = result["outputs"]
    cfg = load_stack_file(offline.stack_path(STACK), STACK)
    assert outputs["cloud"] == "gcp"
    assert outputs["gcp_project"] == cfg.gcp_project
    # The Google service account's email as the GCP mocks compute it.
    email = outputs["ray_google_service_account"]
    assert email.endswith(f"@{cfg.gcp_project}.iam.gserviceaccount.com")
    assert "irsa_role_arn" not in outputs and "oidc_provider_arn" not in outputs
    assert outputs["kubeconfig"] == offline.SECRET_MASK


def test_cost_is_priced_from_the_gcp_table_at_idle_and_full_scale(capsys):
    cost = json_plan(capsys)["cost"]
    cfg = load_stack_file(offline.stack_path(STACK), STACK)
    assert cost["cloud"] == "gcp"
    assert cost["price_table"]["region"] == gcp.PRICE_TABLE_REGION
    assert cost["price_table"]["date"] == gcp.PRICE_TABLE_DATE
    assert cost["unpriced"] == []
    # By hand from the config: the GKE fee, the KMS key version, the NAT gateway
    # per VM and its IP, the system pool's on-demand VMs and the spot GPU pool's,
    # each with its pd-balanced boot disk.
    disk = gcp.PD_BALANCED_USD_GIB_MONTH / gcp.HOURS_PER_MONTH
    fixed = gcp.GKE_CLUSTER_USD_HOUR + gcp.NAT_IP_USD_HOUR
    fixed += gcp.KMS_KEY_VERSION_USD_MONTH / gcp.HOURS_PER_MONTH
    sys_pool, (gpu_pool,) = cfg.system_pool, cfg.gpu_pools
    sys_node = gcp.MACHINE_USD_HOUR[sys_pool.machine_type].on_demand
    sys_node += sys_pool.disk_size_gib * disk + gcp.NAT_USD_HOUR_PER_VM
    assert gpu_pool.spot
    gpu_node = gcp.MACHINE_USD_HOUR[gpu_pool.machine_type].spot
    gpu_node += gpu_pool.accelerator_count * gcp.GPU_USD_HOUR["nvidia-l4"].spot
    gpu_node += gpu_pool.disk_size_gib * disk + gcp.NAT_USD_HOUR_PER_VM
    idle = fixed + sys_pool.min_size * sys_node + gpu_pool.min_size * gpu_node
    full = fixed + sys_pool.max_size * sys_node + gpu_pool.max_size * gpu_node
    assert gpu_pool.min_size == 0
    assert cost["idle_usd_hour"] == pytest.approx(idle, abs=0.006)
    assert cost["full_usd_hour"] == pytest.approx(full, abs=0.006)
    kinds = {i["item"] for i in cost["items"]}
    assert "GKE cluster management fee" in kinds and "Cloud NAT gateway" in kinds
    assert any("free tier" in i["note"] for i in cost["items"])
    assert cost["excluded"] == list(plan.GCP_EXCLUDED)


def test_text_plan_names_the_gcp_price_table(capsys):
    assert cli.main(["plan", "--stack", STACK]) == 0
    out = capsys.readouterr().out
    assert f"prices: {gcp.PRICE_TABLE_REGION}, {gcp.PRICE_TABLE_DATE}" in out
    assert "GKE cluster management fee" in out
    assert "ray_google_service_account = " in out


def test_a2_node_is_the_machine_plus_its_attached_a100():
    price, why = gcp.node_usd_hour("a2-highgpu-1g", "nvidia-tesla-a100", 1, False)
    assert why == "" and price == pytest.approx(0.73948 + 2.93391)
    price, _ = gcp.node_usd_hour("n1-standard-4", "nvidia-tesla-t4", 2, True)
    assert price == pytest.approx(0.05802 + 2 * 0.175)
    # The g2-standard-4 total Google lists ($0.70683/h) is the sum of the parts.
    price, _ = gcp.node_usd_hour("g2-standard-4", "nvidia-l4", 1, False)
    assert price == pytest.approx(0.70683)


def test_a_pool_without_a_price_is_named_and_left_out(tmp_path, capsys):
    text = offline.stack_path(STACK).read_text()
    text = text.replace("machineType: g2-standard-8", "machineType: a3-highgpu-8g")
    text = text.replace(
        "acceleratorType: nvidia-l4", "acceleratorType: nvidia-h100-80gb"
    )
    text = text.replace("acceleratorCount: 1", "acceleratorCount: 8")
    path = tmp_path / f"Pulumi.{STACK}.yaml"
    path.write_text(text)
    result = plan.plan(STACK, str(path))
    cost = result["cost"]
    (unpriced,) = cost["unpriced"]
    assert "a3-highgpu-8g" in unpriced and "not found" in unpriced
    assert not any(
        i["item"] == "node pool VMs" and "l4-spot" in i["resource"]
        for i in cost["items"]
    )
    assert "not priced (left out of the totals)" in plan.render_text(result)


def test_every_gcp_pool_machine_has_a_price_row():
    from raygpu.config.gcp_pools import ACCELERATORS, MACHINES

    assert set(MACHINES) <= set(gcp.MACHINE_USD_HOUR)
    assert set(ACCELERATORS) <= set(gcp.GPU_USD_HOUR)
    for rate in [*gcp.MACHINE_USD_HOUR.values(), *gcp.GPU_USD_HOUR.values()]:
        assert rate.source  # a price says where it came from, or why it is missing
        if rate.on_demand is None:
            assert rate.source.startswith("not found")


def test_a_gcp_budget_below_the_idle_cost_is_warned_about(tmp_path):
    text = offline.stack_path(STACK).read_text()
    text = text.replace("raygpu:budgetMonthlyUsd: 800", "raygpu:budgetMonthlyUsd: 150")
    path = tmp_path / f"Pulumi.{STACK}.yaml"
    path.write_text(text)
    note = plan.plan(STACK, str(path))["cost"]["budget_note"]
    assert note and note.startswith("raygpu:budgetMonthlyUsd (150)")


def test_a_cloud_without_a_price_table_is_one_line():
    from raygpu.errors import UsageError

    with pytest.raises(UsageError, match="no price table for 'oracle' yet"):
        plan.estimate_cost(offline.OfflineRun(), "eastus", cloud="oracle")
