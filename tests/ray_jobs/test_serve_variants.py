"""Serving compressed variants on a real local Ray cluster, over HTTP on
127.0.0.1: the digits MLP trained here, compressed by compress.py, served with
variant=int8 and variant=onnx-int8 behind Ray's proxy (the default ingress); and
the classifier's answers to bodies nested wrongly or too large. A tampered
variant's refusal is tested on the replica's constructor in test_compress.py
(a failed deploy here costs Serve's three start attempts)."""

from __future__ import annotations

import http.client
import json

import numpy as np
import pytest

import compress
import serve_app
from mlcore import variants
from mlcore.data import load_dataset
from scripts.bench.compress_models import train_checkpoint
from tests.conftest import free_port
from tests.ray_jobs.test_serve import call

pytestmark = pytest.mark.slow
SERVED = ("int8", "onnx-int8")


@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory):
    from ray import serve

    ckpt = train_checkpoint(tmp_path_factory.mktemp("v") / "ckpt", "mlp", "digits", 0)
    argv = ["--checkpoint", str(ckpt), "--variants", ",".join(SERVED)]
    compress.run(compress.parse_args([*argv, "--rounds", "0"]))
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        for variant in SERVED:
            args = serve_app.ServeArgs(
                checkpoint=str(ckpt), variant=variant, num_cpus=0.5, max_instances=300
            )
            serve.run(
                serve_app.build_app(args), name=variant, route_prefix=f"/{variant}"
            )
        yield port, ckpt
    finally:
        serve.shutdown()


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("variant", SERVED)
def test_a_variant_answers_over_http_as_it_does_in_process(served, variant):
    port, ckpt = served
    base = f"http://127.0.0.1:{port}/{variant}"
    status, health = call(f"{base}/healthz")
    assert status == 200 and health["variant"] == variant
    assert health["backend"] == (
        "onnxruntime" if "onnx" in variant else "torch+torchao"
    )
    test = load_dataset("digits").test
    x = test.x.reshape(len(test.x), -1)
    status, body = call(
        f"{base}/predict",
        json.dumps({"instances": x.tolist()}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 200, body
    predictor, _ = variants.load_uri(str(ckpt), variant)
    expected = softmax(predictor.logits(test.x))
    assert body["predictions"] == expected.argmax(axis=1).tolist()
    np.testing.assert_allclose(body["probabilities"], expected, atol=1e-5)
    assert np.mean(np.array(body["predictions"]) == test.y) >= 0.9


def test_instances_nested_as_64_one_element_lists_get_400(served):
    port, _ = served
    status, body = call(
        f"http://127.0.0.1:{port}/onnx-int8/predict",
        json.dumps({"instances": [[[0.0]] * 64]}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 400
    assert body["error"] == (
        "each instance must be a flat list of 64 numbers or nested as 1x8x8 (got 64x1)"
    )


def post_whole(port: int, path: str, body, headers: dict) -> tuple[int, dict]:
    """Send the whole body before reading the answer, as most clients do: a
    server that answers early and closes makes this fail with a reset."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        chunked = not isinstance(body, bytes)
        conn.request("POST", path, body=body, headers=headers, encode_chunked=chunked)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_a_25_mb_body_gets_a_413_the_client_reads(served):
    port, _ = served
    path = "/int8/predict"
    big = b'{"instances": [[' + b"0," * (25 * 2**20 // 2) + b"0]]}"
    json_type = {"Content-Type": "application/json"}
    status, body = post_whole(port, path, big, json_type)
    assert status == 413
    assert body["error"] == "request body is larger than 4194304 bytes"
    # The same without a Content-Length (chunked): counted as it arrives.
    chunks = (big[i : i + 2**20] for i in range(0, len(big), 2**20))
    status, body = post_whole(port, path, chunks, json_type)
    assert status == 413 and "larger than 4194304 bytes" in body["error"]
    ok, answer = post_whole(
        port, path, json.dumps({"instances": [[0.0] * 64]}).encode(), json_type
    )
    assert ok == 200 and len(answer["predictions"]) == 1
