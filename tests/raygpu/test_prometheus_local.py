"""A real Prometheus scraping a real local Ray cluster, and Ray without it.

One local cluster (metrics collection on, token auth on) whose dashboard is told
that Prometheus is at a black hole (an address that accepts connections and never
answers, worse than one that refuses them). Against it:

- the local Prometheus of raygpu/monitoring/local.py, scraping every second
  through Ray's service-discovery file, finds Serve's request counters after
  traffic (exact counts per status code) and Train's metrics while a run holds its
  worker; the alert expressions evaluated on those real series give the values
  the rules are written for (5xx ratio, p99, health-check failures);
- with that Prometheus stopped, a Ray job and Serve requests succeed within twice
  the time they took while it ran, and nothing connected to the black hole.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from raygpu.localray import free_port, start_head, stop_head
from raygpu.monitoring import alerts, local
from raygpu.names import LOOPBACK
from raygpu.rayclient import auth_headers

pytestmark = pytest.mark.slow

SCRAPE_S = 1
APP = "echo"
RUN = "metrics-probe"
SEEN = "30m"  # a range over the whole module: when a set-once gauge was scraped
# Serve deployment: GET /echo answers 200, /echo/fail 500 (on purpose); its second
# health check fails once (Serve replaces a replica only after 3 in a row).
DEPLOY = """
import sys
import ray
from ray import serve
from starlette.responses import PlainTextResponse

@serve.deployment(ray_actor_options={"num_cpus": 0.1}, health_check_period_s=1)
class Echo:
    def __init__(self):
        self.checks = 0

    def check_health(self):
        self.checks += 1
        if self.checks == 2:
            raise RuntimeError("one failed health check, on purpose")

    async def __call__(self, request):
        if request.url.path.endswith("/fail"):
            return PlainTextResponse("failed on purpose", status_code=500)
        return PlainTextResponse("ok")

ray.init(address=sys.argv[1], log_to_driver=False)
serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[2])})
serve.run(Echo.bind(), name="echo", route_prefix="/echo", blocking=False)
"""
# A Ray Train V2 run whose worker reports until a file appears: the test reads
# Train's metrics while it runs, then lets it finish.
TRAIN_PROBE = """
import os, sys, time
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

def loop(config):
    import ray.train
    # Ray exports a gauge only for a few report intervals after it is set, so
    # the worker keeps reporting (as a training loop does) until released. The
    # deadline is a backstop: the fixture releases it, after minutes of Serve tests.
    deadline = time.monotonic() + 900
    step = 0
    while not os.path.exists(config["release"]) and time.monotonic() < deadline:
        ray.train.report({"step": step})
        step += 1
        time.sleep(1)

TorchTrainer(
    loop,
    train_loop_config={"release": sys.argv[1]},
    scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.5}),
    run_config=RunConfig(name="RUN_NAME", storage_path=sys.argv[2]),
).fit()
""".replace("RUN_NAME", RUN)


class BlackHole:
    """A listener whose connections complete and are never answered."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(128)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []

    def connections(self) -> int:
        """Connections made so far (taken from the backlog, kept unanswered)."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return len(self.held)
            self.held.append(conn)

    def close(self):
        for conn in self.held:
            conn.close()
        self.sock.close()


def wait_for(what: str, check, timeout_s: float = 90.0, every_s: float = 0.5):
    """Poll `check()` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every_s)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last})")


def get(url: str) -> tuple[int, float]:
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        status = err.code
    return status, time.monotonic() - start


def read(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.read().decode()
    except (urllib.error.URLError, OSError):
        return ""


def values(result: list[dict], key: str) -> dict[str, float]:
    """{label value: sample value} of an instant query's result."""
    return {r["metric"].get(key, ""): float(r["value"][1]) for r in result}


@pytest.fixture(scope="module")
def black_hole():
    hole = BlackHole()
    yield hole
    hole.close()


@pytest.fixture(scope="module")
def cluster(black_hole):
    head = start_head(
        num_cpus=2,
        extra_env={
            "RAY_enable_metrics_collection": "1",
            # Processes hand their metrics to the node's agent every 10 s by
            # default; sooner here, so the test waits less for each value.
            "RAY_metrics_report_interval_ms": "2000",
            "RAY_PROMETHEUS_HOST": f"http://{LOOPBACK}:{black_hole.port}",
        },
    )
    try:
        yield head
    finally:
        stop_head(head.temp_dir)


@pytest.fixture(scope="module")
def train_run(cluster, prometheus, tmp_path_factory):
    """The Train probe, submitted once Prometheus scrapes (the controller's
    state gauges are exported only briefly after each change); its start
    overlaps the Serve deploy. Yields (job client, job id, release file)."""
    client = jobs_client(cluster)
    folder = tmp_path_factory.mktemp("train")
    (folder / "probe").mkdir()
    (folder / "probe" / "train_probe.py").write_text(TRAIN_PROBE)
    release = folder / "release"
    job = client.submit_job(
        entrypoint=f"python train_probe.py {release} {folder / 'runs'}",
        runtime_env={"working_dir": str(folder / "probe")},
    )
    try:
        yield client, job, release
    finally:
        release.touch()


@pytest.fixture(scope="module")
def serve_url(cluster, train_run, tmp_path_factory):
    port = free_port()
    script = tmp_path_factory.mktemp("serve") / "deploy.py"
    script.write_text(DEPLOY)
    done = subprocess.run(
        [sys.executable, str(script), cluster.address, str(port)],
        env={**os.environ, **cluster.env()},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # Ready once the proxy routes to it; asking the app itself would count.
    routes = f"http://{LOOPBACK}:{port}/-/routes"
    wait_for("the echo app's route", lambda: f"/{APP}" in read(routes), timeout_s=60)
    return f"http://{LOOPBACK}:{port}/{APP}"


@pytest.fixture(scope="module")
def prometheus(prometheus_binary, cluster, tmp_path_factory):
    sd_file = local.service_discovery_file(cluster.temp_dir)
    wait_for("Ray's service discovery file", sd_file.exists)
    folder = tmp_path_factory.mktemp("prometheus")
    with local.running(cluster.temp_dir, free_port(), SCRAPE_S, folder) as prom:
        yield prom


def jobs_client(cluster):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(cluster.dashboard_url, headers=auth_headers())


def wait_job(client, job_id: str, timeout_s: float = 120.0) -> str:
    from ray.job_submission import JobStatus

    def finished():
        status = client.get_job_status(job_id)
        return status if status.is_terminal() else None

    status = wait_for(f"job {job_id}", finished, timeout_s, every_s=0.2)
    assert status == JobStatus.SUCCEEDED, client.get_job_logs(job_id)[-2000:]
    return status


def test_prometheus_scrapes_serve_metrics_after_traffic(cluster, serve_url, prometheus):
    q = lambda promql: local.query(prometheus.url, promql)  # noqa: E731

    # Every target Ray lists is up, labelled as the head (as on a stack).
    targets = json.loads(local.service_discovery_file(cluster.temp_dir).read_text())
    listed = {t for group in targets for t in group["targets"]}
    up = wait_for(
        "every Ray target scraped",
        lambda: (
            (r := q('up{job="ray",container="ray-head"} == 1'))
            and len(r) == len(listed)
            and r
        ),
    )
    assert {r["metric"]["instance"] for r in up} == listed
    by_name = {a.name: a for a in alerts.alerts()}
    assert q(by_name["RayHeadDown"].expr) == []

    rules = json.loads(urllib.request.urlopen(f"{prometheus.url}/api/v1/rules").read())
    loaded = [r for g in rules["data"]["groups"] for r in g["rules"]]
    assert sorted(r["name"] for r in loaded) == sorted(a.name for a in alerts.alerts())
    assert {r["health"] for r in loaded} <= {"ok", "unknown"}

    # Serve: two rounds, so that rate() sees the counters grow after their first
    # scrape; exact counts per status code.
    def send(ok: int, failed: int):
        for _ in range(ok):
            assert get(serve_url)[0] == 200
        for _ in range(failed):
            assert get(f"{serve_url}/fail")[0] == 500

    counters = f'ray_serve_num_http_requests_total{{application="{APP}"}}'
    send(5, 1)
    wait_for(
        "the first round's counters",
        lambda: (
            values(q(f"sum by (status_code) ({counters})"), "status_code")
            == {"200": 5, "500": 1}
        ),
    )
    send(20, 4)
    wait_for(
        "the second round's counters",
        lambda: (
            values(q(f"sum by (status_code) ({counters})"), "status_code")
            == {"200": 25, "500": 5}
        ),
    )
    # Each replica reports on its own period, after the proxy: wait for them.
    for metric in (
        "ray_serve_deployment_request_counter_total",
        "ray_serve_http_request_latency_ms_count",
    ):
        wait_for(
            f"{metric} to count 30",
            lambda m=metric: q(f'sum({m}{{application="{APP}"}}) == 30'),
        )

    # The Serve rules' expressions on these real series.
    ratio = values(q(by_name["ServeHigh5xxRatio"].expr), "application")
    assert ratio.keys() == {APP} and ratio[APP] == pytest.approx(100 * 4 / 24, rel=0.2)
    no_floor = alerts.alerts(alerts.Thresholds(serve_p99_ms=0))
    p99 = values(
        q({a.name: a for a in no_floor}["ServeHighP99Latency"].expr), "application"
    )
    assert p99.keys() == {APP} and 0 < p99[APP] < alerts.DEFAULTS.serve_p99_ms
    restarts = wait_for(
        "the failed health check",
        lambda: q(by_name["ServeReplicaRestarts"].expr),
    )
    assert [(r["metric"]["deployment"], r["value"][1]) for r in restarts] == [
        ("Echo", "1")
    ]


def test_prometheus_scrapes_train_metrics_during_a_run(prometheus, train_run):
    q = lambda promql: local.query(prometheus.url, promql)  # noqa: E731
    client, job, release = train_run
    run = f'{{ray_train_run_name="{RUN}"}}'
    # Set once per change, so seen over the run, as the TrainRunFailed rule does.
    state = f"max_over_time(ray_train_controller_state{run}[{SEEN}]) == 1"

    def controller_running():
        status = client.get_job_status(job)
        assert not status.is_terminal(), client.get_job_logs(job)[-2000:]
        found = q(state)
        key = "ray_train_controller_state"
        return [r for r in found if r["metric"][key] == "RUNNING"]

    running = wait_for("the run's controller in RUNNING", controller_running, 180)
    assert running[0]["metric"]["ray_train_run_id"]
    start = wait_for(
        "the worker group's start time",
        lambda: q(
            f"max_over_time(ray_train_worker_group_start_total_time_s{run}[{SEEN}]) > 0"
        ),
    )
    assert (
        start[0]["metric"]["ray_train_run_id"]
        == running[0]["metric"]["ray_train_run_id"]
    )
    blocked = wait_for(
        "a worker's report metric",
        lambda: q(f"ray_train_report_total_blocked_time_s{run}"),
    )
    assert blocked[0]["metric"]["ray_train_worker_world_rank"] == "0"
    release.touch()
    wait_job(client, job)


def test_prometheus_down_slows_or_fails_no_job_and_no_request(
    cluster, serve_url, prometheus, black_hole
):
    """Ray pushes nothing to Prometheus: with the scraper gone (and the dashboard's
    Prometheus a black hole all along), jobs and requests take no longer."""
    client = jobs_client(cluster)
    entrypoint = (
        'python -c "import ray; ray.init(); '
        'print(ray.get(ray.remote(num_cpus=0.1)(lambda: 42).remote()))"'
    )

    def measure() -> tuple[float, float]:
        start = time.monotonic()
        wait_job(client, client.submit_job(entrypoint=entrypoint))
        job_s = time.monotonic() - start
        times = []
        for _ in range(30):
            status, seconds = get(serve_url)
            assert status == 200
            times.append(seconds)
        return job_s, statistics.median(times)

    holes_before = black_hole.connections()
    job_up, request_up = measure()
    local.stop(prometheus)
    assert prometheus.process.poll() is not None
    with pytest.raises(local.PrometheusError, match="cannot query"):
        local.query(prometheus.url, "up", timeout_s=2)
    job_down, request_down = measure()
    # A caller that waited on an unanswering Prometheus would wait its timeout
    # (seconds); these bounds leave room for a busy 2-core machine, not for that.
    assert job_down < 2 * job_up + 3, (job_up, job_down)
    assert request_down < 2 * request_up + 0.05, (request_up, request_down)
    assert black_hole.connections() == holes_before
