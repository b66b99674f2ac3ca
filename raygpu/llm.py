"""`raygpu serve --llm MODEL`: an open LLM behind Ray Serve LLM (vLLM) on a GPU pool.

    raygpu serve --stack dev --llm meta-llama/Llama-3.1-8B-Instruct --hf-token-secret T
    raygpu serve --stack prod --llm s3://<artifacts>/models/m --shape Llama-3.1-8B ...

Renders a RayService (KubeRay) whose Serve app is `ray.serve.llm:build_openai_app`
with one LLMConfig, on the ray-llm image of the pinned Ray (raygpu/versions.py),
checks it against the vendored CRD schema, the operator's rules and for public
exposure, then prints it (--render-only) or applies it with kubectl. Its cluster is
the stack's (raygpu.manifests.raycluster_spec) with one worker group, the chosen GPU
pool's, scaling from zero; the head and Serve stay ClusterIP.

Weights come from Hugging Face (a gated model's token from a Kubernetes Secret by
`secretKeyRef`: in no manifest, log or error), or from the artifacts bucket as Serve
LLM's `model_source: {bucket_uri: s3://...}`, downloaded with the pods' IRSA role.
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from raygpu import crd_schema, manifests, options, versions, workloads
from raygpu import llm_sizing as sizing
from raygpu.config import GpuPoolConfig, StackConfig, load_stack_file
from raygpu.errors import CommandError, UsageError
from raygpu.kuberay_rules import _DNS1035, _DNS1123_SUBDOMAIN, MAX_NAME_LENGTH
from raygpu.names import RAY_API_VERSION, SERVE_PORT
from raygpu.render import PLACEHOLDER_REFS
from raygpu.stack import REPO_ROOT, StackOutputs, load_outputs, stack_kubectl

IMPORT_PATH = "ray.serve.llm:build_openai_app"
APP_NAME = "llm"
HF_TOKEN_ENV = "HF_TOKEN"  # what huggingface_hub (and so vLLM) reads
HF_TOKEN_SECRET_KEY = "hf_token"  # the key inside --hf-token-secret
MODEL_FILE = "config.json"  # an s3:// model is a Hugging Face folder
# The pods' root filesystem is read-only (manifests.ray_container_security_context):
# Triton's kernel cache goes under the writable ~/.cache, vLLM's usage report is off.
LLM_ENV = {
    "TRITON_CACHE_DIR": f"{manifests.CACHE_VOLUME[1]}/triton",
    "VLLM_NO_USAGE_STATS": "1",
}
_HF_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
HF_ID = re.compile(rf"^{_HF_PART}/{_HF_PART}$")
MAX_NAME = MAX_NAME_LENGTH["RayService"]


@dataclass(frozen=True)
class LLMAutoscaling:
    """The LLM app's own Serve autoscaling defaults (docs/serving-llm.md says why).

    min 1: a request to a replica scaled to zero waits for a GPU node, the ray-llm
    image and the weights, minutes; `--min-replicas 0` trades that for no idle GPU.
    target 32: vLLM batches continuously, so a replica's throughput still grows
    with dozens of sequences in flight; Serve LLM's own default (1e9) never scales
    out on load. downscale 900 s: a replica costs minutes to bring back."""

    min_replicas: int = 1
    max_replicas: int | None = None  # None: as many as the pool holds
    target_ongoing_requests: float = 32.0
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 900.0

    def to_serve(self, max_replicas: int) -> dict[str, Any]:
        return {
            "min_replicas": self.min_replicas,
            "initial_replicas": self.min_replicas,
            "max_replicas": max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
        }


# Requests a replica takes at once before the router queues them: a few times the
# target, so a burst waits at the router rather than behind one engine's batch.
MAX_ONGOING_PER_TARGET = 4


@dataclass(frozen=True)
class LLMSpec:
    name: str  # the RayService
    model_id: str  # what clients send as `model`
    model_source: str | dict[str, str]
    pool: GpuPoolConfig
    tensor_parallel_size: int
    max_model_len: int
    autoscaling: LLMAutoscaling
    hf_token_secret: str | None = None
    shape: sizing.ModelShape | None = None

    def replicas_in_pool(self) -> int:
        return self.pool.max_size * self.pool.gpus_per_node // self.tensor_parallel_size

    @property
    def max_replicas(self) -> int:
        return self.autoscaling.max_replicas or self.replicas_in_pool()


# ------------------------------------------------------------------ the model


def parse_model(model: str, artifacts_bucket: str | None) -> tuple[str, Any]:
    """(model_id, model_source) for --llm: an HF id, or an s3:// URI in the stack's
    artifacts bucket (UsageError naming --llm otherwise)."""
    model = model.strip()
    if model.startswith("s3://"):
        if artifacts_bucket is None:
            raise UsageError(
                "--llm: an s3:// model must be in the stack's artifacts bucket, "
                "which needs the stack's outputs: give --outputs FILE"
            )
        bucket, _, key = model[len("s3://") :].partition("/")
        key = key.strip("/")
        parts = key.split("/")
        if bucket != artifacts_bucket or not key or ".." in parts or " " in key:
            raise UsageError(
                f"--llm: {model!r} is not allowed; an s3:// model must be a folder in "
                f"the stack's artifacts bucket: s3://{artifacts_bucket}/<prefix>"
            )
        return parts[-1], {"bucket_uri": f"s3://{bucket}/{key}"}
    if "--" in model or ".." in model or not HF_ID.match(model):
        raise UsageError(
            f"--llm: {model!r} is neither a Hugging Face id (ORG/NAME: letters, "
            "digits, '-', '_', '.') nor an s3:// URI in the stack's artifacts bucket"
        )
    return model, model


def check_model_in_s3(s3: Any, bucket_uri: str) -> None:
    """The s3:// model folder holds a Hugging Face `config.json`."""
    bucket, _, key = bucket_uri[len("s3://") :].partition("/")
    try:
        s3.head_object(Bucket=bucket, Key=f"{key}/{MODEL_FILE}")
    except Exception as exc:  # botocore ClientError
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchKey", "NotFound"):
            raise CommandError(
                f"--llm: {bucket_uri} has no {MODEL_FILE}; upload the model's "
                "Hugging Face folder (config.json, tokenizer, *.safetensors) there"
            ) from None
        raise CommandError(f"--llm: cannot read {bucket_uri}: {code or exc}") from None


def default_name(model_id: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", model_id.split("/")[-1].lower()).strip("-")
    return f"llm-{slug}"[:MAX_NAME].rstrip("-")


# ------------------------------------------------------------------ manifests


def llm_config(spec: LLMSpec) -> dict[str, Any]:
    """The LLMConfig (Ray Serve LLM's schema) of the one model."""
    target = spec.autoscaling.target_ongoing_requests
    return {
        "model_loading_config": {
            "model_id": spec.model_id,
            "model_source": spec.model_source,
        },
        "accelerator_type": spec.pool.gpu_model,
        "engine_kwargs": {
            "tensor_parallel_size": spec.tensor_parallel_size,
            "max_model_len": spec.max_model_len,
            "gpu_memory_utilization": sizing.GPU_MEMORY_UTILIZATION,
        },
        "deployment_config": {
            "autoscaling_config": spec.autoscaling.to_serve(spec.max_replicas),
            "max_ongoing_requests": math.ceil(target * MAX_ONGOING_PER_TARGET),
        },
    }


def serve_config(spec: LLMSpec) -> dict[str, Any]:
    return {
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "args": {"llm_configs": [llm_config(spec)]},
            }
        ]
    }


def pod_env(spec: LLMSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in LLM_ENV.items()]
    if spec.hf_token_secret:
        ref = {"name": spec.hf_token_secret, "key": HF_TOKEN_SECRET_KEY}
        env.append({"name": HF_TOKEN_ENV, "valueFrom": {"secretKeyRef": ref}})
    return env


def rayservice_manifest(
    cfg: StackConfig, refs: manifests.ClusterRefs, spec: LLMSpec
) -> dict[str, Any]:
    """The RayService: the stack's cluster spec, the pool's worker group only, every
    Ray container on the ray-llm image (one Python in the cluster)."""
    cluster = manifests.raycluster_spec(cfg, refs)
    cluster["workerGroupSpecs"] = [manifests.worker_group_spec(cfg, spec.pool, refs)]
    for group in (cluster["headGroupSpec"], *cluster["workerGroupSpecs"]):
        for container in group["template"]["spec"]["containers"]:
            container["image"] = versions.pinned(versions.RAY_LLM_IMAGE)
            container["env"] = [*container["env"], *pod_env(spec)]
    return {
        "apiVersion": RAY_API_VERSION,
        "kind": "RayService",
        "metadata": {
            "name": spec.name,
            "namespace": cfg.ray_namespace,
            "labels": manifests.common_labels(cfg),
        },
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_config(spec), sort_keys=False),
            "rayClusterConfig": cluster,
        },
    }


def manifest_problems(manifest: dict[str, Any]) -> list[str]:
    """The CRD schema, the operator's rules, and anything public."""
    exposed = [f"public exposure: {p}" for p in manifests.public_exposure(manifest)]
    return crd_schema.manifest_problems(manifest) + exposed


# ------------------------------------------------------------------ the spec


def choose_pool(cfg: StackConfig, name: str | None) -> GpuPoolConfig:
    pools = {p.name: p for p in cfg.gpu_pools}
    if name is None:
        return cfg.gpu_pools[0]
    if name not in pools:
        raise UsageError(
            f"--gpu-pool: {name!r} is not a GPU pool of stack {cfg.stack!r}; "
            f"allowed: {', '.join(pools)}"
        )
    return pools[name]


def build_spec(
    args: argparse.Namespace, cfg: StackConfig, artifacts_bucket: str | None
) -> LLMSpec:
    """Everything --llm asks for, checked against the stack (UsageError if not)."""
    model_id, source = parse_model(args.llm, artifacts_bucket)
    pool = choose_pool(cfg, args.gpu_pool)
    tp = args.tensor_parallel_size or 1
    if tp > pool.gpus_per_node:
        raise UsageError(
            f"--tensor-parallel-size: a replica runs on one node and pool "
            f"{pool.name!r}'s nodes have {pool.gpus_per_node} GPU(s); allowed: "
            f"1..{pool.gpus_per_node}"
        )
    shape = sizing.find_shape(args.shape or model_id)
    if args.shape and shape is None:
        known = ", ".join(s.name for s in sizing.KNOWN_MODELS)
        raise UsageError(f"--shape: {args.shape!r} is not known; allowed: {known}")
    max_len = args.max_model_len or sizing.DEFAULT_MAX_MODEL_LEN
    if shape and not args.max_model_len:
        max_len = min(max_len, shape.max_context)
    if shape is not None:
        problem = sizing.sizing_problem(
            shape, pool.gpu_model, tp, max_len, pool.gpus_per_node
        )
        if problem:
            raise UsageError(problem)
        problem = sizing.disk_problem(shape, pool)
        if problem:
            raise UsageError(problem)
    auto = LLMAutoscaling(**options.autoscaling_given(args))
    spec = LLMSpec(
        name=args.name or default_name(model_id),
        model_id=model_id,
        model_source=source,
        pool=pool,
        tensor_parallel_size=tp,
        max_model_len=max_len,
        autoscaling=auto,
        hf_token_secret=args.hf_token_secret,
        shape=shape,
    )
    room = spec.replicas_in_pool()
    if spec.max_replicas > room or auto.min_replicas > spec.max_replicas:
        raise UsageError(
            f"--min-replicas/--max-replicas: pool {pool.name!r} holds {room} "
            f"replica(s) of {tp} GPU(s) (maxSize {pool.max_size} x "
            f"{pool.gpus_per_node} GPU(s)); allowed: 0 <= min <= max <= {room}, got "
            f"{auto.min_replicas}..{spec.max_replicas}"
        )
    return spec


# ------------------------------------------------------------------ the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("an open LLM with Ray Serve LLM (vLLM)")
    group.add_argument(
        "--llm",
        metavar="MODEL",
        help="a Hugging Face id (ORG/NAME) or an s3:// folder in the artifacts bucket",
    )
    group.add_argument("--shape", metavar="NAME", help="known shape of an s3:// model")
    group.add_argument("--name", metavar="NAME", help="RayService name (llm-<model>)")
    group.add_argument(
        "--hf-token-secret",
        metavar="NAME",
        help=f"Secret in the Ray namespace whose {HF_TOKEN_SECRET_KEY!r} key is a "
        "Hugging Face token (gated models)",
    )
    group.add_argument("--gpu-pool", metavar="NAME", help="GPU pool (the first)")
    group.add_argument(
        "--tensor-parallel-size",
        type=options.positive_int("--tensor-parallel-size"),
        metavar="N",
        help="GPUs per replica (1)",
    )
    group.add_argument(
        "--max-model-len",
        type=options.positive_int("--max-model-len"),
        metavar="TOKENS",
        help=f"context length ({sizing.DEFAULT_MAX_MODEL_LEN})",
    )
    group.add_argument(
        "--render-only", action="store_true", help="print the RayService, apply nothing"
    )
    group.add_argument(
        "--out", type=Path, metavar="FILE", help="with --render-only: write it to FILE"
    )


LLM_ONLY = (
    "shape", "name", "hf_token_secret", "gpu_pool", "tensor_parallel_size",
    "max_model_len", "render_only", "out",
)  # fmt: skip


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """With --llm the checkpoint app's options are refused, and the reverse."""
    if not args.llm:
        for dest in LLM_ONLY:
            if getattr(args, dest) not in (None, False):
                raise UsageError(f"--{dest.replace('_', '-')}: only with --llm")
        return
    if args.address:
        raise UsageError("--llm: needs --stack (Serve LLM runs on a stack's GPU pools)")
    for flag, given in (
        ("--checkpoint", args.checkpoint),
        ("--variant", args.variant != "fp32"),
        ("--num-gpus", args.num_gpus is not None),
        ("--num-replicas", args.num_replicas is not None),
        ("--app", args.app != workloads.DEFAULT_SERVE_APP),
        ("--no-requirements", args.no_requirements),
    ):
        if given:
            raise UsageError(f"{flag}: not with --llm (it serves the checkpoint app)")
    if args.out and not args.render_only:
        raise UsageError("--out: only with --render-only")
    if args.name and (len(args.name) > MAX_NAME or not _DNS1035.match(args.name)):
        raise UsageError(
            f"--name: {args.name!r} is not allowed; at most {MAX_NAME} lower-case "
            "letters, digits and '-', starting with a letter"
        )
    secret = args.hf_token_secret
    if secret is not None and (
        len(secret) > 253 or not _DNS1123_SUBDOMAIN.match(secret)
    ):
        # Not echoed: a token given here by mistake must not reach the terminal.
        raise UsageError(
            "--hf-token-secret: not a Secret name (at most 253 lower-case letters, "
            "digits, '-' and '.'); give the Secret's name, never the token"
        )


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (serveConfigV2) as YAML blocks a reader can follow."""

    def represent_str(self, data: str) -> yaml.ScalarNode:
        style = "|" if "\n" in data else None
        return self.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _Dumper.represent_str)


def to_yaml(manifest: dict[str, Any]) -> str:
    return yaml.dump(manifest, Dumper=_Dumper, sort_keys=False)


def cluster_refs(outputs: StackOutputs) -> manifests.ClusterRefs:
    return manifests.ClusterRefs(
        data_bucket=str(outputs.require("data_bucket")),
        artifacts_bucket=outputs.artifacts_bucket,
        irsa_role_arn=outputs.identity,
    )


def apply(outputs: StackOutputs, manifest: dict[str, Any]) -> None:
    """`kubectl apply` the RayService from a file (the manifest holds no secret)."""
    with tempfile.TemporaryDirectory(prefix="raygpu-llm-") as tmp:
        path = Path(tmp) / "rayservice.yaml"
        path.write_text(to_yaml(manifest), encoding="utf-8")
        with stack_kubectl(outputs) as kubectl:
            kubectl.run("apply", "-f", str(path))


def access_hint(outputs: StackOutputs, namespace: str, spec: LLMSpec) -> str:
    kubeconfig = f"~/.kube/raygpu-{outputs.stack}"
    kubectl = f"kubectl --kubeconfig {kubeconfig} -n {namespace}"
    return "\n".join(
        [
            f"applied RayService {spec.name!r} on stack {outputs.stack!r}; it is not "
            "exposed outside the cluster. Watch it, then port-forward:",
            f"  (umask 077; pulumi stack output kubeconfig --show-secrets --stack "
            f"{shlex.quote(outputs.stack)} > {kubeconfig})",
            f"  {kubectl} get rayservice {spec.name}",
            f"  {kubectl} port-forward --address 127.0.0.1 svc/{spec.name}-serve-svc "
            f"{SERVE_PORT}:{SERVE_PORT}",
            f"  curl http://127.0.0.1:{SERVE_PORT}/v1/models",
        ]
    )


def run(args: argparse.Namespace) -> int:
    cfg = load_stack_file(REPO_ROOT / f"Pulumi.{args.stack}.yaml", args.stack)
    outputs = None
    if args.outputs or not args.render_only:
        outputs = load_outputs(args.stack, args.outputs)
    refs = cluster_refs(outputs) if outputs else PLACEHOLDER_REFS
    bucket = outputs.artifacts_bucket if outputs else None
    spec = build_spec(args, cfg, bucket)
    manifest = rayservice_manifest(cfg, refs, spec)
    problems = manifest_problems(manifest)
    if problems:
        raise CommandError(
            f"RayService {spec.name!r} would be refused: " + "; ".join(problems)
        )
    tp, pool = spec.tensor_parallel_size, spec.pool
    notes = [
        sizing.describe(spec.shape, pool.gpu_model, tp, spec.max_model_len)
        if spec.shape
        else f"sizing: not checked, {spec.model_id!r} has no known shape (--shape)",
        sizing.idle_cost(pool, spec.autoscaling.min_replicas, tp),
    ]
    for note in notes:
        print(note, file=sys.stderr)
    text = to_yaml(manifest)
    if args.render_only:
        if args.out:
            args.out.write_text(text, encoding="utf-8")
            print(f"wrote RayService {spec.name!r} to {args.out}", file=sys.stderr)
        else:
            sys.stdout.write(text)
        return 0
    if isinstance(spec.model_source, dict):
        import boto3

        s3 = boto3.Session(region_name=outputs.region).client("s3")
        check_model_in_s3(s3, spec.model_source["bucket_uri"])
    apply(outputs, manifest)
    print(access_hint(outputs, cfg.ray_namespace, spec))
    return 0
