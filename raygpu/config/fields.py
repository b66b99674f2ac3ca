"""Value types of the stack config: each checks one value and says what is allowed.

A check that fails raises `bad(...)` (or `several(...)` for more than one problem)
with the whole message ("must be ..., got ..."); raygpu.config.messages turns
pydantic's own errors (types, bounds, unknown keys) into the same form. `Allowed`
carries the words for what a value must be: the check's message and the docs
table (raygpu.config.table) both read them. `ConfigModel` is how every config
model behaves.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
)
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

ERROR_TYPE = "raygpu"  # the pydantic error type of every message written here


@dataclass(frozen=True)
class Allowed:
    """What a value must be, in words ("an AWS region like us-east-1")."""

    text: str


def show(value: Any) -> str:
    """A value as the user wrote it, short enough for a one-line message."""
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def bad(message: str) -> PydanticCustomError:
    """A finished message for the key being validated."""
    return PydanticCustomError(ERROR_TYPE, "{message}", {"message": message})


# A message at a path below the key being validated: () is that key, (0,) its
# first entry, (1, "name") the name of its second.
Problem = tuple[tuple[int | str, ...], str]


def _details(problems: Sequence[Problem]) -> list[InitErrorDetails]:
    return [InitErrorDetails(type=bad(m), loc=loc, input=None) for loc, m in problems]


def several(problems: Sequence[Problem]) -> ValidationError:
    """Several messages at once (see `Problem`)."""
    return ValidationError.from_exception_data(ERROR_TYPE, _details(problems))


def adding(exc: ValidationError | None, problems: Sequence[Problem]) -> ValidationError:
    """`exc`'s errors and then `problems` (as `several` takes them) as one error:
    a model validator's findings added to what the keys' validators found."""
    lines = []
    for e in exc.errors(include_url=False) if exc is not None else []:
        ctx = e.get("ctx", {})
        kind = (
            PydanticCustomError(ERROR_TYPE, "{message}", ctx)
            if e["type"] == ERROR_TYPE
            else e["type"]
        )
        lines.append(
            InitErrorDetails(type=kind, loc=e["loc"], input=e["input"], ctx=ctx)
        )
    return ValidationError.from_exception_data(ERROR_TYPE, lines + _details(problems))


def _type_check(what: str, test: Callable[[Any], bool]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not test(value):
            raise bad(f"must be {what}, got {show(value)}")
        return value

    return check


def matching(pattern: str, what: str) -> Any:
    """A string that matches `pattern`, described as `what`."""
    regex = re.compile(pattern)
    test = lambda v: isinstance(v, str) and regex.match(v) is not None  # noqa: E731
    return Annotated[str, BeforeValidator(_type_check(what, test)), Allowed(what)]


def one_of(*choices: Any) -> Any:
    """One of `choices`, of exactly their type (30.0 is not the choice 30, nor is
    true the choice 1)."""
    what = f"one of {', '.join(str(c) for c in choices)}"
    kind = type(choices[0])
    test = lambda v: type(v) is kind and v in choices  # noqa: E731
    return Annotated[Literal[choices], BeforeValidator(_type_check(what, test))]


def parsed_as(parse: Callable[[str], Any], what: str) -> Any:
    """A string that `parse` accepts (it raises ValueError otherwise)."""

    def test(value: Any) -> bool:
        try:
            parse(value)
        except (TypeError, ValueError):
            return False
        return isinstance(value, str)

    return Annotated[str, BeforeValidator(_type_check(what, test)), Allowed(what)]


@dataclass(frozen=True)
class Entries:
    """How many entries a list key takes. Checked before the entries themselves
    (pydantic's min_length counts only the entries that validated, so one bad
    entry would also read as a list too short)."""

    low: int = 1
    high: int | None = None

    def __str__(self) -> str:
        if self.high is None:
            return "at least one entry" if self.low == 1 else f"at least {self.low}"
        return f"{self.low}..{self.high} entries"

    def check(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            count = len(value)
            if self.high is None and count < self.low:
                raise bad(f"must list {self}")
            if self.high is not None and not self.low <= count <= self.high:
                raise bad(
                    f"must list between {self.low} and {self.high} entries, got {count}"
                )
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        return core_schema.no_info_before_validator_function(
            self.check, handler(source)
        )


def _no_repeats(items: tuple[Any, ...]) -> tuple[Any, ...]:
    if len(set(items)) != len(items):
        raise bad("must not list the same entry twice")
    return items


def listing(item: Any, entries: Entries | None = None) -> Any:
    """A YAML list of `item` without repeats, kept as a tuple; `entries` bounds
    its length."""
    listed = Annotated[tuple[item, ...], AfterValidator(_no_repeats)]
    return listed if entries is None else Annotated[listed, entries]


# ------------------------------------------------------------------ networks

CIDR_EXAMPLE = "an IPv4 CIDR like 10.0.0.0/16"


def _cidr(value: Any) -> str:
    if not isinstance(value, str):
        raise bad(f"must be {CIDR_EXAMPLE}, got {show(value)}")
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        hint = ""
        try:
            hint = f" (did you mean {ipaddress.ip_network(value, strict=False)}?)"
        except ValueError:
            pass
        raise bad(f"must be {CIDR_EXAMPLE}, got {value!r}: {exc}{hint}") from None
    if net.version != 4:
        raise bad(f"must be an IPv4 CIDR, got {value!r}")
    return str(net)


# Parsed and checked as an ipaddress.IPv4Network, kept as its text: Pulumi inputs
# and manifests take the text.
Ipv4Cidr = Annotated[str, BeforeValidator(_cidr), Allowed(CIDR_EXAMPLE)]


def network(text: str) -> ipaddress.IPv4Network:
    """The network of a validated `Ipv4Cidr`."""
    return ipaddress.IPv4Network(text)


# RFC 1918. Anything else counts as public (documentation ranges included).
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
# The widest public network that may reach the Kubernetes API endpoint.
MIN_PUBLIC_ENDPOINT_PREFIX = 24


def is_private(text: str) -> bool:
    net = network(text)
    return any(net.subnet_of(network(r)) for r in PRIVATE_RANGES)


def _endpoint_cidr(text: str) -> str:
    net = network(text)
    if net.prefixlen < 8:
        raise bad(
            f"{text} opens the Kubernetes API to the internet; list only your own "
            "networks (prefix /8 or longer), never 0.0.0.0/0, or leave the list "
            "empty for a private-only endpoint"
        )
    if not is_private(text) and net.prefixlen < MIN_PUBLIC_ENDPOINT_PREFIX:
        raise bad(
            f"{text} is a public network wider than a /{MIN_PUBLIC_ENDPOINT_PREFIX}; "
            f"list your own egress addresses (/{MIN_PUBLIC_ENDPOINT_PREFIX} or "
            "longer; a bare address counts as /32)"
        )
    return text


def _private_cidr(text: str) -> str:
    if not is_private(text):
        raise bad(
            f"{text} is not a private network (10.0.0.0/8, 172.16.0.0/12, "
            "192.168.0.0/16): Serve is reachable only from inside the VPC's networks"
        )
    return text


# A network that may reach the public Kubernetes API endpoint; a private one.
EndpointCidr = Annotated[Ipv4Cidr, AfterValidator(_endpoint_cidr)]
PrivateCidr = Annotated[Ipv4Cidr, AfterValidator(_private_cidr)]


def subnet_problems(
    key: str,
    items: Sequence[str],
    *,
    inside: tuple[str, str] | None,
    others: Sequence[tuple[str, str]] = (),
) -> list[tuple[tuple[int], str]]:
    """Problems of the subnets listed under `key`: an entry outside `inside`
    ((key, CIDR)), or one that overlaps an earlier entry or one of `others`
    ((full key, CIDR) pairs)."""
    problems: list[tuple[tuple[int], str]] = []
    seen = list(others)
    for i, text in enumerate(items):
        net = network(text)
        if inside is not None and not net.subnet_of(network(inside[1])):
            problems.append(((i,), f"{text} is not inside {inside[0]} {inside[1]}"))
        for other_key, other in seen:
            if net.overlaps(network(other)):
                problems.append(((i,), f"{text} overlaps {other} ({other_key})"))
        seen.append((f"{key}[{i}]", text))
    return problems


class ConfigModel(BaseModel):
    """Frozen, camelCase in the stack file, no unknown keys, defaults validated."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    def __setattr__(self, name: str, value: Any) -> None:
        # As a frozen dataclass does (pydantic itself would raise a ValidationError).
        raise AttributeError(f"{type(self).__name__} is frozen; cannot set {name}")
