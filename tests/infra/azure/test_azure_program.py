"""The Azure program under Pulumi's mocks: infra/__main__.py run on the committed
azure-dev stack (and a private variant), its security defaults asserted on what
the engine was asked to create."""

from __future__ import annotations

import pytest

from infra.azure import (
    AKS_RBAC_CLUSTER_ADMIN,
    NETWORK_CONTRIBUTOR,
    STORAGE_BLOB_DATA_CONTRIBUTOR,
)
from infra.azure.identity import TOKEN_AUDIENCE
from raygpu import names
from tests.infra.azure.azure_helpers import (
    MOCK_CALLER_OBJECT_ID,
    MOCK_EGRESS_IP,
    MOCK_SERVER,
    azure_values,
    run_azure,
)

CLUSTER = "azure-native:containerservice:ManagedCluster"
AGENT_POOL = "azure-native:containerservice:AgentPool"
ACCOUNT = "azure-native:storage:StorageAccount"
CONTAINER = "azure-native:storage:BlobContainer"
ROLE = "azure-native:authorization:RoleAssignment"
IDENTITY = "azure-native:managedidentity:UserAssignedIdentity"
FEDERATED = "azure-native:managedidentity:FederatedIdentityCredential"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
GPU_TAINT = "nvidia.com/gpu=true:NoSchedule"
SPOT_TAINT = "kubernetes.azure.com/scalesetpriority=spot:NoSchedule"


@pytest.fixture(scope="module")
def run():
    return run_azure(azure_values())


@pytest.fixture(scope="module")
def private_run():
    """No authorized ranges (a private cluster), a second, on-demand A100 pool,
    an alert address, the data kept on destroy."""
    pools = azure_values()["gpuPools"] + [
        {"name": "a100", "vmSize": "Standard_NC24ads_A100_v4", "maxSize": 3}
    ]
    return run_azure(
        azure_values(
            apiServerAuthorizedCidrs=[],
            gpuPools=pools,
            budgetAlertEmail="ops@corp.dev",
            protectDataBucket=True,
            deployerPrincipalType="ServicePrincipal",
        )
    )


def cluster_inputs(run) -> dict:
    return run.one(CLUSTER)["inputs"]


def role_id(role: str) -> str:
    return (
        f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/"
        f"roleDefinitions/{role}"
    )


def test_outputs_name_the_cluster_the_storage_and_the_identity(run):
    out = run.outputs
    assert (out["cloud"], out["region"]) == ("azure", "eastus2")
    assert out["cluster_name"] == "raygpu-azure-dev"
    assert out["resource_group"] == "rg-raygpu-azure-dev"
    account = out["storage_account"]
    assert len(account) <= 24 and account.isalnum() and account.islower()
    assert out["data_bucket"] == f"data@{account}.dfs.core.windows.net"
    assert out["artifacts_bucket"] == f"artifacts@{account}.dfs.core.windows.net"
    assert out["ray_identity_client_id"]
    assert out["gpu_node_pools"] == {"t4spot": "t4spot"}
    assert out["egress_ip"] == MOCK_EGRESS_IP
    assert "kubeconfig" in run.secret_outputs
    assert f"server: {MOCK_SERVER}" in out["kubeconfig"]
    assert "command: kubelogin" in out["kubeconfig"]
    # No static credential in the state: kubelogin asks Entra ID each time.
    for secret in ("token:", "client-key-data", "password"):
        assert secret not in out["kubeconfig"]


def test_every_cloud_resource_sits_in_a_component_with_the_pinned_provider(run):
    for res in run.resources:
        if res["type"].startswith("azure-native:") and res["custom"]:
            assert res["parent_type"].startswith("raygpu:azure:"), res["name"]
            assert "pulumi:providers:azure-native" in res["options"]["provider"]
    (provider,) = run.of_type("pulumi:providers:azure-native")
    assert provider["inputs"]["subscriptionId"] == SUBSCRIPTION
    assert provider["inputs"]["location"] == "eastus2"
    group = run.one("azure-native:resources:ResourceGroup")["inputs"]
    assert group["tags"] == {"raygpu:stack": "azure-dev", "raygpu:project": "raygpu"}


def test_every_taggable_resource_carries_the_stack_tags(run):
    """`raygpu orphans` finds a stack's leftovers by these tags."""
    tags = {"raygpu:stack": "azure-dev", "raygpu:project": "raygpu"}
    tagged = {
        r["type"].split(":")[-1]
        for r in run.resources
        if r["type"].startswith("azure-native:") and r["inputs"].get("tags") == tags
    }
    assert tagged >= {
        "ResourceGroup", "PublicIPAddress", "NatGateway", "VirtualNetwork",
        "StorageAccount", "UserAssignedIdentity", "ManagedCluster", "AgentPool",
    }  # fmt: skip
    for res in run.resources:
        if "tags" in res["inputs"] and res["type"].startswith("azure-native:"):
            assert res["inputs"]["tags"] == tags, res["name"]


def test_nodes_leave_through_the_nat_gateway_only(run):
    address = run.one("azure-native:network:PublicIPAddress")
    assert address["inputs"]["publicIPAllocationMethod"] == "Static"
    assert address["inputs"]["sku"]["name"] == "Standard"
    nat = run.one("azure-native:network:NatGateway")
    assert nat["inputs"]["publicIpAddresses"] == [{"id": address["id"]}]
    subnet = run.one("azure-native:network:Subnet")
    assert subnet["inputs"]["natGateway"] == {"id": nat["id"]}
    assert subnet["inputs"]["defaultOutboundAccess"] is False
    assert subnet["inputs"]["addressPrefix"] == "10.30.0.0/20"
    net = cluster_inputs(run)["networkProfile"]
    assert net["outboundType"] == "userAssignedNATGateway"
    assert (net["networkPlugin"], net["networkPluginMode"]) == ("azure", "overlay")
    # Cilium enforces the stack's NetworkPolicies.
    assert net["networkPolicy"] == "cilium"
    assert (net["podCidr"], net["serviceCidr"], net["dnsServiceIP"]) == (
        "10.244.0.0/16",
        "10.40.0.0/16",
        "10.40.0.10",
    )
    pools = [cluster_inputs(run)["agentPoolProfiles"][0]] + [
        p["inputs"] for p in run.of_type(AGENT_POOL)
    ]
    for pool in pools:
        assert pool["tags"] == {"raygpu:stack": "azure-dev", "raygpu:project": "raygpu"}
        assert pool["vnetSubnetID"] == subnet["id"]
        assert pool["enableNodePublicIP"] is False
    # The control plane may join nodes to that subnet, and nothing wider.
    (grant,) = [r for r in run.of_type(ROLE) if r["inputs"]["scope"] == subnet["id"]]
    assert grant["inputs"]["roleDefinitionId"] == role_id(NETWORK_CONTRIBUTOR)


def test_the_api_server_is_open_to_the_listed_networks_only(run, private_run):
    access = cluster_inputs(run)["apiServerAccessProfile"]
    assert access["enablePrivateCluster"] is False
    assert access["authorizedIPRanges"] == ["203.0.113.0/24", f"{MOCK_EGRESS_IP}/32"]
    private = cluster_inputs(private_run)["apiServerAccessProfile"]
    assert private["enablePrivateCluster"] is True
    assert private.get("authorizedIPRanges", []) == []
    for r in (run, private_run):
        ranges = cluster_inputs(r)["apiServerAccessProfile"].get(
            "authorizedIPRanges", []
        )
        assert "0.0.0.0/0" not in ranges


def test_workload_identity_oidc_and_azure_rbac_without_local_accounts(run):
    cluster = cluster_inputs(run)
    assert cluster["oidcIssuerProfile"] == {"enabled": True}
    assert cluster["securityProfile"]["workloadIdentity"] == {"enabled": True}
    assert cluster["disableLocalAccounts"] is True
    assert cluster["enableRBAC"] is True
    assert cluster["aadProfile"] == {"managed": True, "enableAzureRBAC": True}
    assert cluster["identity"]["type"] == "UserAssigned"
    assert cluster["kubernetesVersion"] == "1.33"
    assert cluster["autoUpgradeProfile"]["upgradeChannel"] == "patch"
    # Whoever runs `pulumi up` administers this cluster, at its scope only.
    (admin,) = [
        r["inputs"]
        for r in run.of_type(ROLE)
        if r["inputs"]["roleDefinitionId"] == role_id(AKS_RBAC_CLUSTER_ADMIN)
    ]
    assert admin["scope"] == run.one(CLUSTER)["id"]
    assert admin["principalId"] == MOCK_CALLER_OBJECT_ID
    assert admin["principalType"] == "User"


def test_a_ci_deployer_is_granted_as_a_service_principal(private_run):
    (admin,) = [
        r["inputs"]
        for r in private_run.of_type(ROLE)
        if r["inputs"]["roleDefinitionId"] == role_id(AKS_RBAC_CLUSTER_ADMIN)
    ]
    assert admin["principalType"] == "ServicePrincipal"


def test_federated_credentials_are_rays_two_service_accounts_exactly(run):
    issuer = run.outputs["oidc_issuer_url"]
    assert issuer.startswith("https://eastus2.oic.prod-aks.azure.com/")
    (identity,) = [i for i in run.of_type(IDENTITY) if i["name"].endswith("-ray")]
    credentials = [c["inputs"] for c in run.of_type(FEDERATED)]
    assert sorted(c["subject"] for c in credentials) == [
        "system:serviceaccount:ray:ray-worker",
        "system:serviceaccount:ray:ray-workload",
    ]
    for credential in credentials:
        assert credential["issuer"] == issuer
        assert credential["audiences"] == [TOKEN_AUDIENCE]
        assert credential["resourceName"] == identity["inputs"]["resourceName"]


def test_blob_data_roles_are_granted_at_container_scope_only(run):
    containers = {c["inputs"]["containerName"]: c["id"] for c in run.of_type(CONTAINER)}
    assert set(containers) == {"data", "artifacts"}
    grants = [
        r["inputs"]
        for r in run.of_type(ROLE)
        if r["inputs"]["roleDefinitionId"] == role_id(STORAGE_BLOB_DATA_CONTRIBUTOR)
    ]
    assert sorted(g["scope"] for g in grants) == sorted(containers.values())
    (ray_principal,) = {g["principalId"] for g in grants}  # one identity, Ray's
    others = {
        r["inputs"]["principalId"]
        for r in run.of_type(ROLE)
        if r["inputs"]["roleDefinitionId"] != role_id(STORAGE_BLOB_DATA_CONTRIBUTOR)
    }
    assert ray_principal and ray_principal not in others
    for grant in grants:
        assert "/blobServices/default/containers/" in grant["scope"]
        assert grant["principalType"] == "ServicePrincipal"
    # No role anywhere at the subscription, the resource group or the account.
    account = run.one(ACCOUNT)["id"]
    group = run.one("azure-native:resources:ResourceGroup")["id"]
    for role in run.of_type(ROLE):
        assert role["inputs"]["scope"] not in (
            f"/subscriptions/{SUBSCRIPTION}",
            group,
            account,
        ), role["name"]


def test_storage_is_private_https_only_and_double_encrypted(run):
    account = run.one(ACCOUNT)["inputs"]
    assert account["allowBlobPublicAccess"] is False
    assert account["enableHttpsTrafficOnly"] is True
    assert account["minimumTlsVersion"] == "TLS1_2"
    assert account["encryption"]["requireInfrastructureEncryption"] is True
    # Jobs authenticate with Entra ID (workload identity): no account keys.
    assert account["allowSharedKeyAccess"] is False
    assert account["defaultToOAuthAuthentication"] is True
    service = run.one("azure-native:storage:BlobServiceProperties")["inputs"]
    assert service["isVersioningEnabled"] is True
    assert service["deleteRetentionPolicy"]["enabled"] is True
    for container in run.of_type(CONTAINER):
        assert container["inputs"]["publicAccess"] == "None"
    (rule,) = run.one("azure-native:storage:ManagementPolicy")["inputs"]["policy"][
        "rules"
    ]
    assert rule["definition"]["filters"]["prefixMatch"] == ["artifacts/"]
    assert rule["definition"]["actions"]["version"]["delete"] == {
        "daysAfterCreationGreaterThan": 7
    }


def test_protect_data_keeps_the_account_its_data_and_their_group(run, private_run):
    def kept(r, typ, part=""):
        (res,) = [x for x in r.of_type(typ) if x["name"].endswith(part)]
        return res["options"]["retain_on_delete"]

    group = "azure-native:resources:ResourceGroup"
    assert (kept(private_run, ACCOUNT), kept(private_run, group)) == (True, True)
    assert kept(private_run, CONTAINER, "-data") is True
    assert kept(private_run, CONTAINER, "-artifacts") is False  # forceDestroy
    # azure-dev: disposable data, so nothing stays behind.
    assert (kept(run, ACCOUNT), kept(run, group)) == (False, False)
    assert kept(run, CONTAINER, "-data") is False


def test_gpu_pools_scale_from_zero_tainted_and_the_system_pool_is_not(private_run):
    pools = {p["inputs"]["agentPoolName"]: p for p in private_run.of_type(AGENT_POOL)}
    assert set(pools) == {"t4spot", "a100"}
    for name, res in pools.items():
        pool = res["inputs"]
        assert pool["mode"] == "User", name
        assert pool["enableAutoScaling"] is True, name
        assert (pool["minCount"], pool["count"]) == (0, 0), name
        assert pool["nodeLabels"][names.POOL_LABEL] == name
        assert res["options"]["ignore_changes"] == ["count"]  # the autoscaler's
        assert pool["gpuProfile"] == {"driver": "Install"}  # AKS's driver
    assert pools["t4spot"]["inputs"]["nodeTaints"] == [GPU_TAINT, SPOT_TAINT]
    assert pools["t4spot"]["inputs"]["scaleSetPriority"] == "Spot"
    assert pools["a100"]["inputs"]["nodeTaints"] == [GPU_TAINT]
    assert pools["a100"]["inputs"]["maxCount"] == 3
    assert "scaleSetPriority" not in pools["a100"]["inputs"]
    (system,) = cluster_inputs(private_run)["agentPoolProfiles"]
    assert system["mode"] == "System"
    assert system["nodeTaints"] == []  # the operators and the Ray head run here
    assert system["minCount"] >= 1


def test_the_kubernetes_layer_is_the_shared_one_with_azure_data(run):
    client_id = run.outputs["ray_identity_client_id"]
    accounts = run.of_type("kubernetes:core/v1:ServiceAccount")
    assert {a["inputs"]["metadata"]["name"] for a in accounts} == {
        "ray-workload",
        "ray-worker",
    }
    for account in accounts:
        assert account["inputs"]["metadata"]["annotations"] == {
            "azure.workload.identity/client-id": client_id
        }
    releases = [
        r["inputs"]["name"] for r in run.of_type("kubernetes:helm.sh/v3:Release")
    ]
    # AKS installs the driver only: the stack brings the device plugin.
    assert sorted(releases) == ["kuberay-operator", "nvidia-device-plugin"]
    spec = run.one("kubernetes:ray.io/v1:RayCluster")["inputs"]["spec"]
    head = spec["headGroupSpec"]["template"]
    assert head["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    (group,) = spec["workerGroupSpecs"]
    pod = group["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert pod["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true",
         "effect": "NoSchedule"},
        {"key": "kubernetes.azure.com/scalesetpriority", "operator": "Equal",
         "value": "spot", "effect": "NoSchedule"},
    ]  # fmt: skip
    assert pod["spec"]["nodeSelector"] == {names.POOL_LABEL: "t4spot"}
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["AZURE_REGION"] == "eastus2"
    assert env["RAYGPU_DATA_BUCKET"] == run.outputs["data_bucket"]
    assert "AWS_REGION" not in env
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_the_budget_watches_both_resource_groups(run, private_run):
    budget = run.one("azure-native:consumption:Budget")["inputs"]
    assert budget["scope"] == f"/subscriptions/{SUBSCRIPTION}"
    assert budget["filter"]["dimensions"] == {
        "name": "ResourceGroupName",
        "operator": "In",
        "values": ["rg-raygpu-azure-dev", "rg-raygpu-azure-dev-nodes"],
    }
    assert cluster_inputs(run)["nodeResourceGroup"] == "rg-raygpu-azure-dev-nodes"
    assert (budget["amount"], budget["timeGrain"]) == (800, "Monthly")
    assert budget["timePeriod"]["startDate"].endswith("-01T00:00:00Z")
    rules = budget["notifications"]
    assert {k: (r["threshold"], r["thresholdType"]) for k, r in rules.items()} == {
        "actual-80": (80, "Actual"),
        "forecasted-100": (100, "Forecasted"),
    }
    assert all(r["contactEmails"] == [] for r in rules.values())
    private = private_run.one("azure-native:consumption:Budget")["inputs"]
    assert all(
        r["contactEmails"] == ["ops@corp.dev"]
        for r in private["notifications"].values()
    )


def test_a_bad_azure_stack_stops_the_program_naming_the_key():
    from raygpu.config import ConfigError

    with pytest.raises(ConfigError, match=r"raygpu:gpuPools\[0\].vmSize"):
        run_azure(azure_values(gpuPools=[{"name": "x", "vmSize": "Standard_D4s_v5"}]))
