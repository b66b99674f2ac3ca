"""Tear a stack down so that nothing is left behind: `make destroy STACK=dev`.

Order, each wait bounded:
1. In the cluster: delete every RayService, then RayJob, then RayCluster, waiting
   for each kind to be gone (the operator removes their pods and services).
2. Delete every Service of type LoadBalancer, every Ingress and every
   PersistentVolumeClaim, and wait until Kubernetes has let go of them (the AWS
   controllers hold them with finalizers until their load balancers are deleted).
3. In AWS: wait until the load balancers and target groups tagged for the cluster,
   and the network interfaces AWS made for them, are gone. Otherwise the VPC could
   not be deleted and `pulumi destroy` would fail after a long wait.
4. `pulumi destroy --yes`.
5. Scan for leftovers (scripts/orphans.py); exit non-zero listing each one.

The stack's data bucket (and the KMS key that encrypts it) are kept when the stack
protects them (`protectDataBucket`, the default): reported, never deleted, unless
--delete-data-bucket is given. Kubernetes and Pulumi are reached through the small
`Kubernetes` and `Pulumi` interfaces below, real implementations by kubectl and the
Pulumi CLI, so the order and the waits are tested without a cluster.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from raygpu.errors import CommandError
from raygpu.orphans import (  # noqa: E402
    CLASSIC_LOAD_BALANCER,
    LOAD_BALANCER,
    Orphan,
    OrphanScanner,
    Target,
    from_stack_file,
    scanner_for,
)
from raygpu.stack import (
    REPO_ROOT,
    Clock,
    Kubectl,
    StackOutputs,
    load_outputs,
    private_kubeconfig,
    pulumi_executable,
    wait_until,
)

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


class PulumiCli:
    """The Pulumi CLI, run from the repository root (where Pulumi.yaml is)."""

    def __init__(self, runner: Callable[..., int] = subprocess.call) -> None:
        self.runner = runner

    def argv(self, stack: str) -> list[str]:
        return [pulumi_executable(), "destroy", "--yes", "--stack", stack]

    def destroy(self, stack: str) -> int:
        return self.runner(self.argv(stack), cwd=REPO_ROOT)


@dataclass(frozen=True)
class Limits:
    """Upper bounds of the waits, in seconds."""

    ray_objects_s: float = 600.0
    exposure_s: float = 900.0
    aws_s: float = 900.0
    interval_s: float = 10.0


class Teardown:
    def __init__(
        self,
        stack: str,
        kubernetes: Kubernetes | None,
        pulumi: Pulumi,
        scanner: OrphanScanner,
        clock: Clock | None = None,
        limits: Limits = Limits(),
        log: Callable[[str], None] = print,
    ) -> None:
        self.stack = stack
        self.kubernetes = kubernetes
        self.pulumi = pulumi
        self.scanner = scanner
        self.clock = clock or Clock()
        self.limits = limits
        self.log = log

    def run(self, delete_data_bucket: bool = False) -> int:
        """The whole teardown; 0 only when nothing of the stack is left."""
        if self.kubernetes is None:
            self.log("skipping the in-cluster cleanup (no access to the cluster)")
        else:
            try:
                lbs = [o for o in self.scanner.load_balancers_left() if _is_lb(o)]
                self.delete_ray_objects()
                self.delete_exposure()
                self.wait_load_balancers_gone(lbs)
            except CommandError as exc:
                raise CommandError(
                    f"{exc}. Nothing was destroyed. Fix the cause and run again, or "
                    "run with --skip-kubernetes and then scripts/orphans.py --delete"
                ) from None
        self.log(f"running pulumi destroy for stack {self.stack!r}")
        code = self.pulumi.destroy(self.stack)
        if code != 0:
            self.log(f"error: pulumi destroy exited with {code}")
        return self.check_leftovers(delete_data_bucket) or (1 if code else 0)

    # --------------------------------------------------------------- Kubernetes

    def delete_ray_objects(self) -> None:
        assert self.kubernetes is not None
        for kind in RAY_KINDS:
            objects = self.kubernetes.list(kind)
            for obj in objects:
                self.log(f"deleting {obj}")
                self.kubernetes.delete(obj)
            if objects:
                self._wait_objects_gone(objects, self.limits.ray_objects_s)

    def delete_exposure(self) -> None:
        """LoadBalancer Services, Ingresses and PVCs: delete all, then wait."""
        assert self.kubernetes is not None
        pending: list[KubeObject] = []
        for kind in EXPOSURE_KINDS:
            for obj in self.kubernetes.list(kind):
                if kind == "services" and obj.service_type != "LoadBalancer":
                    continue
                self.log(f"deleting {obj}")
                self.kubernetes.delete(obj)
                pending.append(obj)
        if pending:
            self._wait_objects_gone(pending, self.limits.exposure_s)

    def _wait_objects_gone(
        self, objects: Sequence[KubeObject], timeout_s: float
    ) -> None:
        assert self.kubernetes is not None
        kinds = sorted({obj.kind for obj in objects})
        wanted = {(o.kind, o.namespace, o.name) for o in objects}
        left: list[KubeObject] = list(objects)

        def gone() -> bool:
            still = []
            for kind in kinds:
                still += [
                    o
                    for o in self.kubernetes.list(kind)  # type: ignore[union-attr]
                    if (o.kind, o.namespace, o.name) in wanted
                ]
            left[:] = still
            return not still

        wait_until(
            gone,
            timeout_s,
            lambda: "Kubernetes to delete " + ", ".join(map(str, left)),
            self.limits.interval_s,
            self.clock,
        )
        self.log(f"gone: {', '.join(map(str, objects))}")

    # ---------------------------------------------------------------------- AWS

    def wait_load_balancers_gone(self, before: Sequence[Orphan]) -> None:
        """Until no load balancer or target group carries the cluster's tags, and
        the interfaces AWS made for the load balancers seen before are gone."""
        names = {_lb_name(o) for o in before}
        left: list[str] = []

        def gone() -> bool:
            still = [o.describe() for o in self.scanner.load_balancers_left()]
            still += [
                f"network-interface {eni}"
                for eni in self.scanner.load_balancer_interfaces(names)
            ]
            left[:] = still
            return not still

        wait_until(
            gone,
            self.limits.aws_s,
            lambda: "AWS to delete " + "; ".join(left),
            self.limits.interval_s,
            self.clock,
        )
        self.log("no load balancer of the cluster is left")

    def check_leftovers(self, delete_data_bucket: bool) -> int:
        orphans = self.scanner.scan()
        if delete_data_bucket:
            protected = [o for o in orphans if o.protected]
            if protected:
                self.scanner.delete(protected, delete_data_bucket=True)
                orphans = self.scanner.scan()
        left = [o for o in orphans if not o.protected]
        kept = [o for o in orphans if o.protected]
        if kept:
            self.log("kept (protected; delete with --delete-data-bucket):")
            for orphan in kept:
                self.log(f"  {orphan.describe()}")
        if left:
            self.log(f"error: {len(left)} resource(s) of stack {self.stack!r} left:")
            for orphan in left:
                self.log(f"  {orphan.describe()}")
            self.log(
                f"remove them with: scripts/orphans.py --stack {self.stack} "
                f"--region {self.scanner.session.region_name}"
                + (
                    f" --cluster-name {self.scanner.cluster_name}"
                    if self.scanner.cluster_name
                    else ""
                )
                + " --delete"
            )
            return 1
        self.log(f"nothing of stack {self.stack!r} is left")
        return 0


def _is_lb(orphan: Orphan) -> bool:
    return orphan.kind in (LOAD_BALANCER, CLASSIC_LOAD_BALANCER)


def _lb_name(orphan: Orphan) -> str:
    """app/<name>/<id> ARNs and classic names both give the name AWS shows."""
    if orphan.kind == CLASSIC_LOAD_BALANCER:
        return orphan.id
    return orphan.id.split(":loadbalancer/", 1)[-1].split("/")[1]


def target_from(outputs: StackOutputs, args: argparse.Namespace) -> Target:
    """Where to scan; read before the destroy removes the outputs."""
    file_region, file_cluster = from_stack_file(outputs.stack)
    region = args.region or outputs.get("region") or file_region
    if not region:
        raise CommandError(
            f"--region: stack {outputs.stack!r} has no output 'region' and no valid "
            f"Pulumi.{outputs.stack}.yaml; pass --region"
        )
    return Target(
        stack=outputs.stack,
        region=str(region),
        cluster_name=args.cluster_name or outputs.get("cluster_name") or file_cluster,
        data_bucket=outputs.get("data_bucket"),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", required=True, help="Pulumi stack name")
    parser.add_argument(
        "--outputs", help="stack outputs as JSON instead of `pulumi stack output`"
    )
    parser.add_argument("--region", help="AWS region (default: the stack's)")
    parser.add_argument("--cluster-name", help="EKS cluster (default: the stack's)")
    parser.add_argument(
        "--skip-kubernetes",
        action="store_true",
        help="skip the in-cluster cleanup (the cluster is gone or unreachable); "
        "load balancers it made are then left for scripts/orphans.py --delete",
    )
    parser.add_argument(
        "--delete-data-bucket",
        action="store_true",
        help="also delete the protected data bucket, every object version in it, "
        "and schedule its KMS key for deletion",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="upper bound of each wait in seconds (900)",
    )


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.timeout <= 0:
        parser.error("--timeout: must be > 0")


def run(args: argparse.Namespace) -> int:
    outputs = load_outputs(args.stack, args.outputs)
    target = target_from(outputs, args)
    limits = Limits(
        ray_objects_s=args.timeout, exposure_s=args.timeout, aws_s=args.timeout
    )
    scanner = scanner_for(target)
    kubeconfig = outputs.get("kubeconfig")
    if args.skip_kubernetes or not kubeconfig:
        if not args.skip_kubernetes:
            print("note: the stack has no kubeconfig output (no cluster)")
        return Teardown(args.stack, None, PulumiCli(), scanner, limits=limits).run(
            args.delete_data_bucket
        )
    with private_kubeconfig(kubeconfig) as path:
        kubernetes = KubectlKubernetes(Kubectl(path))
        teardown = Teardown(args.stack, kubernetes, PulumiCli(), scanner, limits=limits)
        return teardown.run(args.delete_data_bucket)
