"""The whole program (infra/__main__.py) on both committed stacks, under mocks."""

from __future__ import annotations

import importlib
import inspect
import json
import time
from pathlib import Path

import pulumi
import pytest

from raygpu.config import load_stack_file
from raygpu.offline import run_offline
from tests.infra.infra_helpers import CONTRACT_OUTPUTS

ROOT = Path(__file__).resolve().parents[2]
RUNS: dict[str, object] = {}


@pytest.fixture(scope="module", params=["dev", "prod"])
def stack(request):
    name = request.param
    if name not in RUNS:
        started = time.monotonic()
        run = run_offline(name)
        RUNS[name] = (run, time.monotonic() - started)
    run, seconds = RUNS[name]
    return name, load_stack_file(ROOT / f"Pulumi.{name}.yaml"), run, seconds


def _aws_class(type_token: str):
    """pulumi_aws class for a type token like aws:ec2/vpc:Vpc."""
    module = type_token.split(":")[1].split("/")[0]
    cls = type_token.split(":")[2]
    return getattr(importlib.import_module(f"pulumi_aws.{module}"), cls)


def _taggable(type_token: str) -> bool:
    init = _aws_class(type_token)._internal_init
    return "tags" in inspect.signature(init).parameters


def test_program_runs_in_seconds(stack):
    _, _, run, seconds = stack
    assert run.resources
    assert seconds < 20, f"the program took {seconds:.1f}s under mocks"


def test_outputs_follow_the_contract(stack):
    name, cfg, run, _ = stack
    assert CONTRACT_OUTPUTS <= set(run.outputs)
    assert all(k == k.lower() and " " not in k for k in run.outputs)
    out = run.outputs
    assert out["cluster_name"] == cfg.cluster_name == f"raygpu-{name}"
    assert out["region"] == cfg.region
    assert out["ray_namespace"] == cfg.ray_namespace
    assert out["ray_service_account"] == cfg.ray_service_account
    assert out["vpc_id"].startswith("vpc-")
    assert out["irsa_role_arn"].startswith("arn:aws:iam::")
    assert out["data_bucket"] != out["artifacts_bucket"]
    buckets = {r["id"] for r in run.of_type("aws:s3/bucket:Bucket")}
    logs = {
        r["id"] for r in run.of_type("aws:s3/bucket:Bucket") if "access-logs" in r["id"]
    }
    assert {out["data_bucket"], out["artifacts_bucket"]} == buckets - logs
    assert bool(logs) is cfg.data_bucket_access_logging
    # kubeconfig is a secret and never shown by public_outputs().
    assert run.secret_outputs == {"kubeconfig"}
    assert run.public_outputs()["kubeconfig"] == "[secret]"
    assert json.loads(out["kubeconfig"])["current-context"] == cfg.cluster_name
    assert set(out["gpu_node_groups"]) == {p.name for p in cfg.gpu_pools}


def test_every_taggable_resource_carries_the_stack_tags(stack):
    name, _, run, _ = stack
    checked = 0
    for r in run.resources:
        if not r["type"].startswith("aws:"):
            continue
        if _taggable(r["type"]):
            tags = r["inputs"].get("tags")
            assert tags, f"{r['type']} {r['name']} has no tags"
            assert tags["raygpu:stack"] == name, r["name"]
            assert tags["raygpu:project"] == "raygpu", r["name"]
            checked += 1
    assert checked >= 30


def test_iam_resources_also_name_the_region(stack):
    # IAM is account-wide: raygpu orphans deletes an IAM leftover only when
    # its raygpu:region tag names the stack's region.
    name, cfg, run, _ = stack
    untaggable = ("aws:iam/rolePolicy:RolePolicy", "aws:iam/rolePolicyAttachment:")
    iam = [
        r
        for r in run.resources
        if r["type"].startswith("aws:iam/") and not r["type"].startswith(untaggable)
    ]
    # cluster, node, flow-logs, autoscaler and IRSA roles, and the OIDC provider,
    # and with monitoring on the EBS CSI driver's role (infra/ebs_csi.py)
    assert len(iam) == 6 + cfg.monitoring, [r["name"] for r in iam]
    for r in iam:
        assert r["inputs"]["tags"]["raygpu:region"] == cfg.region, r["name"]
        assert r["inputs"]["tags"]["raygpu:stack"] == name, r["name"]
    types = {r["type"] for r in iam}
    assert "aws:iam/openIdConnectProvider:OpenIdConnectProvider" in types


def test_explicit_provider_with_default_tags_reaches_every_aws_resource(stack):
    name, cfg, run, _ = stack
    (provider,) = run.of_type("pulumi:providers:aws")
    assert provider["inputs"]["region"] == cfg.region
    default_tags = provider["inputs"]["defaultTags"]
    default_tags = (
        json.loads(default_tags) if isinstance(default_tags, str) else default_tags
    )
    assert default_tags["tags"] == {"raygpu:stack": name, "raygpu:project": "raygpu"}
    for r in run.resources:
        if r["type"].startswith("aws:"):
            assert r["options"]["provider"].startswith(provider["urn"]), r["name"]


def test_program_creates_only_components_at_top_level(stack):
    _, _, run, _ = stack
    top = {r["type"] for r in run.resources if r["parent"] is None}
    assert {
        "pulumi:providers:aws",
        "raygpu:network:Network",
        "raygpu:storage:Storage",
        "raygpu:cluster:EksCluster",
        "raygpu:identity:Identity",
        "raygpu:budget:CostGuard",
    } <= top
    assert all(t.startswith(("raygpu:", "pulumi:providers:")) for t in top), top
    for r in run.resources:
        if r["type"].startswith("aws:"):
            assert r["parent_type"].startswith("raygpu:"), r["name"]


def test_endpoint_exposure_matches_the_stack(stack):
    name, cfg, run, _ = stack
    vpc = run.one("aws:eks/cluster:Cluster")["inputs"]["vpcConfig"]
    assert vpc["endpointPrivateAccess"] is True
    if name == "dev":
        assert vpc["endpointPublicAccess"] is True
        assert vpc["publicAccessCidrs"] == list(cfg.public_endpoint_cidrs)
    else:
        assert vpc["endpointPublicAccess"] is False
        assert "publicAccessCidrs" not in vpc
    assert "0.0.0.0/0" not in vpc.get("publicAccessCidrs", [])
    private = {
        s["id"]
        for s in run.of_type("aws:ec2/subnet:Subnet")
        if "-private-" in s["name"]
    }
    assert set(vpc["subnetIds"]) == private
    for group in run.of_type("aws:eks/nodeGroup:NodeGroup"):
        assert set(group["inputs"]["subnetIds"]) == private


def test_nat_gateways_and_node_groups_match_the_stack(stack):
    _, cfg, run, _ = stack
    assert len(run.of_type("aws:ec2/natGateway:NatGateway")) == cfg.nat_gateway_count
    groups = run.of_type("aws:eks/nodeGroup:NodeGroup")
    assert len(groups) == 1 + len(cfg.gpu_pools)
    gpu = {
        g["inputs"]["labels"]["raygpu.io/pool"]: g
        for g in groups
        if "-gpu-" in g["name"]
    }
    for pool in cfg.gpu_pools:
        inputs = gpu[pool.name]["inputs"]
        assert inputs["amiType"] == "AL2023_x86_64_NVIDIA"
        assert inputs["capacityType"] == pool.capacity_type
        assert inputs["scalingConfig"]["minSize"] == pool.min_size == 0
        assert inputs["scalingConfig"]["maxSize"] == pool.max_size
        assert inputs["taints"] == [
            {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}
        ]


def test_imdsv2_everywhere(stack):
    _, _, run, _ = stack
    templates = run.of_type("aws:ec2/launchTemplate:LaunchTemplate")
    assert len(templates) == len(run.of_type("aws:eks/nodeGroup:NodeGroup"))
    for t in templates:
        meta = t["inputs"]["metadataOptions"]
        assert (meta["httpTokens"], meta["httpPutResponseHopLimit"]) == ("required", 1)


def test_data_bucket_protection_follows_the_stack(stack):
    name, cfg, run, _ = stack
    data = run.one("aws:s3/bucket:Bucket", f"raygpu-{name}-storage-data")
    assert data["options"]["retain_on_delete"] is cfg.protect_data_bucket
    assert cfg.protect_data_bucket is (name == "prod")


def test_irsa_role_is_wired_to_the_stack_buckets_and_cluster(stack):
    _, cfg, run, _ = stack
    role = run.one("aws:iam/role:Role", f"{cfg.name_prefix}-identity-ray")
    trust = json.loads(role["inputs"]["assumeRolePolicy"])
    subs = [
        f"system:serviceaccount:{cfg.ray_namespace}:{account}"
        for account in (cfg.ray_service_account, cfg.ray_worker_service_account)
    ]
    assert subs in trust["Statement"][0]["Condition"]["StringEquals"].values()
    policy = run.one(
        "aws:iam/rolePolicy:RolePolicy", f"{cfg.name_prefix}-identity-ray-buckets"
    )
    doc = policy["inputs"]["policy"]
    assert f"arn:aws:s3:::{run.outputs['data_bucket']}" in doc
    assert f"arn:aws:s3:::{run.outputs['artifacts_bucket']}" in doc
    key = run.one("aws:kms/key:Key", f"{cfg.name_prefix}-storage-kms")
    assert key["id"] in doc
    issuer = run.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert issuer["inputs"]["url"].startswith("https://oidc.eks.")


def test_budget_alert_only_where_configured(stack):
    name, cfg, run, _ = stack
    budget = run.one("aws:budgets/budget:Budget")["inputs"]
    assert float(budget["limitAmount"]) == cfg.budget_monthly_usd
    if cfg.budget_alert_email:
        emails = {
            e for n in budget["notifications"] for e in n["subscriberEmailAddresses"]
        }
        assert emails == {cfg.budget_alert_email}
    else:
        assert not budget.get("notifications")


def test_bad_config_reaches_the_program_as_one_line_run_error(monkeypatch):
    """from_pulumi + main(): a bad engine config stops before any resource."""
    from infra import __main__ as program
    from raygpu import offline

    def body():
        program.main()

    with pytest.raises(pulumi.RunError) as info:
        offline.run_under_mocks(
            body,
            stack="dev",
            region="us-east-1",
            engine_config={
                "aws:region": "us-east-1",
                "raygpu:gpuPools": json.dumps(
                    [{"name": "a", "instanceTypes": ["m6i.xlarge"]}]
                ),
                "raygpu:budgetMonthlyUsd": "-3",
            },
        )
    message = str(info.value)
    assert message.startswith("invalid stack config:")
    assert "raygpu:gpuPools[0].instanceTypes[0]" in message
    assert "raygpu:budgetMonthlyUsd" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_from_pulumi_reads_what_the_stack_file_says(name):
    """The engine hands config over as strings; from_pulumi() decodes them back."""
    from raygpu import config
    from raygpu.offline import run_under_mocks

    path = ROOT / f"Pulumi.{name}.yaml"
    seen = []
    run_under_mocks(
        lambda: seen.append(config.from_pulumi()),
        stack=name,
        region="us-east-1",
        engine_config=config.engine_values(config.stack_file_values(path)),
    )
    assert seen == [load_stack_file(path)]
    assert seen[0].cluster_version == "1.33"
