"""Azure as the leftover scan needs it: a small seam and its real implementation
by the Azure CLI.

No loopback emulator exists for Azure Resource Manager, AKS, Entra ID role
assignments or Cost Management, so the scan reaches them through `AzureCloud`
only: `list` a kind (as `az ... -o json` returns it) and `delete` one. Tests drive
an in-memory implementation; `AzCli` is the real one. It shells out to `az`
because no Azure client library (azure-identity, azure-mgmt-*) is installed with
raygpu, and `az` is what an operator of an Azure stack has already (`az login`;
the subscription comes from the stack, never from `az account show`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from typing import Any, Protocol

from raygpu.orphans.cli_cloud import CliCloud, CliError, Runner

# The kinds the seam knows, in the scan's words. ARM resources are one kind,
# `resource` (listed by tag, or by resource group); the rest take no tags.
RESOURCE = "resource"
RESOURCE_GROUP = "resource-group"
ROLE_ASSIGNMENT = "role-assignment"
FEDERATED_CREDENTIAL = "federated-credential"
BUDGET = "budget"


class AzureCloud(Protocol):
    """One subscription of Azure, as the scan needs it."""

    subscription: str
    region: str

    def list(self, kind: str, parent: str | None = None) -> list[dict[str, Any]]:
        """Every resource of `kind`, as `az` returns it. `parent`: a tag
        `key=value` or `group:<resource group>` for resources, the scope of role
        assignments, `<resource group>/<identity>` of federated credentials."""

    def delete(self, kind: str, item: Mapping[str, Any]) -> None:
        """Delete one resource as `list` returned it."""


class AzError(CliError):
    """az refused or failed a call (its last stderr line)."""

    NOT_FOUND = ("notfound", "not found", "could not be found")


class AzCli(CliCloud):
    """AzureCloud through `az ... -o json`."""

    tool = "az"
    error = AzError
    missing = (
        "the az CLI was not found on PATH: install the Azure CLI and run "
        "`az login` (the Azure leftover scan uses it)"
    )
    json_flags = ("-o", "json")
    quiet_flags = ("--only-show-errors",)

    def __init__(
        self,
        subscription: str,
        region: str,
        executable: str | None = None,
        runner: Runner = subprocess.run,
        timeout_s: float = 1800.0,  # a cluster or group delete waits for ARM
    ) -> None:
        super().__init__(region, executable, runner, timeout_s)
        self.subscription = subscription

    # ------------------------------------------------------------- commands

    def list_args(self, kind: str, parent: str | None) -> list[str]:
        if kind == RESOURCE:
            if parent and parent.startswith("group:"):
                return ["resource", "list", "--resource-group", parent[6:]]
            return ["resource", "list", "--tag", str(parent)]
        if kind == FEDERATED_CREDENTIAL:
            group, _, identity = str(parent).partition("/")
            return [
                "identity",
                "federated-credential",
                "list",
                "--resource-group",
                group,
                "--identity-name",
                identity,
            ]
        return {
            RESOURCE_GROUP: ["group", "list"],
            ROLE_ASSIGNMENT: ["role", "assignment", "list", "--scope", str(parent)],
            BUDGET: ["consumption", "budget", "list"],
        }[kind]

    def delete_args(self, kind: str, item: Mapping[str, Any]) -> list[str]:
        name, rid = str(item.get("name", "")), str(item.get("id", ""))
        if kind == FEDERATED_CREDENTIAL:
            return [
                "identity",
                "federated-credential",
                "delete",
                "--name",
                name,
                "--identity-name",
                str(item["identity"]),
                "--resource-group",
                str(item["resourceGroup"]),
                "--yes",
            ]
        return {
            RESOURCE: ["resource", "delete", "--ids", rid],
            RESOURCE_GROUP: ["group", "delete", "--name", name, "--yes"],
            ROLE_ASSIGNMENT: ["role", "assignment", "delete", "--ids", rid],
            BUDGET: ["consumption", "budget", "delete", "--budget-name", name],
        }[kind]

    def scope_args(self) -> list[str]:
        return ["--subscription", self.subscription]

    def list(self, kind: str, parent: str | None = None) -> list[dict[str, Any]]:
        items = super().list(kind, parent)
        if kind == FEDERATED_CREDENTIAL:  # what delete needs to name it again
            group, _, identity = str(parent).partition("/")
            items = [{**i, "resourceGroup": group, "identity": identity} for i in items]
        return items
