"""Run the rules over planned resources, offline or inside CrossGuard.

`evaluate` is the one loop both use: every rule over every resource of its
subject types. `raygpu plan --policy` feeds it the resources the offline run
registered (`resources_from_run`); the CrossGuard pack in infra/policy feeds it
`pulumi_policy` resources (`from_policy_resource`) through `stack_validation`,
and tells it which exception means "unknown during preview".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from raygpu.policy.model import MANDATORY, Resource, Rule, Stack, Violation


@dataclass
class Skipped:
    rule: str
    resource_type: str
    resource_name: str
    reason: str


@dataclass
class Report:
    rules: Sequence[Rule]
    resources: int
    violations: list[Violation] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def blocking(self) -> list[Violation]:
        return [v for v in self.violations if v.level == MANDATORY]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rules": len(self.rules),
            "mandatory_rules": sum(r.level == MANDATORY for r in self.rules),
            "resources": self.resources,
            "violations": [v.__dict__ for v in self.violations],
            "skipped": [s.__dict__ for s in self.skipped],
            "passed": not self.blocking,
        }


def evaluate(
    resources: Iterable[Resource],
    rules: Sequence[Rule],
    *,
    unknown: tuple[type[BaseException], ...] = (),
) -> Report:
    """Every rule over every resource of its subject types. An exception of a type
    in `unknown` (a value not known before `pulumi up`) skips that one check."""
    stack = Stack(resources)
    report = Report(rules=rules, resources=len(stack.resources))
    for rule in rules:
        for resource in stack.of_type(*rule.types):
            try:
                messages = list(rule.check(resource, stack))
            except unknown as exc:
                report.skipped.append(
                    Skipped(rule.id, resource.type, resource.name, str(exc))
                )
                continue
            report.violations += [
                Violation(
                    rule.id, resource.type, resource.name, resource.urn, m, rule.level
                )
                for m in messages
            ]
    return report


# ------------------------------------------------------------------- offline


def resources_from_run(run: Any) -> list[Resource]:
    """The resources of a `raygpu.offline.OfflineRun`, as the rules read them."""
    return [
        Resource(
            type=r["type"],
            name=r["name"],
            urn=r["urn"],
            props=r["inputs"],
            parent=r.get("parent_urn") or None,
            id=r.get("id") or None,
            property_dependencies={
                k: tuple(v) for k, v in r.get("property_dependencies", {}).items()
            },
        )
        for r in run.resources
    ]


def report_lines(report: Report) -> list[str]:
    """What `raygpu plan --policy` prints: one line per violation, then a total."""
    lines = [
        f"policy: {v.level} {v.line()}"
        for v in sorted(report.violations, key=lambda v: (v.rule, v.resource_name))
    ]
    mandatory = sum(r.level == MANDATORY for r in report.rules)
    verdict = (
        f"{len(report.blocking)} mandatory violation(s)"
        if report.blocking
        else "every mandatory rule passes"
    )
    lines.append(
        f"policy: {len(report.rules)} rules ({mandatory} mandatory) over "
        f"{report.resources} resources: {verdict}"
    )
    return lines


# ----------------------------------------------------------------- CrossGuard


def from_policy_resource(resource: Any) -> Resource:
    """A `pulumi_policy.PolicyResource` (read by its documented attributes)."""
    parent = getattr(resource, "parent", None)
    deps: Mapping[str, Sequence[Any]] = (
        getattr(resource, "property_dependencies", None) or {}
    )
    return Resource(
        type=resource.resource_type,
        name=resource.name,
        urn=resource.urn,
        props=resource.props,
        parent=getattr(parent, "urn", None),
        property_dependencies={
            k: tuple(getattr(d, "urn", d) for d in v) for k, v in deps.items()
        },
    )


def stack_validation(
    rule: Rule, unknown: tuple[type[BaseException], ...] = ()
) -> Callable[[Any, Callable[..., None]], None]:
    """A CrossGuard stack validation running `rule`: `validate(args, report)` with
    `args.resources` and `report(message, urn)` as pulumi_policy passes them."""

    def validate(args: Any, report_violation: Callable[..., None]) -> None:
        resources = [from_policy_resource(r) for r in args.resources]
        result = evaluate(resources, [rule], unknown=unknown)
        for v in result.violations:
            report_violation(f"{v.resource_type} {v.resource_name}: {v.message}", v.urn)

    return validate
