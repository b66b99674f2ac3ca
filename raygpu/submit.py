"""Submit a job to a stack's Ray cluster, or to any Ray job API, and follow it.

    raygpu submit --stack dev -- python train.py --epochs 2
    raygpu submit --address http://127.0.0.1:8265 -- python train.py

Runs the real `ray job submit --working-dir ray_jobs ... -- <entrypoint>`, streams
the job's logs and exits 0 when the job succeeded and 1 when it failed, was
stopped or could not be submitted. With --stack it reaches the cluster through a
kubeconfig written to a private temporary file and `kubectl port-forward` on
127.0.0.1, sends Ray's token from the cluster's Secret through the environment
only, installs the job's Python dependencies (ray_jobs/requirements.txt) in the
runtime env, and gives train.py the stack's artifacts bucket as --storage-path.
The port-forward is always closed.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from raygpu import clouds, options
from raygpu.errors import EXIT_FAILURE, EXIT_OK, CommandError, UsageError
from raygpu.rayclient import check_address, dashboard_get, ray_cli, ray_client_env
from raygpu.stack import RAY_JOBS_DIR, StackOutputs, load_outputs, stack_access

REQUIREMENTS = RAY_JOBS_DIR / "requirements.txt"
STORAGE_FLAG = "--storage-path"
# The job's environment also names the storage path, for entrypoints other than
# train.py that want it.
STORAGE_ENV = "RAYGPU_STORAGE_PATH"
# Never uploaded with the working directory.
# What Ray accepts as a submission id, kept to characters safe in a URL path.
SUBMISSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
EXCLUDES = ["__pycache__/", "*.pyc", ".pytest_cache/", "data/"]


def read_requirements(path: Path = REQUIREMENTS) -> list[str]:
    """The requirement lines of a requirements file (comments and blanks dropped)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return [line for line in lines if line]


def storage_path(outputs: StackOutputs) -> str:
    """Where a stack's jobs keep their runs: `runs/` of its artifacts bucket, in
    the URI form of its cloud (s3://, gs://, abfs://)."""
    return clouds.of(outputs).uri(outputs.artifacts_bucket, "runs")


def with_storage_path(entrypoint: Sequence[str], storage: str) -> list[str]:
    """Append `--storage-path STORAGE` when the entrypoint runs train.py without one."""
    words = list(entrypoint)
    runs_train = any(Path(word).name == "train.py" for word in words)
    has_flag = any(w == STORAGE_FLAG or w.startswith(STORAGE_FLAG + "=") for w in words)
    if runs_train and not has_flag:
        words += [STORAGE_FLAG, storage]
    return words


def stack_runtime_env(
    outputs: StackOutputs, requirements: Sequence[str] | None
) -> dict[str, Any]:
    """Runtime env for a job on the stack: its pip deps and where results go."""
    env: dict[str, Any] = {
        "env_vars": {STORAGE_ENV: storage_path(outputs)},
        "excludes": list(EXCLUDES),
    }
    if requirements:
        # rayproject/ray images do not ship torch: install the job's deps.
        env["pip"] = {"packages": list(requirements), "pip_check": False}
    return env


def new_submission_id() -> str:
    return f"raygpu-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def submit_argv(
    address: str,
    entrypoint: Sequence[str],
    working_dir: str | Path,
    submission_id: str,
    runtime_env: Mapping[str, Any] | None = None,
) -> list[str]:
    argv = [
        ray_cli("ray"),
        "job",
        "submit",
        "--address",
        address,
        "--submission-id",
        submission_id,
        "--working-dir",
        str(working_dir),
    ]
    if runtime_env:
        argv += ["--runtime-env-json", json.dumps(runtime_env, sort_keys=True)]
    return [*argv, "--", *entrypoint]


def job_info(address: str, submission_id: str, token: str | None) -> dict | None:
    """The job's details from the job API, or None when no such job exists."""
    try:
        info = dashboard_get(address, f"/api/jobs/{submission_id}", token)
    except CommandError as exc:
        if "HTTP 404" in str(exc):
            return None
        raise
    return info if isinstance(info, dict) else None


def failure_reason(message: str | None) -> str:
    """One line from Ray's job message: the reason and the last log line."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    if not lines:
        return "no message"
    reason = lines[0].split(", last available logs")[0].rstrip(":")
    if len(lines) > 1:
        reason += f"; last log line: {lines[-1]}"
    return reason


def exit_code(info: Mapping[str, Any]) -> int:
    """0 when the job succeeded, else 1 (its own exit code is in the message)."""
    return EXIT_OK if info.get("status") == "SUCCEEDED" else EXIT_FAILURE


def check_submission_id(submission_id: str | None) -> str | None:
    if submission_id is not None and not SUBMISSION_ID.fullmatch(submission_id):
        raise UsageError(
            f"--submission-id: {submission_id!r} is not allowed; use 1-128 letters, "
            "digits, '-', '_' or '.', starting with a letter or digit"
        )
    return submission_id


def submit(
    address: str,
    entrypoint: Sequence[str],
    working_dir: str | Path = RAY_JOBS_DIR,
    runtime_env: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    token: str | None = None,
    submission_id: str | None = None,
) -> int:
    """Submit ENTRYPOINT with `ray job submit`, stream its logs, return its status.

    `env` goes to the `ray` CLI process (not to the job); the job's variables go in
    `runtime_env["env_vars"]`. `token` (Ray's auth token) reaches the CLI through
    RAY_AUTH_TOKEN only. Returns 0 when the job succeeded, else non-zero.
    """
    address = check_address(address)
    if not entrypoint:
        raise UsageError("no entrypoint: give the command after `--`")
    submission_id = check_submission_id(submission_id) or new_submission_id()
    argv = submit_argv(address, entrypoint, working_dir, submission_id, runtime_env)
    # Ask the job API first: an unreachable cluster or a refused token is then one
    # line from us, not Ray's CLI traceback.
    dashboard_get(address, "/api/jobs/", token)
    print(f"submitting job {submission_id} to {address}", flush=True)
    proc = subprocess.Popen(argv, env=ray_client_env(token, env))
    try:
        cli_code = proc.wait()
    except KeyboardInterrupt:
        # The CLI got the same Ctrl-C; the job itself keeps running.
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(
            f"stopped following job {submission_id}; it keeps running. Stop it "
            f"with: ray job stop --address {address} {submission_id}",
            file=sys.stderr,
        )
        raise
    try:
        info = job_info(address, submission_id, token)
    except CommandError as exc:
        if "refused the request" in str(exc):
            raise
        raise CommandError(
            f"{exc}; `ray job submit` exited with {cli_code}. If job "
            f"{submission_id} was submitted it keeps running: check it with "
            f"`ray job status {submission_id}` once the cluster is reachable"
        ) from None
    if info is None:
        raise CommandError(
            f"`ray job submit` exited with {cli_code} and job {submission_id} "
            f"does not exist on {address}; see the output above"
        )
    status = info.get("status")
    code = exit_code(info)
    if status == "SUCCEEDED":
        print(f"job {submission_id} succeeded", flush=True)
    elif status in ("PENDING", "RUNNING"):
        print(
            f"error: lost the log stream of job {submission_id}, still {status}; "
            f"follow it with: ray job logs -f --address {address} {submission_id}",
            file=sys.stderr,
        )
    else:
        reason = failure_reason(info.get("message"))
        print(
            f"error: job {submission_id} {str(status).lower()}: {reason}",
            file=sys.stderr,
        )
    return code


def submit_to_stack(
    outputs: StackOutputs,
    entrypoint: Sequence[str],
    requirements: Sequence[str] | None,
    submission_id: str | None = None,
) -> int:
    """Submit through a port-forward to the stack's Ray head; always closes it."""
    entrypoint = with_storage_path(entrypoint, storage_path(outputs))
    runtime_env = stack_runtime_env(outputs, requirements)
    with stack_access(outputs) as (url, token, _kubectl):
        return submit(
            url,
            entrypoint,
            runtime_env=runtime_env,
            token=token,
            submission_id=submission_id,
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = (
        "raygpu submit (--stack NAME [--outputs FILE] | --address URL) "
        "[options] -- ENTRYPOINT..."
    )
    options.add_cluster_target(
        parser, "job API URL of any reachable Ray cluster (no Kubernetes)"
    )
    parser.add_argument("--submission-id", help="job id (default: generated)")
    parser.add_argument(
        "--no-requirements",
        action="store_true",
        help="with --stack: do not pip-install ray_jobs/requirements.txt "
        "(for images that already have the job's dependencies)",
    )
    parser.add_argument(
        "--requirements",
        action="store_true",
        help="with --address: pip-install ray_jobs/requirements.txt in the job's "
        "runtime env (a local cluster shares this virtualenv and needs none)",
    )


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    options.check_cluster_target(parser, args)
    if args.entrypoint is None:
        parser.error("give the entrypoint after `--`, e.g. -- python train.py")
    if not args.entrypoint:
        parser.error("the entrypoint after `--` is empty")
    check_submission_id(args.submission_id)


def run(args: argparse.Namespace) -> int:
    if args.address:
        runtime_env = None
        if args.requirements:
            runtime_env = {"pip": {"packages": read_requirements(), "pip_check": False}}
        return submit(
            args.address,
            args.entrypoint,
            runtime_env=runtime_env,
            submission_id=args.submission_id,
        )
    outputs = load_outputs(args.stack, args.outputs)
    requirements = None if args.no_requirements else read_requirements()
    return submit_to_stack(outputs, args.entrypoint, requirements, args.submission_id)
