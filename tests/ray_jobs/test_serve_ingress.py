"""The serving app behind Ray 2.60's HAProxy ingress (`serveIngress: haproxy`).

A second local cluster started with `serve_ingress="haproxy"`: the same app, the
same port and API, answered by HAProxy in front of the replica's own HTTP server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mlcore import checkpointing
from mlcore.models import ModelSpec, build_model
from raygpu.localray import (
    _haproxy_dir,
    _process_table,
    free_port,
    start_head,
    stop_head,
)
from raygpu.rayclient import client_auth_env
from scripts.bench.proc import wait_http
from tests.ray_jobs.test_serve import call

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]

DEPLOY = """
import ray
from ray import serve
import serve_app
ray.init(address={address!r}, log_to_driver=False,
         runtime_env={{"working_dir": {ray_jobs!r}, "excludes": ["data/"]}})
serve.start(http_options={{"host": "127.0.0.1", "port": {port}}})
args = serve_app.ServeArgs(checkpoint={checkpoint!r}, num_cpus=0.5)
serve.run(serve_app.build_app(args), name="digits", route_prefix="/digits",
          blocking=False)
"""


def _haproxy_pids(folder: str) -> list[int]:
    marker = folder.encode()
    return [
        pid
        for pid, (_, cmd) in _process_table().items()
        if cmd.split(b"\0")[0].endswith(b"haproxy") and marker in cmd
    ]


@pytest.fixture
def haproxy_app(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.manual_seed(0)
    spec = ModelSpec("mlp", (1, 8, 8), 10)
    checkpointing.save(str(folder), build_model(spec), None, 0, spec, {})
    head = start_head(num_cpus=2, serve_ingress="haproxy")
    try:
        port = free_port()
        env = {
            **os.environ,
            **client_auth_env(),
            "RAY_ADDRESS": head.address,
            "PYTHONPATH": str(REPO / "ray_jobs"),
        }
        code = DEPLOY.format(
            ray_jobs=str(REPO / "ray_jobs"),
            address=head.address,
            port=port,
            checkpoint=str(folder),
        )
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
        base = f"http://127.0.0.1:{port}/digits"  # routes below a prefix
        wait_http(f"{base}/healthz", 120)
        yield head, base, str(folder)
    finally:
        stop_head(head.temp_dir)


def test_haproxy_serves_the_same_api_and_ends_with_the_cluster(haproxy_app):
    head, base, folder = haproxy_app
    # HAProxy runs, with its files in this cluster's private folder (mode 0700),
    # not in Ray's shared /tmp/haproxy-serve.
    hfolder = _haproxy_dir(head.temp_dir)
    assert _haproxy_pids(hfolder)
    assert list(Path(hfolder).rglob("haproxy.cfg"))
    assert Path(hfolder).stat().st_mode & 0o777 == 0o700
    x = np.random.default_rng(1).random((3, 64), dtype=np.float32)
    model, _ = checkpointing.load_model(folder)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(x).view(3, 1, 8, 8)), dim=1)
    status, body = call(
        f"{base}/predict",
        x.astype("<f4").tobytes(),
        {"Content-Type": "application/octet-stream", "X-Instances": "3"},
    )
    assert status == 200, body
    np.testing.assert_allclose(body["probabilities"], expected.numpy(), atol=1e-5)
    status, body = call(
        f"{base}/predict",
        json.dumps({"instances": x.tolist()}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 200 and body["predictions"] == expected.argmax(1).tolist()
    status, body = call(f"{base}/predict", b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]
    status, body = call(f"{base}/nothing")
    assert status == 404 and "POST /predict" in body["error"]

    stop_head(head.temp_dir)
    deadline = time.monotonic() + 10
    while _haproxy_pids(hfolder) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _haproxy_pids(hfolder) == []
    assert not Path(head.temp_dir).exists() and not Path(hfolder).exists()
