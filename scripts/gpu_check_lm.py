"""GPU check of the LM path: FSDP2 at world size 1, bf16, tokens/s and MFU.

Run it on a GPU node (needs torch only; no Ray), from the repository root:

    PYTHONPATH=ray_jobs python scripts/gpu_check_lm.py --out gpu_check_lm.json

It builds the GPT from `ray_jobs/lm` on the meta device, shards it with the same
`apply_fsdp` the Ray job uses (bf16 parameters, fp32 reductions), trains on the
standard-library corpus and reports tokens/s and model FLOPs utilisation (MFU)
against the H200's dense bf16 peak (`--peak-tflops` for other GPUs). Checks: the
loss falls, it stays finite, and the parameters FSDP computes with are bf16.
Exit status 0 when every check passed. `--cpu --precision fp32` runs the same
loop on a CPU (gloo), to try the script without a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

try:
    import torch
    import torch.distributed as dist

    from lm.data import BatchOrder, batch, load_corpus
    from lm.memory import rank_memory
    from lm.model import flops_per_token, lm_loss, num_parameters, resolve_config
    from lm.parallelize import build_parallel_model, use_bf16
except ImportError as exc:  # run from elsewhere, or without PYTHONPATH=ray_jobs
    sys.exit(f"gpu_check_lm: {exc}; run it as PYTHONPATH=ray_jobs python {sys.argv[0]}")

# NVIDIA's H200 SXM datasheet: 989 dense bf16 tensor TFLOPS (1,979 with sparsity).
H200_BF16_PEAK_TFLOPS = 989.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="1b")
    p.add_argument("--context", type=int, default=None, help="(the preset's)")
    p.add_argument("--batch-size", type=int, default=8, help="blocks a step (8)")
    p.add_argument("--steps", type=int, default=30, help="timed steps (30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (5)")
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--corpus-bytes", type=int, default=32 << 20)
    p.add_argument("--peak-tflops", type=float, default=H200_BF16_PEAK_TFLOPS)
    p.add_argument("--cpu", action="store_true", help="gloo on the CPU, no GPU")
    p.add_argument("--out", default=None, help="write the report as JSON here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check_lm: no CUDA device (use --cpu to try it on a CPU)")
        return 1
    device = torch.device("cpu") if args.cpu else torch.device("cuda", 0)
    if not args.cpu:
        torch.cuda.set_device(device)
    backend = "gloo" if args.cpu else "nccl"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    try:
        report = run(args, device)
    finally:
        dist.destroy_process_group()
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if all(report["checks"].values()) else 1


def run(args: argparse.Namespace, device: torch.device) -> dict:
    config, seq_len = resolve_config(args.preset, context=args.context)
    bf16 = use_bf16(args.precision, device)
    torch.manual_seed(0)
    model = build_parallel_model(
        config,
        "fsdp",
        device,
        bf16=bf16,
        activation_checkpointing=args.activation_checkpointing,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95))
    corpus = load_corpus("stdlib", seq_len, args.corpus_bytes)
    order = BatchOrder(len(corpus.train), args.batch_size, seed=0)
    compute_dtypes = set()
    hook = model.blocks[0].attn.qkv.register_forward_pre_hook(
        lambda mod, _: compute_dtypes.add(str(mod.weight.dtype))
    )

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    losses, t0 = [], None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            sync()
            t0 = time.perf_counter()
        epoch, in_epoch = order.position(step)
        x, y = batch(corpus.train, order.global_indices(epoch, in_epoch), device)
        optimizer.zero_grad(set_to_none=True)
        loss = lm_loss(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    sync()
    elapsed = time.perf_counter() - t0
    hook.remove()
    tokens = args.steps * args.batch_size * seq_len
    tokens_per_s = tokens / elapsed
    achieved = tokens_per_s * flops_per_token(config, seq_len)
    memory = rank_memory(model, optimizer)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    on_gpu = device.type == "cuda"
    return {
        "device": torch.cuda.get_device_name(device) if on_gpu else "cpu",
        "torch": torch.__version__,
        "preset": args.preset,
        "parameters": num_parameters(config),
        "context": seq_len,
        "batch_size": args.batch_size,
        "bf16": bf16,
        "activation_checkpointing": args.activation_checkpointing,
        "timed_steps": args.steps,
        "seconds": round(elapsed, 3),
        "tokens_per_second": round(tokens_per_s, 1),
        "model_tflops_per_second": float(f"{achieved / 1e12:.4g}"),
        "peak_tflops": args.peak_tflops,
        "mfu": float(f"{achieved / (args.peak_tflops * 1e12):.4g}"),
        "loss_first": round(first, 4),
        "loss_last": round(last, 4),
        "compute_dtypes": sorted(compute_dtypes),
        "memory": memory,
        "checks": {
            "loss_falls": last < first,
            "loss_finite": all(v == v and abs(v) < 1e9 for v in losses),
            "compute_dtype": compute_dtypes
            == {"torch.bfloat16" if bf16 else "torch.float32"},
        },
    }


if __name__ == "__main__":
    sys.exit(main())
