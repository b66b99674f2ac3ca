"""The Azure stack model: `raygpu:cloud: azure` picks it, every Azure key is
validated (errors name the key and what is allowed) and documented like the AWS
ones, and the committed example spells out every key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from raygpu import clouds, config, manifests
from raygpu.config import ConfigError, load_config, load_stack_file
from raygpu.config.azure import AzureStackConfig
from raygpu.config.table import AZURE_END, AZURE_START, key_fields, with_table

ROOT = Path(__file__).resolve().parents[2]
SUBSCRIPTION = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
GOOD = {
    "cloud": "azure",
    "azure-native:subscriptionId": SUBSCRIPTION,
    "azure-native:location": "eastus2",
    "gpuPools": [{"name": "t4", "vmSize": "Standard_NC4as_T4_v3"}],
    "budgetMonthlyUsd": 300,
}


def errors_of(values: dict) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_config("dev", values)
    assert "\n" not in str(info.value)
    return dict(info.value.errors)


def with_(**changes) -> dict:
    values = copy.deepcopy(GOOD)
    values.update(changes)
    return values


def test_cloud_azure_picks_the_azure_model_with_its_defaults():
    cfg = load_config("dev", GOOD)
    assert isinstance(cfg, AzureStackConfig)
    assert (cfg.cloud, cfg.region, cfg.subscription_id) == (
        "azure",
        "eastus2",
        SUBSCRIPTION,
    )
    assert clouds.of(cfg) is clouds.AZURE
    assert cfg.resource_group == "rg-raygpu-dev"
    assert load_config("dev", with_(resourceGroupName="rg-x")).resource_group == "rg-x"
    assert cfg.api_server_authorized_cidrs == ()  # a private cluster by default
    assert cfg.dns_service_ip == "10.40.0.10"
    assert cfg.tags == {"raygpu:stack": "dev", "raygpu:project": "raygpu"}
    assert "azure" not in clouds.PLANNED


def test_azure_keys_are_required_and_other_clouds_keys_unknown():
    values = with_(**{"aws:region": "us-east-1", "gcp:project": "my-project-123"})
    del values["azure-native:subscriptionId"], values["azure-native:location"]
    errors = errors_of(values)
    assert errors["azure-native:subscriptionId"].startswith("is required (set it with")
    assert errors["azure-native:location"].startswith("is required (set it with")
    assert "is not a known key" in errors["aws:region"]
    assert "is not a known key" in errors["gcp:project"]


def test_every_bad_azure_key_is_reported_at_once():
    pools = [
        {"name": "t4", "vmSize": "Standard_D4s_v5"},
        {"name": "gpu-pool-one", "vmSize": "Standard_NC99_v9"},
        {"name": "a", "vmSize": "Standard_NC24ads_A100_v4", "minSize": 3,
         "maxSize": 2},
    ]  # fmt: skip
    errors = errors_of(
        with_(
            **{"azure-native:subscriptionId": "not-a-guid"},
            **{"azure-native:location": "East US"},
            resourceGroupName="rg.",
            vnetCidr="8.8.0.0/16",
            nodeSubnetCidr="10.31.0.0/20",
            serviceCidr="10.244.0.0/16",
            apiServerAuthorizedCidrs=["0.0.0.0/0", "8.8.0.0/16"],
            clusterVersion="1.28",
            deployerPrincipalType="Group",
            systemPool={"vmSize": "Standard_NC4as_T4_v3"},
            gpuPools=pools,
            rayWorkerServiceAccount="ray-workload",
        )
    )
    assert "a subscription ID" in errors["azure-native:subscriptionId"]
    assert "an Azure region name" in errors["azure-native:location"]
    assert "not ending in '.'" in errors["raygpu:resourceGroupName"]
    assert "must be a private range" in errors["raygpu:vnetCidr"]
    # vnetCidr failed: the subnet has nothing to be checked against, the rest do.
    assert "raygpu:nodeSubnetCidr" not in errors
    assert errors["raygpu:serviceCidr"] == (
        "10.244.0.0/16 overlaps 10.244.0.0/16 (podCidr)"
    )
    assert "never 0.0.0.0/0" in errors["raygpu:apiServerAuthorizedCidrs[0]"]
    assert "wider than a /24" in errors["raygpu:apiServerAuthorizedCidrs[1]"]
    assert errors["raygpu:clusterVersion"] == "must be 1.30 or newer, got '1.28'"
    assert "one of User, ServicePrincipal" in errors["raygpu:deployerPrincipalType"]
    assert "is a GPU VM size" in errors["raygpu:systemPool.vmSize"]
    assert "is a CPU VM size" in errors["raygpu:gpuPools[0].vmSize"]
    assert "1-12 lowercase letters" in errors["raygpu:gpuPools[1].name"]
    assert "not a known GPU VM size" in errors["raygpu:gpuPools[1].vmSize"]
    assert errors["raygpu:gpuPools[2].maxSize"] == "must be >= minSize (3), got 2"
    # A shared key keeps its AWS validator.
    assert "workers need their own account" in errors["raygpu:rayWorkerServiceAccount"]


def test_the_ranges_nest_and_stay_apart():
    errors = errors_of(with_(nodeSubnetCidr="10.31.0.0/20", podCidr="10.30.128.0/17"))
    assert errors["raygpu:nodeSubnetCidr"] == (
        "10.31.0.0/20 is not inside vnetCidr 10.30.0.0/16"
    )
    assert errors["raygpu:podCidr"] == "10.30.128.0/17 overlaps 10.30.0.0/16 (vnetCidr)"
    errors = errors_of(with_(serviceCidr="10.244.0.0/20"))
    assert errors == {
        "raygpu:serviceCidr": "10.244.0.0/20 overlaps 10.244.0.0/16 (podCidr)"
    }
    errors = errors_of(with_(podCidr="10.64.0.0/24"))
    assert errors == {
        "raygpu:podCidr": "prefix length must be between /12 and /20, got /24"
    }


def test_the_head_must_fit_the_azure_system_size():
    errors = errors_of(with_(systemPool={"vmSize": "Standard_D2s_v5"}))
    assert "fit the smallest system instance" in errors["raygpu:rayHeadCpu"]


def test_gpu_pools_offer_what_the_manifests_read():
    pools = [
        {"name": "t4", "vmSize": "Standard_NC64as_T4_v3"},
        {"name": "a100", "vmSize": "Standard_NC24ads_A100_v4", "spot": True},
        {"name": "a10", "vmSize": "Standard_NV36ads_A10_v5"},
    ]
    t4, a100, a10 = load_config("dev", with_(gpuPools=pools)).gpu_pools
    assert (t4.vcpus, t4.memory_gib, t4.gpus_per_node, t4.gpu_model) == (
        64, 440, 4, "T4"
    )  # fmt: skip
    assert (a100.gpu_model, a10.gpu_model) == ("A100-80G", "A10")
    gpu_taint = ("nvidia.com/gpu", "true", "NoSchedule")
    assert t4.taints == (gpu_taint,)
    assert a100.taints == (
        gpu_taint,
        ("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule"),
    )
    assert (t4.min_size, t4.max_size) == (0, 2)
    assert t4.node_labels["raygpu.io/pool"] == "t4"


def test_engine_strings_round_trip_for_azure():
    values = with_(apiServerAuthorizedCidrs=["198.18.0.0/24"])
    engine = config.engine_values(values)
    assert engine["azure-native:location"] == "eastus2"
    assert engine["raygpu:apiServerAuthorizedCidrs"] == '["198.18.0.0/24"]'
    assert config.values_from_engine(engine) == values


def test_committed_azure_stack_file_loads_and_spells_out_every_key():
    path = ROOT / "Pulumi.azure-dev.yaml"
    cfg = load_stack_file(path)
    assert cfg.cloud == "azure" and cfg.stack == "azure-dev"
    values = config.stack_file_values(path)
    for key, _ in key_fields(AzureStackConfig):
        head = key.split("[")[0].split(".")[0].removeprefix("raygpu:")
        assert head in values, key
    assert cfg.api_server_authorized_cidrs and all(
        c != "0.0.0.0/0" for c in cfg.api_server_authorized_cidrs
    )
    assert all(p.min_size == 0 for p in cfg.gpu_pools)


def test_docs_hold_the_generated_azure_table():
    doc = (ROOT / "docs" / "config.md").read_text()
    assert with_table(doc, AzureStackConfig, (AZURE_START, AZURE_END)) == doc, (
        "run `python -m raygpu.config --write`"
    )
    for key, info in key_fields(AzureStackConfig):
        assert f"| `{key}` |" in doc, key
        assert info.description, key


def test_ray_pods_carry_azure_data_and_other_clouds_render_without_it():
    """raygpu.manifests reads the cloud's row: on Azure the workload identity
    label on every Ray pod and the Spot taint's toleration on a Spot pool's
    workers; AWS and GCP pods get neither."""
    refs = manifests.ClusterRefs("d", "a", "client-id")
    pools = [
        {"name": "spot", "vmSize": "Standard_NC4as_T4_v3", "spot": True},
        {"name": "ondemand", "vmSize": "Standard_NC4as_T4_v3"},
    ]
    spec = manifests.raycluster_spec(load_config("dev", with_(gpuPools=pools)), refs)
    head = spec["headGroupSpec"]["template"]["metadata"]["labels"]
    assert head["azure.workload.identity/use"] == "true"
    spot, ondemand = spec["workerGroupSpecs"]
    for group in (spot, ondemand):
        labels = group["template"]["metadata"]["labels"]
        assert labels["azure.workload.identity/use"] == "true"
    keys = [t["key"] for t in spot["template"]["spec"]["tolerations"]]
    assert keys == ["nvidia.com/gpu", "kubernetes.azure.com/scalesetpriority"]
    assert [t["key"] for t in ondemand["template"]["spec"]["tolerations"]] == [
        "nvidia.com/gpu"
    ]
    sa = manifests.service_account_manifest(load_config("dev", GOOD), refs)
    assert sa["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": "client-id"
    }
    for path in ("Pulumi.dev.yaml", "Pulumi.gcp-dev.yaml"):
        other = load_stack_file(ROOT / path)
        spec = manifests.raycluster_spec(other, refs)
        head = spec["headGroupSpec"]["template"]["metadata"]["labels"]
        assert head == manifests.common_labels(other), path
        for group in spec["workerGroupSpecs"]:
            assert len(group["template"]["spec"]["tolerations"]) == 1, path
