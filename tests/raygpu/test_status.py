"""raygpu status, logs and dashboard: against a real local Ray cluster, and on a
stack through the kubectl stand-in (nodes from a document, port-forward relayed to
the local head)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from urllib.parse import urlparse

import pytest

from raygpu import cli, status
from raygpu import instance_types as it
from raygpu.localray import free_port
from raygpu.names import POOL_LABEL
from raygpu.rayclient import local_token
from raygpu.submit import submit
from tests.raygpu.conftest import process_alive
from tests.raygpu.test_submit import OUTPUTS


def k8s_node(name, pool, instance, capacity="ON_DEMAND", ready="True"):
    return {
        "metadata": {
            "name": name,
            "labels": {
                POOL_LABEL: pool,
                status.INSTANCE_TYPE_LABEL: instance,
                status.CAPACITY_TYPE_LABEL: capacity,
            },
        },
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


NODES = {
    "items": [
        k8s_node("ip-1", "system", "m6i.xlarge"),
        k8s_node("ip-2", "system", "m6i.xlarge", ready="False"),
        k8s_node("ip-3", "gpu-l4", "g6.2xlarge", capacity="SPOT"),
        k8s_node("ip-4", "odd", "z9.mega"),
    ]
}


def test_pools_and_the_cost_of_what_runs_now():
    pools = status.pool_rows(status.node_rows(NODES))
    by_pool = {p["pool"]: p for p in pools}
    system = it.spec("m6i.xlarge").on_demand_usd_hour
    spot = it.spec("g6.2xlarge").spot_usd_hour
    assert by_pool["system"]["nodes"] == 2 and by_pool["system"]["ready"] == 1
    assert by_pool["system"]["usd_hour"] == pytest.approx(2 * system)
    assert by_pool["gpu-l4"]["capacity_type"] == "SPOT"
    assert by_pool["gpu-l4"]["usd_hour"] == pytest.approx(spot)
    assert not by_pool["odd"]["priced"]
    cost = status.hourly_cost(pools)
    fixed = it.EKS_CONTROL_PLANE_USD_HOUR + it.NAT_GATEWAY_USD_HOUR
    assert cost["total_usd_hour"] == pytest.approx(2 * system + spot + fixed)
    assert cost["spot_is_estimate"] and cost["unpriced_instance_types"] == ["z9.mega"]


def test_running_jobs_come_first_then_the_latest_others():
    jobs = [
        {"submission_id": f"old-{i}", "status": "SUCCEEDED", "start_time": i}
        for i in range(5)
    ]
    jobs += [
        {"submission_id": "run", "status": "RUNNING", "start_time": 1},
        {"submission_id": "bad", "status": "FAILED", "start_time": 9, "message": "x"},
    ]
    rows = status.job_rows(jobs, recent=2)
    assert [r["id"] for r in rows] == ["run", "bad", "old-4"]
    assert rows[1]["message"] == "x" and rows[2]["message"] is None


@pytest.mark.slow
def test_local_cluster_status_lists_jobs_and_logs_prints_one(ray_head, capfd):
    capsys = capfd  # `ray job logs` writes to this process's stdout file
    address = ray_head.dashboard_url
    good, bad = f"st-ok-{free_port()}", f"st-bad-{free_port()}"
    assert (
        submit(address, ["python", "-c", "print('hello from st')"], submission_id=good)
        == 0
    )
    assert (
        submit(address, ["python", "-c", "raise SystemExit(3)"], submission_id=bad) == 1
    )
    capsys.readouterr()
    assert cli.main(["status", "--address", address, "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    jobs = {j["id"]: j for j in view["jobs"]}
    assert jobs[good]["status"] == "SUCCEEDED" and jobs[bad]["status"] == "FAILED"
    assert jobs[bad]["message"]
    (head,) = [n for n in view["ray_nodes"] if n["head"]]
    assert head["state"] == "ALIVE" and head["cpus"] == 2
    assert "pools" not in view  # no Kubernetes behind a bare address

    assert cli.main(["status", "--address", address]) == 0
    text = capsys.readouterr().out
    assert re.search(rf"^{good} +SUCCEEDED ", text, re.M) and "ray nodes:" in text
    assert re.search(
        rf"^  {bad}: Job entrypoint command failed with exit code 3", text, re.M
    )

    assert cli.main(["logs", good, "--address", address]) == 0
    assert "hello from st" in capsys.readouterr().out
    assert cli.main(["logs", "no-such-job", "--address", address]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "raygpu logs: error: no job 'no-such-job' on this cluster; "
        "`raygpu status` lists the jobs"
    )


@pytest.mark.slow
def test_stack_status_reads_nodes_and_ray_through_the_forward(
    ray_head, fake_kubectl, tmp_path, monkeypatch, capsys
):
    token = local_token()
    monkeypatch.setenv("FAKE_TOKEN", token)
    monkeypatch.setenv("FAKE_TARGET_PORT", str(urlparse(ray_head.dashboard_url).port))
    nodes = tmp_path / "nodes.json"
    nodes.write_text(json.dumps(NODES))
    monkeypatch.setenv("FAKE_NODES", str(nodes))
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(OUTPUTS))
    argv = ["status", "--stack", "dev", "--outputs", str(outputs)]
    assert cli.main([*argv, "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert {p["pool"] for p in view["pools"]} == {"system", "gpu-l4", "odd"}
    assert view["cost"]["total_usd_hour"] > view["cost"]["nodes_usd_hour"]
    assert any(n["head"] for n in view["ray_nodes"])
    assert token not in json.dumps(view)
    assert not process_alive(fake_kubectl.forward_pid())
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "cost now: $" in text and "(spot prices are estimates)" in text
    assert "not in the price table: z9.mega" in text


def test_an_unreachable_cluster_is_one_line(capsys):
    address = f"http://127.0.0.1:{free_port()}"
    assert cli.main(["status", "--address", address]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"raygpu status: error: cannot reach Ray at {address}")


@pytest.mark.slow
def test_dashboard_forwards_until_interrupted(ray_head, fake_kubectl, tmp_path):
    token = local_token()
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(OUTPUTS))
    env = {
        **os.environ,
        "FAKE_TOKEN": token,
        "FAKE_TARGET_PORT": str(urlparse(ray_head.dashboard_url).port),
    }
    argv = [sys.executable, "-m", "raygpu", "dashboard", "--stack", "dev"]
    proc = subprocess.Popen(
        [*argv, "--outputs", str(outputs)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline().strip()
        assert first.startswith("Ray dashboard of stack dev: http://127.0.0.1:")
        url = first.rsplit(" ", 1)[1]
        assert "--show-token" in proc.stdout.readline()
        request = urllib.request.Request(
            f"{url}/api/version", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            assert r.status == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "port-forward closed" in out and token not in out + err
    assert not process_alive(fake_kubectl.forward_pid())
