"""raygpu sleep and wake: the program's asleep state under Pulumi's mock runtime,
and the commands against a local Ray head (through the kubectl stand-in) with the
Pulumi CLI behind a seam (a stand-in on PATH that records what it is asked)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from urllib.parse import urlparse

import pytest
import yaml

from raygpu import cli
from raygpu.localray import start_head, stop_head
from raygpu.names import NODE_ROLE_LABEL, SYSTEM_NODE_ROLE
from raygpu.offline import ROOT
from raygpu.rayclient import local_token, ray_cli, ray_client_env
from tests.raygpu.test_submit import OUTPUTS

FAKE_PULUMI = """import json, os, sys
with open(os.environ["FAKE_PULUMI_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
sys.exit(int(os.environ.get("FAKE_PULUMI_EXIT", "0")))
"""


@pytest.fixture
def fake_pulumi(fake_kubectl, tmp_path, monkeypatch):
    """`pulumi` on PATH (beside the kubectl stand-in): records its argv."""
    script = tmp_path / "fake_pulumi.py"
    script.write_text(FAKE_PULUMI)
    exe = fake_kubectl.bin_dir / "pulumi"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "pulumi.log"
    monkeypatch.setenv("FAKE_PULUMI_LOG", str(log))

    def calls() -> list[list[str]]:
        return (
            [json.loads(x) for x in log.read_text().splitlines()]
            if log.exists()
            else []
        )

    return calls


def stack_file(tmp_path, **changes):
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"].update({f"raygpu:{k}": v for k, v in changes.items()})
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def plan_json(path, capsys):
    assert cli.main(["plan", "--stack", "dev", "--config", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_asleep_means_no_system_nodes_and_a_suspended_ray_cluster(tmp_path, capsys):
    awake = plan_json(stack_file(tmp_path), capsys)
    asleep = plan_json(stack_file(tmp_path, asleep=True), capsys)
    for result, nodes, suspended in ((awake, 1, None), (asleep, 0, True)):
        (system,) = [
            r
            for r in result["resources"]
            if r["type"] == "aws:eks/nodeGroup:NodeGroup"
            and r["inputs"]["labels"][NODE_ROLE_LABEL] == SYSTEM_NODE_ROLE
        ]
        scaling = system["inputs"]["scalingConfig"]
        assert (scaling["minSize"], scaling["desiredSize"]) == (nodes, nodes)
        (rc,) = [r for r in result["resources"] if r["type"].endswith("RayCluster")]
        assert rc["inputs"]["spec"].get("suspend") is suspended
    # Both plans show both costs; asleep idles at the control plane, NAT and keys.
    for key in ("awake_usd_hour", "asleep_usd_hour"):
        assert awake["cost"][key] == asleep["cost"][key]
    assert awake["cost"]["idle_usd_hour"] == awake["cost"]["awake_usd_hour"] <= 0.35
    assert asleep["cost"]["idle_usd_hour"] == asleep["cost"]["asleep_usd_hour"]
    # control plane, NAT, keys and the Prometheus volume: about $0.15/h
    assert asleep["cost"]["asleep_usd_hour"] <= 0.16
    assert asleep["asleep"] is True and awake["asleep"] is False


def ray_job(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ray_cli(), "job", *args],
        env=ray_client_env(None),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def own_head():
    """A head of its own: the session's head has this process's driver on it (a
    running job to sleep's eyes) and whatever other tests left deployed."""
    head = start_head(num_cpus=1)
    try:
        yield head
    finally:
        stop_head(head.temp_dir)


@pytest.mark.slow
def test_sleep_refuses_while_a_job_runs(
    own_head, fake_kubectl, fake_pulumi, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("FAKE_TOKEN", local_token())
    ray_head = own_head
    monkeypatch.setenv("FAKE_TARGET_PORT", str(urlparse(ray_head.dashboard_url).port))
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(OUTPUTS))
    job = f"busy-{os.getpid()}"
    address = ray_head.dashboard_url
    submitted = ray_job(
        "submit",
        "--address",
        address,
        "--submission-id",
        job,
        "--no-wait",
        "--",
        "python",
        "-c",
        "import time; time.sleep(300)",
    )
    assert submitted.returncode == 0, submitted.stderr
    argv = ["--stack", "dev", "--outputs", str(outputs), "--yes"]
    try:
        assert cli.main(["sleep", *argv]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"raygpu sleep: error: stack dev is running job {job}")
        assert "sleeping would stop it" in err
        # An awake stack with work on it: wake has nothing to do.
        assert cli.main(["wake", *argv]) == 0
        assert capsys.readouterr().out.strip() == "stack dev is awake already"
        assert fake_pulumi() == []
    finally:
        # `ray job stop` waits until the job has exited.
        stopped = ray_job("stop", "--address", address, job)
    assert stopped.returncode == 0, stopped.stderr
    assert cli.main(["sleep", *argv]) == 0
    assert fake_pulumi() == [
        ["config", "set", "raygpu:asleep", "true", "--stack", "dev"],
        ["up", "--stack", "dev", "--yes"],
    ]
    assert "stack dev is asleep" in capsys.readouterr().out


def test_wake_a_sleeping_stack_and_status_says_asleep(
    fake_kubectl, fake_pulumi, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("FAKE_SUSPENDED", "1")
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(OUTPUTS))
    config = stack_file(tmp_path, asleep=True)
    target = ["--stack", "dev", "--outputs", str(outputs)]
    assert cli.main(["status", *target, "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["state"] == "asleep" and view["jobs"] == []
    assert cli.main(["status", *target]) == 0
    assert "dev: asleep (`raygpu wake`" in capsys.readouterr().out

    assert cli.main(["wake", *target, "--config", str(config)]) == 0
    assert fake_pulumi() == [
        [
            "config",
            "set",
            "raygpu:asleep",
            "false",
            "--stack",
            "dev",
            "--config-file",
            str(config),
        ],
        ["up", "--stack", "dev", "--config-file", str(config)],
    ]
    assert "stack dev is awake" in capsys.readouterr().out
    # No port-forward was opened: there is no head to reach while asleep.
    assert [c["args"][:2] for c in fake_kubectl.calls()].count(
        ["port-forward", "--address"]
    ) == 0

    monkeypatch.setenv("FAKE_PULUMI_EXIT", "1")
    assert cli.main(["wake", *target, "--config", str(config)]) == 1
    assert capsys.readouterr().err.strip() == (
        "raygpu wake: error: `pulumi config set` failed (exit status 1)"
    )
