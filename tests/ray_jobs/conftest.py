"""A training run submitted with the real `ray job submit` path, shared by tests."""

import json
import subprocess
import sys

import pytest


@pytest.fixture(scope="session")
def submitted_run(ray_head, tmp_path_factory):
    """train.py, 2 workers on digits, submitted through raygpu submit --address."""
    storage = tmp_path_factory.mktemp("runs")
    cmd = [
        sys.executable,
        "-m",
        "raygpu",
        "submit",
        "--address",
        ray_head.dashboard_url,
        "--",
        "python",
        "train.py",
        "--num-workers",
        "2",
        "--epochs",
        "8",
        "--storage-path",
        str(storage),
        "--run-name",
        "digits-2w",
        "--keep-checkpoints",
        "2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((storage / "digits-2w" / "result.json").read_text())
    return storage / "digits-2w", result, proc.stdout
