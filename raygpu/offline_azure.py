"""What Azure computes for the offline run (raygpu/offline.py's `azure-native`
row of CLOUD_MOCKS): ARM resource IDs and names, a public IP's address, an
identity's client and principal IDs, the cluster's OIDC issuer (`issuerURL`) and
its identities (a map keyed by resource ID, as ARM answers), and the program's two
invokes: the caller's client config and the cluster's user kubeconfig (base64,
with a server and a CA).

This module imports nothing from Pulumi; offline.py hands it the mocks object,
whose `region` and `subscription` it reads.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

PREFIX = "azure-native"
MOCK_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
MOCK_CALLER_OBJECT_ID = "11111111-2222-4333-8444-555555555555"
MOCK_EGRESS_IP = "20.0.113.7"
MOCK_SERVER = "https://raygpu-azure-dev-abc123.hcp.eastus2.azmk8s.io:443"
MOCK_CA = "Q0E="
# A subscription for a config that names none.
MOCK_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
# ARM's provider namespace and resource type, and the input naming the resource,
# of each token whose ID the program reads.
ARM_TYPES = {
    "azure-native:network:PublicIPAddress": (
        "Microsoft.Network/publicIPAddresses",
        "publicIpAddressName",
    ),
    "azure-native:network:NatGateway": (
        "Microsoft.Network/natGateways",
        "natGatewayName",
    ),
    "azure-native:network:VirtualNetwork": (
        "Microsoft.Network/virtualNetworks",
        "virtualNetworkName",
    ),
    "azure-native:storage:StorageAccount": (
        "Microsoft.Storage/storageAccounts",
        "accountName",
    ),
    "azure-native:managedidentity:UserAssignedIdentity": (
        "Microsoft.ManagedIdentity/userAssignedIdentities",
        "resourceName",
    ),
    "azure-native:containerservice:ManagedCluster": (
        "Microsoft.ContainerService/managedClusters",
        "resourceName",
    ),
}
CLIENT_CONFIG = "azure-native:authorization:getClientConfig"
USER_CREDENTIALS = "azure-native:containerservice:listManagedClusterUserCredentials"


def guid(seed: str) -> str:
    """A stable GUID per seed (Azure's client, principal and assignment IDs)."""
    return str(uuid.UUID(hashlib.md5(seed.encode()).hexdigest()))


def user_kubeconfig() -> str:
    """What AKS's listClusterUserCredential returns (base64 of a kubeconfig)."""
    text = (
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n"
        f"    server: {MOCK_SERVER}\n    certificate-authority-data: {MOCK_CA}\n"
        "users:\n- name: u\n  user:\n    exec:\n      command: kubelogin\n"
    )
    return base64.b64encode(text.encode()).decode()


def azure_state(mocks: Any, typ: str, name: str, state: dict, digest: str):
    """(id, state) of an azure-native resource."""
    sub = f"/subscriptions/{mocks.subscription}"
    group = f"{sub}/resourceGroups/{state.get('resourceGroupName')}"
    rid = f"{group}/providers/mock/{name}"
    if typ == "azure-native:resources:ResourceGroup":
        rid = f"{sub}/resourceGroups/{state['resourceGroupName']}"
        state["name"] = state["resourceGroupName"]
    elif typ in ARM_TYPES:
        arm_type, key = ARM_TYPES[typ]
        state["name"] = state[key]
        rid = f"{group}/providers/{arm_type}/{state[key]}"
    if typ == "azure-native:network:PublicIPAddress":
        state["ipAddress"] = MOCK_EGRESS_IP
    elif typ == "azure-native:network:Subnet":
        vnet = f"{group}/providers/Microsoft.Network/virtualNetworks"
        rid = f"{vnet}/{state['virtualNetworkName']}/subnets/{state['subnetName']}"
        state["name"] = state["subnetName"]
    elif typ == "azure-native:storage:BlobContainer":
        account = f"{group}/providers/Microsoft.Storage/storageAccounts"
        rid = (
            f"{account}/{state['accountName']}/blobServices/default/"
            f"containers/{state['containerName']}"
        )
        state["name"] = state["containerName"]
    elif typ == "azure-native:managedidentity:UserAssignedIdentity":
        state.update(
            clientId=guid(f"client/{rid}"),
            principalId=guid(f"principal/{rid}"),
            tenantId=MOCK_TENANT,
        )
    elif typ == "azure-native:containerservice:ManagedCluster":
        identity = dict(state.get("identity", {}))
        identity["userAssignedIdentities"] = {
            i: {"clientId": guid(f"client/{i}"), "principalId": guid(i)}
            for i in identity.get("userAssignedIdentities", [])
        }
        state.update(
            identity=identity,
            fqdn=MOCK_SERVER.removeprefix("https://").removesuffix(":443"),
            oidcIssuerProfile={
                **state.get("oidcIssuerProfile", {}),
                "issuerURL": f"https://{mocks.region}.oic.prod-aks.azure.com/"
                f"{MOCK_TENANT}/{guid(rid)}/",
            },
        )
    elif typ == "azure-native:containerservice:AgentPool":
        rid = f"{state['resourceName']}/agentPools/{state['agentPoolName']}"
        state["name"] = state["agentPoolName"]
    elif typ == "azure-native:authorization:RoleAssignment":
        rid = (
            f"{state['scope']}/providers/Microsoft.Authorization/"
            f"roleAssignments/{guid(name)}"
        )
    return rid, state


def client_config(mocks: Any, args: Any) -> dict[str, Any]:
    return {
        "clientId": guid("caller-client"),
        "objectId": MOCK_CALLER_OBJECT_ID,
        "subscriptionId": mocks.subscription,
        "tenantId": MOCK_TENANT,
    }


def user_credentials(mocks: Any, args: Any) -> dict[str, Any]:
    return {"kubeconfigs": [{"name": "clusterUser", "value": user_kubeconfig()}]}


INVOKES = {CLIENT_CONFIG: client_config, USER_CREDENTIALS: user_credentials}
