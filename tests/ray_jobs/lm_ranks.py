"""Multi-process gloo groups for the LM tests, without Ray: a launcher (what
torchrun does: one process per rank, rank and rendezvous in the environment) and
the rank-side programs it runs (`python -m tests.ray_jobs.lm_ranks MODE ...`).

Modes:
- `logits CKPT OUT STRATEGY`: load a sharded checkpoint into a freshly sharded
  model at this world size, write its logits on a fixed input (rank 0).
- `init OUT`: build preset "nano" sharded (FSDP, activation checkpointing) from
  seed 3, write every parameter gathered whole (rank 0).
- `memory STRATEGY PRESET N_LAYER BUDGET_MB OUT`: cap this process's data segment
  (RLIMIT_DATA) at its size now plus BUDGET_MB, then build the model and take
  an optimizer step; write what happened (ok or the allocator's error).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def fixed_input(vocab: int = 256, seq: int = 32):
    import torch

    g = torch.Generator().manual_seed(1234)
    return torch.randint(0, vocab, (2, seq), generator=g)


def launch(
    args: list[str],
    world: int,
    port: int,
    timeout_s: float = 240,
    env: dict[str, str] | None = None,
    until=None,
) -> list[subprocess.CompletedProcess]:
    """Run `python ARGS` as `world` ranks; kill them all if one fails, `until()`
    turns true or time runs out (a rank that died leaves the others waiting in a
    collective)."""
    base = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'ray_jobs'}",
        "PYTHONWARNINGS": "ignore",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": str(world),
        **(env or {}),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, *args],
            env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO / "ray_jobs",
        )
        for r in range(world)
    ]
    deadline = time.monotonic() + timeout_s
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline or (until and until()):
                break
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [
        subprocess.CompletedProcess(p.args, p.wait(), p.stdout.read(), "")
        for p in procs
    ]


def _init():
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    return dist.get_rank(), dist.get_world_size()


def logits_mode(ckpt_dir: str, out: str, strategy: str) -> None:
    import torch

    from lm import checkpoint as ckpt
    from lm.model import GPTConfig
    from lm.parallelize import build_parallel_model

    rank, world = _init()
    manifest = ckpt.verify_local(ckpt_dir)
    model = build_parallel_model(
        GPTConfig.from_dict(manifest["model"]), strategy, torch.device("cpu")
    )
    optimizer = torch.optim.AdamW(model.parameters())
    ckpt.load_shards(ckpt_dir, model, optimizer, rank, manifest["world_size"] == world)
    model.eval()
    with torch.no_grad():
        logits = model(fixed_input())
    if rank == 0:
        torch.save(logits, out)


def init_mode(out: str) -> None:
    import torch

    from lm.model import PRESETS
    from lm.parallelize import build_parallel_model

    rank, _ = _init()
    model = build_parallel_model(
        PRESETS["nano"],
        "fsdp",
        torch.device("cpu"),
        activation_checkpointing=True,
        seed=3,
    )
    full = {
        name.replace("_checkpoint_wrapped_module.", ""): p.full_tensor()
        for name, p in model.named_parameters()
    }
    if rank == 0:
        torch.save(full, out)


def _vm_data() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmData in /proc/self/status")


def memory_mode(
    strategy: str, preset: str, n_layer: int, budget_mb: int, out: str
) -> None:
    import torch

    from lm.memory import rank_memory
    from lm.model import lm_loss, resolve_config
    from lm.parallelize import build_parallel_model

    rank, world = _init()
    x = fixed_input()[rank::world]
    base = _vm_data()
    resource.setrlimit(
        resource.RLIMIT_DATA, (base + budget_mb * 2**20, resource.RLIM_INFINITY)
    )
    result = {"rank": rank, "strategy": strategy, "budget_mb": budget_mb}
    try:
        config, _ = resolve_config(preset, n_layer=n_layer)
        model = build_parallel_model(config, strategy, torch.device("cpu"))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        # one step allocates all the state (Adam's moments on the first step)
        loss = lm_loss(model(x[:, :-1]), x[:, 1:])
        loss.backward()
        optimizer.step()
        result.update(
            ok=True, loss=float(loss.detach()), memory=rank_memory(model, optimizer)
        )
    except (RuntimeError, MemoryError) as exc:
        result.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:300]}")
    Path(f"{out}.rank{rank}.json").write_text(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # no teardown: the other rank may be stuck in a collective


if __name__ == "__main__":
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "logits":
        logits_mode(*rest)
    elif mode == "init":
        init_mode(*rest)
    elif mode == "memory":
        memory_mode(rest[0], rest[1], int(rest[2]), int(rest[3]), rest[4])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
