"""The config model's own guarantees: each key declared once (with its
description), the docs table generated from it, every bad key reported at once,
unknown keys answered with the closest known one."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from raygpu import config
from raygpu.config import ConfigError, load_config
from raygpu.config.table import END, START, key_fields, with_table

ROOT = Path(__file__).resolve().parents[2]
GOOD = {
    "aws:region": "us-east-1",
    "gpuPools": [{"name": "a10g", "instanceTypes": ["g5.xlarge"]}],
    "budgetMonthlyUsd": 300,
}


def errors_of(values: dict) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_config("dev", values)
    assert "\n" not in str(info.value)
    return dict(info.value.errors)


def test_every_key_has_a_description_and_a_type():
    paths = [path for path, _ in key_fields()]
    assert len(paths) == len(set(paths)) > 30
    for path, info in key_fields():
        assert info.description and info.description[0].isupper(), path
        assert info.annotation is not None, path


def test_docs_config_table_is_the_generated_one():
    doc = (ROOT / "docs" / "config.md").read_text()
    assert START in doc and END in doc
    assert with_table(doc) == doc, "run `python -m raygpu.config --write`"
    table = config.config_table()
    assert table.count("\n") == len(config.key_paths()) + 2
    for path in config.key_paths():
        assert f"| `{path}` |" in table, path


def test_the_table_shows_what_the_model_declares():
    rows = {
        line.split(" | ")[0].strip("| `"): line.split(" | ")
        for line in config.config_table().splitlines()[2:]
    }
    assert rows["raygpu:azCount"][1:4] == ["integer", "`3`", "2..6"]
    assert rows["raygpu:gpuPools"][2:4] == ["**required**", "1..10 entries"]
    assert rows["raygpu:natGatewayMode"][3] == "`single`, `per_az`"
    assert rows["raygpu:clusterVersion"][2] == '`"1.33"`'  # quoted: YAML reads 1.33
    assert rows["raygpu:gpuPools[i].desiredSize"][2] == "minSize"
    assert rows["raygpu:budgetMonthlyUsd"][3] == "> 0"
    assert "IPv4 CIDR" in rows["raygpu:vpcCidr"][3]


@pytest.mark.parametrize(
    ("path", "typo", "meant"),
    [
        ("", "azcount", "azCount"),
        ("", "vpcCIDR", "vpcCidr"),
        ("", "gpuPool", "gpuPools"),
        ("", "az_count", "azCount"),  # field names are not stack-file keys
        ("systemPool", "minsize", "minSize"),
        ("systemPool", "instanceType", "instanceTypes"),
        ("gpuPools.0", "capacity_type", "capacityType"),
        ("gpuPools.0", "diskSizeGiB", "diskSizeGib"),
    ],
)
def test_an_unknown_key_names_the_closest_known_one(path, typo, meant):
    values = copy.deepcopy(GOOD)
    values.setdefault("systemPool", {})
    node = values
    for part in filter(None, path.split(".")):
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[typo] = 1
    full = "raygpu:" + ".".join(filter(None, [path, typo])).replace(".0.", "[0].")
    message = errors_of(values)[full]
    assert message.startswith(f"is not a known key (did you mean {meant}?)"), message
    if path:  # nested: the allowed keys are listed
        assert meant in message.split("allowed: ")[1]


def test_an_unknown_key_far_from_any_suggests_nothing():
    message = errors_of({**GOOD, "colour": "blue"})["raygpu:colour"]
    assert message == "is not a known key; see docs/config.md"


def test_the_stack_and_project_names_are_not_keys():
    found = errors_of({**GOOD, "stack": "prod", "project": "x"})
    assert set(found) == {"raygpu:stack", "raygpu:project"}


def test_cross_key_rules_are_not_hidden_by_other_bad_keys():
    values = {
        **GOOD,
        "azCount": 2,
        "colour": "blue",  # an unknown key
        "budgetMonthlyUsd": "lots",  # a type error
        "publicSubnetCidrs": ["10.0.0.0/24", "10.0.1.0/24"],
        "privateSubnetCidrs": ["10.0.0.128/25", "10.9.0.0/18"],
        "clusterCreatorAdmin": False,
        "systemPool": {"instanceTypes": ["m6i.large"]},
        "rayHeadMemory": "64Gi",
        "gpuPools": [
            {"name": "a", "instanceTypes": ["g5.xlarge"], "minSize": 2, "maxSize": 1},
            {"name": "a", "instanceTypes": ["g5.xlarge"], "diskSizeGib": 1},
        ],
    }
    found = errors_of(values)
    assert {
        "raygpu:colour",
        "raygpu:budgetMonthlyUsd",
        "raygpu:privateSubnetCidrs[0]",  # overlaps a public subnet
        "raygpu:privateSubnetCidrs[1]",  # outside the VPC
        "raygpu:clusterCreatorAdmin",
        "raygpu:rayHeadCpu",  # the default "2" does not fit an m6i.large
        "raygpu:gpuPools[0].maxSize",
        "raygpu:gpuPools[1].diskSizeGib",
    } <= set(found), found
    assert "overlaps 10.0.0.0/24" in found["raygpu:privateSubnetCidrs[0]"]
    assert "not inside vpcCidr" in found["raygpu:privateSubnetCidrs[1]"]


def test_every_message_says_what_was_given():
    found = errors_of({**GOOD, "azCount": 9, "natGatewayMode": "many"})
    assert found["raygpu:azCount"].endswith(", got 9")
    assert found["raygpu:natGatewayMode"] == "must be one of single, per_az, got 'many'"


def test_nested_models_are_frozen_too():
    cfg = load_config("dev", GOOD)
    with pytest.raises(AttributeError):
        cfg.gpu_pools[0].max_size = 9  # type: ignore[misc]
    with pytest.raises(AttributeError):
        cfg.system_pool.min_size = 9  # type: ignore[misc]


def test_values_from_engine_decode_by_the_declared_type():
    engine = {
        "raygpu:clusterVersion": "1.33",  # text stays text
        "raygpu:rayHeadCpu": "2",
        "raygpu:azCount": "2",  # numbers, lists and maps are JSON
        "raygpu:gpuPools": '[{"name": "a", "instanceTypes": ["g5.xlarge"]}]',
        "raygpu:budgetAlertEmail": "",
        "raygpu:unknownKey": "7",  # left as text; validation names it
        "aws:region": "us-east-1",
        "aws:profile": "ignored",
    }
    assert config.values_from_engine(engine) == {
        "clusterVersion": "1.33",
        "rayHeadCpu": "2",
        "azCount": 2,
        "gpuPools": [{"name": "a", "instanceTypes": ["g5.xlarge"]}],
        "budgetAlertEmail": "",
        "unknownKey": "7",
        "aws:region": "us-east-1",
    }
