"""`raygpu logs JOB`: a job's log from a stack's Ray cluster (or any reachable one),
through Ray's own `ray job logs`, with the token in the child's environment."""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from raygpu import options
from raygpu.errors import CommandError
from raygpu.rayclient import check_address, dashboard_get, ray_cli, ray_client_env


@contextmanager
def cluster(args: argparse.Namespace) -> Iterator[tuple[str, str | None]]:
    """(job API URL, token) of --address, or of --stack through a port-forward."""
    if args.address:
        yield check_address(args.address), None
        return
    from raygpu.stack import load_outputs, stack_access

    with stack_access(load_outputs(args.stack, args.outputs)) as (url, token, _k):
        yield url, token


def check_job(address: str, token: str | None, job: str) -> None:
    jobs = dashboard_get(address, "/api/jobs/", token) or []
    known = {j.get("submission_id") for j in jobs} | {j.get("job_id") for j in jobs}
    if job not in known:
        raise CommandError(
            f"no job {job!r} on this cluster; `raygpu status` lists the jobs"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="JOB", help="the job's submission id")
    options.add_cluster_target(parser, "job API URL of a reachable Ray cluster")
    parser.add_argument(
        "-f", "--follow", action="store_true", help="keep printing until the job ends"
    )


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    options.check_cluster_target(parser, args)


def run(args: argparse.Namespace) -> int:
    with cluster(args) as (address, token):
        check_job(address, token, args.job)
        argv = [ray_cli(), "job", "logs", "--address", address, args.job]
        if args.follow:
            argv.insert(3, "--follow")
        proc = subprocess.run(argv, env=ray_client_env(token))
    if proc.returncode != 0:
        raise CommandError(f"`ray job logs` exited with status {proc.returncode}")
    return 0
