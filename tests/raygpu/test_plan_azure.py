"""raygpu plan on an Azure stack: the product's Azure mocks, Azure's outputs, and
the hourly cost from raygpu/prices_azure.py at idle and full scale."""

from __future__ import annotations

import json

import pytest

from raygpu import cli, offline, plan, plan_azure
from raygpu import prices_azure as az
from raygpu.config import load_stack_file
from raygpu.config.azure_pools import VM_SIZES
from raygpu.offline_azure import MOCK_EGRESS_IP

STACK = "azure-dev"
PLANS: dict[str, dict] = {}


def json_plan(capsys) -> dict:
    if STACK not in PLANS:
        assert cli.main(["plan", "--stack", STACK, "--json"]) == 0
        PLANS[STACK] = json.loads(capsys.readouterr().out)
    return PLANS[STACK]


def stack_with(tmp_path, *changes: tuple[str, str]) -> str:
    text = offline.stack_path(STACK).read_text()
    for old, new in changes:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / f"Pulumi.{STACK}.yaml"
    path.write_text(text)
    return str(path)


def test_plan_runs_the_azure_program_under_the_products_mocks(capsys):
    result = json_plan(capsys)
    types = {r["type"] for r in result["resources"]}
    assert {
        plan_azure.CLUSTER,
        plan_azure.AGENT_POOL,
        plan_azure.NAT_GATEWAY,
        "azure-native:storage:StorageAccount",
        "azure-native:managedidentity:FederatedIdentityCredential",
        plan_azure.BUDGET,
    } <= types
    assert not any(t.startswith(("aws:", "gcp:")) for t in types)
    out = result["outputs"]
    cfg = load_stack_file(offline.stack_path(STACK), STACK)
    assert out["cloud"] == "azure"
    assert out["subscription_id"] == cfg.subscription_id
    assert out["egress_ip"] == MOCK_EGRESS_IP
    account = out["storage_account"]
    assert out["data_bucket"] == f"data@{account}.dfs.core.windows.net"
    assert out["ray_identity_client_id"].count("-") == 4  # a GUID from the mocks
    assert out["oidc_issuer_url"].startswith("https://eastus2.oic.prod-aks.azure.com/")
    assert out["kubeconfig"] == offline.SECRET_MASK
    assert "irsa_role_arn" not in out


def test_cost_is_priced_from_the_azure_table_at_idle_and_full_scale(capsys):
    cost = json_plan(capsys)["cost"]
    cfg = load_stack_file(offline.stack_path(STACK), STACK)
    assert cost["cloud"] == "azure"
    assert cost["price_table"]["region"] == az.PRICE_TABLE_REGION == cfg.region
    assert cost["price_table"]["date"] == az.PRICE_TABLE_DATE
    assert cost["region_note"] == ""
    # By hand from the config: the Free tier's $0 control plane, the NAT gateway
    # and its address, the pay-as-you-go system pool, the spot GPU pool.
    sys_pool, (gpu_pool,) = cfg.system_pool, cfg.gpu_pools
    assert gpu_pool.spot and gpu_pool.min_size == 0
    fixed = az.NAT_GATEWAY_USD_HOUR + az.PUBLIC_IP_USD_HOUR
    sys_node = az.VM_USD_HOUR[sys_pool.vm_size].on_demand
    gpu_node = az.VM_USD_HOUR[gpu_pool.vm_size].spot
    idle = fixed + sys_pool.min_size * sys_node
    full = fixed + sys_pool.max_size * sys_node + gpu_pool.max_size * gpu_node
    assert cost["idle_usd_hour"] == pytest.approx(idle, abs=0.006)
    assert cost["full_usd_hour"] == pytest.approx(full, abs=0.006)
    (aks,) = [i for i in cost["items"] if i["item"] == "AKS control plane"]
    assert aks["unit_usd_hour"] == 0 and "Free tier" in aks["note"]
    # AKS keeps one system node asleep: sleeping saves only the Ray head's pods.
    assert cost["asleep_usd_hour"] == pytest.approx(idle, abs=0.006)
    # The OS disks are named, without a price, never guessed.
    assert len(cost["unpriced"]) == 2
    assert all("Premium SSD" in u for u in cost["unpriced"])
    assert any("256 GiB" in u and "t4spot" in u for u in cost["unpriced"])
    assert cost["excluded"] == list(plan_azure.EXCLUDED)


def test_text_plan_names_the_azure_price_table(capsys):
    assert cli.main(["plan", "--stack", STACK]) == 0
    out = capsys.readouterr().out
    assert f"prices: {az.PRICE_TABLE_REGION}, {az.PRICE_TABLE_DATE}" in out
    assert "AKS control plane" in out and "Standard_NC8as_T4_v3 spot" in out
    assert "not priced (left out of the totals)" in out
    assert "ray_identity_client_id = " in out


def test_the_standard_tier_pays_its_fee():
    run = offline.OfflineRun(
        resources=[
            {
                "type": plan_azure.CLUSTER,
                "name": "c",
                "inputs": {"sku": {"name": "Base", "tier": "Standard"}},
            }
        ]
    )
    items, unpriced = plan_azure.azure_items(run)
    assert unpriced == [] and items[0]["unit_usd_hour"] == 0.10


def test_an_on_demand_pool_is_priced_pay_as_you_go_and_an_unread_spot_is_named(
    tmp_path,
):
    path = stack_with(tmp_path, ("      spot: true\n", "      spot: false\n"))
    cost = plan.plan(STACK, path)["cost"]
    (gpu,) = [i for i in cost["items"] if "t4spot" in i["resource"]]
    assert gpu["unit_usd_hour"] == az.VM_USD_HOUR["Standard_NC8as_T4_v3"].on_demand
    assert "pay-as-you-go" in gpu["note"]
    price, why = az.vm_usd_hour("Standard_D4s_v5", spot=True)
    assert price is None and "no Spot price read" in why


def test_every_azure_pool_size_has_a_price_row():
    assert set(VM_SIZES) == set(az.VM_USD_HOUR)
    for size, rate in az.VM_USD_HOUR.items():
        assert rate.on_demand and rate.source
        if VM_SIZES[size].gpus:
            # Every GPU size can run as Spot: its Spot price was read.
            assert rate.spot and rate.spot < rate.on_demand


def test_disks_bill_as_the_premium_tier_that_holds_them():
    assert az.disk_tier_gib(50) == 64 and az.disk_tier_gib(200) == 256
    assert az.disk_tier_gib(64) == 64


def test_an_azure_budget_below_the_idle_cost_is_warned_about(tmp_path):
    path = stack_with(
        tmp_path, ("raygpu:budgetMonthlyUsd: 800", "raygpu:budgetMonthlyUsd: 150")
    )
    note = plan.plan(STACK, path)["cost"]["budget_note"]
    assert note and note.startswith("raygpu:budgetMonthlyUsd (150)")


def test_a_cloud_without_a_price_table_is_one_line():
    from raygpu.errors import UsageError

    with pytest.raises(UsageError, match="no price table for 'oracle' yet"):
        plan.estimate_cost(offline.OfflineRun(), "eastus", cloud="oracle")
