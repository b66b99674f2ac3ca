"""`raygpu`: the operator's one command.

    raygpu plan --stack dev            offline plan and hourly cost
    raygpu preflight --stack dev       checks to pass before `pulumi up`
    raygpu render --stack dev          every Kubernetes object as YAML, validated
    raygpu submit --stack dev -- python train.py
    raygpu serve --stack dev --checkpoint s3://...
    raygpu data push ./images --stack dev   raw data into the stack's bucket
    raygpu status --stack dev          nodes, jobs, Serve apps, cost per hour now
    raygpu logs JOB --stack dev        a job's log (-f follows it)
    raygpu dashboard --stack dev       Ray's dashboard through a port-forward
    raygpu sleep --stack dev           system pool and Ray head to zero (`wake`: back)
    raygpu monitor --local             Prometheus for the local Ray cluster, with alerts
    raygpu destroy --stack dev         ordered teardown, then a leftover scan
    raygpu orphans --stack dev         what a stack left behind
    raygpu demo                        train, serve and check on a local Ray cluster

Exit codes, the same for every command: 0 done, 1 failed, 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from raygpu.errors import EXIT_FAILURE, EXIT_USAGE, RaygpuError, UsageError

# command -> (module, one-line help). Modules are imported only when their command
# runs, so `raygpu --help` and the operator-only install stay light.
COMMANDS = {
    "plan": ("raygpu.plan", "offline plan of a stack: resources and hourly cost"),
    "preflight": (
        "raygpu.preflight",
        "before `pulumi up`: identity, GPU quotas, cost, budget, placeholders",
    ),
    "render": ("raygpu.render", "write a stack's Kubernetes objects as YAML, checked"),
    "submit": ("raygpu.submit", "submit a job to a stack's Ray cluster and follow it"),
    "serve": ("raygpu.serve", "deploy the serving app for a checkpoint"),
    "data": ("raygpu.data", "push raw data to a stack's bucket or any storage path"),
    "status": (
        "raygpu.status",
        "nodes, jobs, Serve apps and the hourly cost of what runs now",
    ),
    "logs": ("raygpu.logs", "a job's log (ray job logs), -f to follow"),
    "dashboard": (
        "raygpu.dashboard",
        "Ray's dashboard on 127.0.0.1 through a port-forward",
    ),
    "sleep": (
        "raygpu.power",
        "the system pool and the Ray head to zero (pulumi up), when nothing runs",
    ),
    "wake": ("raygpu.power", "bring a sleeping stack's system pool and Ray head back"),
    "monitor": (
        "raygpu.monitoring.command",
        "Prometheus on 127.0.0.1 for the local Ray cluster, with the alerts",
    ),
    "destroy": ("raygpu.teardown", "ordered teardown of a stack, then a leftover scan"),
    "orphans": ("raygpu.orphans", "list (or --delete) what a stack left in AWS"),
    "demo": ("raygpu.demo", "train, serve and check on a local Ray cluster"),
}
# Only `submit` takes words after `--`: the job's entrypoint.
ENTRYPOINT_COMMANDS = {"submit"}
DEBUG_ENV = "RAYGPU_DEBUG"


def load_command(name: str):
    """The module behind a command; a broken install is one line, not a traceback."""
    module_name = COMMANDS[name][0]
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # a broken install or checkout: one line
        raise UsageError(
            f"cannot load {module_name} ({type(exc).__name__}: {exc}); is the "
            "install complete? `make venv` installs everything"
        ) from None


class _HelpFormatter(argparse.HelpFormatter):
    """argparse measures subcommand names at their parent's indent, two columns
    short, so the longest one (preflight) would wrap onto a line of its own."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if action.help is not argparse.SUPPRESS:
            for sub in self._iter_indented_subactions(action):
                width = len(self._format_action_invocation(sub)) + self._current_indent
                self._action_max_length = max(self._action_max_length, width)


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    """The parser; only the chosen command's module is imported (its options)."""
    parser = argparse.ArgumentParser(
        prog="raygpu",
        formatter_class=_HelpFormatter,
        description="Secure Ray clusters with GPU pools: plan, deploy jobs, serve, "
        "tear down.",
        epilog="Exit codes: 0 done, 1 failed, 2 bad usage or config.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            load_command(name).add_arguments(command)
        command.set_defaults(_parser=command)
    return parser


def split_entrypoint(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """The options before `--`, and the entrypoint after it (None without `--`)."""
    if "--" not in argv:
        return argv, None
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    options, entrypoint = split_entrypoint(words)
    chosen = next((w for w in options if not w.startswith("-")), None)
    try:
        parser = build_parser(chosen if chosen in COMMANDS else None)
    except RaygpuError as exc:
        print(f"raygpu {chosen}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    try:
        args, extra = parser.parse_known_args(options)
        command = args.command
        if extra and command in ENTRYPOINT_COMMANDS and entrypoint is None:
            args._parser.error(
                "give the entrypoint after `--`, e.g. -- python train.py"
            )
        if extra:
            args._parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if command not in ENTRYPOINT_COMMANDS and entrypoint is not None:
            args._parser.error("takes no words after `--`")
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    args.entrypoint = entrypoint
    module = load_command(command)
    try:
        check = getattr(module, "check_arguments", None)
        if check is not None:
            check(args._parser, args)
        return int(module.run(args))
    except SystemExit as exc:  # parser.error inside a check
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    except RaygpuError as exc:
        print(f"raygpu {command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"raygpu {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # no traceback reaches a user
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        print(
            f"raygpu {command}: unexpected error: {type(exc).__name__}: {exc} "
            f"(set {DEBUG_ENV}=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


def entry() -> None:
    sys.exit(main())
