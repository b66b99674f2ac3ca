"""`raygpu sleep` and `raygpu wake`: the system pool and the Ray head to zero and
back, through the stack's own config and `pulumi up`.

Sleep sets `raygpu:asleep: true` with `pulumi config set` and runs `pulumi up`:
the program then gives the system node group no nodes and suspends the
RayCluster (KubeRay deletes its pods). Only the control plane, the NAT gateway
and the keys bill. Wake sets it back. Because the state is in the stack file, a
later `pulumi up` keeps it instead of undoing it. Sleep refuses while a job is
pending or running or a Serve app is deployed: sleeping would kill them.
"""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from raygpu import options
from raygpu.config import load_stack_file
from raygpu.errors import CommandError
from raygpu.rayclient import dashboard_get

ASLEEP_KEY = "raygpu:asleep"
ACTIVE_JOB_STATES = ("PENDING", "RUNNING")

Runner = Callable[..., subprocess.CompletedProcess]


def running_work(url: str, token: str | None) -> list[str]:
    """What sleeping would stop: active jobs and deployed Serve apps."""
    jobs = dashboard_get(url, "/api/jobs/", token) or []
    work = [
        f"job {j.get('submission_id') or j.get('job_id')} ({j['status'].lower()})"
        for j in jobs
        if j.get("status") in ACTIVE_JOB_STATES
    ]
    apps = (dashboard_get(url, "/api/serve/applications/", token) or {}).get(
        "applications"
    ) or {}
    work += [f"Serve app {name}" for name in sorted(apps)]
    return work


def cluster_work(stack: str, outputs_file: Path | None) -> list[str] | None:
    """The stack's running work, or None when its Ray cluster is asleep already."""
    from raygpu.stack import ClusterAsleep, load_outputs, stack_access

    try:
        with stack_access(load_outputs(stack, outputs_file)) as (url, token, _k):
            return running_work(url, token)
    except ClusterAsleep:
        return None


def pulumi_argv(stack: str, config: Path | None, *args: str) -> list[str]:
    from raygpu.stack import pulumi_executable

    argv = [pulumi_executable(), *args, "--stack", stack]
    return [*argv, "--config-file", str(config)] if config else argv


def run_pulumi(argv: Sequence[str], runner: Runner = subprocess.run) -> None:
    """A Pulumi CLI step in the project folder, its output shown as it comes."""
    from raygpu.stack import REPO_ROOT

    proc = runner(list(argv), cwd=REPO_ROOT)
    if proc.returncode != 0:
        raise CommandError(
            f"`pulumi {' '.join(argv[1:3])}` failed (exit status {proc.returncode})"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_stack(parser)
    options.add_config(parser)
    options.add_outputs(parser)
    parser.add_argument(
        "--yes", action="store_true", help="pass --yes to `pulumi up` (no prompt)"
    )


def run(args: argparse.Namespace) -> int:
    from raygpu.offline import stack_path

    asleep = args.command == "sleep"
    cfg = load_stack_file(args.config or stack_path(args.stack), args.stack)
    work = cluster_work(args.stack, args.outputs)  # None: suspended already
    if asleep and work:
        raise CommandError(
            f"stack {args.stack} is running {', '.join(work)}; sleeping would stop "
            "it: wait for it to end, or stop it, first"
        )
    if not asleep and work is not None and not cfg.asleep:
        print(f"stack {args.stack} is awake already")
        return 0
    if cfg.asleep != asleep:
        value = "true" if asleep else "false"
        run_pulumi(
            pulumi_argv(args.stack, args.config, "config", "set", ASLEEP_KEY, value)
        )
    up = pulumi_argv(args.stack, args.config, "up")
    run_pulumi([*up, "--yes"] if args.yes else up)
    if asleep:
        print(f"stack {args.stack} is asleep: the system pool and the Ray head at zero")
    else:
        print(
            f"stack {args.stack} is awake: the system nodes start, then KubeRay "
            "starts the Ray head; `raygpu status` shows when it is back"
        )
    return 0
