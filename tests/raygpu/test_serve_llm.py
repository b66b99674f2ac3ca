"""raygpu serve --llm: the Ray Serve LLM RayService as data (checked against the
vendored CRD, the operator's rules and for public exposure), the sizing arithmetic,
every refusal as one line with exit 2, the Hugging Face token never printed, and
the apply through the fake kubectl seam (an s3:// model checked on loopback S3)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import boto3
import pytest
import yaml

from raygpu import cli, crd_schema, instance_types, llm, manifests, versions
from raygpu import llm_sizing as sizing
from raygpu.config import load_stack_file
from raygpu.policy import k8s_rules
from raygpu.render import PLACEHOLDER_REFS
from raygpu.stack import REPO_ROOT
from tests.raygpu.conftest import FAKE_KUBECTL

DEV = load_stack_file(REPO_ROOT / "Pulumi.dev.yaml", "dev")
PROD = load_stack_file(REPO_ROOT / "Pulumi.prod.yaml", "prod")
LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
TOKEN = "hf_notARealTokenButSecretAllTheSame0123"
ARTIFACTS = "rg-llm-artifacts"


def render(capsys, *words: str) -> tuple[int, dict | None, str]:
    """(exit status, the RayService printed, stderr) of `raygpu serve --render-only`."""
    code = cli.main(["serve", "--stack", "dev", *words, "--render-only"])
    out, err = capsys.readouterr()
    return code, (yaml.safe_load(out) if code == 0 else None), err


@pytest.fixture(scope="module")
def ray_llm_config():
    """Ray 2.60's own LLMConfig model (its module imports without vLLM)."""
    from ray.llm._internal.serve.core.configs.llm_config import LLMConfig

    return LLMConfig


def serve_config(manifest: dict) -> dict:
    return yaml.safe_load(manifest["spec"]["serveConfigV2"])


def containers(manifest: dict) -> list[dict]:
    cluster = manifest["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


# ------------------------------------------------------------------- the manifest


def test_the_rayservice_is_valid_private_and_on_the_gpu_pool(capsys, ray_llm_config):
    code, manifest, err = render(capsys, "--llm", LLAMA_8B)
    assert code == 0, err
    assert llm.manifest_problems(manifest) == []
    assert crd_schema.manifest_problems(manifest) == []  # schema + operator rules

    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == versions.RAY_VERSION
    # One worker group: the pool's, as the stack's RayCluster builds it, from zero.
    pool = DEV.gpu_pools[0]
    expected = manifests.worker_group_spec(DEV, pool, PLACEHOLDER_REFS)
    (group,) = cluster["workerGroupSpecs"]
    assert group["groupName"] == pool.name
    assert (group["replicas"], group["minReplicas"]) == (0, 0)
    assert group["maxReplicas"] == pool.max_size
    spec, want = group["template"]["spec"], expected["template"]["spec"]
    assert spec["nodeSelector"] == want["nodeSelector"]
    assert spec["tolerations"] == want["tolerations"]  # the GPU taint's
    # Private: ClusterIP head, no ingress, nothing public anywhere.
    head = cluster["headGroupSpec"]
    assert (head["serviceType"], head["enableIngress"]) == ("ClusterIP", False)
    assert manifests.public_exposure(manifest) == []
    # One Python in the cluster: every Ray container runs the pinned ray-llm image,
    # which the policy's image rule accepts.
    images = {c["image"] for c in containers(manifest)}
    assert images == {versions.pinned(versions.RAY_LLM_IMAGE)}
    assert versions.RAY_LLM_IMAGE.startswith(
        f"rayproject/ray-llm:{versions.RAY_VERSION}-"
    )
    assert k8s_rules._image_problems(versions.RAY_LLM_IMAGE) == []

    (app,) = serve_config(manifest)["applications"]
    assert app["import_path"] == "ray.serve.llm:build_openai_app"
    (config,) = app["args"]["llm_configs"]
    assert config["model_loading_config"] == {
        "model_id": LLAMA_8B,
        "model_source": LLAMA_8B,
    }
    assert config["accelerator_type"] == pool.gpu_model == "L4"
    assert config["engine_kwargs"] == {
        "tensor_parallel_size": 1,
        "max_model_len": sizing.DEFAULT_MAX_MODEL_LEN,
        "gpu_memory_utilization": sizing.GPU_MEMORY_UTILIZATION,
    }
    auto = config["deployment_config"]["autoscaling_config"]
    assert auto == {
        "min_replicas": 1,
        "initial_replicas": 1,
        "max_replicas": pool.max_size * pool.gpus_per_node,  # all the pool holds
        "target_ongoing_requests": 32.0,
        "upscale_delay_s": 30.0,
        "downscale_delay_s": 900.0,
    }
    assert config["deployment_config"]["max_ongoing_requests"] == 128
    # Ray Serve LLM itself takes it: its pydantic model refuses unknown fields,
    # accelerator types and autoscaling bounds (shown on a misspelt field).
    assert ray_llm_config.model_validate(config).accelerator_type == "L4"
    with pytest.raises(ValueError, match="acelerator_type"):
        ray_llm_config.model_validate({**config, "acelerator_type": "L4"})
    # No token wanted, none referenced.
    assert not any(e.get("valueFrom") for c in containers(manifest) for e in c["env"])
    assert "sizing: Llama-3.1-8B on 1 x L4 (24 GiB)" in err
    assert "keeps 1 node(s) of pool 'l4-spot' up" in err


def test_the_checks_refuse_what_the_cluster_would(capsys):
    manifest = render(capsys, "--llm", LLAMA_8B)[1]
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]
    head["serviceType"] = "LoadBalancer"
    manifest["metadata"]["name"] = "x" * 48
    problems = llm.manifest_problems(manifest)
    assert any("RayService names are at most 47" in p for p in problems)
    assert any(p.startswith("public exposure:") for p in problems)


def test_flags_reach_the_llm_config_and_the_token_only_by_reference(
    capsys, monkeypatch, ray_llm_config
):
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # a user's own token: never read
    code, manifest, err = render(
        capsys,
        "--llm", "Qwen/Qwen2.5-14B-Instruct",
        "--stack", "prod",
        "--gpu-pool", "l4x4",
        "--tensor-parallel-size", "2",
        "--max-model-len", "16384",
        "--min-replicas", "0",
        "--max-replicas", "6",
        "--target-ongoing-requests", "8",
        "--hf-token-secret", "hf-token",
        "--name", "qwen",
    )  # fmt: skip
    assert code == 0, err
    assert llm.manifest_problems(manifest) == []
    assert manifest["metadata"] == {**manifest["metadata"], "name": "qwen"}
    (group,) = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert group["groupName"] == "l4x4"
    (config,) = serve_config(manifest)["applications"][0]["args"]["llm_configs"]
    assert config["engine_kwargs"]["tensor_parallel_size"] == 2
    assert config["engine_kwargs"]["max_model_len"] == 16384
    auto = config["deployment_config"]["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"]) == (0, 6)
    assert auto["target_ongoing_requests"] == 8.0
    assert config["deployment_config"]["max_ongoing_requests"] == 32
    ray_llm_config.model_validate(config)
    for container in containers(manifest):
        (ref,) = [e for e in container["env"] if e["name"] == "HF_TOKEN"]
        assert ref == {
            "name": "HF_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "hf_token"}},
        }
    assert TOKEN not in json.dumps(manifest) + err
    assert "min_replicas 0: no GPU node stays up" in err


def test_an_s3_model_of_the_artifacts_bucket(capsys, tmp_path, ray_llm_config):
    outputs = write_outputs(tmp_path)
    model = f"s3://{ARTIFACTS}/models/my-llama/"
    code, manifest, err = render(
        capsys, "--llm", model, "--outputs", str(outputs), "--shape", "Llama-3.1-8B"
    )
    assert code == 0, err
    (config,) = serve_config(manifest)["applications"][0]["args"]["llm_configs"]
    assert config["model_loading_config"] == {
        "model_id": "my-llama",
        "model_source": {"bucket_uri": f"s3://{ARTIFACTS}/models/my-llama"},
    }
    assert manifest["metadata"]["name"] == "llm-my-llama"
    loading = ray_llm_config.model_validate(config).model_loading_config
    assert loading.model_source.bucket_uri == f"s3://{ARTIFACTS}/models/my-llama"
    env = {e["name"]: e.get("value") for e in containers(manifest)[0]["env"]}
    assert env["RAYGPU_ARTIFACTS_BUCKET"] == ARTIFACTS  # the stack's own outputs

    code, manifest, err = render(capsys, "--llm", model, "--outputs", str(outputs))
    assert code == 0 and "sizing: not checked, 'my-llama' has no known shape" in err
    code, _, err = render(capsys, "--llm", "s3://someone-elses/models/x")
    assert code == 2 and "needs the stack's outputs: give --outputs FILE" in err


# -------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["--llm", "not a model"], "--llm: 'not a model' is neither a Hugging Face id"),
        (["--llm", "org/--x"], "--llm: 'org/--x' is neither a Hugging Face id"),
        (["--llm", "gpt2"], "--llm: 'gpt2' is neither a Hugging Face id"),
        (["--llm", "s3://other-bucket/models/x", "--outputs", "{outputs}"],
         f"--llm: 's3://other-bucket/models/x' is not allowed; an s3:// model must be "
         f"a folder in the stack's artifacts bucket: s3://{ARTIFACTS}/<prefix>"),
        ([ "--llm", f"s3://{ARTIFACTS}/../x", "--outputs", "{outputs}"],
         "is not allowed; an s3:// model must be a folder"),
        (["--llm", LLAMA_8B, "--gpu-pool", "h100"],
         "--gpu-pool: 'h100' is not a GPU pool of stack 'dev'; allowed: l4-spot"),
        (["--llm", LLAMA_8B, "--tensor-parallel-size", "2"],
         "--tensor-parallel-size: a replica runs on one node and pool 'l4-spot''s "
         "nodes have 1 GPU(s); allowed: 1..1"),
        (["--llm", LLAMA_8B, "--max-model-len", "131072"],
         "--max-model-len: 131072 tokens of KV cache for Llama-3.1-8B need 16.0 GiB "
         "per GPU, and 1 x L4 leave 4.6 GiB after the weights; allowed: at most "
         "38035"),
        (["--llm", LLAMA_8B, "--max-model-len", "200000"],
         "--max-model-len: Llama-3.1-8B takes at most 131072 tokens, got 200000"),
        (["--llm", "meta-llama/Llama-3.1-70B-Instruct"],
         "--tensor-parallel-size: Llama-3.1-70B's weights (131.5 GiB per GPU at TP 1) "
         "do not fit one L4"),
        (["--llm", "x/y", "--shape", "gpt-5"],
         "--shape: 'gpt-5' is not known; allowed:"),
        (["--llm", LLAMA_8B, "--max-replicas", "3"],
         "--min-replicas/--max-replicas: pool 'l4-spot' holds 2 replica(s) of 1 "
         "GPU(s) (maxSize 2 x 1 GPU(s)); allowed: 0 <= min <= max <= 2, got 1..3"),
        (["--llm", LLAMA_8B, "--min-replicas", "2", "--max-replicas", "1"],
         "allowed: 0 <= min <= max <= 2, got 2..1"),
        (["--llm", LLAMA_8B, "--min-replicas", "-1"], "--min-replicas: must be >= 0"),
        (["--llm", LLAMA_8B, "--tensor-parallel-size", "0"],
         "--tensor-parallel-size: must be > 0, got 0"),
        (["--llm", LLAMA_8B, "--name", "Bad_Name"],
         "--name: 'Bad_Name' is not allowed; at most 47 lower-case letters"),
        (["--llm", LLAMA_8B, "--checkpoint", "s3://b/c"],
         "--checkpoint: not with --llm (it serves the checkpoint app)"),
        (["--checkpoint", "s3://b/c", "--tensor-parallel-size", "2"],
         "--tensor-parallel-size: only with --llm"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_naming_the_flag(capsys, tmp_path, words, message):
    outputs = str(write_outputs(tmp_path))
    words = [w.replace("{outputs}", outputs) for w in words]
    code = cli.main(["serve", "--stack", "dev", *words, "--render-only"])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == ""
    last = err.splitlines()[-1]  # argparse's own type errors print usage first
    assert last.startswith("raygpu serve: error: ") and message in last
    if "must be" not in message:
        assert err.count("\n") == 1


def test_out_writes_the_yaml_and_needs_render_only(capsys, tmp_path):
    out = tmp_path / "llm.yaml"
    base = ["serve", "--stack", "dev", "--llm", LLAMA_8B, "--out", str(out)]
    assert cli.main(base) == 2
    assert "--out: only with --render-only" in capsys.readouterr().err
    assert cli.main([*base, "--render-only"]) == 0
    assert capsys.readouterr().out == ""
    assert llm.manifest_problems(yaml.safe_load(out.read_text())) == []


def test_prod_sizes_llama_70b_against_its_pools(capsys):
    code = cli.main(
        ["serve", "--stack", "prod", "--llm", "meta-llama/Llama-3.1-70B-Instruct",
         "--gpu-pool", "l4x4", "--tensor-parallel-size", "4", "--render-only"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(
        "raygpu serve: error: --tensor-parallel-size: Llama-3.1-70B's weights (32.9 "
        "GiB per GPU at TP 4) do not fit one L4"
    )
    assert "choose a --gpu-pool with larger GPUs or more of them per node" in err


def test_the_secret_name_is_checked_and_a_token_given_instead_is_not_echoed(capsys):
    code = cli.main(
        ["serve", "--stack", "dev", "--llm", LLAMA_8B, "--hf-token-secret", TOKEN]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "--hf-token-secret: not a Secret name" in err
    assert TOKEN not in err


def test_llm_needs_a_stack(capsys):
    code = cli.main(["serve", "--address", "http://127.0.0.1:1", "--llm", LLAMA_8B])
    assert code == 2
    assert "--llm: needs --stack" in capsys.readouterr().err


# ---------------------------------------------------------------------- sizing


def test_every_gpu_model_is_a_ray_accelerator_type(ray_llm_config):
    base = {"model_loading_config": {"model_id": "m", "model_source": "o/m"}}
    for gpu in instance_types.GPU_MEMORY_GIB:
        config = ray_llm_config.model_validate({**base, "accelerator_type": gpu})
        assert config.accelerator_type == gpu


def test_the_arithmetic():
    shape = sizing.find_shape(LLAMA_8B)
    assert shape is sizing.find_shape("llama-3.1-8b")
    assert shape.weights_bytes == 8.03e9 * 2
    assert shape.kv_bytes_per_token() == 2 * 32 * 8 * 128 * 2
    assert shape.kv_bytes_per_token(tp=2) == 2 * 32 * 4 * 128 * 2
    # Fewer KV heads than GPUs: vLLM replicates a head on each GPU.
    small = sizing.find_shape("Qwen2.5-0.5B")
    assert small.kv_bytes_per_token(tp=2) == small.kv_bytes_per_token(tp=1) // 2
    assert small.kv_bytes_per_token(tp=8) == small.kv_bytes_per_token(tp=2)
    assert small.tp_problem(4) is not None  # 14 attention heads
    found = sizing.fit(shape, 24, 1)
    usable = 24 * sizing.GPU_MEMORY_UTILIZATION - sizing.RESERVE_GIB
    assert found.kv_gib == pytest.approx(usable - 8.03e9 * 2 / 2**30)
    assert found.kv_tokens == int(found.kv_gib * 2**30 // 131072)
    assert sizing.smallest_tp(sizing.find_shape("Llama-3.1-70B"), 80, 8192) == 2
    assert sizing.smallest_tp(sizing.find_shape("Llama-3.1-70B"), 16, 8192) is None
    assert set(instance_types.GPU_MEMORY_GIB) >= {
        s.gpu_model for s in instance_types.INSTANCE_TYPES.values() if s.is_gpu
    }


def test_the_idle_cost_of_the_minimum():
    a10g, l4x4 = PROD.gpu_pools
    price = instance_types.spec("g5.2xlarge").on_demand_usd_hour
    assert (
        f"keeps 2 node(s) of pool 'a10g' up while the service exists (g5.2xlarge: "
        f"about ${2 * price:.2f}/h on demand" in sizing.idle_cost(a10g, 2, 1)
    )
    assert "keeps 1 node(s) of pool 'l4x4'" in sizing.idle_cost(l4x4, 2, 2)
    assert sizing.idle_cost(l4x4, 0, 2).startswith("min_replicas 0: no GPU node")


def test_the_docs_table_is_the_codes():
    doc = (REPO_ROOT / "docs" / "serving-llm.md").read_text(encoding="utf-8")
    assert sizing.sizing_table() in doc


def test_the_weights_must_fit_the_workers_cache_volume():
    shape = sizing.find_shape("Llama-3.1-70B")
    pool = PROD.gpu_pools[0].model_copy(update={"disk_size_gib": 200})
    assert "do not fit the workers' 40Gi cache volume; raise " in (
        sizing.disk_problem(shape, pool) or ""
    )
    assert sizing.disk_problem(sizing.find_shape(LLAMA_8B), pool) is None


# ----------------------------------------------------------------------- apply


def write_outputs(tmp_path: Path) -> Path:
    path = tmp_path / "outputs.json"
    path.write_text(
        json.dumps(
            {
                "region": "us-west-2",
                "kubeconfig": "apiVersion: v1\nkind: Config\n",
                "data_bucket": "rg-llm-data",
                "artifacts_bucket": ARTIFACTS,
                "irsa_role_arn": "arn:aws:iam::111122223333:role/ray",
                "ray_cluster_name": "raygpu-dev",
            }
        )
    )
    return path


@pytest.fixture
def kubectl_apply(fake_kubectl, tmp_path):
    """The fake kubectl, with `apply -f FILE` recorded (FILE copied) and answered."""
    applied = tmp_path / "applied"
    applied.mkdir()
    wrapper = tmp_path / "kubectl_apply.py"
    wrapper.write_text(
        "import json, os, shutil, sys\n"
        "args = sys.argv[1:]\n"
        "rest = args[2:] if args[:1] == ['--kubeconfig'] else args\n"
        "if rest[:2] == ['apply', '-f']:\n"
        "    mode = oct(os.stat(args[1]).st_mode & 0o777)\n"
        "    with open(os.environ['FAKE_KUBECTL_LOG'], 'a') as log:\n"
        "        entry = {'args': rest, 'kubeconfig_mode': mode}\n"
        "        log.write(json.dumps(entry) + '\\n')\n"
        f"    shutil.copy(rest[2], {str(applied)!r})\n"
        "    print('rayservice.ray.io/x configured')\n"
        "else:\n"
        f"    fake = {str(FAKE_KUBECTL)!r}\n"
        "    os.execv(sys.executable, [sys.executable, fake, *args])\n"
    )
    exe = fake_kubectl.bin_dir / "kubectl"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{wrapper}" "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return fake_kubectl, applied


def test_apply_through_kubectl_prints_private_access_and_no_secret(
    kubectl_apply, tmp_path, capsys, monkeypatch
):
    fake, applied = kubectl_apply
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    outputs = write_outputs(tmp_path)
    words = ["serve", "--stack", "dev", "--outputs", str(outputs), "--llm", LLAMA_8B,
             "--hf-token-secret", "hf-token"]  # fmt: skip
    assert cli.main([*words, "--render-only"]) == 0
    rendered = yaml.safe_load(capsys.readouterr().out)

    assert cli.main(words) == 0
    out, err = capsys.readouterr()
    (call,) = fake.calls()
    assert call["args"][:2] == ["apply", "-f"]
    assert call["kubeconfig_mode"] == "0o600"  # the private kubeconfig
    (doc,) = applied.iterdir()
    assert yaml.safe_load(doc.read_text()) == rendered
    name = rendered["metadata"]["name"]
    assert f"port-forward --address 127.0.0.1 svc/{name}-serve-svc 8000:8000" in out
    assert "it is not exposed outside the cluster" in out
    everything = out + err + doc.read_text() + fake.log.read_text()
    assert TOKEN not in everything
    assert os.environ["FAKE_TOKEN"] not in everything  # nor Ray's, never read


def test_an_s3_model_is_looked_for_before_applying(
    kubectl_apply, moto_server, tmp_path, capsys
):
    fake, applied = kubectl_apply
    s3 = boto3.client("s3", region_name="us-west-2")
    s3.create_bucket(
        Bucket=ARTIFACTS, CreateBucketConfiguration={"LocationConstraint": "us-west-2"}
    )
    outputs = write_outputs(tmp_path)
    model = f"s3://{ARTIFACTS}/models/m1"
    words = ["serve", "--stack", "dev", "--outputs", str(outputs),
             "--llm", model, "--shape", "Qwen2.5-7B"]  # fmt: skip
    assert cli.main(words) == 1
    err = capsys.readouterr().err
    assert f"--llm: s3://{ARTIFACTS}/models/m1 has no config.json" in err
    assert fake.calls() == []  # nothing applied

    s3.put_object(Bucket=ARTIFACTS, Key="models/m1/config.json", Body=b"{}")
    assert cli.main(words) == 0
    assert [c["args"][:2] for c in fake.calls()] == [["apply", "-f"]]
    (doc,) = applied.iterdir()
    manifest = yaml.safe_load(doc.read_text())
    (config,) = serve_config(manifest)["applications"][0]["args"]["llm_configs"]
    assert config["model_loading_config"]["model_source"] == {
        "bucket_uri": f"s3://{ARTIFACTS}/models/m1"
    }
