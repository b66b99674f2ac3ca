"""Stack configuration: the committed stacks load, and bad values are rejected with
the key named. Plain pytest, no Pulumi engine."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from raygpu import config, instance_types, names, versions
from raygpu.config import ConfigError, load_config, load_stack_file
from tests.infra.infra_helpers import CONTRACT_OUTPUTS

ROOT = Path(__file__).resolve().parents[2]


def good_values() -> dict:
    return {
        "aws:region": "us-east-1",
        "gpuPools": [
            {
                "name": "a10g",
                "instanceTypes": ["g5.xlarge"],
                "capacityType": "SPOT",
                "maxSize": 2,
            }
        ],
        "budgetMonthlyUsd": 300,
    }


def with_(path: str, value, base: dict | None = None) -> dict:
    """good_values() with `path` ("gpuPools.0.maxSize") set; value DELETE removes it."""
    values = copy.deepcopy(base or good_values())
    node = values
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return values


DELETE = object()


def written(values: dict, path: str) -> bool:
    """Whether a stack file's values spell out the key at `path` (for
    `gpuPools[i].x`: in every pool)."""
    if path == "aws:region":
        return path in values
    head, *rest = path.removeprefix("raygpu:").split(".")
    many = head.endswith("[i]")
    node = values.get(head.removesuffix("[i]"))
    if node is None:
        return False
    if not rest:
        return True
    return all(rest[0] in n for n in (node if many else [node]))


POOL = "raygpu:gpuPools[0]"

# (id, values, key the error must name, a word the message must contain)
BAD = [
    ("missing-region", with_("aws:region", DELETE), "aws:region", "required"),
    ("bad-region", with_("aws:region", "Virginia"), "aws:region", "region"),
    ("missing-gpu-pools", with_("gpuPools", DELETE), "raygpu:gpuPools", "required"),
    ("missing-budget", with_("budgetMonthlyUsd", DELETE), "raygpu:budgetMonthlyUsd",
     "required"),
    ("az-count-zero", with_("azCount", 0), "raygpu:azCount", "between 2 and 6"),
    ("az-count-seven", with_("azCount", 7), "raygpu:azCount", "between 2 and 6"),
    ("az-count-one", with_("azCount", 1), "raygpu:azCount", "two Availability Zones"),
    ("az-count-string", with_("azCount", "three"), "raygpu:azCount", "integer"),
    ("vpc-cidr-unparsable", with_("vpcCidr", "10.0.0.0/33"), "raygpu:vpcCidr", "CIDR"),
    ("vpc-cidr-garbage", with_("vpcCidr", "banana"), "raygpu:vpcCidr", "CIDR"),
    ("vpc-cidr-host-bits", with_("vpcCidr", "10.0.0.1/16"), "raygpu:vpcCidr",
     "did you mean 10.0.0.0/16"),
    ("vpc-cidr-public", with_("vpcCidr", "8.8.0.0/16"), "raygpu:vpcCidr", "private"),
    ("vpc-cidr-too-small", with_("vpcCidr", "10.0.0.0/24"), "raygpu:vpcCidr", "/20"),
    ("subnets-overlap",
     {**good_values(), "azCount": 2,
      "publicSubnetCidrs": ["10.0.0.0/24", "10.0.1.0/24"],
      "privateSubnetCidrs": ["10.0.0.128/25", "10.0.64.0/18"]},
     "raygpu:privateSubnetCidrs[0]", "overlaps"),
    ("subnet-outside-vpc",
     {**good_values(), "azCount": 2,
      "publicSubnetCidrs": ["10.0.0.0/24", "10.1.0.0/24"],
      "privateSubnetCidrs": ["10.0.64.0/18", "10.0.128.0/18"]},
     "raygpu:publicSubnetCidrs[1]", "not inside"),
    ("subnets-wrong-count",
     {**good_values(), "azCount": 3,
      "publicSubnetCidrs": ["10.0.0.0/24"],
      "privateSubnetCidrs": ["10.0.64.0/18"]},
     "raygpu:publicSubnetCidrs", "one subnet per AZ"),
    ("subnets-only-one-list", {**good_values(), "publicSubnetCidrs": ["10.0.0.0/24"]},
     "raygpu:publicSubnetCidrs", "together"),
    ("nat-mode-unknown", with_("natGatewayMode", "none"), "raygpu:natGatewayMode",
     "single, per_az"),
    ("cluster-version-float", with_("clusterVersion", 1.3), "raygpu:clusterVersion",
     "quoted"),
    ("cluster-version-old", with_("clusterVersion", "1.24"), "raygpu:clusterVersion",
     "1.30 or newer"),
    ("endpoint-open-to-world", with_("publicEndpointCidrs", ["0.0.0.0/0"]),
     "raygpu:publicEndpointCidrs[0]", "never 0.0.0.0/0"),
    ("endpoint-too-broad", with_("publicEndpointCidrs", ["0.0.0.0/1"]),
     "raygpu:publicEndpointCidrs[0]", "internet"),
    ("endpoint-cidr-garbage", with_("publicEndpointCidrs", ["office"]),
     "raygpu:publicEndpointCidrs[0]", "CIDR"),
    ("endpoint-cidrs-not-list", with_("publicEndpointCidrs", "1.2.3.4/32"),
     "raygpu:publicEndpointCidrs", "list"),
    ("endpoint-ipv6", with_("publicEndpointCidrs", ["2001:db8::/32"]),
     "raygpu:publicEndpointCidrs[0]", "IPv4"),
    ("admin-arn-garbage", with_("adminPrincipalArns", ["alice"]),
     "raygpu:adminPrincipalArns[0]", "ARN"),
    ("admin-arn-assumed-role",
     with_("adminPrincipalArns", ["arn:aws:sts::123456789012:assumed-role/a/b"]),
     "raygpu:adminPrincipalArns[0]", "IAM role ARN"),
    ("no-admin-at-all", with_("clusterCreatorAdmin", False),
     "raygpu:clusterCreatorAdmin", "nobody"),
    ("system-pool-gpu-type", with_("systemPool", {"instanceTypes": ["g5.xlarge"]}),
     "raygpu:systemPool.instanceTypes[0]", "GPU instance type"),
    ("system-pool-min-zero", with_("systemPool", {"minSize": 0}),
     "raygpu:systemPool.minSize", "between 1"),
    ("system-pool-not-object", with_("systemPool", "m6i.xlarge"), "raygpu:systemPool",
     "object"),
    ("gpu-pools-empty", with_("gpuPools", []), "raygpu:gpuPools", "between 1"),
    ("gpu-pool-not-gpu", with_("gpuPools.0.instanceTypes", ["m6i.xlarge"]),
     f"{POOL}.instanceTypes[0]", "not a GPU instance type"),
    ("gpu-pool-unknown-type", with_("gpuPools.0.instanceTypes", ["g9.mega"]),
     f"{POOL}.instanceTypes[0]", "not a known instance type"),
    ("gpu-pool-no-types", with_("gpuPools.0.instanceTypes", []),
     f"{POOL}.instanceTypes", "at least one"),
    ("gpu-pool-missing-types", with_("gpuPools.0.instanceTypes", DELETE),
     f"{POOL}.instanceTypes", "required"),
    ("gpu-pool-mixed-models", with_("gpuPools.0.instanceTypes", ["g5.xlarge",
                                                                 "g6.xlarge"]),
     f"{POOL}.instanceTypes", "same GPU model"),
    ("gpu-pool-capacity", with_("gpuPools.0.capacityType", "PREEMPTIBLE"),
     f"{POOL}.capacityType", "ON_DEMAND, SPOT"),
    ("gpu-pool-min-gt-max", with_("gpuPools.0.minSize", 3), f"{POOL}.maxSize",
     "must be >= minSize (3)"),
    ("gpu-pool-negative-min", with_("gpuPools.0.minSize", -1), f"{POOL}.minSize",
     "between 0"),
    ("gpu-pool-negative-max", with_("gpuPools.0.maxSize", -2), f"{POOL}.maxSize",
     "between 1"),
    ("gpu-pool-desired-above-max", with_("gpuPools.0.desiredSize", 5),
     f"{POOL}.desiredSize", "between minSize (0) and maxSize (2)"),
    ("gpu-pool-size-float", with_("gpuPools.0.maxSize", 2.5), f"{POOL}.maxSize",
     "integer"),
    ("gpu-pool-size-bool", with_("gpuPools.0.maxSize", True), f"{POOL}.maxSize",
     "integer"),
    ("gpu-pool-small-disk", with_("gpuPools.0.diskSizeGib", 20), f"{POOL}.diskSizeGib",
     "between 100"),
    ("gpu-pool-bad-name", with_("gpuPools.0.name", "GPU_Pool"), f"{POOL}.name",
     "lowercase"),
    ("gpu-pool-missing-name", with_("gpuPools.0.name", DELETE), f"{POOL}.name",
     "required"),
    ("gpu-pool-typo-key", with_("gpuPools.0.maxNodes", 4), f"{POOL}.maxNodes",
     "not a known key"),
    ("gpu-pool-duplicate-name",
     with_("gpuPools.1", {"name": "a10g", "instanceTypes": ["g5.2xlarge"]},
           base=with_("gpuPools", [good_values()["gpuPools"][0], {}])),
     "raygpu:gpuPools[1].name", "unique"),
    ("budget-negative", with_("budgetMonthlyUsd", -5), "raygpu:budgetMonthlyUsd",
     "positive"),
    ("budget-zero", with_("budgetMonthlyUsd", 0), "raygpu:budgetMonthlyUsd",
     "positive"),
    ("budget-string", with_("budgetMonthlyUsd", "lots"), "raygpu:budgetMonthlyUsd",
     "number"),
    ("budget-email", with_("budgetAlertEmail", "not-an-email"),
     "raygpu:budgetAlertEmail", "email"),
    ("budget-scope", with_("budgetScope", "org"), "raygpu:budgetScope", "account"),
    ("protect-not-bool", with_("protectDataBucket", "yes"), "raygpu:protectDataBucket",
     "true or false"),
    ("noncurrent-days-zero", with_("noncurrentVersionExpirationDays", 0),
     "raygpu:noncurrentVersionExpirationDays", "between 1"),
    ("flow-log-retention", with_("flowLogRetentionDays", 10),
     "raygpu:flowLogRetentionDays", "one of"),
    ("flow-log-retention-float", with_("flowLogRetentionDays", 30.0),
     "raygpu:flowLogRetentionDays", "one of"),
    ("ray-namespace", with_("rayNamespace", "Ray_NS"), "raygpu:rayNamespace",
     "Kubernetes name"),
    ("ray-service-account", with_("rayServiceAccount", "-sa"),
     "raygpu:rayServiceAccount", "Kubernetes name"),
    ("ray-idle-timeout", with_("rayIdleTimeoutSeconds", 5),
     "raygpu:rayIdleTimeoutSeconds", "between 30"),
    ("ray-head-cpu-too-big", with_("rayHeadCpu", "16"), "raygpu:rayHeadCpu",
     "smallest system instance"),
    ("ray-head-cpu-garbage", with_("rayHeadCpu", "two"), "raygpu:rayHeadCpu",
     "CPU quantity"),
    ("ray-head-memory-too-big", with_("rayHeadMemory", "64Gi"), "raygpu:rayHeadMemory",
     "smallest system instance"),
    ("serve-ingress", with_("serveIngress", "nginx"), "raygpu:serveIngress",
     "one of proxy, haproxy"),
    ("serve-ingress-case", with_("serveIngress", "HAProxy"), "raygpu:serveIngress",
     "one of proxy, haproxy"),
    ("unknown-key", with_("gpuPool", []), "raygpu:gpuPool", "not a known key"),
    ("unknown-key-case", with_("azcount", 3), "raygpu:azcount", "did you mean azCount"),
]  # fmt: skip


def test_table_is_large_enough():
    assert len(BAD) >= 20
    assert len({case[0] for case in BAD}) == len(BAD)


@pytest.mark.parametrize(
    ("values", "key", "words"), [case[1:] for case in BAD], ids=[c[0] for c in BAD]
)
def test_bad_config_is_rejected_naming_its_key(values, key, words):
    with pytest.raises(ConfigError) as info:
        load_config("dev", values)
    err = info.value
    assert key in err.keys, f"{key} not among {err.keys}: {err}"
    message = dict(err.errors)[key]
    assert words in message, message
    assert isinstance(err, ValueError)
    # str() names the key with its message, on one line.
    assert f"{key}: " in str(err) and "\n" not in str(err)


def test_good_values_load():
    cfg = load_config("dev", good_values())
    assert cfg.region == "us-east-1"
    assert cfg.az_count == 3
    assert cfg.cluster_version == versions.KUBERNETES_VERSION
    pool = cfg.gpu_pools[0]
    assert (pool.min_size, pool.desired_size, pool.max_size) == (0, 0, 2)
    assert pool.disk_size_gib == 200
    assert pool.gpu_model == "A10G" and pool.gpus_per_node == 1
    assert pool.node_labels[names.POOL_LABEL] == "a10g"
    assert pool.taints == (("nvidia.com/gpu", "true", "NoSchedule"),)
    assert cfg.tags == {"raygpu:stack": "dev", "raygpu:project": "raygpu"}
    assert cfg.public_endpoint_cidrs == ()
    assert cfg.protect_data_bucket is True
    assert cfg.budget_alert_email is None


def test_all_errors_are_collected_not_only_the_first():
    values = with_("azCount", 9, with_("budgetMonthlyUsd", -1))
    values["gpuPools"][0]["minSize"] = 5
    with pytest.raises(ConfigError) as info:
        load_config("dev", values)
    assert {
        "raygpu:azCount",
        "raygpu:budgetMonthlyUsd",
        f"{POOL}.maxSize",
    } <= set(info.value.keys)


def test_bad_stack_name_is_rejected():
    with pytest.raises(ConfigError) as info:
        load_config("Dev Stack", good_values())
    assert info.value.key == "stack"


def test_default_subnets_do_not_overlap_for_every_az_count_and_size():
    for prefix in (16, 18, 20):
        for azs in range(2, 7):
            cfg = load_config(
                "dev",
                {**good_values(), "azCount": azs, "vpcCidr": f"10.0.0.0/{prefix}"},
            )
            import ipaddress

            nets = [
                ipaddress.ip_network(n)
                for n in cfg.public_subnet_cidrs + cfg.private_subnet_cidrs
            ]
            assert len(nets) == 2 * azs
            vpc = ipaddress.ip_network(cfg.vpc_cidr)
            assert all(n.subnet_of(vpc) for n in nets)
            for i, a in enumerate(nets):
                for b in nets[i + 1 :]:
                    assert not a.overlaps(b), (prefix, azs, a, b)


def test_config_is_frozen():
    cfg = load_config("dev", good_values())
    with pytest.raises(AttributeError):
        cfg.az_count = 5  # type: ignore[misc]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_committed_stack_files_load(stack):
    cfg = load_stack_file(ROOT / f"Pulumi.{stack}.yaml")
    assert cfg.stack == stack
    # every key of the stack file is a known key (load_config rejects unknown ones),
    # and every known key appears in the committed stack file.
    values = config.stack_file_values(ROOT / f"Pulumi.{stack}.yaml")
    for path in config.key_paths():
        assert written(values, path), path
    # The written-out subnets are exactly the default layout.
    assert (cfg.public_subnet_cidrs, cfg.private_subnet_cidrs) == (
        config.default_subnet_cidrs(cfg.vpc_cidr, cfg.az_count)
    )


def test_dev_and_prod_match_the_issue():
    dev = load_stack_file(ROOT / "Pulumi.dev.yaml")
    prod = load_stack_file(ROOT / "Pulumi.prod.yaml")
    assert dev.nat_gateway_count == 1
    assert len(dev.gpu_pools) == 1
    (pool,) = dev.gpu_pools
    assert pool.capacity_type == "SPOT"
    assert (pool.min_size, pool.max_size) == (0, 2)
    assert all(t.split(".")[0] in ("g5", "g6") for t in pool.instance_types)
    assert dev.public_endpoint_cidrs and "0.0.0.0/0" not in dev.public_endpoint_cidrs
    assert prod.nat_gateway_mode == "per_az"
    assert prod.nat_gateway_count == prod.az_count == 3
    assert prod.public_endpoint_cidrs == ()
    for p in prod.gpu_pools:
        assert p.capacity_type == "ON_DEMAND"
        assert (p.min_size, p.max_size) == (0, 8)
    assert prod.protect_data_bucket is True


def test_engine_strings_round_trip_through_from_pulumi():
    """from_pulumi decodes the engine's strings by key kind: "1.33" stays a string,
    numbers, lists and objects are JSON."""
    values = {**good_values(), "clusterVersion": "1.33", "azCount": 2}
    engine = config.engine_values(values)
    assert engine["raygpu:clusterVersion"] == "1.33"
    assert json.loads(engine["raygpu:gpuPools"]) == values["gpuPools"]
    decoded = config.values_from_engine(engine)
    assert decoded == values
    assert load_config("dev", decoded) == load_config("dev", values)


def test_stack_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no stack file"):
        load_stack_file(tmp_path / "Pulumi.x.yaml")
    bad = tmp_path / "Pulumi.x.yaml"
    bad.write_text("config: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_stack_file(bad)
    secret = tmp_path / "Pulumi.s.yaml"
    secret.write_text(
        "config:\n  aws:region: us-east-1\n  raygpu:budgetAlertEmail:\n"
        "    secure: AAABAxyz\n"
    )
    with pytest.raises(ConfigError) as info:
        load_stack_file(secret)
    assert info.value.key == "raygpu:budgetAlertEmail"
    assert "AAABAxyz" not in str(info.value)


def test_instance_table_names_region_date_source_and_is_consistent():
    assert instance_types.PRICE_TABLE_REGION == "us-east-1"
    assert instance_types.PRICE_TABLE_DATE
    assert "aws.amazon.com" in instance_types.PRICE_TABLE_SOURCE
    for name, spec in instance_types.INSTANCE_TYPES.items():
        assert spec.on_demand_usd_hour > spec.spot_usd_hour > 0, name
        assert (spec.gpus > 0) == (spec.gpu_model is not None), name
    assert instance_types.is_gpu_instance("g5.xlarge")
    assert not instance_types.is_gpu_instance("m6i.xlarge")
    assert not instance_types.is_gpu_instance("nope.large")


def test_every_key_and_output_is_documented():
    doc = (ROOT / "docs" / "config.md").read_text()
    for path in config.key_paths():
        assert f"| `{path}` |" in doc, path
    assert "| `aws:region` |" in doc
    for pool_key in ("name", "instanceTypes", "capacityType", "minSize",
                     "desiredSize", "maxSize", "diskSizeGib"):  # fmt: skip
        assert f"| `raygpu:gpuPools[i].{pool_key}` |" in doc, pool_key
    for pool_key in ("instanceTypes", "minSize", "desiredSize", "maxSize",
                     "diskSizeGib"):  # fmt: skip
        assert f"| `raygpu:systemPool.{pool_key}` |" in doc, pool_key
    outputs = (ROOT / "docs" / "outputs.md").read_text()
    for output in sorted(CONTRACT_OUTPUTS):
        assert f"| `{output}` |" in outputs, output


def test_system_pool_desired_default_follows_min_and_max():
    cfg = load_config("dev", with_("systemPool", {"minSize": 3, "maxSize": 5}))
    assert cfg.system_pool.desired_size == 3
    cfg = load_config("dev", with_("systemPool", {"minSize": 1, "maxSize": 1}))
    assert cfg.system_pool.desired_size == 1
    cfg = load_config("dev", good_values())
    assert (cfg.system_pool.min_size, cfg.system_pool.desired_size) == (2, 2)
