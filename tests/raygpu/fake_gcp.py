"""An in-memory, recording implementation of the GoogleCloud seam
(raygpu.orphans.gcp), and the resources a GCP stack leaves as gcloud lists them.

No loopback emulator exists for GKE, Compute Engine, IAM, Cloud KMS or Cloud
Billing; the scan and the teardown are tested through this seam only. The item
shapes are the fields gcloud's JSON gives for each kind (name, selfLink, zone,
network, labels/resourceLabels, email, default_kms_key, state, displayName).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from raygpu.orphans import gcp
from raygpu.orphans.gcp import GcloudError
from raygpu.orphans.gcp_scan import ProgramNames

PROJECT = "my-raygpu-project"
REGION = "us-central1"
COMPUTE = f"https://www.googleapis.com/compute/v1/projects/{PROJECT}"


class RecordedGoogleCloud:
    """Resources by kind; `delete` removes one (a key version: schedules its
    destruction) and records the call; `errors` makes chosen deletes fail."""

    def __init__(
        self,
        resources: Mapping[str, list[dict[str, Any]]],
        errors: Mapping[tuple[str, str], str] | None = None,
        project: str = PROJECT,
        region: str = REGION,
    ) -> None:
        self.project = project
        self.region = region
        self.resources = {k: copy.deepcopy(v) for k, v in resources.items()}
        self.errors = dict(errors or {})
        self.calls: list[tuple[str, str, str]] = []

    def list(self, kind: str, parent: str | None = None) -> list[dict[str, Any]]:
        self.calls.append(("list", kind, parent or ""))
        items = self.resources.get(kind, [])
        if kind in (gcp.KMS_KEY, gcp.KMS_KEY_VERSION):
            items = [i for i in items if i["name"].startswith(f"{parent}/")]
        if kind == gcp.BUDGET:
            prefix = f"billingAccounts/{parent}/"
            items = [i for i in items if i["name"].startswith(prefix)]
        return copy.deepcopy(items)

    def delete(self, kind: str, item: Mapping[str, Any]) -> None:
        key = str(item.get("email") or item["name"])
        self.calls.append(("delete", kind, key))
        if (kind, key) in self.errors:
            raise GcloudError(self.errors[(kind, key)])
        items = self.resources.get(kind, [])
        match = [i for i in items if str(i.get("email") or i["name"]) == key]
        if not match:
            raise GcloudError(f"`gcloud {kind}`: {key} was not found")
        if kind == gcp.KMS_KEY_VERSION:
            match[0]["state"] = "DESTROY_SCHEDULED"
        else:
            items.remove(match[0])

    def deleted(self) -> list[tuple[str, str]]:
        return [(kind, key) for verb, kind, key in self.calls if verb == "delete"]

    def remove_program_resources(self, names: ProgramNames) -> None:
        """What `pulumi destroy` removes: everything the program made (and GKE's
        VMs and boot disks with the cluster), not what Kubernetes made."""
        keep_disks = [
            d for d in self.resources.get(gcp.DISK, []) if d.get("description")
        ]
        for kind in list(self.resources):
            if kind in (gcp.KMS_KEY, gcp.KMS_KEY_VERSION):
                continue
            self.resources[kind] = []
        self.resources[gcp.DISK] = keep_disks
        for version in self.resources.get(gcp.KMS_KEY_VERSION, []):
            version["state"] = "DESTROY_SCHEDULED"  # Pulumi's destroy does this


def stack_resources(names: ProgramNames, stack: str = "gcp-dev") -> dict:
    """What a live GCP stack has, as gcloud lists it, plus others' resources the
    scan must leave alone."""
    labels = dict(names.labels)
    other = {**labels, "raygpu-stack": "other"}
    zone = f"{COMPUTE}/zones/{REGION}-a"
    network = names.network
    (ring,) = sorted(names.key_rings)
    key = f"{ring}/cryptoKeys/{names.cluster}-storage-key"
    data, artifacts = f"{names.cluster}-data-1", f"{names.cluster}-artifacts-1"
    accounts = [{"email": email, "name": email} for email in names.service_accounts]
    subnet, router = sorted(names.subnetworks)[0], sorted(names.routers)[0]
    (budget,) = sorted(names.budgets)
    return {
        gcp.CLUSTER: [
            {"name": names.cluster, "resourceLabels": labels},
            {"name": "raygpu-other", "resourceLabels": other},
        ],
        gcp.INSTANCE: [
            {"name": "gke-node-1", "zone": zone, "labels": labels},
            # GKE's label, in another region: another cluster of that name.
            {
                "name": "gke-node-eu",
                "zone": f"{COMPUTE}/zones/europe-west4-a",
                "labels": {"goog-k8s-cluster-name": names.cluster},
            },
            {"name": "someone-elses-vm", "zone": zone, "labels": {}},
        ],
        gcp.DISK: [
            {"name": "gke-node-1", "zone": zone, "labels": labels},
            # A disk a PersistentVolumeClaim made: GKE's cluster label only.
            {
                "name": "pvc-1234",
                "zone": zone,
                "labels": {"goog-k8s-cluster-name": names.cluster},
                "description": '{"kubernetes.io/created-for/pvc/name":"logs"}',
            },
        ],
        gcp.BUCKET: [
            {
                "name": data,
                "labels": {**labels, "raygpu-bucket": "data"},
                "default_kms_key": key,
            },
            {
                "name": artifacts,
                "labels": {**labels, "raygpu-bucket": "artifacts"},
                "default_kms_key": key,
            },
            {"name": "other-data", "labels": {**other, "raygpu-bucket": "data"}},
        ],
        gcp.KMS_KEY: [{"name": key, "labels": labels}],
        gcp.KMS_KEY_VERSION: [
            {"name": f"{key}/cryptoKeyVersions/1", "state": "ENABLED"},
            {"name": f"{key}/cryptoKeyVersions/2", "state": "DESTROYED"},
        ],
        gcp.SERVICE_ACCOUNT: [
            *accounts,
            {"email": f"ci@{PROJECT}.iam.gserviceaccount.com", "name": "ci"},
        ],
        gcp.NETWORK: [
            {"name": network, "selfLink": f"{COMPUTE}/global/networks/{network}"},
            {"name": "default"},
        ],
        gcp.SUBNETWORK: [{"name": subnet}, {"name": "default"}],
        gcp.ROUTER: [{"name": router}],
        gcp.FIREWALL: [
            {
                "name": f"gke-{names.cluster}-abc-master",
                "network": f"{COMPUTE}/global/networks/{network}",
            },
            {
                "name": "default-allow-ssh",
                "network": f"{COMPUTE}/global/networks/default",
            },
        ],
        gcp.FORWARDING_RULE: [],
        gcp.BUDGET: [
            {
                "name": f"billingAccounts/{names.billing_account}/budgets/b1",
                "displayName": budget,
            },
            {
                "name": f"billingAccounts/{names.billing_account}/budgets/b2",
                "displayName": "someone else's budget",
            },
        ],
    }
