"""What the Google Cloud and Azure scans share, both clouds being reached through
their CLIs (raygpu.orphans.gcp, raygpu.orphans.azure): running the CLI behind the
seam and reading what it prints, and the scanners' cluster-name check, matching
by labels or tags, and delete loop. The words of each CLI, and what each cloud
finds and how it deletes a kind, stay in the cloud's own modules.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from raygpu.errors import CommandError, UsageError
from raygpu.orphans.model import Orphan, Outcome

Runner = Callable[..., subprocess.CompletedProcess]


class CliError(CommandError):
    """The CLI refused or failed a call (its last stderr line)."""

    # Lowercase words by which the CLI says the resource does not exist.
    NOT_FOUND: tuple[str, ...] = ()

    @property
    def not_found(self) -> bool:
        text = str(self).lower()
        return any(word in text for word in self.NOT_FOUND)


class CliCloud:
    """A cloud's seam through its CLI: listings read as the JSON it prints,
    deletions run quietly. A subclass names the CLI (`tool`, its `error` and the
    `missing` message), its output flags, and has `scope_args` (what the CLI acts
    on), `list_args` and `delete_args` (the words of each kind's calls)."""

    tool: str
    error: type[CliError]
    missing: str  # the UsageError when the CLI is not on PATH
    json_flags: tuple[str, ...]
    quiet_flags: tuple[str, ...]

    def __init__(
        self,
        region: str,
        executable: str | None,
        runner: Runner,
        timeout_s: float,
    ) -> None:
        self.region = region
        self.executable = executable or shutil.which(self.tool) or self.tool
        self.runner = runner
        self.timeout_s = timeout_s

    def argv(self, words: Sequence[str], output: bool) -> list[str]:
        flags = self.json_flags if output else self.quiet_flags
        return [self.executable, *words, *self.scope_args(), *flags]

    # ---------------------------------------------------------------- the seam

    def list(self, kind: str, parent: str | None = None) -> list[dict[str, Any]]:
        proc = self._run(self.argv(self.list_args(kind, parent), output=True))
        try:
            found = json.loads(proc.stdout or "[]")
        except ValueError:
            raise CommandError(
                f"`{self.tool}` listing {kind}s did not print JSON"
            ) from None
        return list(found) if isinstance(found, list) else []

    def delete(self, kind: str, item: Mapping[str, Any]) -> None:
        self._run(self.argv(self.delete_args(kind, item), output=False))

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        command = f"`{self.tool} {' '.join(argv[1:4])}`"
        try:
            proc = self.runner(
                argv, capture_output=True, text=True, timeout=self.timeout_s
            )
        except FileNotFoundError:
            raise UsageError(self.missing) from None
        except subprocess.TimeoutExpired:
            raise CommandError(f"{command} took over {self.timeout_s:g} s") from None
        if proc.returncode != 0:
            lines = [x for x in (proc.stderr or "").splitlines() if x.strip()]
            reason = lines[-1].strip() if lines else f"exit status {proc.returncode}"
            raise self.error(f"{command}: {reason}")
        return proc


def carries(found: Mapping[str, str] | None, wanted: Mapping[str, str]) -> bool:
    """Whether labels or tags `found` hold every one of `wanted`."""
    found = found or {}
    return all(found.get(k) == v for k, v in wanted.items())


def marks(wanted: Mapping[str, str]) -> str:
    """`wanted` labels or tags as a reason: `k=v, k=v`."""
    return ", ".join(f"{k}={v}" for k, v in wanted.items())


class CliScanner:
    """What the Google Cloud and Azure scanners share. Each is a dataclass with
    `cloud`, `names` (the program's, `cluster` among them), `log` and `_items`
    (what the cloud listed), and has `sort_for_deletion`, `item_key` (an
    orphan's key in `_items`), `kept_message` and `delete_item` (the delete
    calls; returns the outcome's message)."""

    cluster_pattern: re.Pattern[str]
    cluster_rule: str  # "a GKE cluster name (...)": what --cluster-name must be

    def __post_init__(self) -> None:
        if not self.cluster_pattern.match(self.names.cluster):
            raise CommandError(
                f"--cluster-name: {self.names.cluster!r} is not {self.cluster_rule}"
            )

    @property
    def region(self) -> str:
        return self.cloud.region

    @property
    def cluster_name(self) -> str:
        return self.names.cluster

    def load_balancer_interfaces(self, lb_names: Iterable[str]) -> list[str]:
        """AWS leaves load balancers' interfaces behind a while; Google Cloud and
        Azure have no such thing to wait for."""
        return []

    def delete(
        self, orphans: Iterable[Orphan], delete_data_bucket: bool = False
    ) -> list[Outcome]:
        outcomes = []
        for orphan in self.sort_for_deletion(orphans):
            outcome = self._delete_one(orphan, delete_data_bucket)
            self.log(outcome.line())
            outcomes.append(outcome)
        return outcomes

    def _delete_one(self, orphan: Orphan, delete_data: bool) -> Outcome:
        if orphan.protected and not delete_data:
            return Outcome(orphan, "kept", self.kept_message(orphan))
        item = self._items.get(self.item_key(orphan))
        if item is None:
            return Outcome(orphan, "failed", "not found by this scan; scan again")
        try:
            message = self.delete_item(orphan, item)
        except CliError as exc:
            if exc.not_found:
                return Outcome(orphan, "deleted", "already gone")
            return Outcome(orphan, "failed", str(exc))
        return Outcome(orphan, "deleted", message)
