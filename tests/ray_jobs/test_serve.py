"""The serving app on a real local Ray cluster, over HTTP on 127.0.0.1."""

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

import serve_app
from mlcore import checkpointing
from mlcore.data import load_dataset
from tests.conftest import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(ray_cluster, submitted_run):
    from ray import serve

    _, result, _ = submitted_run
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        args = serve_app.ServeArgs(
            checkpoint=result["checkpoint"], num_cpus=0.5, max_instances=100
        )
        # Below a route prefix, behind Ray's proxy (the default ingress).
        serve.run(serve_app.build_app(args), name="digits", route_prefix="/digits")
        yield f"http://127.0.0.1:{port}/digits", result["checkpoint"]
    finally:
        serve.shutdown()


def call(url, data=None, headers=None, method=None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_healthz(served):
    base, _ = served
    status, body = call(f"{base}/healthz")
    assert status == 200 and body["status"] == "ok"
    assert body["model"]["name"] == "mlp"


def test_unknown_routes_get_404_and_wrong_methods_405(served):
    base, _ = served
    status, body = call(f"{base}/predikt", b"{}", method="POST")
    assert status == 404
    assert body["error"] == (
        "no route /predikt; this app serves POST /predict, GET /healthz"
    )
    status, body = call(f"{base}/predict")  # GET
    assert status == 405 and body["error"] == "/predict takes POST, not GET"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{base}/predict", timeout=30)
    assert err.value.headers["Allow"] == "POST"
    status, body = call(f"{base}/healthz/")  # a trailing slash is the same route
    assert status == 200 and body["status"] == "ok"


def test_http_predictions_equal_in_process_predictions(served):
    base, checkpoint = served
    test = load_dataset("digits").test
    x = test.x.reshape(len(test.x), -1)
    model, _ = checkpointing.load_model(checkpoint)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(test.x)), dim=1).numpy()
    preds, probs = [], []
    for i in range(0, len(x), 50):
        status, body = call(
            f"{base}/predict",
            json.dumps({"instances": x[i : i + 50].tolist()}).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 200, body
        preds += body["predictions"]
        probs += body["probabilities"]
    assert preds == expected.argmax(axis=1).tolist()
    np.testing.assert_allclose(np.array(probs), expected, atol=1e-5)
    assert np.mean(np.array(preds) == test.y) >= 0.95


BAD = [
    (b"{not json", "not valid JSON"),
    (json.dumps({"rows": [[0] * 64]}).encode(), "'instances' is missing"),
    (json.dumps({"instances": 5}).encode(), "must be a list"),
    (json.dumps({"instances": [[0] * 10]}).encode(), "must have 64 features"),
    (json.dumps({"instances": [["x"] * 64]}).encode(), "only numbers"),
    (b'{"instances": [[' + b",".join([b"NaN"] * 64) + b"]]}", "finite"),
    (json.dumps({"instances": [[0] * 64] * 101}).encode(), "more than the maximum"),
    # 64 one-element lists hold 64 numbers, but not as a flat row or 1x8x8
    (json.dumps({"instances": [[[0.0]] * 64]}).encode(), "nested as 1x8x8 (got 64x1)"),
]


@pytest.mark.parametrize("raw,fragment", BAD)
def test_bad_input_gets_400_and_the_app_keeps_serving(served, raw, fragment):
    base, _ = served
    status, body = call(f"{base}/predict", raw, {"Content-Type": "application/json"})
    assert status == 400
    assert fragment in body["error"]
    ok, answer = call(
        f"{base}/predict",
        json.dumps({"instances": [[0.0] * 64]}).encode(),
        {"Content-Type": "application/json"},
    )
    assert ok == 200 and len(answer["predictions"]) == 1
