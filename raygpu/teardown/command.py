"""`raygpu destroy`: the options, the question, and the run."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import IO, Any

from raygpu import options
from raygpu.errors import CommandError, UsageError
from raygpu.orphans import add_target_args, scanner_for, target_for
from raygpu.orphans.command import cloud_errors
from raygpu.stack import Kubectl, load_outputs, private_kubeconfig
from raygpu.teardown.seams import KubectlKubernetes, Kubernetes, PulumiCli
from raygpu.teardown.steps import Limits, Plan, Teardown


def confirm(plan: Plan, stdin: IO[str] | None, out: IO[str]) -> None:
    """Show the plan and ask for the stack's name; anything else aborts."""
    out.write("\n".join(plan.lines()) + "\n")
    out.write(f"Type the stack name ({plan.stack}) to destroy it: ")
    out.flush()
    answer = (stdin.readline() if stdin is not None else "").strip()
    if answer != plan.stack:
        got = f"got {answer!r}" if answer else "no answer"
        raise CommandError(
            f"aborted ({got}, not {plan.stack!r}); nothing was destroyed"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_args(parser)  # --stack, --outputs, --region, --cluster-name
    parser.add_argument(
        "--yes",
        action="store_true",
        help="destroy without asking (needed where there is no terminal to ask on)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the steps and what a scan finds now; change nothing",
    )
    parser.add_argument(
        "--skip-kubernetes",
        action="store_true",
        help="skip the in-cluster cleanup (the cluster is gone or unreachable); "
        "load balancers it made are then left for `raygpu orphans --delete`",
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
    options.add_json(parser)


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.timeout <= 0:
        parser.error("--timeout: must be > 0")


def run(args: argparse.Namespace) -> int:
    ask = not (args.yes or args.dry_run)
    if ask and not (sys.stdin is not None and sys.stdin.isatty()):
        raise UsageError(
            f"destroy asks before it deletes, and stdin is no terminal to ask on: "
            f"pass --yes to destroy stack {args.stack!r} without asking (or "
            "--dry-run to see what it would delete)"
        )
    outputs = load_outputs(args.stack, args.outputs)
    target = target_for(args.stack, outputs.values, args.region, args.cluster_name)
    # With --json, stdout carries only the one JSON document.
    out = sys.stderr if args.json else sys.stdout

    def log(line: str) -> None:
        print(line, file=out)

    with cloud_errors(target):
        scanner = scanner_for(target, log=log)  # first: the cloud must be usable
        with _cluster(args, outputs.get("kubeconfig"), log) as kubernetes:
            # Pulumi's own output joins the progress lines on stderr.
            pulumi = PulumiCli(stdout=2 if args.json else None)
            limits = Limits(
                ray_objects_s=args.timeout, exposure_s=args.timeout, aws_s=args.timeout
            )
            teardown = Teardown(
                args.stack, kubernetes, pulumi, scanner, limits=limits, log=log
            )
            return _destroy(args, teardown, ask, out)


def _destroy(args: argparse.Namespace, teardown: Teardown, ask: bool, out) -> int:
    if args.dry_run or ask:
        plan = teardown.plan(args.delete_data_bucket)
        if args.dry_run:
            if args.json:
                print(json.dumps({**plan.as_json(), "dry_run": True}, indent=2))
            else:
                print("\n".join(plan.lines()))
                print("dry run: nothing was changed")
            return 0
        confirm(plan, sys.stdin, out)
    code = teardown.run(args.delete_data_bucket)
    if args.json:
        scanner = teardown.scanner
        result = {
            "stack": teardown.stack,
            "region": scanner.region,
            "cluster_name": scanner.cluster_name,
            "dry_run": False,
            "exit_code": code,
            "left": [asdict(o) for o in teardown.left],
            "kept": [asdict(o) for o in teardown.kept],
        }
        print(json.dumps(result, indent=2))
    return code


@contextlib.contextmanager
def _cluster(
    args: argparse.Namespace, kubeconfig: Any, log: Callable[[str], None]
) -> Iterator[Kubernetes | None]:
    """kubectl on a private copy of the stack's kubeconfig, or None to skip."""
    if args.skip_kubernetes or not kubeconfig:
        if not args.skip_kubernetes:
            log("note: the stack has no kubeconfig output (no cluster)")
        yield None
        return
    with private_kubeconfig(kubeconfig) as path:
        yield KubectlKubernetes(Kubectl(path))
