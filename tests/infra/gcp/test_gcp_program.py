"""The Google Cloud program under Pulumi's mocks: infra/__main__.py run on the
committed gcp-dev stack (and variants), its security defaults asserted on what the
engine was asked to create."""

from __future__ import annotations

import json

import pytest

from infra.gcp.cluster import NODE_ROLE
from infra.gcp.identity import BUCKET_ROLE, WORKLOAD_IDENTITY_USER
from infra.gcp.storage import KMS_ENCRYPTER
from raygpu import names
from tests.infra.gcp.gcp_helpers import MOCK_PROJECT_NUMBER, gcp_values, run_gcp

PROJECT = "my-raygpu-project"
CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
BUCKET = "gcp:storage/bucket:Bucket"


@pytest.fixture(scope="module")
def run():
    return run_gcp(gcp_values())


@pytest.fixture(scope="module")
def private_run():
    """No authorized networks, two GPU pools, an alert address."""
    pools = gcp_values()["gpuPools"] + [
        {
            "name": "t4",
            "machineType": "n1-standard-8",
            "acceleratorType": "nvidia-tesla-t4",
            "acceleratorCount": 2,
            "maxSize": 4,
        }
    ]
    return run_gcp(
        gcp_values(
            masterAuthorizedCidrs=[],
            gpuPools=pools,
            budgetAlertEmail="ops@corp.dev",
            protectDataBucket=True,
        )
    )


def cluster_inputs(run) -> dict:
    return run.one(CLUSTER)["inputs"]


def gpu_pools(run) -> list[dict]:
    return [p for p in run.of_type(NODE_POOL) if p["inputs"]["name"] != "system"]


def test_outputs_name_the_cluster_the_buckets_and_the_identity(run):
    out = run.outputs
    assert out["cloud"] == "gcp" and out["region"] == "us-central1"
    assert out["cluster_name"] == "raygpu-gcp-dev"
    assert out["data_bucket"].startswith("raygpu-gcp-dev-data-")
    assert out["artifacts_bucket"].startswith("raygpu-gcp-dev-artifacts-")
    assert out["ray_google_service_account"].endswith(
        f"@{PROJECT}.iam.gserviceaccount.com"
    )
    assert out["gpu_node_pools"] == {"l4-spot": "l4-spot"}
    assert "kubeconfig" in run.secret_outputs
    assert "gke-gcloud-auth-plugin" in out["kubeconfig"]
    assert "server: https://10.0.0.2" in out["kubeconfig"]


def test_every_cloud_resource_sits_in_a_component_with_the_stack_provider(run):
    for res in run.resources:
        if res["type"].startswith("gcp:") and res["custom"]:
            assert res["parent_type"].startswith("raygpu:gcp:"), res["name"]
            assert "pulumi:providers:gcp" in res["options"]["provider"], res["name"]
    (provider,) = run.of_type("pulumi:providers:gcp")
    assert provider["inputs"]["project"] == PROJECT
    assert json.loads(provider["inputs"]["defaultLabels"]) == {
        "raygpu-project": "raygpu",
        "raygpu-stack": "gcp-dev",
    }


def test_nodes_are_private_behind_cloud_nat(run):
    private = cluster_inputs(run)["privateClusterConfig"]
    assert private["enablePrivateNodes"] is True
    assert private["masterIpv4CidrBlock"] == "172.16.0.0/28"
    subnet = run.one("gcp:compute/subnetwork:Subnetwork")["inputs"]
    assert subnet["privateIpGoogleAccess"] is True
    assert {r["rangeName"]: r["ipCidrRange"] for r in subnet["secondaryIpRanges"]} == {
        "pods": "10.16.0.0/14",
        "services": "10.20.0.0/20",
    }
    policy = cluster_inputs(run)["ipAllocationPolicy"]
    assert (
        policy["clusterSecondaryRangeName"],
        policy["servicesSecondaryRangeName"],
    ) == (
        "pods",
        "services",
    )
    nat = run.one("gcp:compute/routerNat:RouterNat")["inputs"]
    assert nat["sourceSubnetworkIpRangesToNat"] == "LIST_OF_SUBNETWORKS"
    assert (
        nat["subnetworks"][0]["name"]
        == run.one("gcp:compute/subnetwork:Subnetwork")["id"]
    )


def test_the_api_is_open_to_the_listed_networks_only(run, private_run):
    networks = cluster_inputs(run)["masterAuthorizedNetworksConfig"]
    assert [b["cidrBlock"] for b in networks["cidrBlocks"]] == ["203.0.113.0/24"]
    assert networks["gcpPublicCidrsAccessEnabled"] is False
    assert cluster_inputs(run)["privateClusterConfig"]["enablePrivateEndpoint"] is False
    # None listed: the endpoint is private and nothing outside the VPC may reach it.
    private = cluster_inputs(private_run)
    assert private["privateClusterConfig"]["enablePrivateEndpoint"] is True
    assert private["masterAuthorizedNetworksConfig"].get("cidrBlocks", []) == []
    for r in (run, private_run):
        blocks = cluster_inputs(r)["masterAuthorizedNetworksConfig"].get(
            "cidrBlocks", []
        )
        assert all(b["cidrBlock"] != "0.0.0.0/0" for b in blocks)


def test_workload_identity_and_shielded_nodes_everywhere(run):
    cluster = cluster_inputs(run)
    assert cluster["workloadIdentityConfig"]["workloadPool"] == f"{PROJECT}.svc.id.goog"
    assert cluster["enableShieldedNodes"] is True
    assert cluster["enableLegacyAbac"] is False
    assert cluster["datapathProvider"] == "ADVANCED_DATAPATH"  # enforces NetworkPolicy
    assert cluster["releaseChannel"]["channel"] == "REGULAR"
    assert cluster["removeDefaultNodePool"] is True
    configs = [cluster["nodeConfig"]] + [
        p["inputs"]["nodeConfig"] for p in run.of_type(NODE_POOL)
    ]
    node_sa = run.outputs["ray_google_service_account"].replace("ray-", "node-", 1)
    for node in configs:
        assert node["workloadMetadataConfig"]["mode"] == "GKE_METADATA"
        assert node["shieldedInstanceConfig"] == {
            "enableSecureBoot": True,
            "enableIntegrityMonitoring": True,
        }
        assert node["serviceAccount"] == node_sa  # never the Compute default account


def test_gpu_pools_scale_from_zero_tainted_with_gke_installing_the_driver(private_run):
    pools = {p["inputs"]["name"]: p["inputs"] for p in gpu_pools(private_run)}
    assert set(pools) == {"l4-spot", "t4"}
    for res in gpu_pools(private_run):
        # The autoscaler owns the size; a new initial count would replace the pool.
        assert res["options"]["ignore_changes"] == ["initialNodeCount"]
    for name, pool in pools.items():
        assert pool["autoscaling"]["totalMinNodeCount"] == 0, name
        assert pool["initialNodeCount"] == 0, name
        node = pool["nodeConfig"]
        assert node["taints"] == [
            {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}
        ]
        (accel,) = node["guestAccelerators"]
        assert accel["gpuDriverInstallationConfig"]["gpuDriverVersion"] == "LATEST"
        assert node["labels"][names.POOL_LABEL] == name
    assert pools["t4"]["nodeConfig"]["guestAccelerators"][0]["type"] == (
        "nvidia-tesla-t4"
    )
    assert pools["t4"]["nodeConfig"]["guestAccelerators"][0]["count"] == 2
    assert pools["t4"]["autoscaling"]["totalMaxNodeCount"] == 4
    assert pools["l4-spot"]["nodeConfig"]["spot"] is True
    assert pools["t4"]["nodeConfig"]["spot"] is False
    (system,) = [
        p["inputs"]
        for p in private_run.of_type(NODE_POOL)
        if p["inputs"]["name"] == "system"
    ]
    assert system["nodeConfig"]["taints"] == []
    assert system["autoscaling"]["totalMinNodeCount"] == 1


def test_buckets_private_uniform_versioned_and_encrypted_with_the_stack_key(run):
    key = run.one("gcp:kms/cryptoKey:CryptoKey")
    assert key["inputs"]["rotationPeriod"] == "7776000s"
    grant = run.one("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember")
    assert grant["inputs"]["role"] == KMS_ENCRYPTER
    assert grant["inputs"]["member"] == (
        f"serviceAccount:service-{MOCK_PROJECT_NUMBER}"
        "@gs-project-accounts.iam.gserviceaccount.com"
    )
    buckets = run.of_type(BUCKET)
    assert len(buckets) == 2
    for bucket in buckets:
        inputs = bucket["inputs"]
        assert inputs["uniformBucketLevelAccess"] is True
        assert inputs["publicAccessPrevention"] == "enforced"
        assert inputs["versioning"] == {"enabled": True}
        assert inputs["encryption"]["defaultKmsKeyName"] == key["id"]
        # The service agent may use the key before the bucket is created.
        assert grant["urn"] in bucket["options"]["depends_on"]


def test_protect_data_bucket_keeps_the_data_bucket_and_its_key(run, private_run):
    def kept(r, typ, name_part):
        (res,) = [x for x in r.of_type(typ) if name_part in x["name"]]
        return res["options"]["retain_on_delete"]

    assert kept(private_run, BUCKET, "-data") is True
    assert kept(private_run, "gcp:kms/cryptoKey:CryptoKey", "-key") is True
    assert kept(private_run, BUCKET, "-artifacts") is False
    assert kept(run, BUCKET, "-data") is False  # gcp-dev: disposable data


def test_ray_identity_reaches_the_two_buckets_only(run):
    gsa = run.outputs["ray_google_service_account"]
    grants = run.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
    assert sorted(g["inputs"]["bucket"] for g in grants) == sorted(
        [run.outputs["data_bucket"], run.outputs["artifacts_bucket"]]
    )
    for grant in grants:
        assert grant["inputs"]["role"] == BUCKET_ROLE
        assert grant["inputs"]["member"] == f"serviceAccount:{gsa}"
    # The only project-wide grant is the nodes' logging/monitoring role.
    (project_grant,) = run.of_type("gcp:projects/iAMMember:IAMMember")
    assert project_grant["inputs"]["role"] == NODE_ROLE
    assert "storage" not in project_grant["inputs"]["role"]
    bindings = run.of_type("gcp:serviceaccount/iAMMember:IAMMember")
    assert sorted(b["inputs"]["member"] for b in bindings) == [
        f"serviceAccount:{PROJECT}.svc.id.goog[ray/ray-worker]",
        f"serviceAccount:{PROJECT}.svc.id.goog[ray/ray-workload]",
    ]
    for binding in bindings:
        assert binding["inputs"]["role"] == WORKLOAD_IDENTITY_USER
        assert binding["inputs"]["serviceAccountId"].endswith(gsa)


def test_the_kubernetes_layer_is_the_shared_one_with_gke_data(run):
    accounts = run.of_type("kubernetes:core/v1:ServiceAccount")
    gsa = run.outputs["ray_google_service_account"]
    assert {a["inputs"]["metadata"]["name"] for a in accounts} == {
        "ray-workload",
        "ray-worker",
    }
    for account in accounts:
        assert account["inputs"]["metadata"]["annotations"] == {
            "iam.gke.io/gcp-service-account": gsa
        }
    releases = [
        r["inputs"]["name"] for r in run.of_type("kubernetes:helm.sh/v3:Release")
    ]
    assert releases == ["kuberay-operator"]  # GKE brings its own device plugin
    spec = run.one("kubernetes:ray.io/v1:RayCluster")["inputs"]["spec"]
    (group,) = spec["workerGroupSpecs"]
    pod = group["template"]["spec"]
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
         "effect": "NoSchedule"}
    ]  # fmt: skip
    assert pod["nodeSelector"] == {names.POOL_LABEL: "l4-spot"}
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["GOOGLE_CLOUD_REGION"] == "us-central1"
    assert env["RAYGPU_DATA_BUCKET"] == run.outputs["data_bucket"]
    assert "AWS_REGION" not in env
    # g2-standard-8: 8 vCPUs, 32 GiB, one L4 for the worker.
    resources = pod["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1


def test_the_budget_watches_the_project_on_the_billing_account(run, private_run):
    budget = run.one("gcp:billing/budget:Budget")["inputs"]
    assert budget["billingAccount"] == "000000-000000-000000"
    assert budget["budgetFilter"]["projects"] == [f"projects/{MOCK_PROJECT_NUMBER}"]
    assert budget["amount"]["specifiedAmount"]["units"] == "800"
    assert [
        (r["thresholdPercent"], r["spendBasis"]) for r in budget["thresholdRules"]
    ] == [
        (0.8, "CURRENT_SPEND"),
        (1.0, "FORECASTED_SPEND"),
    ]
    assert budget["allUpdatesRule"].get("monitoringNotificationChannels", []) == []
    channel = private_run.one("gcp:monitoring/notificationChannel:NotificationChannel")
    assert channel["inputs"]["labels"] == {"email_address": "ops@corp.dev"}
    private_budget = private_run.one("gcp:billing/budget:Budget")["inputs"]
    assert private_budget["allUpdatesRule"]["monitoringNotificationChannels"] == [
        channel["id"]
    ]


def test_a_bad_gcp_stack_stops_the_program_naming_the_key():
    from raygpu.config import ConfigError

    with pytest.raises(ConfigError, match=r"raygpu:gpuPools\[0\].acceleratorType"):
        run_gcp(
            gcp_values(
                gpuPools=[
                    {"name": "x", "machineType": "g2-standard-8",
                     "acceleratorType": "nvidia-h100-80gb", "acceleratorCount": 1}
                ]
            )
        )  # fmt: skip
