"""raygpu destroy on a Google Cloud stack, with Kubernetes and Pulumi behind the
teardown's seams and Google Cloud behind raygpu.orphans.gcp's: the Kubernetes
objects that make cloud resources go first (GKE's forwarding and firewall rules
with their LoadBalancer Service), then `pulumi destroy`, then the leftover scan."""

from __future__ import annotations

import pytest

from raygpu.orphans import gcp
from raygpu.orphans.gcp_scan import GcpOrphanScanner, program_names
from raygpu.teardown import KubeObject, Limits, Teardown
from tests.raygpu.fake_gcp import COMPUTE, RecordedGoogleCloud, stack_resources
from tests.raygpu.test_teardown import Cluster, FakeClock, RecordingPulumi

STACK = "gcp-dev"
LIMITS = Limits(ray_objects_s=120, exposure_s=300, aws_s=200, interval_s=5)


@pytest.fixture(scope="module")
def names():
    return program_names(STACK)


def setup(names, events, pulumi_action=None, code: int = 0):
    cloud = RecordedGoogleCloud(stack_resources(names))
    rule = {
        "name": "a1b2c3-serve",
        "network": f"{COMPUTE}/global/networks/{names.network}",
        "description": '{"kubernetes.io/service-name":"ray/serve-lb"}',
    }
    cloud.resources[gcp.FORWARDING_RULE].append(rule)
    kube = Cluster(events)
    kube.add(KubeObject("rayservices.ray.io", "ray", "serve"), linger=2)
    kube.add(KubeObject("rayclusters.ray.io", "ray", names.cluster), linger=1)
    kube.add(KubeObject("services", "ray", "head", "ClusterIP"))

    def lb_gone() -> None:  # GKE's service controller deletes its rule
        cloud.resources[gcp.FORWARDING_RULE].remove(rule)

    kube.add(
        KubeObject("services", "ray", "serve-lb", "LoadBalancer"),
        linger=2,
        on_gone=lb_gone,
    )
    kube.add(KubeObject("persistentvolumeclaims", "ray", "logs"), linger=1)

    def destroy() -> None:
        events.append(("cloud", "program resources removed"))
        (pulumi_action or cloud.remove_program_resources)(names)

    pulumi = RecordingPulumi(events, code=code, action=lambda: destroy())
    scanner = GcpOrphanScanner(cloud, STACK, names, log=lambda line: None)
    lines: list[str] = []
    teardown = Teardown(
        STACK, kube, pulumi, scanner, clock=FakeClock(), limits=LIMITS, log=lines.append
    )
    return teardown, cloud, lines


def test_order_kubernetes_then_gkes_rules_then_destroy_then_scan(names):
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
    assert "services ray/head" not in deletes  # only LoadBalancer Services go
    assert order[-1] == ("pulumi destroy", STACK)
    assert "no load balancer of the cluster is left" in lines
    # The disk the PVC made outlived the destroy (GKE's CSI driver was gone
    # before it could delete it): the scan finds it by GKE's cluster label.
    assert code == 1
    assert [o.id for o in teardown.left] == ["pvc-1234"]
    # gcp-dev does not protect its data bucket: the destroy took both buckets.
    assert teardown.kept == []
    assert any("raygpu orphans --stack gcp-dev" in line for line in lines)


def test_a_clean_destroy_exits_zero_keeping_the_data_bucket(names):
    events: list[tuple[str, str]] = []

    def clean(names_) -> None:
        cloud.remove_program_resources(names_)
        cloud.resources[gcp.DISK] = []

    teardown, cloud, lines = setup(names, events, pulumi_action=clean)
    assert teardown.run() == 0
    assert teardown.left == []
    assert f"nothing of stack {STACK!r} is left" in lines


def test_delete_data_bucket_after_destroy_removes_it_too(names):
    events: list[tuple[str, str]] = []

    def keep_data(names_) -> None:
        buckets = [dict(b) for b in cloud.resources[gcp.BUCKET]]
        cloud.remove_program_resources(names_)
        cloud.resources[gcp.DISK] = []
        cloud.resources[gcp.BUCKET] = [b for b in buckets if "data-1" in b["name"]]
        for version in cloud.resources[gcp.KMS_KEY_VERSION]:
            if version["name"].endswith("/1"):
                version["state"] = "ENABLED"  # protect=True kept the key

    teardown, cloud, lines = setup(names, events, pulumi_action=keep_data)
    assert teardown.run(delete_data_bucket=True) == 0
    deleted = cloud.deleted()
    assert (gcp.BUCKET, f"{names.cluster}-data-1") in deleted
    assert any(kind == gcp.KMS_KEY_VERSION for kind, _ in deleted)
    assert teardown.left == [] and teardown.kept == []


def test_the_plan_uses_gcps_words_and_lists_what_the_scan_finds(names):
    events: list[tuple[str, str]] = []
    teardown, cloud, _ = setup(names, events)
    plan = teardown.plan()
    text = "\n".join(plan.lines())
    assert "GKE has deleted the forwarding and firewall rules" in text
    assert "AWS" not in text
    assert "forwarding-rule a1b2c3-serve" in text
    assert f"gke-cluster {names.cluster}" in text
    assert cloud.deleted() == [] and events == []  # the plan changes nothing


def test_destroy_command_dry_run_on_a_gcp_stack(names, tmp_path, monkeypatch, capsys):
    import json

    from raygpu import cli
    from tests.raygpu.test_stack_gcp import GCP_OUTPUTS

    cloud = RecordedGoogleCloud(stack_resources(names))
    monkeypatch.setattr(gcp, "GcloudCli", lambda project, region: cloud)
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(GCP_OUTPUTS))
    argv = ["destroy", "--stack", STACK, "--outputs", str(outputs)]
    assert cli.main([*argv, "--skip-kubernetes", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["dry_run"] and plan["region"] == "us-central1"
    assert plan["cluster_name"] == GCP_OUTPUTS["cluster_name"]
    kinds = {r["kind"] for r in plan["resources"]}
    assert {gcp.CLUSTER, gcp.NETWORK, gcp.BUCKET, gcp.BUDGET} <= kinds
    assert cloud.deleted() == []
