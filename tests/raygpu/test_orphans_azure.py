"""The leftover scan of an Azure stack through the AzureCloud seam: by the stack's
tags, AKS's node resource group, and the names the program gives what takes no
tags (role assignments, federated credentials, the budget); deletion in order;
the kept storage account; the az argv the real seam runs."""

from __future__ import annotations

import json
import subprocess

import pytest

from raygpu import cli, names, offline
from raygpu.config import load_stack_file
from raygpu.errors import UsageError
from raygpu.orphans import azure
from raygpu.orphans.azure import AzCli, AzError
from raygpu.orphans.azure_scan import (
    CLUSTER_TYPE,
    STORAGE_TYPE,
    AzureOrphanScanner,
    program_names,
)
from raygpu.orphans.command import REGION_KEYS, target_for
from tests.raygpu.fake_azure import SUBSCRIPTION, RecordedAzure, stack_resources

STACK = "azure-dev"


@pytest.fixture(scope="module")
def program():
    return program_names(STACK)


def scanner(program, cloud) -> AzureOrphanScanner:
    return AzureOrphanScanner(cloud, STACK, program, log=lambda line: None)


def test_the_program_names_what_takes_no_tags(program):
    cfg = load_stack_file(offline.stack_path(STACK), STACK)
    assert program.tags == {names.STACK_TAG: STACK, names.PROJECT_TAG: cfg.project}
    assert program.node_resource_group == f"{cfg.resource_group}-nodes"
    # The node subnet, the cluster and the two containers are granted on.
    scopes = {scope.rsplit("/", 2)[-2] for scope, _ in program.role_assignments}
    assert scopes == {"subnets", "managedClusters", "containers"}
    assert len(program.role_assignments) == 4
    ((_, identity),) = program.federated
    assert identity == f"{cfg.name_prefix}-ray"
    assert program.federated[(cfg.resource_group, identity)] == {
        cfg.ray_service_account,
        cfg.ray_worker_service_account,
    }
    assert program.budgets == {cfg.name_prefix}
    assert program.keeps_account is False  # azure-dev's data is disposable


def test_scan_finds_the_stacks_and_leaves_others_alone(program):
    cloud = RecordedAzure(stack_resources(program))
    found = scanner(program, cloud).scan()
    ids = {(o.kind, o.id) for o in found}
    assert (CLUSTER_TYPE, program.cluster) in ids
    assert (azure.RESOURCE_GROUP, program.resource_group) in ids
    assert (azure.RESOURCE_GROUP, program.node_resource_group) in ids
    assert ("Microsoft.Compute/disks", "pvc-1234") in ids  # the node group's
    assert ("Microsoft.Network/loadBalancers", "kubernetes") in ids
    assert sum(o.kind == azure.ROLE_ASSIGNMENT for o in found) == 4
    creds = {o.id for o in found if o.kind == azure.FEDERATED_CREDENTIAL}
    assert creds == {"ray-workload", "ray-worker"}
    assert (azure.BUDGET, next(iter(program.budgets))) in ids
    every = json.dumps([o.id for o in found])
    for theirs in (
        "other-vnet",
        "untagged-disk",
        "rg-other",
        "theirs",
        "added-by-hand",
        "someone-elses-budget",
    ):
        assert theirs not in every
    # The scale set is tagged and in the node group: reported once.
    assert sum(o.id == "aks-t4spot-1" for o in found) == 1
    assert not any(o.protected for o in found)


def test_delete_goes_in_dependency_order_and_groups_last(program):
    cloud = RecordedAzure(stack_resources(program))
    scan = scanner(program, cloud)
    outcomes = scan.delete(scan.scan())
    assert all(o.ok for o in outcomes)
    kinds = [o.orphan.kind for o in outcomes]
    assert kinds[0] == azure.ROLE_ASSIGNMENT
    pos = {k: kinds.index(k) for k in set(kinds)}
    assert pos[azure.FEDERATED_CREDENTIAL] < pos[CLUSTER_TYPE]
    assert pos[CLUSTER_TYPE] < pos["Microsoft.Network/virtualNetworks"]
    assert (
        pos["Microsoft.Network/virtualNetworks"] < pos["Microsoft.Network/natGateways"]
    )
    assert (
        pos["Microsoft.Network/natGateways"]
        < pos["Microsoft.Network/publicIPAddresses"]
    )
    assert kinds[-2:] == [azure.RESOURCE_GROUP, azure.RESOURCE_GROUP]
    groups = [o.orphan.id for o in outcomes if o.orphan.kind == azure.RESOURCE_GROUP]
    assert groups == [program.node_resource_group, program.resource_group]
    assert scan.scan() == []
    assert ("resource", "other") not in cloud.deleted()


def test_a_delete_that_fails_is_reported_and_a_gone_one_is_not(program):
    cloud = RecordedAzure(stack_resources(program))
    scan = scanner(program, cloud)
    found = scan.scan()
    vnet = next(o for o in found if o.kind == "Microsoft.Network/virtualNetworks")
    cloud.errors[(azure.RESOURCE, vnet.arn)] = (
        "`az resource delete`: InUseSubnetCannotBeDeleted"
    )
    cluster = next(o for o in found if o.kind == CLUSTER_TYPE)
    cloud.resources[azure.RESOURCE] = [
        i for i in cloud.resources[azure.RESOURCE] if i["id"] != cluster.arn
    ]
    outcomes = {o.orphan.id: o for o in scan.delete([vnet, cluster])}
    assert outcomes[vnet.id].action == "failed"
    assert "InUseSubnet" in outcomes[vnet.id].message
    assert (outcomes[cluster.id].action, outcomes[cluster.id].message) == (
        "deleted",
        "already gone",
    )


def test_the_kept_account_and_its_group_are_protected(program, tmp_path):
    text = offline.stack_path(STACK).read_text()
    text = text.replace(
        "raygpu:protectDataBucket: false", "raygpu:protectDataBucket: true"
    )
    path = tmp_path / f"Pulumi.{STACK}.yaml"
    path.write_text(text)
    kept = program_names(STACK, path)
    assert kept.keeps_account
    cloud = RecordedAzure(stack_resources(kept))
    scan = scanner(kept, cloud)
    found = scan.scan()
    protected = {(o.kind, o.id) for o in found if o.protected}
    assert protected == {
        (STORAGE_TYPE, kept.storage_account),
        (azure.RESOURCE_GROUP, kept.resource_group),
    }
    outcomes = scan.delete(found)
    assert {o.orphan.id for o in outcomes if o.action == "kept"} == {
        kept.storage_account,
        kept.resource_group,
    }
    assert all(o.ok for o in outcomes)
    left = scan.scan()
    assert {o.id for o in left} == {kept.storage_account, kept.resource_group}
    scan.delete(left, delete_data_bucket=True)
    assert scan.scan() == []


class Runner:
    """Records the argv; answers with (returncode, stdout, stderr)."""

    def __init__(self, answer=(0, "[]", "")) -> None:
        self.answer, self.argv = answer, []

    def __call__(self, argv, **kwargs):
        self.argv.append(argv)
        code, out, err = self.answer
        return subprocess.CompletedProcess(argv, code, out, err)


def test_the_az_cli_argv_names_the_subscription_and_prints_json():
    run = Runner((0, json.dumps([{"name": "ray-worker"}]), ""))
    cli_ = AzCli(SUBSCRIPTION, "eastus2", executable="az", runner=run)
    cli_.list(azure.RESOURCE, "raygpu:stack=azure-dev")
    cli_.list(azure.RESOURCE, "group:rg-nodes")
    cli_.list(azure.ROLE_ASSIGNMENT, "/subscriptions/x/scope")
    creds = cli_.list(azure.FEDERATED_CREDENTIAL, "rg-a/ident")
    assert creds == [
        {"name": "ray-worker", "resourceGroup": "rg-a", "identity": "ident"}
    ]
    cli_.delete(azure.FEDERATED_CREDENTIAL, creds[0])
    cli_.delete(azure.RESOURCE_GROUP, {"name": "rg-a"})
    cli_.delete(azure.RESOURCE, {"id": "/subscriptions/x/r", "name": "r"})
    sub = ["--subscription", SUBSCRIPTION]
    assert run.argv[0] == [
        "az",
        "resource",
        "list",
        "--tag",
        "raygpu:stack=azure-dev",
        *sub,
        "-o",
        "json",
    ]
    assert run.argv[1][:4] == ["az", "resource", "list", "--resource-group"]
    assert run.argv[2][:5] == ["az", "role", "assignment", "list", "--scope"]
    assert run.argv[3][:4] == ["az", "identity", "federated-credential", "list"]
    assert run.argv[4][-4:] == ["--yes", *sub, "--only-show-errors"]
    assert run.argv[5] == [
        "az",
        "group",
        "delete",
        "--name",
        "rg-a",
        "--yes",
        *sub,
        "--only-show-errors",
    ]
    assert run.argv[6][:5] == [
        "az",
        "resource",
        "delete",
        "--ids",
        "/subscriptions/x/r",
    ]


def test_az_failures_are_one_line():
    run = Runner(
        (3, "", "WARNING: x\nERROR: (ResourceNotFound) The Resource was not found\n")
    )
    cli_ = AzCli(SUBSCRIPTION, "eastus2", executable="az", runner=run)
    with pytest.raises(AzError) as exc:
        cli_.delete(azure.RESOURCE, {"id": "/x"})
    assert exc.value.not_found and "\n" not in str(exc.value)

    def missing(argv, **kwargs):
        raise FileNotFoundError(argv[0])

    with pytest.raises(UsageError, match="az CLI was not found"):
        AzCli(SUBSCRIPTION, "eastus2", executable="az", runner=missing).list(
            azure.BUDGET
        )


def test_the_command_targets_the_stacks_subscription_and_location(
    tmp_path, monkeypatch, capsys
):
    target = target_for(STACK, {})
    assert target.cloud == "azure" and target.subscription == SUBSCRIPTION
    assert target.region == "eastus2"
    assert target.region_source == f"{REGION_KEYS['azure']} in Pulumi.{STACK}.yaml"
    # Without az on PATH the scan ends in one line before anything is listed.
    monkeypatch.setenv("PATH", str(tmp_path))
    assert (
        cli.main(
            [
                "orphans",
                "--stack",
                STACK,
                "--cluster-name",
                "raygpu-azure-dev",
                "--region",
                "eastus2",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "az CLI was not found" in err[-1]


def test_gcp_label_keys_are_the_names_modules():
    gcp = load_stack_file(offline.stack_path("gcp-dev"), "gcp-dev")
    assert set(gcp.labels) == {names.GCP_STACK_LABEL, names.GCP_PROJECT_LABEL}
    run = offline.run_offline("gcp-dev")
    buckets = run.of_type("gcp:storage/bucket:Bucket")
    assert {b["inputs"]["labels"][names.GCP_BUCKET_LABEL] for b in buckets} == {
        "data",
        "artifacts",
    }
