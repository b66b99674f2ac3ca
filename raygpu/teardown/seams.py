"""Kubernetes and Pulumi as the teardown needs them: small interfaces, and their
real implementations by kubectl and the Pulumi CLI."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from raygpu.errors import CommandError
from raygpu.stack import REPO_ROOT, Kubectl, pulumi_executable

# Deleted first, one kind after the other: a RayService owns RayClusters, a RayJob
# owns its RayCluster; deleting the owner first stops the operator recreating them.
RAY_KINDS = ("rayservices.ray.io", "rayjobs.ray.io", "rayclusters.ray.io")
# What makes the AWS controllers create load balancers (and the CSI driver volumes).
EXPOSURE_KINDS = ("services", "ingresses.networking.k8s.io", "persistentvolumeclaims")


@dataclass(frozen=True)
class KubeObject:
    kind: str
    namespace: str
    name: str
    service_type: str | None = None

    def __str__(self) -> str:
        return f"{self.kind.split('.')[0]} {self.namespace}/{self.name}"


class Kubernetes(Protocol):
    """The cluster, as teardown needs it."""

    def list(self, kind: str) -> list[KubeObject]:
        """Every object of `kind` in all namespaces ([] when the kind is unknown)."""

    def delete(self, obj: KubeObject) -> None:
        """Ask for deletion, without waiting for finalizers."""


class Pulumi(Protocol):
    def destroy(self, stack: str) -> int:
        """`pulumi destroy --yes` for the stack; its exit status."""


class KubectlKubernetes:
    """Kubernetes through kubectl."""

    def __init__(self, kubectl: Kubectl) -> None:
        self.kubectl = kubectl

    def list(self, kind: str) -> list[KubeObject]:
        proc = self.kubectl.run(
            "get", kind, "--all-namespaces", "-o", "json", check=False
        )
        if proc.returncode != 0:
            if "the server doesn't have a resource type" in (proc.stderr or ""):
                return []  # e.g. KubeRay's CRDs are not installed (any more)
            lines = (proc.stderr or "").strip().splitlines()
            reason = lines[-1] if lines else f"exit status {proc.returncode}"
            raise CommandError(f"`kubectl get {kind}` failed: {reason}")
        try:
            items = json.loads(proc.stdout).get("items", [])
        except ValueError:
            raise CommandError(f"`kubectl get {kind}` did not print JSON") from None
        return [
            KubeObject(
                kind=kind,
                namespace=item["metadata"].get("namespace", ""),
                name=item["metadata"]["name"],
                service_type=(item.get("spec") or {}).get("type"),
            )
            for item in items
        ]

    def delete(self, obj: KubeObject) -> None:
        self.kubectl.run(
            "delete",
            obj.kind,
            obj.name,
            "-n",
            obj.namespace,
            "--wait=false",
            "--ignore-not-found",
        )


def destroy_words(stack: str) -> list[str]:
    """The Pulumi CLI's arguments for the destroy (it does not ask again)."""
    return ["destroy", "--yes", "--stack", stack]


class PulumiCli:
    """The Pulumi CLI, run from the repository root (where Pulumi.yaml is).

    `stdout`: where its output goes (None: this process's stdout).
    """

    def __init__(
        self, runner: Callable[..., int] = subprocess.call, stdout: Any = None
    ) -> None:
        self.runner = runner
        self.stdout = stdout

    def argv(self, stack: str) -> list[str]:
        return [pulumi_executable(), *destroy_words(stack)]

    def destroy(self, stack: str) -> int:
        redirect = {} if self.stdout is None else {"stdout": self.stdout}
        return self.runner(self.argv(stack), cwd=REPO_ROOT, **redirect)
