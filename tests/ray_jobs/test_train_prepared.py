"""Training from a prepared dataset, and serving what it trained.

train.py --data streams the prepared digits through Ray Data on the session's
cluster (one worker at half a CPU, so that Ray Data keeps CPUs to read with);
the served app gets the raw test rows over HTTP and must answer what the
in-process evaluation answered. A dataset several times larger than the object
store streams through a head of its own with a small object store.
"""

from __future__ import annotations

import json
import shutil
import urllib.request

import numpy as np
import pytest
import torch

import prepare
import serve_app
import train
from mlcore import checkpointing
from mlcore import prepared as fmt
from tests.conftest import free_port


@pytest.fixture(scope="module")
def digits(ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "digits"
    assert prepare.main(["--format", "digits", "--output", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    storage = tmp_path_factory.mktemp("runs")
    args = train.parse_args(
        [
            "--data",
            str(digits),
            "--num-workers",
            "1",
            "--cpus-per-worker",
            "0.5",
            "--epochs",
            "2",
            "--storage-path",
            str(storage),
            "--run-name",
            "prepared",
        ]
    )
    return train.run(args)


@pytest.mark.slow
def test_training_streams_the_prepared_data_and_records_what_it_saw(digits, trained):
    data = fmt.open_prepared(str(digits))
    assert trained["metrics"]["test_samples"] == data.rows("test") == 269
    assert trained["metrics"]["test_accuracy"] > 0.8
    assert trained["data"] == {"uri": str(digits), "manifest_sha256": data.digest}
    meta = checkpointing.verify(trained["checkpoint"])
    assert meta["normalisation"] == data.manifest["normalisation"]
    assert meta["data"] == {"uri": str(digits), "manifest_sha256": data.digest}
    assert meta["model"]["image_shape"] == [1, 8, 8]


@pytest.fixture(scope="module")
def served(trained):
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        args = serve_app.ServeArgs(checkpoint=trained["checkpoint"], num_cpus=0.5)
        serve.run(serve_app.build_app(args), name="prepared", route_prefix="/p")
        yield f"http://127.0.0.1:{port}/p"
    finally:
        serve.shutdown()


@pytest.mark.slow
def test_raw_requests_get_the_evaluations_predictions_over_http(
    digits, trained, served
):
    data = fmt.open_prepared(str(digits))
    x, y = (np.concatenate(p) for p in zip(*fmt.iter_split(data, "test"), strict=True))
    assert x.max() == 16.0  # raw pixel values, as the source has them
    model, meta = checkpointing.load_model(trained["checkpoint"])
    norm = fmt.Normalisation.from_dict(meta["normalisation"])
    with torch.no_grad():
        expected = model(torch.from_numpy(norm.apply(x))).argmax(1).numpy()
    assert (expected == y).mean() == trained["metrics"]["test_accuracy"]
    raw = x.reshape(len(x), -1)
    predictions = []
    for i in range(0, len(raw), 100):
        request = urllib.request.Request(
            f"{served}/predict",
            data=json.dumps({"instances": raw[i : i + 100].tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions += json.loads(response.read())["predictions"]
    assert predictions == expected.tolist()
    with urllib.request.urlopen(f"{served}/healthz", timeout=30) as response:
        health = json.loads(response.read())
    assert health["data"]["manifest_sha256"] == data.digest


def test_training_refuses_a_shard_that_fails_its_checksum(tmp_path, capsys):
    from tests.ray_jobs.test_prepared_format import write_dataset

    write_dataset(tmp_path / "d")
    shard = tmp_path / "d" / "train" / "part-00002.parquet"
    data = bytearray(shard.read_bytes())
    data[-40] ^= 0xFF
    shard.write_bytes(bytes(data))
    argv = ["--data", str(tmp_path / "d"), "--storage-path", str(tmp_path / "runs")]
    assert train.main([*argv, "--run-name", "r"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: shard {shard} does not match its checksum in manifest.json"
    shutil.rmtree(tmp_path / "d")
    assert train.main([*argv, "--run-name", "r"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'd'} has no manifest.json")


OBJECT_STORE_BYTES = 80 << 20


@pytest.mark.slow
def test_a_dataset_larger_than_the_object_store_streams_through(tmp_path):
    from raygpu.localray import start_head, stop_head
    from tests.ray_jobs.fault_helpers import submit_train, wait_job

    manifest = fmt.write_synthetic(str(tmp_path / "big"), rows=22_000)
    total = sum(s["bytes"] for p in manifest["splits"].values() for s in p["shards"])
    assert total > 3 * OBJECT_STORE_BYTES
    # Ray caps a new node's object store at this many bytes.
    head = start_head(
        num_cpus=2,
        extra_env={
            "RAY_DEFAULT_OBJECT_STORE_MAX_MEMORY_BYTES": str(OBJECT_STORE_BYTES)
        },
    )
    try:
        client, job = submit_train(
            head,
            [
                "--data",
                str(tmp_path / "big"),
                "--num-workers",
                "1",
                "--cpus-per-worker",
                "0.5",
                "--epochs",
                "1",
                "--batch-size",
                "512",
                "--storage-path",
                str(tmp_path / "runs"),
                "--run-name",
                "big",
            ],
        )
        status, logs = wait_job(client, job, timeout_s=420)
    finally:
        stop_head(head.temp_dir)
    assert status == "SUCCEEDED", logs[-3000:]
    result = json.loads((tmp_path / "runs" / "big" / "result.json").read_text())
    assert result["metrics"]["test_samples"] == 512
    store = float(logs.split("through an object store of ")[1].split()[0])
    assert store <= OBJECT_STORE_BYTES / 2**20  # the cap took
    print(f"\nstreamed {total / 2**20:.0f} MiB through a {store:.0f} MiB store")
