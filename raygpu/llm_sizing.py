"""Will an open LLM fit a GPU pool? Weights and KV cache against GPU memory.

The arithmetic `raygpu serve --llm` refuses a deployment with and that
docs/serving-llm.md's sizing table is generated from (`sizing_table()`):

- weights per GPU = parameters x bytes per parameter / tensor-parallel size;
- KV cache per token per GPU = 2 (K and V) x layers x KV heads on that GPU x head
  dimension x bytes per value; a GPU holds ceil(KV heads / TP) heads (vLLM
  replicates a head when TP exceeds the KV heads);
- vLLM takes `GPU_MEMORY_UTILIZATION` of each GPU (handed to it as
  `gpu_memory_utilization`, so the check and the engine agree), keeps
  `RESERVE_GIB` of that for activations, CUDA graphs and NCCL buffers, and must fit
  at least one sequence of `max_model_len` tokens in the KV cache that remains, or
  it refuses to start.

Shapes come from each model's Hugging Face `config.json`; bf16 throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from raygpu import instance_types, manifests
from raygpu.config import GpuPoolConfig

GIB = 2**30
DTYPE_BYTES = 2  # bf16 weights and KV cache
GPU_MEMORY_UTILIZATION = 0.9  # vLLM's own default, passed explicitly
# Peak activations of a prefill batch, CUDA graphs and NCCL buffers: vLLM profiles
# these at start; 2 GiB covers the 7B-70B models below at the default batch size.
RESERVE_GIB = 2.0
TP_SIZES = (1, 2, 4, 8)
DEFAULT_MAX_MODEL_LEN = 8192


@dataclass(frozen=True)
class ModelShape:
    name: str  # short name, also accepted by --shape
    hf_ids: tuple[str, ...]  # the Hugging Face repositories with this shape
    params: float  # parameters
    layers: int
    heads: int  # attention heads
    kv_heads: int
    head_dim: int
    max_context: int  # max_position_embeddings

    @property
    def weights_bytes(self) -> float:
        return self.params * DTYPE_BYTES

    def kv_bytes_per_token(self, tp: int = 1) -> int:
        """KV cache of one token on one of `tp` GPUs."""
        kv_heads = math.ceil(self.kv_heads / tp)
        return 2 * self.layers * kv_heads * self.head_dim * DTYPE_BYTES

    def tp_problem(self, tp: int) -> str | None:
        if self.heads % tp or (self.kv_heads % tp and tp % self.kv_heads):
            return (
                f"{self.name} has {self.heads} attention heads and {self.kv_heads} "
                f"KV heads, which {tp} GPUs cannot share evenly"
            )
        return None


KNOWN_MODELS: tuple[ModelShape, ...] = (
    ModelShape(
        "Qwen2.5-0.5B",
        ("Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B-Instruct"),
        0.49e9, 24, 14, 2, 64, 32768,
    ),
    ModelShape(
        "Qwen2.5-7B",
        ("Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-7B-Instruct"),
        7.62e9, 28, 28, 4, 128, 32768,
    ),
    ModelShape(
        "Mistral-7B",
        ("mistralai/Mistral-7B-v0.3", "mistralai/Mistral-7B-Instruct-v0.3"),
        7.25e9, 32, 32, 8, 128, 32768,
    ),
    ModelShape(
        "Llama-3.1-8B",
        ("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct"),
        8.03e9, 32, 32, 8, 128, 131072,
    ),
    ModelShape(
        "Qwen2.5-14B",
        ("Qwen/Qwen2.5-14B", "Qwen/Qwen2.5-14B-Instruct"),
        14.77e9, 48, 40, 8, 128, 32768,
    ),
    ModelShape(
        "Llama-3.1-70B",
        ("meta-llama/Llama-3.1-70B", "meta-llama/Llama-3.1-70B-Instruct"),
        70.6e9, 80, 64, 8, 128, 131072,
    ),
)  # fmt: skip


def find_shape(name: str) -> ModelShape | None:
    """The known shape whose short name or Hugging Face id is `name` (any case)."""
    wanted = name.strip().lower()
    for shape in KNOWN_MODELS:
        if wanted in (shape.name.lower(), *(i.lower() for i in shape.hf_ids)):
            return shape
    return None


@dataclass(frozen=True)
class Fit:
    """What one replica of `tp` GPUs of `gpu_gib` each holds."""

    weights_gib: float  # per GPU
    kv_gib: float  # per GPU, left for the KV cache (negative: weights do not fit)
    kv_tokens: int  # tokens the KV cache holds

    @property
    def weights_fit(self) -> bool:
        return self.kv_gib > 0


def fit(shape: ModelShape, gpu_gib: float, tp: int) -> Fit:
    usable = gpu_gib * GPU_MEMORY_UTILIZATION - RESERVE_GIB
    weights = shape.weights_bytes / tp / GIB
    kv = usable - weights
    tokens = int(kv * GIB // shape.kv_bytes_per_token(tp)) if kv > 0 else 0
    return Fit(weights_gib=weights, kv_gib=kv, kv_tokens=tokens)


def smallest_tp(
    shape: ModelShape, gpu_gib: float, max_model_len: int, limit: int = TP_SIZES[-1]
) -> int | None:
    """The fewest GPUs (of TP_SIZES, at most `limit`) one replica needs."""
    for tp in TP_SIZES:
        if tp <= limit and shape.tp_problem(tp) is None:
            if fit(shape, gpu_gib, tp).kv_tokens >= max_model_len:
                return tp
    return None


def sizing_problem(
    shape: ModelShape,
    gpu_model: str,
    tp: int,
    max_model_len: int,
    gpus_per_node: int,
) -> str | None:
    """Why `shape` at `tp` and `max_model_len` cannot run on `gpu_model` GPUs, as
    one line naming the flag to change; None when it fits."""
    gpu_gib = instance_types.gpu_memory_gib(gpu_model)
    if gpu_gib is None:
        return (
            f"--gpu-pool: the memory of a {gpu_model or 'unknown'} GPU is not in "
            "raygpu/instance_types.py's GPU_MEMORY_GIB; the size cannot be checked"
        )
    if max_model_len > shape.max_context:
        return (
            f"--max-model-len: {shape.name} takes at most {shape.max_context} "
            f"tokens, got {max_model_len}"
        )
    problem = shape.tp_problem(tp)
    if problem:
        return f"--tensor-parallel-size: {problem}"
    found = fit(shape, gpu_gib, tp)
    best = smallest_tp(shape, gpu_gib, max_model_len, limit=gpus_per_node)
    hint = (
        f"--tensor-parallel-size {best} fits"
        if best and best > tp
        else "choose a --gpu-pool with larger GPUs or more of them per node (this "
        f"pool's have {gpus_per_node})"
    )
    if not found.weights_fit:
        return (
            f"--tensor-parallel-size: {shape.name}'s weights ({found.weights_gib:.1f} "
            f"GiB per GPU at TP {tp}) do not fit one {gpu_model} ({gpu_gib} GiB, "
            f"{GPU_MEMORY_UTILIZATION:.0%} for vLLM less {RESERVE_GIB:g} GiB "
            f"reserved); {hint}"
        )
    if found.kv_tokens < max_model_len:
        need = max_model_len * shape.kv_bytes_per_token(tp) / GIB
        return (
            f"--max-model-len: {max_model_len} tokens of KV cache for {shape.name} "
            f"need {need:.1f} GiB per GPU, and {tp} x {gpu_model} leave "
            f"{found.kv_gib:.1f} GiB after the weights; allowed: at most "
            f"{found.kv_tokens}, or {hint}"
        )
    return None


def describe(shape: ModelShape, gpu_model: str, tp: int, max_model_len: int) -> str:
    """One line on how the replica's memory divides up (for the command's output)."""
    gpu_gib = instance_types.gpu_memory_gib(gpu_model) or 0
    found = fit(shape, gpu_gib, tp)
    return (
        f"sizing: {shape.name} on {tp} x {gpu_model} ({gpu_gib} GiB): weights "
        f"{found.weights_gib:.1f} GiB and KV cache {found.kv_gib:.1f} GiB per GPU = "
        f"{found.kv_tokens} tokens, {found.kv_tokens / max_model_len:.1f} sequences "
        f"of {max_model_len}"
    )


def sizing_table(max_model_len: int = DEFAULT_MAX_MODEL_LEN) -> str:
    """docs/serving-llm.md's table: per model and GPU, the fewest GPUs of a replica
    at `max_model_len` and the KV-cache tokens it then holds."""
    gpus = list(instance_types.GPU_MEMORY_GIB.items())
    head = ["Model", "Weights (bf16)", "KV cache / token"]
    head += [f"{name} {gib} GB" for name, gib in gpus]
    rows = [head, ["---"] * len(head)]
    for shape in KNOWN_MODELS:
        row = [
            shape.name,
            f"{shape.weights_bytes / GIB:.1f} GiB",
            f"{shape.kv_bytes_per_token() // 1024} KiB",
        ]
        for _name, gib in gpus:
            tp = smallest_tp(shape, gib, max_model_len)
            if tp is None:
                row.append("no (TP 8)")
            else:
                row.append(f"TP {tp}: {fit(shape, gib, tp).kv_tokens // 1000}k tok")
        rows.append(row)
    return "\n".join("| " + " | ".join(r) + " |" for r in rows) + "\n"


def disk_problem(shape: ModelShape, pool: GpuPoolConfig) -> str | None:
    """The weights are downloaded into each worker's ~/.cache volume first."""
    cache = next(
        size
        for name, _, size in manifests.scratch_volumes(pool.disk_size_gib)
        if name == manifests.CACHE_VOLUME[0]
    )
    if shape.weights_bytes <= int(cache.removesuffix("Gi")) * GIB:
        return None
    return (
        f"--llm: {shape.name}'s weights ({shape.weights_bytes / GIB:.0f} GiB) do not "
        f"fit the workers' {cache} cache volume; raise "
        f"raygpu:gpuPools[name={pool.name}].diskSizeGib"
    )


def idle_cost(pool: GpuPoolConfig, min_replicas: int, tp: int) -> str:
    """What `min_replicas` keeps running while the service exists."""
    if min_replicas == 0:
        return "min_replicas 0: no GPU node stays up; the first request waits for one"
    nodes = math.ceil(min_replicas * tp / pool.gpus_per_node)
    itype = pool.instance_types[0]
    kept = f"min_replicas {min_replicas} keeps {nodes} node(s) of pool {pool.name!r} up"
    found = instance_types.spec(itype)
    if found is None:  # a machine type of another cloud: no price in the table
        return f"{kept} while the service exists ({itype})"
    spot = getattr(pool, "capacity_type", "ON_DEMAND") == "SPOT"
    price = found.spot_usd_hour if spot else found.on_demand_usd_hour
    kind = "spot estimate" if spot else "on demand"
    return (
        f"{kept} while the service exists ({itype}: about ${nodes * price:.2f}/h "
        f"{kind}, raygpu/instance_types.py)"
    )
