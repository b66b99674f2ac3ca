"""Google Cloud as the leftover scan needs it: a small seam and its real
implementation by the gcloud CLI.

No loopback emulator exists for GKE, Compute Engine, IAM, Cloud KMS or Cloud
Billing, so the scan reaches them through `GoogleCloud` only: `list` a kind (as the
API returns its resources) and `delete` one. Tests drive an in-memory
implementation; `GcloudCli` is the real one. It shells out to `gcloud ...
--format=json` because no Google client library (google-cloud-*,
googleapiclient) is installed with raygpu, and gcloud is what an operator of a
GCP stack has already (with `gcloud auth login` or application-default
credentials; the project and region come from the stack, never from gcloud's own
config).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from typing import Any, Protocol

from raygpu.orphans.cli_cloud import CliCloud, CliError, Runner

# The kinds the seam knows, in the scan's words.
CLUSTER = "gke-cluster"
INSTANCE = "instance"
DISK = "disk"
BUCKET = "bucket"
KMS_KEY = "kms-key"
KMS_KEY_VERSION = "kms-key-version"
SERVICE_ACCOUNT = "service-account"
NETWORK = "network"
SUBNETWORK = "subnetwork"
ROUTER = "router"  # its Cloud NAT goes with it
FIREWALL = "firewall-rule"
FORWARDING_RULE = "forwarding-rule"
BUDGET = "budget"


class GoogleCloud(Protocol):
    """One project and region of Google Cloud, as the scan needs it."""

    project: str
    region: str

    def list(self, kind: str, parent: str | None = None) -> list[dict[str, Any]]:
        """Every resource of `kind` in the project (and region, where the kind is
        regional or zonal), as the API returns it. `parent`: the key ring of a
        KMS key, the key of a key version, the billing account of a budget."""

    def delete(self, kind: str, item: Mapping[str, Any]) -> None:
        """Delete one resource as `list` returned it (a key version: schedule its
        destruction; Cloud KMS deletes no key)."""


def _last(url: str) -> str:
    """The last segment of a resource URL or path (a zone, a network, a name)."""
    return str(url).rstrip("/").rsplit("/", 1)[-1]


class GcloudError(CliError):
    """gcloud refused or failed a call (its last stderr line)."""

    NOT_FOUND = ("not found", "was not found", "404")


class GcloudCli(CliCloud):
    """GoogleCloud through `gcloud ... --format=json`."""

    tool = "gcloud"
    error = GcloudError
    missing = (
        "the gcloud CLI was not found on PATH: install the Google Cloud "
        "SDK and run `gcloud auth login` (the GCP leftover scan uses it)"
    )
    json_flags = ("--format=json",)
    quiet_flags = ("--quiet",)

    def __init__(
        self,
        project: str,
        region: str,
        executable: str | None = None,
        runner: Runner = subprocess.run,
        timeout_s: float = 1800.0,  # a cluster delete waits for GKE
    ) -> None:
        super().__init__(region, executable, runner, timeout_s)
        self.project = project

    # ------------------------------------------------------------- commands

    def list_args(self, kind: str, parent: str | None) -> list[str]:
        region = f"--regions={self.region}"
        where = {
            CLUSTER: ["container", "clusters", "list", f"--region={self.region}"],
            INSTANCE: ["compute", "instances", "list"],
            DISK: ["compute", "disks", "list"],
            BUCKET: ["storage", "buckets", "list"],
            KMS_KEY: ["kms", "keys", "list", f"--keyring={parent}"],
            KMS_KEY_VERSION: ["kms", "keys", "versions", "list", f"--key={parent}"],
            SERVICE_ACCOUNT: ["iam", "service-accounts", "list"],
            NETWORK: ["compute", "networks", "list"],
            SUBNETWORK: ["compute", "networks", "subnets", "list", region],
            ROUTER: ["compute", "routers", "list", region],
            FIREWALL: ["compute", "firewall-rules", "list"],
            FORWARDING_RULE: ["compute", "forwarding-rules", "list", region],
            BUDGET: ["billing", "budgets", "list", f"--billing-account={parent}"],
        }[kind]
        if kind in (KMS_KEY, KMS_KEY_VERSION):
            where.append(f"--location={self.region}")
        return where

    def delete_args(self, kind: str, item: Mapping[str, Any]) -> list[str]:
        full = str(item.get("name", ""))
        name = _last(full)
        zone = ["--zone", _last(item.get("zone", ""))]
        region = ["--region", self.region]
        return {
            CLUSTER: ["container", "clusters", "delete", name, *region],
            INSTANCE: ["compute", "instances", "delete", name, *zone],
            DISK: ["compute", "disks", "delete", name, *zone],
            # Every object version goes with it (versioned buckets keep them).
            BUCKET: ["storage", "rm", "--recursive", "--all-versions", f"gs://{name}"],
            KMS_KEY_VERSION: ["kms", "keys", "versions", "destroy", full],
            SERVICE_ACCOUNT: [
                "iam",
                "service-accounts",
                "delete",
                str(item.get("email")),
            ],
            NETWORK: ["compute", "networks", "delete", name],
            SUBNETWORK: ["compute", "networks", "subnets", "delete", name, *region],
            ROUTER: ["compute", "routers", "delete", name, *region],
            FIREWALL: ["compute", "firewall-rules", "delete", name],
            FORWARDING_RULE: ["compute", "forwarding-rules", "delete", name, *region],
            BUDGET: ["billing", "budgets", "delete", full],
        }[kind]

    def scope_args(self) -> list[str]:
        return [f"--project={self.project}"]
