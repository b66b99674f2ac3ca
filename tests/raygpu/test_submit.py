"""Job submission: the real `ray job submit` against a local Ray cluster.

The stack path runs through the same code as on EKS: outputs from a file, the
kubeconfig in a private file, the token read through kubectl from "the Secret" and
passed in the environment, and a port-forward on 127.0.0.1; kubectl is the stand-in
from tests/scripts/fake_kubectl.py that relays to the local head.
"""

from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import urlparse

import pytest

from raygpu import cli
from raygpu import submit as submit_mod
from raygpu.errors import CommandError
from raygpu.rayclient import local_token
from raygpu.stack import REPO_ROOT, StackOutputs
from raygpu.submit import (
    exit_code,
    failure_reason,
    stack_runtime_env,
    storage_path,
    submit_argv,
    with_storage_path,
)
from tests.raygpu.conftest import process_alive

OUTPUTS = {
    "region": "us-west-2",
    "cluster_name": "raygpu-dev",
    "kubeconfig": "apiVersion: v1\nkind: Config\n",
    "artifacts_bucket": "raygpu-dev-artifacts-123",
    "ray_namespace": "ray",
    "ray_cluster_name": "raygpu-dev",
    "ray_head_service": "raygpu-dev-head-svc",
}


def test_storage_path_is_added_to_train_py_only_when_missing():
    storage = "s3://b/runs"
    assert with_storage_path(["python", "train.py", "--epochs", "2"], storage) == [
        "python",
        "train.py",
        "--epochs",
        "2",
        "--storage-path",
        storage,
    ]
    given = ["python", "train.py", "--storage-path=/x"]
    assert with_storage_path(given, storage) == given
    given = ["python", "./train.py", "--storage-path", "/x"]
    assert with_storage_path(given, storage) == given
    other = ["python", "-c", "print(1)"]
    assert with_storage_path(other, storage) == other


def test_stack_runtime_env_installs_the_jobs_requirements():
    outputs = StackOutputs("dev", OUTPUTS)
    reqs = submit_mod.read_requirements()
    assert any(r.startswith("torch==") for r in reqs)
    env = stack_runtime_env(outputs, reqs)
    assert env["pip"] == {"packages": reqs, "pip_check": False}
    assert env["env_vars"] == {
        "RAYGPU_STORAGE_PATH": "s3://raygpu-dev-artifacts-123/runs"
    }
    assert "__pycache__/" in env["excludes"]
    assert "pip" not in stack_runtime_env(outputs, None)


def test_submit_argv_and_results():
    argv = submit_argv(
        "http://127.0.0.1:1", ["python", "x.py"], "/w", "id-1", {"pip": ["a"]}
    )
    assert argv[1:] == [
        "job",
        "submit",
        "--address",
        "http://127.0.0.1:1",
        "--submission-id",
        "id-1",
        "--working-dir",
        "/w",
        "--runtime-env-json",
        '{"pip": ["a"]}',
        "--",
        "python",
        "x.py",
    ]
    assert exit_code({"status": "SUCCEEDED"}) == 0
    # one exit code for every failure (0 ok, 1 failed, 2 usage); the job's own
    # exit code is in the message
    assert exit_code({"status": "FAILED", "driver_exit_code": 3}) == 1
    assert exit_code({"status": "FAILED", "driver_exit_code": None}) == 1
    assert exit_code({"status": "STOPPED"}) == 1
    message = (
        "Job entrypoint command failed with exit code 3, last available logs "
        "(truncated to 20,000 chars):\nRunning entrypoint\nValueError: boom\n"
    )
    assert failure_reason(message) == (
        "Job entrypoint command failed with exit code 3; "
        "last log line: ValueError: boom"
    )
    assert failure_reason(None) == "no message"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--address", "http://127.0.0.1:1", "python", "x.py"], "after `--`"),
        (["--address", "http://127.0.0.1:1", "--"], "is empty"),
        (["--", "python"], "one of the arguments --stack --address is required"),
        (["--address", "http://h:1", "--outputs", "f", "--", "x"], "needs --stack"),
    ],
)
def test_usage_errors(argv, message, capsys):
    assert cli.main(["submit", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_failing_entrypoint_exits_non_zero_with_the_jobs_error(ray_head):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "raygpu",
            "submit",
            "--address",
            ray_head.dashboard_url,
            "--",
            "python",
            "-c",
            "import sys; print('about to fail'); sys.exit(3)",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the job's 3 is named
    assert "about to fail" in proc.stdout  # the job's logs were streamed
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: job raygpu-")
    assert last.endswith(
        "failed: Job entrypoint command failed with exit code 3; "
        "last log line: about to fail"
    )
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_stack_path_forwards_passes_the_token_and_closes_the_forward(
    ray_head, fake_kubectl, tmp_path, monkeypatch, capsys
):
    token = local_token()
    if not token:
        pytest.skip("the local Ray head runs without token auth")
    monkeypatch.setenv("FAKE_TOKEN", token)
    monkeypatch.setenv("FAKE_TARGET_PORT", str(urlparse(ray_head.dashboard_url).port))
    # Only the token from "the cluster's Secret" may authenticate the CLI.
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "no-token-here"))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(OUTPUTS))
    check = (
        "import os, sys; p = os.environ['RAYGPU_STORAGE_PATH']; print('storage', p); "
        "sys.exit(0 if p == 's3://raygpu-dev-artifacts-123/runs' else 5)"
    )
    code = cli.main(
        [
            "submit",
            "--stack",
            "dev",
            "--outputs",
            str(outputs),
            "--no-requirements",
            "--",
            "python",
            "-c",
            check,
        ]
    )
    assert code == 0
    calls = fake_kubectl.calls()
    assert [c["args"][:2] for c in calls] == [
        ["get", "raycluster"],
        ["get", "secret"],
        ["port-forward", "--address"],
    ]
    assert {c["kubeconfig_mode"] for c in calls} == {"0o600"}
    assert calls[2]["args"][2:] == [
        "127.0.0.1",
        "-n",
        "ray",
        "svc/raygpu-dev-head-svc",
        ":8265",
    ]
    assert not process_alive(fake_kubectl.forward_pid())

    # A wrong token from the Secret: refused, and the forward is still closed.
    monkeypatch.setenv("FAKE_TOKEN", "wrong-" + "x" * 32)
    capsys.readouterr()
    argv = ["--stack", "dev", "--outputs", str(outputs), "--no-requirements", "--"]
    assert cli.main(["submit", *argv, "python", "-c", "pass"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("raygpu submit: error: Ray at http://127.0.0.1:")
    assert "refused the request (HTTP 40" in err
    assert "wrong-" not in err
    assert not process_alive(fake_kubectl.forward_pid())


def test_unreachable_cluster_is_a_one_line_error():
    from raygpu.localray import free_port

    address = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CommandError) as err:
        submit_mod.submit(address, ["python", "-c", "pass"], submission_id="job-x")
    message = str(err.value)
    # asked before Ray's CLI runs: nothing was submitted, so nothing to follow up
    assert message.startswith(f"cannot reach Ray at {address}: ")
    assert "\n" not in message and "ray job submit" not in message


@pytest.mark.parametrize(
    "values,uri",
    [
        ({"artifacts_bucket": "b"}, "s3://b/runs"),
        ({"cloud": "gcp", "artifacts_bucket": "b"}, "gs://b/runs"),
        (
            {"cloud": "azure", "artifacts_bucket": "art@acct.dfs.core.windows.net"},
            "abfs://art@acct.dfs.core.windows.net/runs",
        ),
    ],
)
def test_jobs_keep_their_runs_in_the_artifacts_bucket_of_each_cloud(values, uri):
    assert storage_path(StackOutputs("s", values)) == uri


def test_serve_on_a_gcp_or_azure_stack_says_it_uploads_to_s3_only():
    from raygpu import serve as serve_mod

    outputs = StackOutputs("g", {"cloud": "gcp", "artifacts_bucket": "b"})
    with pytest.raises(CommandError, match="g is a gcp stack, and serve uploads"):
        serve_mod.serve_on_stack(outputs, "gs://b/ckpt", {}, None, 1.0)
