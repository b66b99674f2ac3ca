"""The Azure stack (`raygpu:cloud: azure`): one component per concern, as on AWS
and Google Cloud: network.py (resource group, VNet, node subnet, NAT gateway),
storage.py (the storage account and its two containers), cluster.py (AKS and its
node pools), identity.py (Ray's user-assigned identity, its federated
credentials and container-scoped role assignments), budget.py (the consumption
budget). infra/__main__.py wires them with the Kubernetes layer that every cloud
shares (infra/kuberay.py).
"""

# Built-in Azure role definitions (their IDs are the same in every tenant).
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
NETWORK_CONTRIBUTOR = "4d97b98b-1d4f-4787-a291-c67834d212e7"
AKS_RBAC_CLUSTER_ADMIN = "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b"


def role_definition_id(subscription_id: str, role: str) -> str:
    return (
        f"/subscriptions/{subscription_id}/providers/"
        f"Microsoft.Authorization/roleDefinitions/{role}"
    )
