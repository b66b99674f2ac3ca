"""raygpu orphans on a Google Cloud stack, through the GoogleCloud seam: what the
scan finds by the stack's labels and by the program's names, what it leaves alone,
the deletion order, the protected data bucket and its key, Cloud KMS's scheduled
destruction, and the gcloud implementation's commands and errors."""

from __future__ import annotations

import json
import subprocess

import pytest

from raygpu import cli
from raygpu.errors import CommandError, UsageError
from raygpu.orphans import gcp, gcp_scan
from raygpu.orphans.gcp import GcloudCli, GcloudError
from raygpu.orphans.gcp_scan import DELETE_ORDER, GcpOrphanScanner, program_names
from tests.raygpu.fake_gcp import PROJECT, REGION, RecordedGoogleCloud, stack_resources

STACK = "gcp-dev"


@pytest.fixture(scope="module")
def names():
    return program_names(STACK)


def scanner(names, cloud, **kwargs) -> GcpOrphanScanner:
    return GcpOrphanScanner(cloud, STACK, names, log=lambda line: None, **kwargs)


def test_program_names_come_from_the_stacks_own_program(names):
    assert names.labels == {"raygpu-stack": STACK, "raygpu-project": "raygpu"}
    assert names.cluster == f"raygpu-{STACK}"
    assert names.network and names.subnetworks and names.routers
    assert len(names.service_accounts) == 2  # GKE's nodes and Ray's pods
    assert all(
        e.endswith(f"@{PROJECT}.iam.gserviceaccount.com")
        for e in names.service_accounts
    )
    assert names.billing_account == "000000-000000-000000"
    (ring,) = names.key_rings
    assert ring.startswith(f"projects/{PROJECT}/locations/{REGION}/keyRings/")


def test_scan_finds_the_stacks_resources_in_deletion_order(names):
    cloud = RecordedGoogleCloud(stack_resources(names))
    found = scanner(names, cloud).scan()
    got = [(o.kind, o.id) for o in found]
    kinds = [kind for kind, _ in got]
    assert kinds == sorted(kinds, key=DELETE_ORDER.index)
    ids = {rid for _, rid in got}
    assert {names.cluster, "gke-node-1", "pvc-1234", names.network} <= ids
    assert names.service_accounts <= ids
    # Others' resources: another stack's labels, GKE's label in another region,
    # the default network, an unlabelled VM, someone else's budget and account.
    assert not ids & {"raygpu-other", "gke-node-eu", "someone-elses-vm", "default"}
    assert not ids & {"other-data", "default-allow-ssh", "b2"}
    assert f"ci@{PROJECT}.iam.gserviceaccount.com" not in ids
    by_id = {o.id: o for o in found}
    assert "goog-k8s-cluster-name" in by_id["pvc-1234"].reason
    assert by_id[names.cluster].reason == "raygpu-stack=gcp-dev, raygpu-project=raygpu"
    assert by_id[f"gke-{names.cluster}-abc-master"].kind == gcp.FIREWALL
    assert by_id["b1"].kind == gcp.BUDGET
    # The data bucket and the key that encrypts it are kept; the artifacts go.
    assert by_id[f"{names.cluster}-data-1"].protected
    assert not by_id[f"{names.cluster}-artifacts-1"].protected
    (key,) = [o for o in found if o.kind == gcp.KMS_KEY]
    assert key.protected and key.detail == "encrypts the protected data bucket"


def test_delete_goes_in_order_and_keeps_the_data_bucket_and_its_key(names):
    cloud = RecordedGoogleCloud(stack_resources(names))
    scan = scanner(names, cloud)
    outcomes = scan.delete(scan.scan())
    deleted = cloud.deleted()
    kinds = [kind for kind, _ in deleted]
    assert kinds == sorted(kinds, key=DELETE_ORDER.index)
    assert kinds[0] == gcp.CLUSTER and kinds.index(gcp.ROUTER) < kinds.index(
        gcp.NETWORK
    )
    kept = {o.orphan.id for o in outcomes if o.action == "kept"}
    key = cloud.resources[gcp.KMS_KEY][0]["name"].rsplit("/", 1)[-1]
    assert kept == {f"{names.cluster}-data-1", key}
    assert all(o.ok for o in outcomes)
    left = scan.scan()
    assert {o.id for o in left} == kept


def test_delete_data_bucket_deletes_it_and_schedules_the_keys_destruction(names):
    cloud = RecordedGoogleCloud(stack_resources(names))
    scan = scanner(names, cloud)
    outcomes = scan.delete(scan.scan(), delete_data_bucket=True)
    key = [o for o in outcomes if o.orphan.kind == gcp.KMS_KEY][0]
    assert key.action == "deleted" and "scheduled for destruction" in key.message
    # Only the live version is destroyed; the key itself stays (KMS deletes none).
    versions = [k for kind, k in cloud.deleted() if kind == gcp.KMS_KEY_VERSION]
    assert versions == [f"{key.orphan.arn}/cryptoKeyVersions/1"]
    assert cloud.resources[gcp.KMS_KEY]
    assert scan.scan() == []


def test_a_failed_delete_is_reported_and_a_vanished_one_is_gone(names):
    resources = stack_resources(names)
    errors = {(gcp.NETWORK, names.network): "`gcloud compute networks delete`: in use"}
    cloud = RecordedGoogleCloud(resources, errors)
    scan = scanner(names, cloud)
    found = scan.scan()
    cloud.resources[gcp.ROUTER] = []  # deleted by someone else meanwhile
    outcomes = {o.orphan.id: o for o in scan.delete(found)}
    assert outcomes[names.network].action == "failed"
    assert "in use" in outcomes[names.network].message
    router = sorted(names.routers)[0]
    assert outcomes[router].action == "deleted"
    assert outcomes[router].message == "already gone"


def test_a_bad_cluster_name_is_refused(names):
    from dataclasses import replace

    with pytest.raises(CommandError, match="--cluster-name: 'Bad_Name'"):
        scanner(replace(names, cluster="Bad_Name"), RecordedGoogleCloud({}))


def test_orphans_command_on_a_gcp_stack(names, monkeypatch, capsys):
    cloud = RecordedGoogleCloud(stack_resources(names))
    monkeypatch.setattr(gcp, "GcloudCli", lambda project, region: cloud)
    argv = ["orphans", "--stack", STACK, "--region", REGION]
    assert cli.main([*argv, "--cluster-name", names.cluster]) == 1
    out = capsys.readouterr().out
    assert f"resource(s) left of stack '{STACK}' in {REGION}" in out
    assert "kept (protected)" in out and "gke-cluster raygpu-gcp-dev" in out
    assert cli.main([*argv, "--cluster-name", names.cluster, "--delete"]) == 0
    capsys.readouterr()
    assert cli.main([*argv, "--cluster-name", names.cluster, "--json"]) == 0
    left = json.loads(capsys.readouterr().out)
    assert left and all(o["protected"] for o in left)
    assert {o["kind"] for o in left} == {gcp.BUCKET, gcp.KMS_KEY}


# ---------------------------------------------------------------- gcloud CLI


class Runner:
    def __init__(self, stdout: str = "[]", code: int = 0, stderr: str = "") -> None:
        self.calls: list[list[str]] = []
        self.result = (stdout, code, stderr)

    def __call__(self, argv, **kwargs):
        self.calls.append(argv)
        stdout, code, stderr = self.result
        return subprocess.CompletedProcess(argv, code, stdout, stderr)


def test_gcloud_lists_as_json_in_the_stacks_project_and_region():
    runner = Runner(stdout=json.dumps([{"name": "n1"}]))
    cli_ = GcloudCli(PROJECT, REGION, executable="gcloud", runner=runner)
    assert cli_.list(gcp.SUBNETWORK) == [{"name": "n1"}]
    assert runner.calls[-1] == [
        "gcloud",
        "compute",
        "networks",
        "subnets",
        "list",
        f"--regions={REGION}",
        f"--project={PROJECT}",
        "--format=json",
    ]
    cli_.list(gcp.KMS_KEY, "projects/p/locations/l/keyRings/r")
    assert "--keyring=projects/p/locations/l/keyRings/r" in runner.calls[-1]
    assert f"--location={REGION}" in runner.calls[-1]


def test_gcloud_deletes_quietly_and_a_bucket_with_every_version():
    runner = Runner()
    cli_ = GcloudCli(PROJECT, REGION, executable="gcloud", runner=runner)
    cli_.delete(gcp.BUCKET, {"name": "b"})
    assert runner.calls[-1] == [
        "gcloud",
        "storage",
        "rm",
        "--recursive",
        "--all-versions",
        "gs://b",
        f"--project={PROJECT}",
        "--quiet",
    ]
    zone = "https://www.googleapis.com/compute/v1/projects/p/zones/us-central1-a"
    cli_.delete(gcp.DISK, {"name": "pvc-1", "zone": zone})
    assert (
        runner.calls[-1][:6]
        == [
            "gcloud",
            "compute",
            "disks",
            "delete",
            "pvc-1",
            "--zone",
        ]
        and runner.calls[-1][6] == "us-central1-a"
    )
    cli_.delete(gcp.SERVICE_ACCOUNT, {"email": "a@p.iam.gserviceaccount.com"})
    assert runner.calls[-1][4] == "a@p.iam.gserviceaccount.com"


def test_gcloud_errors_are_one_line():
    stderr = "WARNING: x\nERROR: (gcloud.compute.networks.delete) was not found\n"
    cli_ = GcloudCli(
        PROJECT, REGION, executable="gcloud", runner=Runner(code=1, stderr=stderr)
    )
    with pytest.raises(GcloudError) as caught:
        cli_.delete(gcp.NETWORK, {"name": "n"})
    assert "\n" not in str(caught.value) and caught.value.not_found

    def missing(argv, **kwargs):
        raise FileNotFoundError(argv[0])

    with pytest.raises(UsageError, match="gcloud CLI was not found"):
        GcloudCli(PROJECT, REGION, runner=missing).list(gcp.NETWORK)
    bad = GcloudCli(PROJECT, REGION, executable="gcloud", runner=Runner(stdout="oops"))
    with pytest.raises(CommandError, match="did not print JSON"):
        bad.list(gcp.NETWORK)


def test_scanner_for_proves_access_with_one_call(names):
    cloud = RecordedGoogleCloud(stack_resources(names))
    gcp_scan.scanner_for(STACK, PROJECT, REGION, names, cloud=cloud)
    assert cloud.calls == [("list", gcp.NETWORK, "")]
