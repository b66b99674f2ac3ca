"""Helpers for the fault tests: submit train.py as users do, find and kill processes.

Jobs go through Ray's job API (`ray job submit`'s SDK) with `ray_jobs/` as the
working directory and any settings (the S3 endpoint and credentials) in the
runtime environment's `env_vars`, exactly as a user passes configuration.
"""

from __future__ import annotations

import os
import shlex
import signal
import time
from collections.abc import Callable
from typing import Any

import pyarrow.fs as pafs

from mlcore.checkpointing import list_checkpoints
from tests.conftest import RAY_JOBS

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll `predicate` until it returns something truthy; fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.2)


def job_client(head):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(head.dashboard_url)


def submit_train(head, args: list[str], env_vars: dict[str, str] | None = None):
    """Submit `python train.py ARGS`; return (client, submission id)."""
    client = job_client(head)
    runtime_env: dict[str, Any] = {
        "working_dir": str(RAY_JOBS),
        "excludes": ["__pycache__"],
    }
    if env_vars:
        runtime_env["env_vars"] = dict(env_vars)
    job_id = client.submit_job(
        entrypoint="python train.py " + shlex.join(args), runtime_env=runtime_env
    )
    return client, job_id


def wait_job(client, job_id: str, timeout_s: float = 300) -> tuple[str, str]:
    """(final status, logs) of a job, waiting at most timeout_s."""
    status = wait_until(
        lambda: (
            (s := str(client.get_job_status(job_id)).split(".")[-1]) in TERMINAL and s
        ),
        timeout_s,
        f"job {job_id} to finish",
    )
    return status, client.get_job_logs(job_id)


def driver_pid(client, job_id: str) -> int:
    info = wait_until(
        lambda: client.get_job_info(job_id).driver_info, 60, "the job's driver"
    )
    return int(info.pid)


def alive_actor_pids(head, class_name: str) -> list[int]:
    from ray.util.state import list_actors

    actors = list_actors(
        address=head.dashboard_url,
        filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")],
        timeout=30,
    )
    return sorted(int(a.pid) for a in actors if a.pid)


def sigkill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def checkpoints(fs: pafs.FileSystem, run_path: str) -> list[tuple[int, int, str]]:
    """(epoch, attempt, path) of every checkpoint folder in a run, oldest first."""
    return [(c.epoch, c.attempt, c.path) for c in list_checkpoints(fs, run_path)]


def complete_checkpoints(fs: pafs.FileSystem, run_path: str) -> list[tuple]:
    """Checkpoint folders whose meta.json (written last) is there."""
    return [
        c
        for c in checkpoints(fs, run_path)
        if fs.get_file_info(f"{c[2]}/meta.json").type == pafs.FileType.File
    ]


def read_json(fs: pafs.FileSystem, path: str) -> dict:
    import json

    with fs.open_input_stream(path) as f:
        return json.loads(f.read().decode())
