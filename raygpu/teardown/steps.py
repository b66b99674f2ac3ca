"""The ordered teardown and the plan of it that --dry-run and the question show."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from raygpu.errors import CommandError
from raygpu.orphans import CLASSIC_LOAD_BALANCER, LOAD_BALANCER, Orphan, OrphanScanner
from raygpu.orphans.azure_scan import AzureOrphanScanner
from raygpu.orphans.gcp_scan import GcpOrphanScanner
from raygpu.stack import Clock, wait_until
from raygpu.teardown.seams import (
    EXPOSURE_KINDS,
    RAY_KINDS,
    KubeObject,
    Kubernetes,
    Pulumi,
    destroy_words,
)


@dataclass(frozen=True)
class Limits:
    """Upper bounds of the waits, in seconds."""

    ray_objects_s: float = 600.0
    exposure_s: float = 900.0
    aws_s: float = 900.0
    interval_s: float = 10.0


@dataclass(frozen=True)
class Step:
    what: str
    items: list[str] | None = None  # what it acts on, found now (None: not listed)
    error: str = ""  # why they could not be listed


@dataclass(frozen=True)
class Plan:
    """What a teardown would do, read without changing anything."""

    stack: str
    region: str
    cluster_name: str | None
    steps: list[Step]
    resources: list[Orphan]  # what a scan finds now
    delete_data_bucket: bool

    def action(self, orphan: Orphan) -> str:
        return "keep" if orphan.protected and not self.delete_data_bucket else "delete"

    def lines(self) -> list[str]:
        where = f"stack {self.stack!r} in {self.region}"
        if self.cluster_name:
            where += f" (cluster {self.cluster_name!r})"
        out = [f"raygpu destroy, for {where}, in this order:"]
        for number, step in enumerate(self.steps, 1):
            out.append(f"  {number}. {step.what}")
            if step.error:
                out.append(f"       (cannot list them: {step.error})")
            elif step.items is not None:
                out += [f"       {item}" for item in step.items or ["(none now)"]]
        found = len(self.resources)
        out.append(
            f"  {len(self.steps) + 1}. scan for leftovers; what it finds now, "
            f"before the destroy ({found} resource(s)), goes unless kept:"
        )
        for orphan in self.resources:
            mark = "keep (protected)" if self.action(orphan) == "keep" else "delete"
            out.append(f"       {mark:<16} {orphan.describe()}")
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "region": self.region,
            "cluster_name": self.cluster_name,
            "steps": [asdict(step) for step in self.steps],
            "resources": [
                {**asdict(o), "action": self.action(o)} for o in self.resources
            ],
        }


class Teardown:
    def __init__(
        self,
        stack: str,
        kubernetes: Kubernetes | None,
        pulumi: Pulumi,
        scanner: OrphanScanner | GcpOrphanScanner | AzureOrphanScanner,
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
        self.left: list[Orphan] = []  # after run(): what the last scan found
        self.kept: list[Orphan] = []

    def plan(self, delete_data_bucket: bool = False) -> Plan:
        """The steps `run` takes and what each acts on now; changes nothing."""
        steps = []
        if self.kubernetes is None:
            steps.append(
                Step(
                    "skip the in-cluster cleanup (no access to the cluster); load "
                    "balancers it made are left for `raygpu orphans --delete`"
                )
            )
        else:
            steps.append(
                self._listed(
                    "delete the RayServices, RayJobs and RayClusters, one kind after "
                    "the other, each kind gone before the next",
                    lambda: [o for kind in RAY_KINDS for o in self._list(kind)],
                )
            )
            steps.append(
                self._listed(
                    "delete the LoadBalancer Services, Ingresses and "
                    "PersistentVolumeClaims; wait until Kubernetes lets go of them",
                    self.exposure_objects,
                )
            )
            lbs = [o.describe() for o in self.scanner.load_balancers_left()]
            steps.append(Step(self.scanner.load_balancer_step, lbs))
        steps.append(Step(f"run `pulumi {' '.join(destroy_words(self.stack))}`"))
        if delete_data_bucket:
            steps.append(Step("delete the protected data bucket and its KMS key"))
        return Plan(
            stack=self.stack,
            region=self.scanner.region,
            cluster_name=self.scanner.cluster_name,
            steps=steps,
            resources=self.scanner.scan(),
            delete_data_bucket=delete_data_bucket,
        )

    def _listed(self, what: str, objects: Callable[[], list[KubeObject]]) -> Step:
        try:
            return Step(what, [str(o) for o in objects()])
        except CommandError as exc:  # the run itself stops there, before destroy
            return Step(what, error=str(exc))

    def _list(self, kind: str) -> list[KubeObject]:
        assert self.kubernetes is not None
        return self.kubernetes.list(kind)

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
                    "run with --skip-kubernetes and then `raygpu orphans --stack "
                    f"{self.stack} --delete`"
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

    def exposure_objects(self) -> list[KubeObject]:
        """LoadBalancer Services, Ingresses and PVCs (other Services stay)."""
        return [
            obj
            for kind in EXPOSURE_KINDS
            for obj in self._list(kind)
            if kind != "services" or obj.service_type == "LoadBalancer"
        ]

    def delete_exposure(self) -> None:
        """LoadBalancer Services, Ingresses and PVCs: delete all, then wait."""
        assert self.kubernetes is not None
        pending = self.exposure_objects()
        for obj in pending:
            self.log(f"deleting {obj}")
            self.kubernetes.delete(obj)
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
            lambda: f"{self.scanner.cloud_title} to delete " + "; ".join(left),
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
        left = self.left = [o for o in orphans if not o.protected]
        kept = self.kept = [o for o in orphans if o.protected]
        if kept:
            self.log("kept (protected; delete with --delete-data-bucket):")
            for orphan in kept:
                self.log(f"  {orphan.describe()}")
        if left:
            self.log(f"error: {len(left)} resource(s) of stack {self.stack!r} left:")
            for orphan in left:
                self.log(f"  {orphan.describe()}")
            self.log(
                f"remove them with: raygpu orphans --stack {self.stack} "
                f"--region {self.scanner.region}"
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
