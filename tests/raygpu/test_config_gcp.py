"""`raygpu:cloud` and the Google Cloud stack model: the key picks the model, AWS
stays the default, every GCP key is validated and documented like the AWS ones."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from raygpu import config
from raygpu.config import ConfigError, load_config, load_stack_file
from raygpu.config.gcp import GcpStackConfig
from raygpu.config.table import GCP_END, GCP_START, key_fields, with_table

ROOT = Path(__file__).resolve().parents[2]
GOOD = {
    "cloud": "gcp",
    "gcp:project": "my-project-123",
    "gcp:region": "us-central1",
    "gcpZones": ["us-central1-a"],
    "gpuPools": [
        {
            "name": "l4",
            "machineType": "g2-standard-8",
            "acceleratorType": "nvidia-l4",
            "acceleratorCount": 1,
        }
    ],
    "billingAccount": "012345-6789AB-CDEF01",
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


def test_cloud_picks_the_model_and_aws_is_the_default():
    aws = {
        "aws:region": "us-east-1",
        "gpuPools": [{"name": "a10g", "instanceTypes": ["g5.xlarge"]}],
        "budgetMonthlyUsd": 300,
    }
    assert load_config("dev", aws).cloud == "aws"
    assert load_config("dev", {**aws, "cloud": "aws"}) == load_config("dev", aws)
    cfg = load_config("dev", GOOD)
    assert isinstance(cfg, GcpStackConfig)
    assert (cfg.cloud, cfg.region, cfg.gcp_project) == (
        "gcp",
        "us-central1",
        "my-project-123",
    )
    assert cfg.workload_pool == "my-project-123.svc.id.goog"
    assert cfg.name_prefix == "raygpu-dev"


@pytest.mark.parametrize(
    ("cloud", "words"),
    [("gce", "must be one of aws, gcp, azure, got 'gce'")],
)  # fmt: skip
def test_an_unsupported_cloud_is_one_line_naming_the_key(cloud, words):
    assert errors_of(with_(cloud=cloud)) == {"raygpu:cloud": words}


def test_gcp_keys_are_required_and_aws_keys_unknown():
    values = with_(**{"aws:region": "us-east-1"})
    for key in ("gcp:project", "billingAccount", "gcpZones"):
        del values[key]
    errors = errors_of(values)
    assert errors["gcp:project"].startswith("is required (set it with")
    assert errors["raygpu:billingAccount"].startswith("is required")
    assert errors["raygpu:gcpZones"].startswith("is required")
    assert "is not a known key" in errors["aws:region"]


def test_every_bad_gcp_key_is_reported_at_once():
    pools = [
        {"name": "a", "machineType": "g2-standard-8",
         "acceleratorType": "nvidia-tesla-t4", "acceleratorCount": 1},
        {"name": "b", "machineType": "n1-standard-8",
         "acceleratorType": "nvidia-tesla-t4", "acceleratorCount": 3},
        {"name": "c", "machineType": "e2-standard-4",
         "acceleratorType": "nvidia-l4", "acceleratorCount": 1},
    ]  # fmt: skip
    errors = errors_of(
        with_(
            gcpZones=["us-east1-b"],
            podsCidr="10.10.0.0/16",
            masterCidr="172.16.0.0/24",
            masterAuthorizedCidrs=["0.0.0.0/0"],
            releaseChannel="NIGHTLY",
            billingAccount="12345",
            systemPool={"machineType": "g2-standard-4"},
            gpuPools=pools,
            rayWorkerServiceAccount="ray-workload",
        )
    )
    assert errors["raygpu:gcpZones[0]"] == (
        "us-east1-b is not a zone of gcp:region us-central1"
    )
    assert (
        errors["raygpu:podsCidr"] == "10.10.0.0/16 overlaps 10.10.0.0/20 (subnetCidr)"
    )
    assert errors["raygpu:masterCidr"] == "prefix length must be /28, got /24"
    assert "never 0.0.0.0/0" in errors["raygpu:masterAuthorizedCidrs[0]"]
    assert "STABLE, REGULAR, RAPID" in errors["raygpu:releaseChannel"]
    assert "012345-6789AB-CDEF01" in errors["raygpu:billingAccount"]
    assert "is a GPU machine type" in errors["raygpu:systemPool.machineType"]
    assert errors["raygpu:gpuPools[0].acceleratorType"] == (
        "g2-standard-8 takes nvidia-l4, got 'nvidia-tesla-t4'"
    )
    assert errors["raygpu:gpuPools[1].acceleratorCount"] == (
        "n1-standard-8 with nvidia-tesla-t4 takes 1, 2, 4 GPUs, got 3"
    )
    assert "not a known GPU machine type" in errors["raygpu:gpuPools[2].machineType"]
    # A shared key keeps its AWS validator.
    assert "workers need their own account" in errors["raygpu:rayWorkerServiceAccount"]


def test_public_authorized_networks_are_narrow_and_private_ones_any():
    errors = errors_of(with_(masterAuthorizedCidrs=["8.8.0.0/16"]))
    assert "wider than a /24" in errors["raygpu:masterAuthorizedCidrs[0]"]
    cfg = load_config("dev", with_(masterAuthorizedCidrs=["10.0.0.0/8", "8.8.8.8/32"]))
    assert cfg.master_authorized_cidrs == ("10.0.0.0/8", "8.8.8.8/32")


def test_the_head_must_fit_the_gcp_system_machine():
    errors = errors_of(with_(rayHeadCpu="4"))
    assert "fit the smallest system instance" in errors["raygpu:rayHeadCpu"]
    cfg = load_config("dev", with_(systemPool={"machineType": "n2-standard-8"},
                                   rayHeadCpu="4"))  # fmt: skip
    assert cfg.ray_head_cpu == "4"


def test_gpu_pools_offer_what_the_manifests_read():
    cfg = load_config("dev", GOOD)
    (pool,) = cfg.gpu_pools
    assert (pool.vcpus, pool.memory_gib, pool.gpus_per_node) == (8, 32, 1)
    assert pool.gpu_model == "L4"
    assert pool.taints == (("nvidia.com/gpu", "present", "NoSchedule"),)
    assert (pool.min_size, pool.max_size) == (0, 2)


def test_engine_strings_round_trip_for_gcp():
    engine = config.engine_values(GOOD)
    assert engine["gcp:project"] == "my-project-123"
    assert engine["raygpu:cloud"] == "gcp"
    assert config.values_from_engine(engine) == GOOD


def test_committed_gcp_stack_file_loads_and_spells_out_every_key():
    path = ROOT / "Pulumi.gcp-dev.yaml"
    cfg = load_stack_file(path)
    assert cfg.cloud == "gcp" and cfg.stack == "gcp-dev"
    values = config.stack_file_values(path)
    for key, _ in key_fields(GcpStackConfig):
        head = key.split("[")[0].split(".")[0].removeprefix("raygpu:")
        assert head in values, key
    assert cfg.master_authorized_cidrs and all(
        c != "0.0.0.0/0" for c in cfg.master_authorized_cidrs
    )
    assert all(p.min_size == 0 for p in cfg.gpu_pools)


def test_docs_hold_the_generated_gcp_table():
    doc = (ROOT / "docs" / "config.md").read_text()
    assert with_table(doc, GcpStackConfig, (GCP_START, GCP_END)) == doc, (
        "run `python -m raygpu.config --write`"
    )
    for key, info in key_fields(GcpStackConfig):
        assert f"| `{key}` |" in doc, key
        assert info.description, key
