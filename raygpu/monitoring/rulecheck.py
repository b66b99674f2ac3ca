"""Check alert rules before anything loads them: structure always, promtool if there.

A Prometheus that loads a broken rules file keeps the old rules (and logs the
error); prometheus-operator drops a PrometheusRule it cannot parse. Neither tells
the person who changed the rules, so `raygpu render` and the tests check here:

- `structure_problems`: what Prometheus's rules format requires (groups with
  unique names, each rule an `alert` or a `record` with an `expr`, durations,
  string labels), plus this project's own rules (a `severity` label and a
  `summary`) and balanced brackets and quotes in each expression; no binaries.
- `promtool_problems`: `promtool check rules` (Prometheus's own parser: PromQL
  syntax, templates), when promtool is installed (`make test` installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

PROMTOOL = "promtool"
NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for"} | {
    "labels",
    "annotations",
}
GROUP_KEYS = {"name", "interval", "limit", "rules"}
SEVERITIES = ("warning", "critical")
PAIRS = {")": "(", "]": "[", "}": "{"}


class _BlockDumper(yaml.SafeDumper):
    """Multi-line expressions as YAML block scalars, as people write them."""


_BlockDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None
    ),
)


def dump(obj: Any) -> str:
    """Rules as YAML (what rules files and PrometheusRule objects hold)."""
    return yaml.dump(obj, Dumper=_BlockDumper, sort_keys=False, width=1000)


def find_promtool() -> str | None:
    return shutil.which(PROMTOOL)


def bracket_problem(expr: str) -> str | None:
    """The first unbalanced bracket or unclosed string of a PromQL expression."""
    stack: list[str] = []
    quote = None
    escaped = False
    for char in expr:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            stack.append(char)
        elif char in PAIRS:
            if not stack or stack.pop() != PAIRS[char]:
                return f"unmatched {char!r}"
    if quote:
        return f"unclosed {quote} string"
    if stack:
        return f"unclosed {stack[-1]!r}"
    return None


def _string_map(value: Any, where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where}: must be a mapping of strings"]
    problems = []
    for key, text in value.items():
        if not isinstance(key, str) or not LABEL.match(key):
            problems.append(f"{where}: {key!r} is not a label name")
        elif not isinstance(text, str):
            problems.append(f"{where}.{key}: must be a string, got {text!r}")
    return problems


def rule_structure_problems(r: Any, where: str) -> list[str]:
    if not isinstance(r, dict):
        return [f"{where}: must be a mapping"]
    kinds = [k for k in ("alert", "record") if k in r]
    if len(kinds) != 1:
        return [f"{where}: needs exactly one of alert or record"]
    name = r[kinds[0]]
    problems = []
    if not isinstance(name, str) or not NAME.match(name):
        problems.append(f"{where}: {kinds[0]} {name!r} is not a valid name")
    else:
        where = f"{where} ({name})"
    problems += [f"{where}: unknown key {k!r}" for k in r if k not in RULE_KEYS]
    expr = r.get("expr")
    if not isinstance(expr, str) or not expr.strip():
        problems.append(f"{where}: expr must be a non-empty string")
    elif found := bracket_problem(expr):
        problems.append(f"{where}: expr: {found}")
    for key in ("for", "keep_firing_for"):
        if key in r and not (isinstance(r[key], str) and DURATION.match(r[key])):
            problems.append(
                f"{where}: {key} must be a duration like 5m, got {r[key]!r}"
            )
    if "labels" in r:
        problems += _string_map(r["labels"], f"{where}: labels")
    if kinds[0] == "alert":
        if "annotations" in r:
            problems += _string_map(r["annotations"], f"{where}: annotations")
        severity = (r.get("labels") or {}).get("severity")
        if severity not in SEVERITIES:
            problems.append(
                f"{where}: labels.severity must be one of {', '.join(SEVERITIES)}, "
                f"got {severity!r}"
            )
        if not (r.get("annotations") or {}).get("summary"):
            problems.append(f"{where}: annotations.summary is missing")
    elif any(k in r for k in ("for", "keep_firing_for", "annotations")):
        problems.append(f"{where}: a recording rule takes no for/annotations")
    return problems


def structure_problems(groups: Any) -> list[str]:
    """Problems of a rules file's `groups` (or a PrometheusRule's spec.groups)."""
    if not isinstance(groups, list) or not groups:
        return ["groups: must be a non-empty list"]
    problems = []
    seen_groups: set[str] = set()
    for i, group in enumerate(groups):
        where = f"groups[{i}]"
        if not isinstance(group, dict):
            problems.append(f"{where}: must be a mapping")
            continue
        problems += [
            f"{where}: unknown key {k!r}" for k in group if k not in GROUP_KEYS
        ]
        name = group.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: name must be a non-empty string")
        elif name in seen_groups:
            problems.append(f"{where}: group name {name!r} is used twice")
        seen_groups.add(str(name))
        if "interval" in group and not DURATION.match(str(group["interval"])):
            problems.append(f"{where}: interval must be a duration like 30s")
        rules = group.get("rules")
        if not isinstance(rules, list) or not rules:
            problems.append(f"{where}: rules must be a non-empty list")
            continue
        for j, r in enumerate(rules):
            problems += rule_structure_problems(r, f"{where}.rules[{j}]")
    return problems


def promtool_problems(rules_text: str, promtool: str) -> list[str]:
    """`promtool check rules` on the text; its error lines, or none."""
    with tempfile.TemporaryDirectory(prefix="raygpu-rules-") as tmp:
        path = Path(tmp) / "rules.yml"
        path.write_text(rules_text, encoding="utf-8")
        done = subprocess.run(
            [promtool, "check", "rules", "--lint=all", "--lint-fatal", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    if done.returncode == 0:
        return []
    lines = (done.stderr + done.stdout).replace(str(path), "rules").splitlines()
    found = [
        line.strip()
        for line in lines
        if line.strip() and not line.strip().startswith(("Checking", "FAILED"))
    ]
    return [f"promtool check rules: {line}" for line in found] or [
        f"promtool check rules exited {done.returncode}"
    ]


def rule_problems(
    groups: Sequence[dict[str, Any]], promtool: str | None = None
) -> list[str]:
    """Structure first; promtool (when given or found on PATH) once that is clean."""
    problems = structure_problems(groups)
    promtool = promtool or find_promtool()
    if not problems and promtool:
        problems = promtool_problems(dump({"groups": list(groups)}), promtool)
    return problems
