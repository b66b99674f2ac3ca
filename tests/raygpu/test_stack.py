"""Shared operator helpers: outputs, private kubeconfig, token, port-forward, waits."""

from __future__ import annotations

import base64
import json
import socket
import stat
import subprocess

import pytest

from raygpu.errors import CommandError
from raygpu.rayclient import ray_client_env
from raygpu.stack import (
    Kubectl,
    load_outputs,
    port_forward,
    private_kubeconfig,
    read_ray_auth_token,
    wait_until,
)
from tests.raygpu.conftest import process_alive

SECRET = "kubeconfig-with-a-secret-token-xyz"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_outputs_from_a_file(tmp_path):
    path = tmp_path / "out.json"
    path.write_text(
        json.dumps(
            {
                "region": "eu-west-1",
                "cluster_name": "raygpu-dev",
                "kubeconfig": SECRET,
                "ray_cluster_name": "raygpu-dev",
                "artifacts_bucket": "art",
            }
        )
    )
    out = load_outputs("dev", path)
    assert (out.region, out.cluster_name, out.artifacts_bucket) == (
        "eu-west-1",
        "raygpu-dev",
        "art",
    )
    assert out.ray_namespace == "ray"  # default when not exported
    assert out.ray_head_service == "raygpu-dev-head-svc"
    assert SECRET not in repr(out)
    with pytest.raises(CommandError, match="stack output 'data_bucket' is missing"):
        out.require("data_bucket")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "--outputs: cannot read"),
        ("{not json", "is not JSON"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_bad_outputs_file(tmp_path, content, message):
    path = tmp_path / "out.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CommandError, match=message):
        load_outputs("dev", path)


def test_outputs_from_pulumi_cli_and_its_errors(tmp_path, monkeypatch):
    fake = tmp_path / "pulumi"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(tmp_path))
    calls = []

    def runner(argv, **kwargs):
        calls.append((argv, kwargs))
        if argv[-1] == "broken":
            # stdout may carry secrets: it must not reach the message.
            return subprocess.CompletedProcess(
                argv, 255, SECRET, "warning: x\nerror: no stack named 'broken' found\n"
            )
        return subprocess.CompletedProcess(argv, 0, json.dumps({"region": "r"}), "")

    assert load_outputs("dev", runner=runner).region == "r"
    argv, kwargs = calls[0]
    assert argv == [
        str(fake),
        "stack",
        "output",
        "--json",
        "--show-secrets",
        "--stack",
        "dev",
    ]
    assert (kwargs["cwd"] / "Pulumi.yaml").exists()
    with pytest.raises(CommandError) as err:
        load_outputs("broken", runner=runner)
    assert str(err.value) == (
        "`pulumi stack output` for stack 'broken': error: no stack named 'broken' found"
    )
    assert SECRET not in str(err.value)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(CommandError, match="pass the stack's outputs with --outputs"):
        load_outputs("dev", runner=runner)


@pytest.mark.parametrize("kubeconfig", [SECRET, {"apiVersion": "v1", "x": SECRET}])
def test_private_kubeconfig_is_0600_and_removed(kubeconfig):
    with private_kubeconfig(kubeconfig) as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        text = path.read_text()
        assert SECRET in text
        if isinstance(kubeconfig, dict):
            assert json.loads(text) == kubeconfig
    assert not path.exists()
    with pytest.raises(RuntimeError), private_kubeconfig(SECRET) as path:
        raise RuntimeError
    assert not path.exists()
    with pytest.raises(CommandError, match="'kubeconfig' is empty"):
        with private_kubeconfig(""):
            pass


class Runner:
    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __call__(self, argv, **kwargs):
        self.calls.append(argv)
        for needle, (code, out, err) in self.answers.items():
            if needle in " ".join(argv):
                return subprocess.CompletedProcess(argv, code, out, err)
        raise AssertionError(argv)


def _kubectl(answers, tmp_path):
    return Kubectl(tmp_path / "kc", executable="kubectl", runner=Runner(answers))


def test_token_from_the_secret_named_by_the_raycluster(tmp_path):
    token = "tok-" + "a" * 40
    cluster = {"spec": {"authOptions": {"mode": "token", "secretName": "my-secret"}}}
    secret = {"data": {"auth_token": base64.b64encode(token.encode()).decode()}}
    kubectl = _kubectl(
        {
            "get raycluster": (0, json.dumps(cluster), ""),
            "get secret my-secret": (0, json.dumps(secret), ""),
        },
        tmp_path,
    )
    assert read_ray_auth_token(kubectl, "ray", "raygpu-dev") == token
    assert kubectl.runner.calls[1][3:] == [
        "get",
        "secret",
        "my-secret",
        "-n",
        "ray",
        "-o",
        "json",
    ]


def test_token_defaults_and_errors_never_show_the_secret(tmp_path):
    no_auth = {"spec": {}}
    kubectl = _kubectl({"get raycluster": (0, json.dumps(no_auth), "")}, tmp_path)
    assert read_ray_auth_token(kubectl, "ray", "c") is None

    cluster = {"spec": {"authOptions": {"mode": "token"}}}
    for data, message in (
        ({}, "Secret ray/c has no key 'auth_token'"),
        ({"auth_token": "%%%" + SECRET}, "is not valid base64"),
    ):
        kubectl = _kubectl(
            {
                "get raycluster": (0, json.dumps(cluster), ""),
                "get secret c ": (0, json.dumps({"data": data}), ""),
            },
            tmp_path,
        )
        with pytest.raises(CommandError, match=message) as err:
            read_ray_auth_token(kubectl, "ray", "c")
        assert SECRET not in str(err.value)
    kubectl = _kubectl(
        {
            "get raycluster": (0, json.dumps(cluster), ""),
            "get secret": (1, SECRET, 'Error from server (Forbidden): secrets "c"'),
        },
        tmp_path,
    )
    with pytest.raises(CommandError, match="Forbidden") as err:
        read_ray_auth_token(kubectl, "ray", "c")
    assert SECRET not in str(err.value)


def test_token_goes_to_the_environment_only(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    env = ray_client_env("t0ken", {"X": "1"})
    assert (env["RAY_AUTH_TOKEN"], env["RAY_AUTH_MODE"], env["X"]) == (
        "t0ken",
        "token",
        "1",
    )


def _port_forward(fake_kubectl, tmp_path):
    kubectl = Kubectl(tmp_path / "kc")  # found on PATH: the fake
    assert kubectl.executable == str(fake_kubectl.bin_dir / "kubectl")
    return port_forward(kubectl, "ray", "svc/raygpu-dev-head-svc", 8265)


def test_port_forward_binds_loopback_relays_and_always_stops(
    fake_kubectl, tmp_path, monkeypatch
):
    with socket.create_server(("127.0.0.1", 0)) as upstream:
        monkeypatch.setenv("FAKE_TARGET_PORT", str(upstream.getsockname()[1]))
        with _port_forward(fake_kubectl, tmp_path) as url:
            assert url.startswith("http://127.0.0.1:")
            port = int(url.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                conn, _ = upstream.accept()
                with conn:
                    client.sendall(b"ping")
                    assert conn.recv(4) == b"ping"
            pid = fake_kubectl.forward_pid()
            assert process_alive(pid)
        assert not process_alive(pid)
    (call,) = fake_kubectl.calls()
    assert call["args"] == [
        "port-forward",
        "--address",
        "127.0.0.1",
        "-n",
        "ray",
        "svc/raygpu-dev-head-svc",
        ":8265",
    ]


def test_port_forward_stops_on_ctrl_c(fake_kubectl, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with _port_forward(fake_kubectl, tmp_path):
            pid = fake_kubectl.forward_pid()
            raise KeyboardInterrupt
    assert not process_alive(pid)


def test_port_forward_failure_names_kubectls_reason(
    fake_kubectl, tmp_path, monkeypatch
):
    monkeypatch.setenv(
        "FAKE_PF_FAIL", 'error: services "raygpu-dev-head-svc" not found'
    )
    with pytest.raises(CommandError) as err:
        with _port_forward(fake_kubectl, tmp_path):
            pass
    assert str(err.value) == (
        "kubectl port-forward to svc/raygpu-dev-head-svc failed: "
        'error: services "raygpu-dev-head-svc" not found'
    )


def test_wait_until_is_bounded():
    clock = FakeClock()
    answers = iter([None, None, "done"])
    assert wait_until(lambda: next(answers), 60, "x", 5, clock) == "done"
    assert clock.sleeps == [5, 5]
    clock = FakeClock()
    with pytest.raises(CommandError, match="timed out after 12s waiting for it: 3"):
        wait_until(lambda: None, 12, lambda: "it: 3", 5, clock)
    assert clock.now == 12  # the last sleep is cut to the deadline
