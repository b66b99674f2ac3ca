"""The leftover scan of an Azure stack, through the AzureCloud seam.

What belongs to the stack:
- by its tags (`raygpu:stack` and `raygpu:project` on every taggable resource the
  program makes, node pools' scale sets, VMs and disks included), anywhere in the
  stack's subscription: `az resource list --tag`, and the resource groups;
- the contents of AKS's node resource group (the program names it): what AKS and
  Kubernetes made there (scale sets, the `kubernetes` load balancer, the public
  IPs of LoadBalancer Services, the Azure Disk CSI driver's PVC disks), and the
  group itself. AKS deletes it with the cluster; anything found there later is
  the cluster's leftover;
- by the names the program gives, for what Azure gives no tags: the role
  assignments at the scopes the program grants on (the node subnet, the cluster,
  the two containers), the federated credentials of Ray's identity, and the
  consumption budget. They are read from the program itself, run offline on
  Pulumi.<stack>.yaml (raygpu.offline), so none is declared a second time here.

The storage account the program keeps on destroy (protectDataBucket, or an
artifacts container kept) is protected, and so is the resource group holding it
(deleting a group deletes everything in it): `--delete-data-bucket` deletes both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from raygpu.orphans import azure
from raygpu.orphans.azure import AzError, AzureCloud
from raygpu.orphans.cli_cloud import CliScanner, carries, marks
from raygpu.orphans.model import Orphan

CLUSTER_TYPE = "Microsoft.ContainerService/managedClusters"
STORAGE_TYPE = "Microsoft.Storage/storageAccounts"
LB_TYPE = "Microsoft.Network/loadBalancers"
IP_TYPE = "Microsoft.Network/publicIPAddresses"
# The tag cloud-provider-azure puts on a LoadBalancer Service's public IP.
SERVICE_TAG = "k8s-azure-service"
AKS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
# ARM types in the order they must go: the cluster (its node group with it),
# what holds the network, the network, the rest; then what takes no tags, and
# the resource groups last (deleting one deletes whatever it still holds).
TYPE_ORDER = (
    CLUSTER_TYPE,
    "Microsoft.Compute/virtualMachineScaleSets",
    LB_TYPE,
    "Microsoft.Network/networkInterfaces",
    "Microsoft.Compute/disks",
    "Microsoft.Network/virtualNetworks",
    "Microsoft.Network/natGateways",
    IP_TYPE,
    "Microsoft.Network/networkSecurityGroups",
    "Microsoft.Network/routeTables",
    "Microsoft.ManagedIdentity/userAssignedIdentities",
    STORAGE_TYPE,
)
KIND_ORDER = (
    azure.ROLE_ASSIGNMENT,
    azure.FEDERATED_CREDENTIAL,
    *TYPE_ORDER,
    azure.BUDGET,
    azure.RESOURCE_GROUP,
)
# The kinds the seam deletes by their own command; the rest are ARM resources.
SEAM_KINDS = (
    azure.ROLE_ASSIGNMENT,
    azure.FEDERATED_CREDENTIAL,
    azure.BUDGET,
    azure.RESOURCE_GROUP,
)
KEPT_DETAIL = "holds the kept data (pass --delete-data-bucket)"


@dataclass(frozen=True)
class ProgramNames:
    """What the program names, for what carries no tags or must be kept."""

    tags: Mapping[str, str]
    cluster: str
    resource_group: str
    node_resource_group: str
    storage_account: str | None = None
    keeps_account: bool = False
    # (scope, role definition ID) of each role assignment the program makes.
    role_assignments: frozenset[tuple[str, str]] = frozenset()
    # (resource group, identity) -> the federated credentials' names.
    federated: Mapping[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    budgets: frozenset[str] = frozenset()


def program_names(stack: str, path: str | Path | None = None) -> ProgramNames:
    """The names the program gives the stack's resources, from an offline run of
    it on Pulumi.<stack>.yaml (raises ConfigError for a bad stack file)."""
    from raygpu import offline
    from raygpu.config import load_stack_file

    stack_file = Path(path) if path else offline.stack_path(stack)
    cfg = load_stack_file(stack_file, stack)
    run = offline.run_offline(stack, stack_file)
    (cluster,) = run.of_type("azure-native:containerservice:ManagedCluster")
    accounts = run.of_type("azure-native:storage:StorageAccount")
    federated: dict[tuple[str, str], set[str]] = {}
    for r in run.of_type("azure-native:managedidentity:FederatedIdentityCredential"):
        key = (str(r["inputs"]["resourceGroupName"]), str(r["inputs"]["resourceName"]))
        name = str(r["inputs"]["federatedIdentityCredentialResourceName"])
        federated.setdefault(key, set()).add(name)
    return ProgramNames(
        tags=dict(cfg.tags),
        cluster=cfg.cluster_name,
        resource_group=cfg.resource_group,
        node_resource_group=str(cluster["inputs"]["nodeResourceGroup"]),
        storage_account=accounts[0]["inputs"]["accountName"] if accounts else None,
        keeps_account=bool(accounts and accounts[0]["options"]["retain_on_delete"]),
        role_assignments=frozenset(
            (str(r["inputs"]["scope"]), str(r["inputs"]["roleDefinitionId"]))
            for r in run.of_type("azure-native:authorization:RoleAssignment")
        ),
        federated={k: frozenset(v) for k, v in federated.items()},
        budgets=frozenset(
            str(r["inputs"]["budgetName"])
            for r in run.of_type("azure-native:consumption:Budget")
        ),
    )


def _same(a: str, b: str) -> bool:
    """ARM compares IDs and names without case."""
    return a.lower() == b.lower()


@dataclass
class AzureOrphanScanner(CliScanner):
    """Finds and deletes what an Azure stack left in its subscription."""

    cloud: AzureCloud
    stack: str
    names: ProgramNames
    log: Callable[[str], None] = print
    _items: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)

    cloud_title = "Azure"
    load_balancer_step = (
        "wait until AKS has deleted the load balancers and public IPs its "
        "LoadBalancer Services made in the node resource group"
    )
    cluster_pattern = AKS_NAME
    cluster_rule = "an AKS cluster name (letters, digits, - and _, up to 63)"

    def check_access(self) -> None:
        """One call that proves az, its login and the subscription."""
        self.cloud.list(azure.RESOURCE_GROUP)

    # ------------------------------------------------------------------ scan

    def scan(self) -> list[Orphan]:
        groups = self._groups()
        found = [
            *groups,
            *self._tagged(),
            *self._node_group_contents(),
            *self._role_assignments(),
            *self._federated(),
            *self._budgets(),
        ]
        unique = {(o.kind, o.arn.lower()): o for o in found}  # tagged and in a group
        return self.sort_for_deletion(self._protect(list(unique.values())))

    def _orphan(self, kind: str, item: Mapping[str, Any], reason: str) -> Orphan:
        rid = str(item.get("id") or item.get("name", ""))
        if kind == azure.RESOURCE:
            kind = str(item.get("type", "resource"))
        self._items[(kind, rid.lower())] = item
        return Orphan(kind, str(item.get("name", rid)), rid, reason)

    def _stack_tag(self) -> str:
        key = next(iter(self.names.tags))
        return f"{key}={self.names.tags[key]}"

    def _groups(self) -> list[Orphan]:
        found = []
        for item in self.cloud.list(azure.RESOURCE_GROUP):
            name = str(item.get("name", ""))
            if _same(name, self.names.node_resource_group):
                reason = f"AKS's node resource group of {self.names.cluster}"
            elif carries(item.get("tags"), self.names.tags):
                reason = marks(self.names.tags)
            else:
                continue
            found.append(self._orphan(azure.RESOURCE_GROUP, item, reason))
        return found

    def _tagged(self) -> list[Orphan]:
        return [
            self._orphan(azure.RESOURCE, item, marks(self.names.tags))
            for item in self.cloud.list(azure.RESOURCE, self._stack_tag())
            if carries(item.get("tags"), self.names.tags)
        ]

    def _node_group_contents(self) -> list[Orphan]:
        group = self.names.node_resource_group
        if not any(
            _same(str(g.get("name", "")), group)
            for g in self.cloud.list(azure.RESOURCE_GROUP)
        ):
            return []
        reason = f"in AKS's node resource group {group}"
        return [
            self._orphan(azure.RESOURCE, item, reason)
            for item in self.cloud.list(azure.RESOURCE, f"group:{group}")
        ]

    def _role_assignments(self) -> list[Orphan]:
        found = []
        for scope in sorted({s for s, _ in self.names.role_assignments}):
            roles = {r.lower() for s, r in self.names.role_assignments if s == scope}
            for item in self.cloud.list(azure.ROLE_ASSIGNMENT, scope):
                if (
                    _same(str(item.get("scope", "")), scope)
                    and str(item.get("roleDefinitionId", "")).lower() in roles
                ):
                    reason = "granted by the stack's program on its scope"
                    found.append(self._orphan(azure.ROLE_ASSIGNMENT, item, reason))
        return found

    def _federated(self) -> list[Orphan]:
        found = []
        groups = {
            str(g.get("name", "")).lower()
            for g in self.cloud.list(azure.RESOURCE_GROUP)
        }
        for (group, identity), wanted in sorted(self.names.federated.items()):
            if group.lower() not in groups:  # went with its resource group
                continue
            try:
                items = self.cloud.list(
                    azure.FEDERATED_CREDENTIAL, f"{group}/{identity}"
                )
            except AzError as exc:
                if exc.not_found:  # the identity is gone, and they with it
                    continue
                raise
            found += [
                self._orphan(azure.FEDERATED_CREDENTIAL, i, "named by the program")
                for i in items
                if i.get("name") in wanted
            ]
        return found

    def _budgets(self) -> list[Orphan]:
        return [
            self._orphan(azure.BUDGET, item, "named by the stack's program")
            for item in self.cloud.list(azure.BUDGET)
            if item.get("name") in self.names.budgets
        ]

    def _protect(self, orphans: list[Orphan]) -> list[Orphan]:
        """Keep the storage account the program keeps, and its resource group."""
        if not (self.names.keeps_account and self.names.storage_account):
            return orphans
        return [
            replace(o, protected=True, detail=KEPT_DETAIL)
            if (o.kind == STORAGE_TYPE and _same(o.id, self.names.storage_account))
            or (
                o.kind == azure.RESOURCE_GROUP
                and _same(o.id, self.names.resource_group)
            )
            else o
            for o in orphans
        ]

    def load_balancers_left(self) -> list[Orphan]:
        """What AKS made for LoadBalancer Services in the node resource group:
        its load balancers and the Services' public IPs (tagged SERVICE_TAG)."""
        return [
            o
            for o in self._node_group_contents()
            if o.kind == LB_TYPE
            or (
                o.kind == IP_TYPE
                and SERVICE_TAG
                in (self._items[(o.kind, o.arn.lower())].get("tags") or {})
            )
        ]

    # ---------------------------------------------------------------- delete

    def item_key(self, orphan: Orphan) -> tuple[str, str]:
        return orphan.kind, orphan.arn.lower()

    def kept_message(self, orphan: Orphan) -> str:
        return f"protected: {KEPT_DETAIL}"

    def delete_item(self, orphan: Orphan, item: Mapping[str, Any]) -> str:
        kind = orphan.kind if orphan.kind in SEAM_KINDS else azure.RESOURCE
        self.cloud.delete(kind, item)
        return ""

    def sort_for_deletion(self, orphans: Iterable[Orphan]) -> list[Orphan]:
        """In KIND_ORDER (ARM types it does not list after those it does); the
        node resource group before the stack's own."""
        rank = {kind: float(i) for i, kind in enumerate(KIND_ORDER)}
        other = rank[azure.BUDGET] - 0.5

        def key(o: Orphan) -> tuple[float, bool, str]:
            node_group = _same(o.id, self.names.node_resource_group)
            return rank.get(o.kind, other), not node_group, o.id

        return sorted(orphans, key=key)


def scanner_for(
    stack: str,
    subscription: str,
    region: str,
    names: ProgramNames,
    cloud: AzureCloud | None = None,
    **kwargs: Any,
) -> AzureOrphanScanner:
    """A scanner whose access is proven by one call."""
    scanner = AzureOrphanScanner(
        cloud or azure.AzCli(subscription, region), stack, names, **kwargs
    )
    scanner.check_access()
    return scanner
