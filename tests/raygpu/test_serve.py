"""serve.py: a deterministic content-addressed package, the Serve config as data,
upload to a real S3 API on loopback, and one deploy on a local Ray cluster."""

from __future__ import annotations

import io
import json
import os
import time
import urllib.request
import zipfile
from pathlib import Path

import boto3
import pytest
from ray._private.runtime_env.packaging import get_top_level_dir_from_compressed_package

from raygpu import cli
from raygpu import serve as serve_mod
from raygpu import status as status_mod
from raygpu.errors import CommandError
from raygpu.localray import free_port
from raygpu.serve import (
    build_config,
    check_checkpoint_in_s3,
    failure_reason,
    package_dir,
    package_key,
    private_access_hint,
    upload_package,
)
from raygpu.stack import RAY_JOBS_DIR, StackOutputs


def make_tree(root: Path) -> Path:
    src = root / "ray_jobs"
    (src / "mlcore").mkdir(parents=True)
    (src / "train.py").write_text("print('train')\n")
    (src / "serve_app.py").write_text("app = None\n")
    (src / "mlcore" / "__init__.py").write_text("")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    # Never shipped:
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0")
    (src / "mlcore" / "x.pyc").write_bytes(b"\0")
    (src / ".hidden").write_text("secret")
    (src / "data").mkdir()
    (src / "data" / "mnist.bin").write_bytes(b"1" * 100)
    return src


def test_package_is_deterministic_and_content_addressed(tmp_path):
    src = make_tree(tmp_path)
    data, sha = package_dir(src)
    again, sha_again = package_dir(src)
    assert (data, sha) == (again, sha_again)
    # Timestamps and the order files were created in do not matter...
    for path in src.rglob("*"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    copy = make_tree(tmp_path / "elsewhere")
    assert package_dir(copy)[1] == sha
    assert package_dir(src)[1] == sha
    # ...content does.
    (src / "train.py").write_text("print('train v2')\n")
    assert package_dir(src)[1] != sha

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        infos = archive.infolist()
    assert (
        names
        == sorted(names)
        == [
            "ray_jobs/mlcore/__init__.py",
            "ray_jobs/run.sh",
            "ray_jobs/serve_app.py",
            "ray_jobs/train.py",
        ]
    )
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    modes = {i.filename: i.external_attr >> 16 for i in infos}
    assert modes["ray_jobs/run.sh"] == 0o100755
    assert modes["ray_jobs/train.py"] == 0o100644
    # Ray unpacks a remote working_dir by dropping its single top-level folder.
    archive = tmp_path / "p.zip"
    archive.write_bytes(data)
    assert get_top_level_dir_from_compressed_package(str(archive)) == "ray_jobs"
    assert package_key(sha) == f"packages/{sha}.zip"


def test_the_real_ray_jobs_folder_packages(tmp_path):
    data, sha = package_dir(RAY_JOBS_DIR)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = set(archive.namelist())
    assert {"ray_jobs/serve_app.py", "ray_jobs/train.py"} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert len(sha) == 64


def test_serve_config_validates_against_rays_schema():
    from ray.serve.schema import ServeDeploySchema

    uri = "s3://art/packages/" + "a" * 64 + ".zip"
    ckpt = "s3://art/runs/r1/checkpoint_epoch0009_attempt01"
    config = build_config(uri, ckpt, pip=["torch==2.14.1"], args={"num_gpus": 1})
    (app,) = config["applications"]
    assert app["import_path"] == "serve_app:build_app"
    assert app["args"] == {"checkpoint": ckpt, "num_gpus": 1}
    assert app["runtime_env"] == {
        "working_dir": uri,
        "pip": {"packages": ["torch==2.14.1"], "pip_check": False},
    }
    ServeDeploySchema.model_validate(config)  # what `serve deploy` checks
    with pytest.raises(CommandError, match="working_dir"):
        build_config("", ckpt)


def test_failure_reason_prefers_the_deployment_message():
    status = {
        "status": "DEPLOY_FAILED",
        "message": "Failed to update the deployments ['ModelServer'].",
        "deployments": {
            "ModelServer": {
                "status": "DEPLOY_FAILED",
                "message": "The deployment failed to start 3 times in a row.\n"
                "Traceback ...\nCheckpointError: checkpoint: no meta.json in /x",
            }
        },
    }
    assert failure_reason(status) == (
        "ModelServer: The deployment failed to start 3 times in a row. ... "
        "CheckpointError: checkpoint: no meta.json in /x"
    )
    assert failure_reason({"message": "one line"}) == "one line"
    assert failure_reason({}) == "no message from Serve"


def test_upload_only_when_absent_and_checkpoint_checks(moto_server, s3_bucket, capsys):
    s3 = boto3.client("s3")
    data, sha = package_dir(RAY_JOBS_DIR)
    uri = upload_package(s3, s3_bucket, data, sha)
    assert uri == f"s3://{s3_bucket}/packages/{sha}.zip"
    first = s3.head_object(Bucket=s3_bucket, Key=package_key(sha))
    assert first["ContentLength"] == len(data)
    assert first["Metadata"] == {"sha256": sha}
    assert "uploaded package" in capsys.readouterr().out
    time.sleep(1.1)
    assert upload_package(s3, s3_bucket, data, sha) == uri
    assert "already there" in capsys.readouterr().out
    second = s3.head_object(Bucket=s3_bucket, Key=package_key(sha))
    assert second["LastModified"] == first["LastModified"]  # not written again

    s3.put_object(Bucket=s3_bucket, Key="runs/r1/checkpoint_1/meta.json", Body=b"{}")
    check_checkpoint_in_s3(s3, f"s3://{s3_bucket}/runs/r1/checkpoint_1")
    with pytest.raises(CommandError, match="nothing exists under"):
        check_checkpoint_in_s3(s3, f"s3://{s3_bucket}/runs/r1/checkpoint_2")
    with pytest.raises(CommandError, match="is not allowed on a stack"):
        check_checkpoint_in_s3(s3, "/local/checkpoint")


def test_private_access_hint_uses_loopback_and_a_private_kubeconfig():
    outputs = StackOutputs(
        "dev",
        {"ray_namespace": "ray", "ray_cluster_name": "raygpu-dev", "kubeconfig": "k"},
    )
    hint = private_access_hint(outputs, "raygpu")
    assert "(umask 077; pulumi stack output kubeconfig --show-secrets" in hint
    assert "port-forward --address 127.0.0.1 svc/raygpu-dev-head-svc 8000:8000" in hint
    assert "curl http://127.0.0.1:8000/healthz" in hint


def test_bad_checkpoint_on_address_fails_before_deploying(tmp_path, capsys):
    argv = ["--address", "http://127.0.0.1:1", "--checkpoint", str(tmp_path / "no")]
    assert cli.main(["serve", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("raygpu serve: error: --checkpoint: ")
    assert err.endswith(" does not exist\n") and err.count("\n") == 1


def tiny_checkpoint(directory: Path) -> Path:
    """An untrained MLP saved the way train.py saves (no training needed)."""
    import torch

    from mlcore.checkpointing import save
    from mlcore.models import ModelSpec, build_model

    spec = ModelSpec(name="mlp", image_shape=(1, 8, 8), num_classes=10)
    torch.manual_seed(0)
    model = build_model(spec)
    directory.mkdir()
    save(str(directory), model, None, epoch=0, spec=spec, metrics={})
    return directory


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # the LM export
def test_deploy_on_a_local_cluster_until_running(ray_head, tmp_path, monkeypatch):
    from raygpu.rayclient import ray_cli, ray_client_env

    checkpoint = tiny_checkpoint(tmp_path / "checkpoint")
    port = free_port()
    try:
        code = serve_mod.serve_on_address(
            ray_head.dashboard_url,
            str(checkpoint),
            {"num_cpus": 0.1},
            timeout_s=240,
            package_dir_out=tmp_path / "packages",
            http_port=port,
        )
        assert code == 0
        (package,) = (tmp_path / "packages").iterdir()
        assert package.name == f"{package_dir(RAY_JOBS_DIR)[1]}.zip"
        status = serve_mod.app_status(ray_head.dashboard_url, "raygpu", None)
        assert status["status"] == "RUNNING"
        runtime_env = status["deployed_app_config"]["runtime_env"]
        assert runtime_env["working_dir"] == package.resolve().as_uri()
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/healthz", timeout=30
        ) as r:
            assert r.status == 200
        # `raygpu status` shows the app and its running replica.
        view = status_mod.ray_view(ray_head.dashboard_url, None, recent=1)
        (row,) = [s for s in view["serve"] if s["app"] == "raygpu"]
        assert row["app_status"] == "RUNNING" and row["replicas"].get("RUNNING") == 1

        # The LM app joins it (`--app lm`): the classifier keeps running, since
        # the declarative deploy carries the other apps along.
        from tests.ray_jobs.test_lm_serve_app import make_export

        export = make_export(tmp_path)
        code = serve_mod.serve_on_address(
            ray_head.dashboard_url,
            export,
            {"num_cpus": 0.1, "max_seqs": 2},
            timeout_s=240,
            package_dir_out=tmp_path / "packages",
            http_port=port,
            app="lm",
        )
        assert code == 0
        for name in ("raygpu", "raygpu-lm"):
            status = serve_mod.app_status(ray_head.dashboard_url, name, None)
            assert status["status"] == "RUNNING", name
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/lm/v1/models", timeout=30
        ) as r:
            assert json.loads(r.read())["data"][0]["object"] == "model"
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/healthz", timeout=30
        ) as r:
            assert r.status == 200
    finally:
        # Free the shared cluster's CPUs for the other tests.
        import subprocess

        subprocess.run(
            [ray_cli("serve"), "shutdown", "--address", ray_head.dashboard_url, "-y"],
            env=ray_client_env(None),
            capture_output=True,
            timeout=120,
        )


def test_variant_goes_to_the_app_and_a_gpu_for_it_is_refused(
    tmp_path, capsys, monkeypatch
):
    seen = []

    def deploy(address, checkpoint, args, timeout_s, **_):  # the deploy seam
        seen.append(args)
        return 0

    monkeypatch.setattr(serve_mod, "serve_on_address", deploy)
    base = ["serve", "--address", "http://127.0.0.1:1", "--checkpoint", str(tmp_path)]
    assert cli.main([*base, "--variant", "onnx-int8"]) == 0
    assert cli.main(base) == 0
    assert seen == [{"variant": "onnx-int8"}, {}]  # the app's own replica default
    capsys.readouterr()
    assert cli.main([*base, "--variant", "int8", "--num-gpus", "1"]) == 2
    assert capsys.readouterr().err.endswith(
        "raygpu serve: error: --num-gpus: the int8 variant runs on the CPU; leave "
        "--num-gpus out or serve --variant fp32\n"
    )
    assert cli.main([*base, "--variant", "int4"]) == 2
    assert "invalid choice: 'int4'" in capsys.readouterr().err


def test_replicas_fixed_or_autoscaled_reach_the_app(tmp_path, capsys, monkeypatch):
    """--num-replicas N is a fixed count; the autoscaling flags give the app only
    the bounds set (the app's ServeAutoscaling defaults fill the rest); not both."""
    from serve_app import ServeArgs

    seen = []
    monkeypatch.setattr(
        serve_mod, "serve_on_address", lambda a, c, args, t, **_: seen.append(args) or 0
    )
    base = ["serve", "--address", "http://127.0.0.1:1", "--checkpoint", str(tmp_path)]
    assert cli.main([*base, "--num-replicas", "3"]) == 0
    scaled = ["--min-replicas", "0", "--max-replicas", "5", "--downscale-delay", "30"]
    assert cli.main([*base, *scaled]) == 0
    assert seen == [
        {"num_replicas": 3},
        {
            "autoscaling": {
                "min_replicas": 0,
                "max_replicas": 5,
                "downscale_delay_s": 30.0,
            }
        },
    ]
    auto = ServeArgs(checkpoint=str(tmp_path), **seen[1]).replica_options()
    assert auto["autoscaling_config"]["max_replicas"] == 5
    assert auto["autoscaling_config"]["target_ongoing_requests"] == 16  # default
    capsys.readouterr()
    assert cli.main([*base, "--num-replicas", "2", "--max-replicas", "4"]) == 2
    assert "--num-replicas: a fixed count, or autoscaling" in capsys.readouterr().err
    assert cli.main([*base, "--min-replicas", "-1"]) == 2
    assert "--min-replicas: must be >= 0, got -1" in capsys.readouterr().err
    assert cli.main([*base, "--app", "lm", "--variant", "int8"]) == 2
    assert "--variant: the lm app serves its export" in capsys.readouterr().err
    assert cli.main([*base, "--app", "chat"]) == 2
    assert "--app: invalid choice: 'chat' (choose from 'classifier', 'lm')" in (
        capsys.readouterr().err
    )
