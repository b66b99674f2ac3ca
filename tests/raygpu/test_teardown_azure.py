"""raygpu destroy on an Azure stack, with Kubernetes and Pulumi behind the
teardown's seams and Azure behind raygpu.orphans.azure's: the Kubernetes objects
that make cloud resources go first (AKS's load balancer and the Service's public
IP with their LoadBalancer Service), then `pulumi destroy`, then the scan."""

from __future__ import annotations

import json

import pytest

from raygpu.orphans import azure
from raygpu.orphans.azure_scan import (
    IP_TYPE,
    LB_TYPE,
    AzureOrphanScanner,
    program_names,
)
from raygpu.teardown import KubeObject, Limits, Teardown
from tests.raygpu.fake_azure import RecordedAzure, stack_resources
from tests.raygpu.test_teardown import Cluster, FakeClock, RecordingPulumi

STACK = "azure-dev"
LIMITS = Limits(ray_objects_s=120, exposure_s=300, aws_s=200, interval_s=5)


@pytest.fixture(scope="module")
def names():
    return program_names(STACK)


def setup(names, events, pulumi_action=None):
    cloud = RecordedAzure(stack_resources(names))
    kube = Cluster(events)
    kube.add(KubeObject("rayservices.ray.io", "ray", "serve"), linger=2)
    kube.add(KubeObject("rayclusters.ray.io", "ray", names.cluster), linger=1)
    kube.add(KubeObject("services", "ray", "head", "ClusterIP"))

    def lb_gone() -> None:  # AKS's cloud provider removes what it made
        cloud.resources[azure.RESOURCE] = [
            r
            for r in cloud.resources[azure.RESOURCE]
            if r["type"] not in (LB_TYPE, IP_TYPE)
            or r["resourceGroup"] != names.node_resource_group
        ]

    kube.add(
        KubeObject("services", "ray", "serve-lb", "LoadBalancer"),
        linger=2,
        on_gone=lb_gone,
    )
    kube.add(KubeObject("persistentvolumeclaims", "ray", "logs"), linger=1)

    def destroy() -> None:
        events.append(("cloud", "program resources removed"))
        (pulumi_action or cloud.remove_program_resources)(names)

    pulumi = RecordingPulumi(events, action=destroy)
    scanner = AzureOrphanScanner(cloud, STACK, names, log=lambda line: None)
    lines: list[str] = []
    teardown = Teardown(
        STACK, kube, pulumi, scanner, clock=FakeClock(), limits=LIMITS, log=lines.append
    )
    return teardown, cloud, lines


def test_order_kubernetes_then_aks_load_balancer_then_destroy_then_scan(names):
    events: list[tuple[str, str]] = []
    teardown, cloud, lines = setup(names, events)
    code = teardown.run()
    order = [e for e in events if e[0] in ("delete", "gone", "pulumi destroy")]
    deletes = [what for verb, what in order if verb == "delete"]
    assert deletes[:2] == ["rayservices ray/serve", "rayclusters ray/" + names.cluster]
    assert set(deletes[2:]) == {
        "services ray/serve-lb",
        "persistentvolumeclaims ray/logs",
    }
    assert order[-1] == ("pulumi destroy", STACK)
    assert "no load balancer of the cluster is left" in lines
    # Role assignments outlive their scopes in the fake: the scan finds them.
    assert code == 1
    assert {o.kind for o in teardown.left} == {azure.ROLE_ASSIGNMENT}
    assert teardown.kept == []
    assert any("raygpu orphans --stack azure-dev" in line for line in lines)


def test_a_clean_destroy_exits_zero(names):
    events: list[tuple[str, str]] = []

    def clean(names_) -> None:
        cloud.remove_program_resources(names_)
        cloud.resources[azure.ROLE_ASSIGNMENT] = []

    teardown, cloud, lines = setup(names, events, pulumi_action=clean)
    assert teardown.run() == 0
    assert f"nothing of stack {STACK!r} is left" in lines


def test_the_plan_uses_azures_words_and_lists_what_the_scan_finds(names):
    events: list[tuple[str, str]] = []
    teardown, cloud, _ = setup(names, events)
    text = "\n".join(teardown.plan().lines())
    assert "AKS has deleted the load balancers and public IPs" in text
    assert "AWS" not in text
    assert f"{IP_TYPE} kubernetes-a1b2c3" in text
    assert f"Microsoft.ContainerService/managedClusters {names.cluster}" in text
    assert cloud.deleted() == [] and events == []


def test_destroy_command_dry_run_on_an_azure_stack(
    names, tmp_path, monkeypatch, capsys
):
    from raygpu import cli
    from tests.raygpu.test_stack_azure import AZURE_OUTPUTS

    cloud = RecordedAzure(stack_resources(names))
    monkeypatch.setattr(azure, "AzCli", lambda subscription, region: cloud)
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(AZURE_OUTPUTS))
    argv = ["destroy", "--stack", STACK, "--outputs", str(outputs)]
    assert cli.main([*argv, "--skip-kubernetes", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["dry_run"] and plan["region"] == "eastus2"
    kinds = {r["kind"] for r in plan["resources"]}
    assert {azure.RESOURCE_GROUP, azure.ROLE_ASSIGNMENT, azure.BUDGET} <= kinds
    assert cloud.deleted() == []
