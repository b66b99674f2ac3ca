"""An in-memory, recording implementation of the AzureCloud seam
(raygpu.orphans.azure), and what an Azure stack leaves as `az` lists it.

No loopback emulator exists for Azure Resource Manager, AKS, role assignments or
Cost Management; the scan and the teardown are tested through this seam only.
The item shapes are the fields `az ... -o json` gives for each kind (id, name,
type, resourceGroup, tags; a role assignment's scope and roleDefinitionId).
ARM's semantics that matter here are kept: deleting a resource group deletes
what it holds; a federated credential goes with its identity.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from raygpu.orphans import azure
from raygpu.orphans.azure import AzError
from raygpu.orphans.azure_scan import ProgramNames

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
REGION = "eastus2"
SUB = f"/subscriptions/{SUBSCRIPTION}"


def arm(group: str, typ: str, name: str, tags: Mapping[str, str] | None = None):
    return {
        "id": f"{SUB}/resourceGroups/{group}/providers/{typ}/{name}",
        "name": name,
        "type": typ,
        "resourceGroup": group,
        "location": REGION,
        "tags": dict(tags or {}),
    }


class RecordedAzure:
    """Resources by kind (federated credentials by `group/identity`); `delete`
    removes one and records the call; `errors` makes chosen deletes fail."""

    def __init__(
        self,
        resources: Mapping[str, Any],
        errors: Mapping[tuple[str, str], str] | None = None,
    ) -> None:
        self.subscription = SUBSCRIPTION
        self.region = REGION
        self.resources = copy.deepcopy(dict(resources))
        self.errors = dict(errors or {})
        self.calls: list[tuple[str, str, str]] = []

    def list(self, kind: str, parent: str | None = None) -> list[dict[str, Any]]:
        self.calls.append(("list", kind, parent or ""))
        if kind == azure.RESOURCE:
            items = self.resources[azure.RESOURCE]
            if parent and parent.startswith("group:"):
                group = parent[6:].lower()
                items = [i for i in items if i["resourceGroup"].lower() == group]
            else:
                key, _, value = str(parent).partition("=")
                items = [i for i in items if i["tags"].get(key) == value]
        elif kind == azure.ROLE_ASSIGNMENT:
            items = [
                i
                for i in self.resources[kind]
                if i["scope"].lower() == str(parent).lower()
            ]
        elif kind == azure.FEDERATED_CREDENTIAL:
            group, _, identity = str(parent).partition("/")
            if not any(
                i["name"] == identity and i["resourceGroup"] == group
                for i in self.resources[azure.RESOURCE]
            ):
                raise AzError(
                    f"`az identity federated-credential`: {identity} "
                    "(ResourceNotFound) was not found"
                )
            items = [
                {**i, "resourceGroup": group, "identity": identity}
                for i in self.resources[kind].get(str(parent), [])
            ]
        else:
            items = self.resources[kind]
        return copy.deepcopy(items)

    def delete(self, kind: str, item: Mapping[str, Any]) -> None:
        key = str(item.get("id") or item["name"])
        self.calls.append(("delete", kind, key))
        if (kind, key) in self.errors:
            raise AzError(self.errors[(kind, key)])
        if kind == azure.FEDERATED_CREDENTIAL:
            parent = f"{item['resourceGroup']}/{item['identity']}"
            creds = self.resources[kind].get(parent, [])
            self._remove(creds, lambda i: i["name"] == item["name"], key)
            return
        if kind == azure.RESOURCE_GROUP:
            self.remove_group(str(item["name"]), key)
            return
        self._remove(self.resources[kind], lambda i: i.get("id") == key, key)

    def _remove(self, items: list, match, key: str) -> None:
        found = [i for i in items if match(i)]
        if not found:
            raise AzError(f"`az`: {key} (ResourceNotFound) could not be found")
        items.remove(found[0])

    def remove_group(self, name: str, key: str = "") -> None:
        """ARM deletes a group with everything in it."""
        groups = self.resources[azure.RESOURCE_GROUP]
        self._remove(groups, lambda g: g["name"].lower() == name.lower(), key or name)
        self.resources[azure.RESOURCE] = [
            i
            for i in self.resources[azure.RESOURCE]
            if i["resourceGroup"].lower() != name.lower()
        ]
        creds = self.resources[azure.FEDERATED_CREDENTIAL]
        for parent in [p for p in creds if p.split("/")[0].lower() == name.lower()]:
            del creds[parent]

    def deleted(self) -> list[tuple[str, str]]:
        return [(kind, key) for verb, kind, key in self.calls if verb == "delete"]

    def remove_program_resources(self, names: ProgramNames) -> None:
        """What `pulumi destroy` removes: the stack's groups (AKS's node group
        with its cluster) and the budget; role assignments on the deleted scopes
        stay behind in this fake, as the leftover a scan must find."""
        for group in (names.node_resource_group, names.resource_group):
            self.remove_group(group)
        self.resources[azure.BUDGET] = [
            b for b in self.resources[azure.BUDGET] if b["name"] not in names.budgets
        ]


def stack_resources(names: ProgramNames) -> dict[str, Any]:
    """What a live Azure stack has, as `az` lists it, plus others' resources the
    scan must leave alone."""
    tags = dict(names.tags)
    other = {**tags, "raygpu:stack": "other"}
    rg, nodes = names.resource_group, names.node_resource_group
    ((group, identity),) = names.federated
    ray_identity = arm(
        group, "Microsoft.ManagedIdentity/userAssignedIdentities", identity, tags
    )
    resources = [
        arm(rg, "Microsoft.ContainerService/managedClusters", names.cluster, tags),
        arm(rg, "Microsoft.Network/virtualNetworks", f"{names.cluster}-net-vnet", tags),
        arm(rg, "Microsoft.Network/natGateways", f"{names.cluster}-net-nat", tags),
        arm(rg, "Microsoft.Network/publicIPAddresses", f"{names.cluster}-nat-ip", tags),
        arm(rg, "Microsoft.Storage/storageAccounts", str(names.storage_account), tags),
        ray_identity,
        # Node pools carry the stack's tags on their scale sets.
        arm(nodes, "Microsoft.Compute/virtualMachineScaleSets", "aks-t4spot-1", tags),
        # What AKS and Kubernetes made in the node group, without the tags.
        arm(nodes, "Microsoft.Network/loadBalancers", "kubernetes"),
        arm(
            nodes,
            "Microsoft.Network/publicIPAddresses",
            "kubernetes-a1b2c3",
            {"k8s-azure-service": "ray/serve-lb"},
        ),
        arm(
            nodes,
            "Microsoft.Compute/disks",
            "pvc-1234",
            {"kubernetes.io-created-for-pvc-name": "logs"},
        ),
        # Someone else's.
        arm("rg-other", "Microsoft.Network/virtualNetworks", "other-vnet", other),
        arm("rg-other", "Microsoft.Compute/disks", "untagged-disk"),
    ]
    assignments = [
        {
            "id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/ra{i}",
            "name": f"ra{i}",
            "scope": scope,
            "roleDefinitionId": role,
        }
        for i, (scope, role) in enumerate(sorted(names.role_assignments))
    ]
    # Another principal's assignment at one of the same scopes, another role.
    scope = sorted(names.role_assignments)[0][0]
    assignments.append(
        {
            "id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/theirs",
            "name": "theirs",
            "scope": scope,
            "roleDefinitionId": f"{SUB}/providers/Microsoft.Authorization/"
            "roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7",
        }
    )
    credentials = [{"name": n} for n in sorted(names.federated[(group, identity)])]
    return {
        azure.RESOURCE_GROUP: [
            {"id": f"{SUB}/resourceGroups/{rg}", "name": rg, "tags": tags},
            {"id": f"{SUB}/resourceGroups/{nodes}", "name": nodes, "tags": {}},
            {"id": f"{SUB}/resourceGroups/rg-other", "name": "rg-other", "tags": {}},
        ],
        azure.RESOURCE: resources,
        azure.ROLE_ASSIGNMENT: assignments,
        azure.FEDERATED_CREDENTIAL: {
            f"{group}/{identity}": [*credentials, {"name": "added-by-hand"}]
        },
        azure.BUDGET: [
            {"id": f"{SUB}/providers/Microsoft.Consumption/budgets/{b}", "name": b}
            for b in (*sorted(names.budgets), "someone-elses-budget")
        ],
    }
