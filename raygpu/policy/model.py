"""What the rules read and what they report, free of `pulumi_policy`.

A `Resource` is one planned resource as the engine sees it: type token, logical
name, URN, properties (camelCase, as registered), parent URN and, per property,
the URNs it depends on. `raygpu plan --policy` builds them from the offline run;
the CrossGuard pack (infra/policy) from `pulumi_policy.PolicyResource`s, whose
properties are read-only mappings that raise on values unknown during a preview.
So rules read properties through `Mapping`/`Sequence` and never copy them whole.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MANDATORY = "mandatory"
ADVISORY = "advisory"


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    parent: str | None = None  # the parent's URN
    id: str | None = None  # known offline; None in a preview
    property_dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def get(self, *path: str | int, default: Any = None) -> Any:
        """The property at `path` (keys and list indexes), or `default`."""
        value: Any = self.props
        for step in path:
            if isinstance(step, int):
                if not is_list(value) or not -len(value) <= step < len(value):
                    return default
            elif not isinstance(value, Mapping) or step not in value:
                return default
            value = value[step]
        return value


@dataclass(frozen=True)
class Violation:
    rule: str
    resource_type: str
    resource_name: str
    urn: str
    message: str
    level: str = MANDATORY

    def line(self) -> str:
        return f"{self.rule} {self.resource_type} {self.resource_name}: {self.message}"


# A check yields one message per problem of one subject resource.
Check = Callable[[Resource, "Stack"], Iterable[str]]


@dataclass(frozen=True)
class Rule:
    id: str  # RG-<area>-<n>: what a violation names
    title: str
    description: str
    control: str  # the AWS FSBP / CIS control (or guide) it implements
    types: tuple[str, ...]  # the subject resources' type tokens
    check: Check
    level: str = MANDATORY

    @property
    def summary(self) -> str:
        return f"{self.title}: {self.description} ({self.control})"


class Stack:
    """The planned resources, with the lookups rules need across them."""

    def __init__(self, resources: Iterable[Resource]) -> None:
        self.resources = list(resources)
        self.by_urn = {r.urn: r for r in self.resources}

    def of_type(self, *types: str) -> list[Resource]:
        return [r for r in self.resources if r.type in types]

    def referring(self, target: Resource, types: Sequence[str], prop: str):
        """Resources of `types` whose property `prop` names `target`: through the
        engine's property dependencies, or (offline) by its id or ARN."""
        keys = {k for k in (target.id, _known(target.props, "arn")) if k}
        found = []
        for r in self.of_type(*types):
            if target.urn in r.property_dependencies.get(prop, ()):
                found.append(r)
            elif keys and _known(r.props, prop) in keys:
                found.append(r)
        return found

    def children(self, parent: Resource) -> list[Resource]:
        return [r for r in self.resources if r.parent == parent.urn]


def _known(props: Mapping[str, Any], key: str) -> Any:
    """props[key] when present; a value unknown in a preview counts as absent
    here (linking falls back to property dependencies)."""
    try:
        return props.get(key)
    except Exception:  # pulumi_policy's UnknownValueError, which we cannot import
        return None


def is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if is_list(value) else [value]


def number(value: Any) -> float | None:
    """A number the engine may hand over as int, float or numeric string."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def truthy(value: Any) -> bool:
    """Booleans as the AWS provider takes them: true or "true"."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


def policy_document(value: Any) -> Mapping[str, Any] | None:
    """An IAM/KMS/S3 policy given as a JSON string or a mapping; None if neither."""
    if isinstance(value, Mapping):
        return value
    if isinstance(value, str):
        try:
            doc = json.loads(value)
        except ValueError:
            return None
        return doc if isinstance(doc, Mapping) else None
    return None


def statements(doc: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if not doc:
        return []
    return [s for s in as_list(doc.get("Statement")) if isinstance(s, Mapping)]
