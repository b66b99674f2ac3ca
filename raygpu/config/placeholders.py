"""Placeholders left in a stack file: values from documentation, not from you.

The committed example stacks carry such values on purpose (a documentation
address range, AWS's example account IDs, example.com). `raygpu plan` and
`raygpu preflight` name each one; the Pulumi program refuses them, except under
Pulumi's mock runtime (`raygpu plan`, the tests), where nothing is created.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from raygpu.config.messages import ConfigError, key_path

# RFC 5737: reserved for documentation, never routed.
DOCUMENTATION_RANGES = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)
# The account IDs AWS's documentation uses in example ARNs.
EXAMPLE_ACCOUNTS = ("123456789012", "111122223333", "444455556666")
# RFC 2606: example.com, example.net, example.org and their subdomains.
_EXAMPLE_DOMAIN = re.compile(r"(^|[@./])example\.(com|net|org)$", re.IGNORECASE)
_ADDRESS = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?\b")
_ACCOUNT = re.compile(r"(?<!\d)(\d{12})(?!\d)")


def _problems(text: str) -> list[str]:
    found = []
    for match in _ADDRESS.findall(text):
        try:
            net = ipaddress.ip_network(match, strict=False)
        except ValueError:
            continue
        if any(net.overlaps(doc) for doc in DOCUMENTATION_RANGES):
            found.append(
                f"{match} is a documentation address range (RFC 5737): put your "
                "own network here"
            )
    for account in _ACCOUNT.findall(text):
        if account in EXAMPLE_ACCOUNTS:
            found.append(
                f"{account} is an example account ID from AWS's documentation: "
                "use your account's"
            )
    if _EXAMPLE_DOMAIN.search(text.strip()):
        found.append(f"{text!r} is an example domain (RFC 2606): use a real address")
    return found


def _walk(value: Any, loc: tuple[int | str, ...]):
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _walk(v, (*loc, str(k)))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _walk(v, (*loc, i))
    elif isinstance(value, str):
        yield loc, value


def placeholders(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, what is wrong) for every placeholder in `values` (a stack file's
    config as load_config takes it)."""
    return [
        (key_path(loc), problem)
        for loc, text in _walk(values, ())
        for problem in _problems(text)
    ]


def refuse_placeholders(values: Mapping[str, Any]) -> None:
    """Raise ConfigError naming every placeholder in `values`."""
    found = placeholders(values)
    if found:
        raise ConfigError(
            [(key, f"{problem} (a placeholder; `pulumi up` refuses it)")
             for key, problem in found]
        )  # fmt: skip
