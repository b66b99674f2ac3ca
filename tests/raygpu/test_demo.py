"""`make demo`'s script end to end: its own Ray head, train, serve, check, stop."""

import os
import re
import subprocess
import sys

import pytest

from raygpu.localray import _process_table

pytestmark = pytest.mark.slow


def test_demo_trains_serves_and_reports_both_accuracies(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "raygpu",
            "demo",
            "--storage-path",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    test_acc = float(re.search(r"^test_accuracy=([0-9.]+)$", out, re.M).group(1))
    served = float(re.search(r"^served_accuracy=([0-9.]+)$", out, re.M).group(1))
    assert test_acc >= 0.95 and served >= 0.95
    # the same checkpoint, the same test split: the served answers match
    assert abs(test_acc - served) < 1e-3
    # it stopped the head it started: no process names its GCS or job API port
    # as a whole argument value (`--gcs-address=127.0.0.1:PORT`, `--port=PORT`)
    gcs, api = re.search(
        r"GCS 127\.0\.0\.1:(\d+), job API http://127\.0\.0\.1:(\d+)", out
    ).groups()
    ports = re.compile(rb"[=:](?:%s|%s)(?:\0|$)" % (gcs.encode(), api.encode()))
    left = [cmd[:200] for _, cmd in _process_table().values() if ports.search(cmd)]
    assert left == [], left


def test_demo_on_a_running_cluster_exits_non_zero_with_the_failing_step(
    ray_head, tmp_path
):
    """RAY_ADDRESS names a running cluster: the demo uses it and reports failure."""
    env = {**os.environ, "RAY_ADDRESS": ray_head.address}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "raygpu",
            "demo",
            "--storage-path",
            str(tmp_path),
            "--epochs",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert f"using the running cluster at {ray_head.address}" in proc.stdout
    assert proc.returncode != 0
    assert "step 'train' failed" in proc.stderr
    assert "--epochs: must be a positive number" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
