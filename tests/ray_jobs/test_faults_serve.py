"""Serving keeps answering through overload, slow requests, garbage and a killed
replica; a checkpoint that is not there fails the deployment, naming it.

A real Serve instance on the local Ray cluster, its HTTP proxy on 127.0.0.1 on a
free port, replicas with a quarter CPU each. Requests are real HTTP over loopback,
bounded in count and time. The checkpoint is written in the format train.py
writes, from a model trained here for a few seconds.
"""

import http.client
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from mlcore import checkpointing
from mlcore.data import load_dataset
from mlcore.models import ModelSpec, build_model
from raygpu.localray import free_port
from serve_app import ServeArgs, build_app
from tests.ray_jobs.fault_helpers import alive_actor_pids, sigkill, wait_until

pytestmark = pytest.mark.slow
CPU = 0.25  # per replica: leave the 2-CPU test cluster room for the rest


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real checkpoint folder: an MLP trained on digits for two epochs."""
    torch.manual_seed(0)
    ds = load_dataset("digits")
    spec = ModelSpec("mlp", ds.image_shape, ds.num_classes)
    model = build_model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.from_numpy(ds.train.x), torch.from_numpy(ds.train.y)
    for _ in range(2):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(
                model(x[i : i + 64]), y[i : i + 64]
            ).backward()
            opt.step()
    folder = tmp_path_factory.mktemp("ckpt") / "checkpoint_epoch0001_attempt01"
    folder.mkdir()
    checkpointing.save(str(folder), model, opt, 1, spec, {"epoch": 1})
    return folder, ds.test.x.reshape(len(ds.test.x), -1)


@pytest.fixture(scope="module")
def serve_url(ray_cluster, checkpoint):
    """Serve with three apps: /main (2 replicas), /slow (1 slot, 1 queued), /timeout."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        folder = str(checkpoint[0])
        apps = {
            "main": ServeArgs(
                checkpoint=folder,
                num_replicas=2,
                num_cpus=CPU,
                max_body_bytes=4096,
                max_ongoing_requests=8,
                max_queued_requests=64,
            ),
            # every request waits 2 s for its batch to fill: a slow model
            "slow": ServeArgs(
                checkpoint=folder,
                num_cpus=CPU,
                batch_wait_timeout_s=2.0,
                max_ongoing_requests=1,
                max_queued_requests=1,
            ),
            # answers come after 5 s, the timeout is 0.2 s
            "timeout": ServeArgs(
                checkpoint=folder,
                num_cpus=CPU,
                batch_wait_timeout_s=5.0,
                request_timeout_s=0.2,
            ),
        }
        for name, args in apps.items():
            serve.run(build_app(args), name=name, route_prefix=f"/{name}")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def post(url: str, body: bytes, timeout: float = 30, headers=None) -> tuple[int, dict]:
    req = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"raw": raw[:200].decode(errors="replace")}


def instances(x, n: int = 1) -> bytes:
    return json.dumps({"instances": x[:n].tolist()}).encode()


def test_overload_gets_503_quickly_and_the_app_recovers(serve_url, checkpoint):
    x = checkpoint[1]
    url = f"{serve_url}/slow/predict"
    assert post(url, instances(x))[0] == 200  # warm

    def timed(_):
        t0 = time.monotonic()
        status, _ = post(url, instances(x))
        return status, time.monotonic() - t0

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(timed, range(12)))
    ok = [t for s, t in results if s == 200]
    rejected = [t for s, t in results if s == 503]
    print(
        f"\noverload (1 slot + 1 queued, 12 at once): {len(ok)} answered, "
        f"{len(rejected)} got 503 in at most {max(rejected, default=0):.2f}s "
        f"(a served request takes about 2 s)"
    )
    assert len(ok) + len(rejected) == 12, results
    assert 1 <= len(ok) <= 4 and len(rejected) >= 8, results
    # refused at once, not after waiting for a slot (which frees after 2 s)
    assert max(rejected) < 1.5
    # load gone: the app answers again
    assert [post(url, instances(x))[0] for _ in range(3)] == [200, 200, 200]


def test_a_request_that_outlasts_the_timeout_gets_408(serve_url, checkpoint):
    x = checkpoint[1]
    for _ in range(2):
        t0 = time.monotonic()
        status, body = post(f"{serve_url}/timeout/predict", instances(x))
        elapsed = time.monotonic() - t0
        assert status == 408, body
        assert body["error"] == "no answer within 0.2s"
        assert elapsed < 3.0  # well before the 5-s answer
    with urllib.request.urlopen(f"{serve_url}/timeout/healthz", timeout=10) as r:
        assert r.status == 200
    print(f"\nrequest timeout: 408 after {elapsed:.2f}s (timeout 0.2 s)")


def _chunked_post(url: str, chunks: list[bytes]) -> int:
    """A body without Content-Length (chunked): the limit must still hold."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        path = "/" + url.split("//")[1].split("/", 1)[1]
        conn.request(
            "POST",
            path,
            body=iter(chunks),
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        return conn.getresponse().status
    finally:
        conn.close()


def test_garbage_gets_4xx_and_no_replica_crashes(serve_url, checkpoint, ray_cluster):
    x = checkpoint[1]
    url = f"{serve_url}/main/predict"
    replicas = alive_actor_pids(ray_cluster, "ServeReplica:main:ModelServer")
    assert len(replicas) == 2
    big = instances(x, 40)  # valid JSON, over the 4096-byte limit
    assert len(big) > 4096
    cases = [
        (big, 413),
        (b"[" * 200_000, 413),
        (b"[" * 4000, 400),  # nested too deeply for the JSON parser
        (b'{"instances": ' + b"[" * 2000 + b"]" * 2000 + b"}", 400),
        (b"\x00\xff" * 100, 400),
        (b"", 400),
        (b"{", 400),
        (b'{"instances": null}', 400),
        (b'{"instances": [[1, 2]]}', 400),
        (b'{"instances": [["x"]]}', 400),
    ]
    for body, want in cases:
        status, answer = post(url, body)
        assert status == want, (body[:40], status, answer)
        assert "error" in answer, answer
    status, _ = post(url, b"1", headers={"Content-Length": "abc"})
    assert status == 400
    assert _chunked_post(url, [b'{"instances": [', b"[0.5, 0.5]," * 500, b"]}"]) == 413
    # still serving, with the same replica processes
    status, answer = post(url, instances(x, 5))
    assert status == 200 and len(answer["predictions"]) == 5
    assert alive_actor_pids(ray_cluster, "ServeReplica:main:ModelServer") == replicas


def test_a_killed_replica_is_replaced_and_few_requests_fail(
    serve_url, checkpoint, ray_cluster
):
    from ray import serve

    x = checkpoint[1]
    url = f"{serve_url}/main/predict"
    name = "ServeReplica:main:ModelServer"
    before = alive_actor_pids(ray_cluster, name)
    assert len(before) == 2
    total, deadline = 400, time.monotonic() + 120
    outcomes: list[int] = []

    def one(i: int) -> int:
        if time.monotonic() > deadline:
            return -2  # not sent: the time bound ran out
        if i == 80:
            sigkill(before[0])  # mid-load, from the client side
        try:
            return post(url, instances(x, 1 + i % 8), timeout=30)[0]
        except OSError:
            return -1

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(one, range(total)))
    took = time.monotonic() - started
    sent = [s for s in outcomes if s != -2]
    failed = [s for s in sent if s != 200]
    print(
        f"\nreplica kill under load: {len(failed)} of {len(sent)} requests failed "
        f"(statuses {sorted(set(failed))}), {took:.1f}s for the load"
    )
    assert len(sent) == total, "the load did not finish in its time bound"
    assert len(failed) <= 10

    # Serve starts a new replica in place of the dead one
    after = wait_until(
        lambda: (
            len(p := alive_actor_pids(ray_cluster, name)) == 2
            and before[0] not in p
            and p
        ),
        120,
        "a replacement replica",
    )
    assert before[1] in after
    wait_until(
        lambda: serve.status().applications["main"].status == "RUNNING",
        60,
        "the app to be RUNNING",
    )
    assert all(post(url, instances(x))[0] == 200 for _ in range(10))


def test_a_missing_or_broken_checkpoint_fails_the_deployment_naming_it(
    serve_url, tmp_path, checkpoint
):
    from ray import serve

    missing = tmp_path / "runs" / "checkpoint_epoch0009_attempt01"
    broken = tmp_path / "broken"
    broken.mkdir()
    for src in Path(checkpoint[0]).iterdir():
        if src.name != "meta.json":  # an upload that never finished
            (broken / src.name).write_bytes(src.read_bytes())
    for name, folder, fragment in [
        ("missing", missing, f"checkpoint {missing} does not exist"),
        ("broken", broken, f"{broken} is incomplete: meta.json is missing"),
    ]:
        t0 = time.monotonic()
        with pytest.raises(RuntimeError) as exc:
            serve.run(
                build_app(ServeArgs(checkpoint=str(folder), num_cpus=CPU)),
                name=name,
                route_prefix=f"/{name}",
            )
        elapsed = time.monotonic() - t0
        assert f"Deploying application {name} failed" in str(exc.value)
        status = serve.status().applications[name]
        assert status.status == "DEPLOY_FAILED"
        message = status.deployments["ModelServer"].message
        assert f"CheckpointError: {fragment}" in message, message[-2000:]
        serve.delete(name)
        print(f"\n{name} checkpoint: deployment failed in {elapsed:.1f}s: {fragment}")
