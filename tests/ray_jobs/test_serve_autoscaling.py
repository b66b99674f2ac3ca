"""Serve autoscaling of the classifier app on the local Ray cluster: under a
bounded load its replicas go from the minimum to the maximum, and back once the
load ends.

A real Serve instance (HTTP proxy on 127.0.0.1, a free port), replicas with a
quarter CPU each, short delays and look-back so that both moves happen in seconds
rather than the production minutes. Each request waits for its batch window, so a
few client threads keep several requests in flight per replica.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from mlcore.autoscaling import ServeAutoscaling
from raygpu.localray import free_port
from serve_app import ServeArgs, build_app
from tests.ray_jobs.test_faults_serve import checkpoint  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow
APP = "autoscaled"
BOUNDS = ServeAutoscaling(
    min_replicas=1,
    max_replicas=2,
    target_ongoing_requests=1,
    upscale_delay_s=1,
    downscale_delay_s=2,
    look_back_period_s=2,
    metrics_interval_s=0.5,
)


def running_replicas() -> int:
    from ray import serve

    app = serve.status().applications.get(APP)
    if app is None:
        return 0
    return sum(d.replica_states.get("RUNNING", 0) for d in app.deployments.values())


def wait_for(predicate, timeout_s: float, what: str) -> float:
    """Seconds until predicate() held; fails naming `what` after timeout_s."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            pytest.fail(f"{what} not seen within {timeout_s:.0f} s")
        time.sleep(0.25)
    return time.monotonic() - start


def test_args_refuse_a_count_and_bounds_together():
    with pytest.raises(ValueError, match="num_replicas and autoscaling"):
        ServeArgs(checkpoint="x", num_replicas=2, autoscaling=BOUNDS)
    with pytest.raises(ValueError, match=r"min_replicas \(3\) must be <= max"):
        ServeAutoscaling(min_replicas=3, max_replicas=2)
    assert ServeArgs(checkpoint="x").replica_options() == {"num_replicas": 1}
    opts = ServeArgs(checkpoint="x", autoscaling=BOUNDS).replica_options()
    assert opts == {"autoscaling_config": BOUNDS.to_serve()}


def test_replicas_follow_the_load_up_and_back_down(ray_cluster, checkpoint):  # noqa: F811
    from ray import serve

    folder, x = checkpoint
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    stop = threading.Event()
    answered: list[int] = []

    def client() -> None:
        body = json.dumps({"instances": x[:1].tolist()}).encode()
        while not stop.is_set():
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/{APP}/predict",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=30) as resp:
                answered.append(resp.status)

    try:
        args = ServeArgs(
            checkpoint=str(folder),
            num_cpus=0.25,
            autoscaling=BOUNDS,
            batch_wait_timeout_s=0.3,
        )
        serve.run(build_app(args), name=APP, route_prefix=f"/{APP}")
        assert running_replicas() == BOUNDS.min_replicas
        threads = [threading.Thread(target=client, daemon=True) for _ in range(6)]
        for t in threads:
            t.start()
        try:
            up = wait_for(
                lambda: running_replicas() == BOUNDS.max_replicas, 90, "scale-up to 2"
            )
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=35)
        assert answered and set(answered) == {200}
        down = wait_for(
            lambda: running_replicas() == BOUNDS.min_replicas, 90, "scale-down to 1"
        )
        print(f"scaled up in {up:.1f} s under load, back down {down:.1f} s after it")
    finally:
        stop.set()
        serve.shutdown()
