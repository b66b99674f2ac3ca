"""The S3 API on loopback for the benchmark: moto_server on 127.0.0.1.

A free port each start (moto exits at once when the port was taken meanwhile,
and another is tried); stopped on the way out, also on failure. Nothing else is
reached: the clients get its endpoint, fake credentials and no instance
metadata.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from raygpu.localray import free_port
from raygpu.names import LOOPBACK
from scripts.bench.settings import PY, BenchError

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _answers(proc: subprocess.Popen, url: str, timeout_s: float) -> bool:
    """True once moto answers; False when it exited first (its port was taken)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
            return True
        except (urllib.error.URLError, OSError):
            if proc.poll() is not None:
                return False
            time.sleep(0.2)
    proc.kill()
    proc.wait(timeout=10)
    raise BenchError(f"moto_server did not answer at {url} within {timeout_s:.0f}s")


@contextlib.contextmanager
def loopback_s3(bucket: str) -> Iterator[dict[str, str]]:
    """moto_server with `bucket` created; yields the environment an S3 client
    needs (endpoint and fake credentials)."""
    exe = Path(PY).with_name("moto_server")
    if not exe.exists():
        exe = Path(shutil.which("moto_server") or "moto_server")
    for _attempt in range(3):
        url = f"http://{LOOPBACK}:{free_port()}"
        proc = subprocess.Popen(
            [str(exe), "-H", LOOPBACK, "-p", url.rsplit(":", 1)[1]],
            env={**os.environ, **CREDENTIALS},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if _answers(proc, url, 30):
            break
        proc.wait(timeout=10)
    else:
        raise BenchError(f"moto_server ({exe}) exited at start-up 3 times")
    try:
        import boto3

        env = {"AWS_ENDPOINT_URL": url, **CREDENTIALS}
        client = boto3.client(
            "s3",
            endpoint_url=url,
            region_name=CREDENTIALS["AWS_REGION"],
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        client.create_bucket(Bucket=bucket)
        yield env
    finally:
        proc.kill()
        proc.wait(timeout=10)
