"""Shared fixtures: a real local Ray head and a real S3 API on loopback.

Both servers are started as subprocesses bound to 127.0.0.1 on free ports and are
always stopped, also when a test fails. Nothing here talks to any other address:
AWS SDKs are told never to look for instance metadata.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RAY_JOBS = REPO / "ray_jobs"

# Never reach for the EC2 instance metadata service (a non-loopback address).
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Clusters and clients in tests use Ray's token authentication, as users do, and
# stay on 127.0.0.1 (see raygpu.rayclient.client_auth_env).
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Keep Ray Train's progress table out of test logs.
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")

from raygpu.localray import LocalRay, free_port, start_head, stop_head  # noqa: E402


@pytest.fixture(scope="session")
def ray_head():
    """A Ray head started with `ray start --head` on 127.0.0.1, 2 CPUs."""
    head = start_head(num_cpus=2)
    try:
        yield head
    finally:
        stop_head(head.temp_dir)


@pytest.fixture(scope="session")
def ray_cluster(ray_head: LocalRay):
    """This test process connected to `ray_head` as a driver.

    Its job ships ray_jobs/ as the working directory, as `ray job submit` does, so
    workers import the same modules (train_func is pickled by reference).
    """
    import ray

    ray.init(
        address=ray_head.address,
        runtime_env={"working_dir": str(RAY_JOBS), "excludes": ["__pycache__"]},
        log_to_driver=False,
    )
    try:
        yield ray_head
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    env: dict[str, str]  # what a client needs: endpoint, fake credentials, region


MOTO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _wait_for_moto(proc: subprocess.Popen, url: str, timeout_s: float = 30) -> bool:
    """True once moto answers at `url`; False if it exited first (its port was
    taken). Kills it and raises if it neither answers nor exits in time."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
            return True
        except (urllib.error.URLError, OSError):
            if proc.poll() is not None:
                return False
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait(timeout=10)
                raise RuntimeError(
                    f"moto_server did not answer within {timeout_s:.0f}s"
                ) from None
            time.sleep(0.2)


@contextlib.contextmanager
def start_moto(extra_env: dict[str, str] | None = None):
    """Run moto_server on 127.0.0.1 (a free port); yield (process, URL); kill it.

    `extra_env` goes to the server (INITIAL_NO_AUTH_ACTION_COUNT turns on its
    IAM policy checks after that many requests)."""
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        exe = Path(shutil.which("moto_server") or "moto_server")
    # A free port can be taken by someone else before moto binds it; moto then
    # exits at once, and another port is tried.
    for _attempt in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(port)],
            env={**os.environ, **(extra_env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if _wait_for_moto(proc, url):
            break
        proc.wait(timeout=10)
    else:
        raise RuntimeError(
            "moto_server exited at start-up 3 times, each on a fresh free port "
            f"(a port taken each time, or a broken install: try `{exe} --help`)"
        )
    try:
        yield proc, url
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_server():
    """moto_server (a real S3/EC2/ELB/... API) on 127.0.0.1; env vars set meanwhile."""
    with start_moto() as (_, url):
        env = {"AWS_ENDPOINT_URL": url, **MOTO_CREDENTIALS}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield S3Server(endpoint_url=url, env=env)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture
def s3_bucket(moto_server: S3Server, request):
    """A fresh, empty bucket on the loopback S3 server."""
    import boto3

    name = "rg-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    name = "".join(c for c in name if c.isalnum() or c == "-")
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint_url)
    s3.create_bucket(Bucket=name)
    return name
