"""The leftover scan of a Google Cloud stack, through the GoogleCloud seam.

What belongs to the stack:
- by its labels (the config's `labels`, which the provider's default_labels put on
  every resource that takes labels, and the cluster's resource labels, which GKE
  copies onto its node VMs and their boot disks): GKE clusters, VMs, disks,
  buckets, Cloud KMS keys. GKE's own `goog-k8s-cluster-name=<cluster>` label on
  VMs and disks of the stack's region counts too. Disks that PersistentVolumeClaims
  made carry the cluster's labels as well (the PD CSI driver's maintainers say GKE
  applies them); that is not verified here against a live cluster.
- by the names the program gives, for the kinds Google Cloud gives no labels:
  the network, its subnet, the router (its Cloud NAT goes with it), the Google
  service accounts and the billing budget. The names are read from the program
  itself, run offline on Pulumi.<stack>.yaml (raygpu.offline), so none is declared
  a second time here; the stack file outlives a destroy.
- on the stack's network: firewall and forwarding rules GKE made for the cluster
  and its LoadBalancer Services (they carry no labels, and block the network's
  deletion).

Cloud KMS never deletes a key: "deleting" one schedules each of its versions for
destruction; a key with no active version costs nothing and is no longer
reported. Key rings cannot be deleted at all and are not reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from raygpu.names import GCP_BUCKET_LABEL
from raygpu.orphans import gcp
from raygpu.orphans.cli_cloud import CliScanner, carries, marks
from raygpu.orphans.gcp import GoogleCloud, _last
from raygpu.orphans.model import Orphan

# The label infra/gcp/storage.py puts on the two buckets (data, artifacts).
BUCKET_LABEL = GCP_BUCKET_LABEL
GKE_CLUSTER_LABEL = "goog-k8s-cluster-name"
# GKE names the firewall rules of a LoadBalancer Service k8s-fw-... and k8s-...;
# its cluster's own rules (gke-<cluster>-...) go with the cluster.
LB_FIREWALL_PREFIX = "k8s-"
CLUSTER_NAME = re.compile(r"^[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?$")
# In the order they must go: the cluster (its node VMs and disks with it), what
# holds the network, the network, then the rest.
DELETE_ORDER = (
    gcp.CLUSTER,
    gcp.FORWARDING_RULE,
    gcp.FIREWALL,
    gcp.INSTANCE,
    gcp.DISK,
    gcp.ROUTER,
    gcp.SUBNETWORK,
    gcp.NETWORK,
    gcp.BUCKET,
    gcp.KMS_KEY,
    gcp.SERVICE_ACCOUNT,
    gcp.BUDGET,
)
LIVE_KEY_VERSION = ("ENABLED", "DISABLED")
KMS_DETAIL = "Cloud KMS deletes no key: --delete schedules its versions for destruction"


@dataclass(frozen=True)
class ProgramNames:
    """What the program names, for the kinds that carry no labels."""

    labels: Mapping[str, str]
    cluster: str
    network: str | None = None
    subnetworks: frozenset[str] = frozenset()
    routers: frozenset[str] = frozenset()
    key_rings: frozenset[str] = frozenset()
    service_accounts: frozenset[str] = frozenset()
    budgets: frozenset[str] = frozenset()  # display names
    billing_account: str | None = None


def program_names(stack: str, path: str | Path | None = None) -> ProgramNames:
    """The names the program gives the stack's resources, from an offline run of
    it on Pulumi.<stack>.yaml (raises ConfigError for a bad stack file)."""
    from raygpu import offline
    from raygpu.config import load_stack_file

    stack_file = Path(path) if path else offline.stack_path(stack)
    cfg = load_stack_file(stack_file, stack)
    run = offline.run_offline(stack, stack_file)

    def inputs(typ: str, key: str) -> frozenset[str]:
        return frozenset(str(r["inputs"][key]) for r in run.of_type(typ))

    networks = inputs("gcp:compute/network:Network", "name")
    budgets = run.of_type("gcp:billing/budget:Budget")
    return ProgramNames(
        labels=dict(cfg.labels),
        cluster=cfg.cluster_name,
        network=next(iter(sorted(networks)), None),
        subnetworks=inputs("gcp:compute/subnetwork:Subnetwork", "name"),
        routers=inputs("gcp:compute/router:Router", "name"),
        key_rings=frozenset(r["id"] for r in run.of_type("gcp:kms/keyRing:KeyRing")),
        service_accounts=frozenset(
            f"{r['inputs']['accountId']}@{cfg.gcp_project}.iam.gserviceaccount.com"
            for r in run.of_type("gcp:serviceaccount/account:Account")
        ),
        budgets=inputs("gcp:billing/budget:Budget", "displayName"),
        billing_account=budgets[0]["inputs"]["billingAccount"] if budgets else None,
    )


@dataclass
class GcpOrphanScanner(CliScanner):
    """Finds and deletes what a Google Cloud stack left in its project."""

    cloud: GoogleCloud
    stack: str
    names: ProgramNames
    data_bucket: str | None = None
    log: Callable[[str], None] = print
    _items: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)

    cloud_title = "Google Cloud"
    load_balancer_step = (
        "wait until GKE has deleted the forwarding and firewall rules its "
        "LoadBalancer Services made on the stack's network"
    )
    cluster_pattern = CLUSTER_NAME
    cluster_rule = "a GKE cluster name (lowercase letters, digits and -, up to 40)"

    def check_access(self) -> None:
        """One call that proves gcloud, its credentials and the project."""
        self.cloud.list(gcp.NETWORK)

    # ------------------------------------------------------------------ scan

    def scan(self) -> list[Orphan]:
        found = [
            *self._labelled(
                gcp.CLUSTER, self.cloud.list(gcp.CLUSTER), "resourceLabels"
            ),
            *self._nodes(gcp.INSTANCE),
            *self._nodes(gcp.DISK),
            *self._buckets(),
            *self._keys(),
            *self._network_rules(),
            *self._named(gcp.NETWORK, {self.names.network} - {None}),
            *self._named(gcp.SUBNETWORK, self.names.subnetworks),
            *self._named(gcp.ROUTER, self.names.routers),
            *self._accounts(),
            *self._budgets(),
        ]
        return sort_for_deletion(self._protect_keys(found))

    def _orphan(
        self, kind: str, item: Mapping[str, Any], reason: str, **extra: Any
    ) -> Orphan:
        rid = str(item.get("email") or _last(item.get("name", "")))
        self._items[(kind, rid)] = item
        path = str(item.get("selfLink") or item.get("name", rid))
        return Orphan(kind, rid, path, reason, **extra)

    def _labelled(self, kind: str, items: Iterable[Mapping], key: str = "labels"):
        return [
            self._orphan(kind, item, marks(self.names.labels))
            for item in items
            if carries(item.get(key), self.names.labels)
        ]

    def _nodes(self, kind: str) -> list[Orphan]:
        found = []
        for item in self.cloud.list(kind):
            labels = item.get("labels") or {}
            zone = _last(item.get("zone", ""))
            if carries(labels, self.names.labels):
                found.append(self._orphan(kind, item, marks(self.names.labels)))
            elif (
                labels.get(GKE_CLUSTER_LABEL) == self.names.cluster
                and zone.rpartition("-")[0] == self.region
            ):
                reason = f"{GKE_CLUSTER_LABEL}={self.names.cluster}"
                found.append(self._orphan(kind, item, reason))
        return found

    def _buckets(self) -> list[Orphan]:
        found = []
        for orphan in self._labelled(gcp.BUCKET, self.cloud.list(gcp.BUCKET)):
            labels = self._items[(gcp.BUCKET, orphan.id)].get("labels") or {}
            data = (
                orphan.id == self.data_bucket
                if self.data_bucket
                else labels.get(BUCKET_LABEL) == "data"
            )
            found.append(replace(orphan, protected=data))
        return found

    def _keys(self) -> list[Orphan]:
        found = []
        for ring in sorted(self.names.key_rings):
            for orphan in self._labelled(
                gcp.KMS_KEY, self.cloud.list(gcp.KMS_KEY, ring)
            ):
                if self._key_live(orphan):
                    found.append(replace(orphan, detail=KMS_DETAIL))
        return found

    def _key_live(self, orphan: Orphan) -> bool:
        key = self._items[(gcp.KMS_KEY, orphan.id)]["name"]
        versions = self.cloud.list(gcp.KMS_KEY_VERSION, key)
        return any(v.get("state") in LIVE_KEY_VERSION for v in versions)

    def _named(self, kind: str, names: Iterable[str]) -> list[Orphan]:
        wanted = set(names)
        return [
            self._orphan(kind, item, "named by the stack's program")
            for item in self.cloud.list(kind)
            if _last(item.get("name", "")) in wanted
        ]

    def _accounts(self) -> list[Orphan]:
        return [
            self._orphan(gcp.SERVICE_ACCOUNT, item, "named by the stack's program")
            for item in self.cloud.list(gcp.SERVICE_ACCOUNT)
            if item.get("email") in self.names.service_accounts
        ]

    def _budgets(self) -> list[Orphan]:
        if not self.names.billing_account:
            return []
        return [
            self._orphan(gcp.BUDGET, item, "named by the stack's program")
            for item in self.cloud.list(gcp.BUDGET, self.names.billing_account)
            if item.get("displayName") in self.names.budgets
        ]

    def _protect_keys(self, orphans: list[Orphan]) -> list[Orphan]:
        """Keep the KMS keys that encrypt a kept bucket."""
        keys = {
            str(self._items[(gcp.BUCKET, o.id)].get("default_kms_key", ""))
            for o in orphans
            if o.kind == gcp.BUCKET and o.protected
        }
        return [
            replace(o, protected=True, detail="encrypts the protected data bucket")
            if o.kind == gcp.KMS_KEY and self._items[(o.kind, o.id)]["name"] in keys
            else o
            for o in orphans
        ]

    def load_balancers_left(self) -> list[Orphan]:
        """What GKE made for LoadBalancer Services on the stack's network: its
        forwarding rules and its `k8s-` firewall rules (no labels on either)."""
        return [
            o
            for o in self._network_rules()
            if o.kind == gcp.FORWARDING_RULE or o.id.startswith(LB_FIREWALL_PREFIX)
        ]

    def _network_rules(self) -> list[Orphan]:
        """Forwarding and firewall rules on the stack's network: GKE's for the
        cluster and for its Services. Any left block the network's deletion."""
        network = self.names.network
        if not network:
            return []
        reason = f"on the stack's network {network}"
        return [
            self._orphan(kind, item, reason)
            for kind in (gcp.FORWARDING_RULE, gcp.FIREWALL)
            for item in self.cloud.list(kind)
            if _last(item.get("network", "")) == network
        ]

    # ---------------------------------------------------------------- delete

    def sort_for_deletion(self, orphans: Iterable[Orphan]) -> list[Orphan]:
        return sort_for_deletion(orphans)

    def item_key(self, orphan: Orphan) -> tuple[str, str]:
        return orphan.kind, orphan.id

    def kept_message(self, orphan: Orphan) -> str:
        what = "data bucket" if orphan.kind == gcp.BUCKET else "data bucket's key"
        return f"protected {what} (pass --delete-data-bucket)"

    def delete_item(self, orphan: Orphan, item: Mapping[str, Any]) -> str:
        if orphan.kind == gcp.KMS_KEY:
            for version in self.cloud.list(gcp.KMS_KEY_VERSION, item["name"]):
                if version.get("state") in LIVE_KEY_VERSION:
                    self.cloud.delete(gcp.KMS_KEY_VERSION, version)
            return "versions scheduled for destruction"
        self.cloud.delete(orphan.kind, item)
        return ""


def sort_for_deletion(orphans: Iterable[Orphan]) -> list[Orphan]:
    rank = {kind: i for i, kind in enumerate(DELETE_ORDER)}
    return sorted(orphans, key=lambda o: (rank.get(o.kind, len(rank)), o.id))


def scanner_for(
    stack: str,
    project: str,
    region: str,
    names: ProgramNames,
    data_bucket: str | None = None,
    cloud: GoogleCloud | None = None,
    **kwargs: Any,
) -> GcpOrphanScanner:
    """A scanner whose access is proven by one call."""
    scanner = GcpOrphanScanner(
        cloud or gcp.GcloudCli(project, region),
        stack,
        names,
        data_bucket=data_bucket,
        **kwargs,
    )
    scanner.check_access()
    return scanner
