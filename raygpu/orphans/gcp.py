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

import json
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from raygpu.errors import CommandError, UsageError

Runner = Callable[..., subprocess.CompletedProcess]

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


class GcloudCli:
    """GoogleCloud through `gcloud ... --format=json`."""

    def __init__(
        self,
        project: str,
        region: str,
        executable: str | None = None,
        runner: Runner = subprocess.run,
        timeout_s: float = 1800.0,  # a cluster delete waits for GKE
    ) -> None:
        self.project = project
        self.region = region
        self.executable = executable or shutil.which("gcloud") or "gcloud"
        self.runner = runner
        self.timeout_s = timeout_s

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

    def argv(self, words: Sequence[str], output: bool) -> list[str]:
        fmt = ["--format=json"] if output else ["--quiet"]
        return [self.executable, *words, f"--project={self.project}", *fmt]

    # ---------------------------------------------------------------- the seam

    def list(self, kind: str, parent: str | None = None) -> list[dict[str, Any]]:
        proc = self._run(self.argv(self.list_args(kind, parent), output=True))
        try:
            found = json.loads(proc.stdout or "[]")
        except ValueError:
            raise CommandError(f"`gcloud` listing {kind}s did not print JSON") from None
        return list(found) if isinstance(found, list) else []

    def delete(self, kind: str, item: Mapping[str, Any]) -> None:
        self._run(self.argv(self.delete_args(kind, item), output=False))

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        try:
            proc = self.runner(
                argv, capture_output=True, text=True, timeout=self.timeout_s
            )
        except FileNotFoundError:
            raise UsageError(
                "the gcloud CLI was not found on PATH: install the Google Cloud "
                "SDK and run `gcloud auth login` (the GCP leftover scan uses it)"
            ) from None
        except subprocess.TimeoutExpired:
            raise CommandError(
                f"`gcloud {' '.join(argv[1:4])}` took over {self.timeout_s:g} s"
            ) from None
        if proc.returncode != 0:
            lines = [x for x in (proc.stderr or "").splitlines() if x.strip()]
            reason = lines[-1].strip() if lines else f"exit status {proc.returncode}"
            raise GcloudError(f"`gcloud {' '.join(argv[1:4])}`: {reason}")
        return proc


class GcloudError(CommandError):
    """gcloud refused or failed a call (its last stderr line)."""

    @property
    def not_found(self) -> bool:
        text = str(self).lower()
        return "not found" in text or "was not found" in text or "404" in text
