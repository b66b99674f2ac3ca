"""`raygpu monitor --local`: the config it writes, and a real Prometheus it runs."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest
import yaml

from raygpu import cli
from raygpu.localray import free_port
from raygpu.monitoring import alerts, local
from raygpu.names import LOOPBACK


def test_print_config_scrapes_rays_discovery_file_and_loads_the_rules(tmp_path, capsys):
    argv = ["monitor", "--local", "--ray-temp-dir", "/tmp/rg-x", "--dir", str(tmp_path)]
    assert cli.main([*argv, "--scrape-interval", "2", "--print-config"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    [job] = config["scrape_configs"]
    assert job["file_sd_configs"] == [
        {
            "files": ["/tmp/rg-x/prom_metrics_service_discovery.json"],
            "refresh_interval": "5s",
        }
    ]
    assert job["relabel_configs"] == [
        {"target_label": "container", "replacement": "ray-head"}
    ]
    assert config["global"]["scrape_interval"] == "2s"
    assert config["rule_files"] == [str(tmp_path / local.RULES_FILE)]
    assert (tmp_path / local.RULES_FILE).read_text() == alerts.rules_file()


def test_the_discovery_file_name_is_rays():
    from ray._private import ray_constants

    assert (
        local.SERVICE_DISCOVERY_FILE == ray_constants.PROMETHEUS_SERVICE_DISCOVERY_FILE
    )


def test_promtool_accepts_the_config(promtool, tmp_path):
    config = local.write_files(tmp_path, tmp_path / "ray", scrape_interval_s=1)
    done = subprocess.run(
        [promtool, "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts.alerts())} rules found" in done.stdout


def test_monitor_runs_prometheus_on_loopback_until_ctrl_c(prometheus_binary, tmp_path):
    port = free_port()
    ray_dir = tmp_path / "ray"  # no cluster yet: said, not refused
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "raygpu",
            "monitor",
            "--local",
            "--ray-temp-dir",
            str(ray_dir),
            "--port",
            str(port),
            "--dir",
            str(tmp_path / "prom"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"Prometheus on http://{LOOPBACK}:{port} scraping "), (
            line + proc.stderr.read() if proc.poll() is not None else line
        )
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/api/v1/rules") as r:
            groups = json.loads(r.read())["data"]["groups"]
        assert [r["name"] for r in groups[0]["rules"]] == [
            a.name for a in alerts.alerts()
        ]
        with socket.create_connection((LOOPBACK, port), timeout=5):
            pass
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"{ray_dir}/prom_metrics_service_discovery.json does not exist yet" in err
    assert "stopping Prometheus" in err
    with pytest.raises(ConnectionRefusedError):  # Prometheus is gone
        socket.create_connection((LOOPBACK, port), timeout=5)


def test_a_port_in_use_is_one_line(prometheus_binary, tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        argv = ["monitor", "--local", "--port", str(port), "--dir", str(tmp_path)]
        assert cli.main([*argv, "--ray-temp-dir", str(tmp_path / "ray")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("raygpu monitor: error: prometheus exited with status 1")
    assert "address already in use" in err[-1]


def test_without_prometheus_the_command_says_how_to_install_it(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("PATH", str(tmp_path))
    argv = ["monitor", "--local", "--dir", str(tmp_path), "--port", "9"]
    assert cli.main([*argv, "--ray-temp-dir", str(tmp_path / "no-cluster")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("raygpu monitor: error: `prometheus` is not installed")
    assert "apt-get install prometheus" in err and "\n" not in err


def test_a_bad_port_is_a_usage_error(capsys):
    assert cli.main(["monitor", "--local", "--port", "70000"]) == 2
    assert "--port must be 1..65535, got 70000" in capsys.readouterr().err
