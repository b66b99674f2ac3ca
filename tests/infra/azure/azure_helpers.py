"""Running the real Pulumi program on an Azure stack under Pulumi's mocks.

raygpu.offline's mocks compute what AWS would return; `AzureMocks` adds what
Azure computes from a resource's inputs (ARM resource IDs, names, a public IP's
address, an identity's client and principal IDs, the cluster's OIDC issuer) and
answers the program's two invokes (the caller's client config, the cluster's user
kubeconfig). `run_azure` runs the program under them.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import runpy
import uuid
from typing import Any

from raygpu import config, offline

STACK_FILE = offline.ROOT / "Pulumi.azure-dev.yaml"
MOCK_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
MOCK_CALLER_OBJECT_ID = "11111111-2222-4333-8444-555555555555"
MOCK_EGRESS_IP = "20.0.113.7"
MOCK_SERVER = "https://raygpu-azure-dev-abc123.hcp.eastus2.azmk8s.io:443"
MOCK_CA = "Q0E="
# ARM's provider namespace and resource type of each token the program creates.
ARM_TYPES = {
    "azure-native:network:PublicIPAddress": "Microsoft.Network/publicIPAddresses",
    "azure-native:network:NatGateway": "Microsoft.Network/natGateways",
    "azure-native:network:VirtualNetwork": "Microsoft.Network/virtualNetworks",
    "azure-native:storage:StorageAccount": "Microsoft.Storage/storageAccounts",
    "azure-native:managedidentity:UserAssignedIdentity": (
        "Microsoft.ManagedIdentity/userAssignedIdentities"
    ),
    "azure-native:containerservice:ManagedCluster": (
        "Microsoft.ContainerService/managedClusters"
    ),
}


def azure_values(**changes: Any) -> dict[str, Any]:
    """The committed example stack's values with `changes`."""
    values = copy.deepcopy(config.stack_file_values(STACK_FILE))
    values.update(changes)
    return values


def _guid(seed: str) -> str:
    return str(uuid.UUID(hashlib.md5(seed.encode()).hexdigest()))


def user_kubeconfig() -> str:
    """What AKS's listClusterUserCredential returns (base64 of a kubeconfig)."""
    text = (
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n"
        f"    server: {MOCK_SERVER}\n    certificate-authority-data: {MOCK_CA}\n"
        "users:\n- name: u\n  user:\n    exec:\n      command: kubelogin\n"
    )
    return base64.b64encode(text.encode()).decode()


class AzureMocks(offline.RaygpuMocks):
    def __init__(self, region: str, subscription: str) -> None:
        super().__init__(region)
        self.subscription = subscription

    def new_resource(self, args):
        if not args.typ.startswith("azure-native:"):
            return super().new_resource(args)
        state = dict(args.inputs)
        sub = f"/subscriptions/{self.subscription}"
        group = f"{sub}/resourceGroups/{state.get('resourceGroupName')}"
        typ = args.typ
        rid = f"{group}/providers/mock/{args.name}"
        if typ == "azure-native:resources:ResourceGroup":
            name = state["resourceGroupName"]
            rid = f"{sub}/resourceGroups/{name}"
            state["name"] = name
        elif typ in ARM_TYPES:
            key = {
                "azure-native:network:PublicIPAddress": "publicIpAddressName",
                "azure-native:network:NatGateway": "natGatewayName",
                "azure-native:network:VirtualNetwork": "virtualNetworkName",
                "azure-native:storage:StorageAccount": "accountName",
            }.get(typ, "resourceName")
            name = state[key]
            rid = f"{group}/providers/{ARM_TYPES[typ]}/{name}"
            state["name"] = name
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
                clientId=_guid(f"client/{rid}"),
                principalId=_guid(f"principal/{rid}"),
                tenantId=MOCK_TENANT,
            )
        elif typ == "azure-native:containerservice:ManagedCluster":
            # ARM answers the identities' list with a map by resource ID.
            identity = dict(state.get("identity", {}))
            identity["userAssignedIdentities"] = {
                i: {"clientId": _guid(f"client/{i}"), "principalId": _guid(i)}
                for i in identity.get("userAssignedIdentities", [])
            }
            state.update(
                identity=identity,
                fqdn=MOCK_SERVER.removeprefix("https://").removesuffix(":443"),
                oidcIssuerProfile={
                    **state.get("oidcIssuerProfile", {}),
                    "issuerURL": f"https://{self.region}.oic.prod-aks.azure.com/"
                    f"{MOCK_TENANT}/{_guid(rid)}/",
                },
            )
        elif typ == "azure-native:containerservice:AgentPool":
            rid = f"{state['resourceName']}/agentPools/{state['agentPoolName']}"
            state["name"] = state["agentPoolName"]
        elif typ == "azure-native:authorization:RoleAssignment":
            rid = (
                f"{state['scope']}/providers/Microsoft.Authorization/"
                f"roleAssignments/{_guid(args.name)}"
            )
        return rid, state

    def call(self, args):
        if args.token == "azure-native:authorization:getClientConfig":
            return {
                "clientId": _guid("caller-client"),
                "objectId": MOCK_CALLER_OBJECT_ID,
                "subscriptionId": self.subscription,
                "tenantId": MOCK_TENANT,
            }
        if (
            args.token
            == "azure-native:containerservice:listManagedClusterUserCredentials"
        ):
            return {
                "kubeconfigs": [{"name": "clusterUser", "value": user_kubeconfig()}]
            }
        return super().call(args)


def run_azure(values: dict[str, Any], stack: str = "azure-dev") -> offline.OfflineRun:
    """Validate `values` and run infra/__main__.py on them, as `pulumi up` would."""
    cfg = config.load_config(stack, values)
    return offline.run_under_mocks(
        lambda: runpy.run_path(str(offline.PROGRAM), run_name="__main__") and None,
        stack=cfg.stack,
        region=cfg.region,
        project=cfg.project,
        engine_config=config.engine_values(values),
        mocks=AzureMocks(cfg.region, cfg.subscription_id),
    )
