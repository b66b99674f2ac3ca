"""The language-model training loop, and Ray Train's `train_func` around it.

`run_training(config, session)` is the whole loop: data, the sharded model, resume
from the newest good checkpoint, causal-LM steps, validation perplexity, measured
memory and sharded checkpoints. What differs between Ray Train and a plain
`torchrun` (how a checkpoint folder reaches storage, which ones exist) is the
`Session`; `train_func` is the Ray one. Knows nothing of the cluster.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule

from lm import checkpoint as ckpt
from lm.data import BatchOrder, batch, corpus_for
from lm.memory import rank_memory
from lm.model import GPTConfig, flops_per_token, lm_loss, num_parameters
from lm.parallelize import autocast, build_parallel_model, use_bf16
from mlcore.errors import CheckpointError
from mlcore.storage import StoragePath, parse_storage, upload_dir


@dataclass
class Session:
    """Where the loop runs: its rank and device, how it publishes a checkpoint
    folder, and which checkpoints it may resume from."""

    world: int
    rank: int
    device: torch.device
    run: StoragePath  # the run folder: checkpoints, and their manifests
    # (metrics, local staging folder, folder name): puts the folder into the
    # run's storage; None: the run folder is local to every rank, written in place
    publish: Callable[[dict, str, str], None] | None


def _all_ok(ok: bool, world: int) -> bool:
    if world == 1:
        return ok
    flag = torch.tensor([1 if ok else 0], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


@contextlib.contextmanager
def _local_folder(folder: StoragePath) -> Iterator[str]:
    if not folder.is_remote:
        yield folder.path
        return
    from mlcore.storage import download_dir

    with tempfile.TemporaryDirectory(prefix="rg-resume-") as tmp:
        yield download_dir(folder, tmp)


def restore(session: Session, model, optimizer, config: GPTConfig, cfg: dict):
    """Load the newest checkpoint every rank can verify; its manifest, or None.

    Candidates are the run's checkpoint folders (also those a worker uploaded but
    Train never registered), newest first; rank 0 lists them for everyone. A
    candidate any rank finds incomplete or corrupt is skipped, on all ranks."""
    names = (
        [c[2].uri for c in ckpt.list_checkpoints(session.run)]
        if session.rank == 0
        else None
    )
    if session.world > 1:
        box = [names]
        dist.broadcast_object_list(box, src=0)
        names = box[0]
    problems = []
    for uri in names:
        folder = parse_storage(uri, "checkpoint")
        with _local_folder(folder) as directory:
            try:
                manifest, why = ckpt.verify_local(directory), None
            except CheckpointError as exc:
                manifest, why = None, str(exc)
            if not _all_ok(manifest is not None, session.world):
                problems.append(why or f"{uri}: another rank could not verify it")
                if session.rank == 0:
                    why = why or "another rank could not verify it"
                    print(f"[raygpu] skipping checkpoint {uri}: {why}")
                continue
            ckpt.check_compatible(manifest, uri, config, cfg)
            same = manifest["world_size"] == session.world
            ckpt.load_shards(directory, model, optimizer, session.rank, same)
        if session.rank == 0:
            at = manifest["position"]["global_step"]
            how = "" if same else f" (saved at world size {manifest['world_size']})"
            print(f"[raygpu] restored {uri} at step {at}{how}")
        return manifest
    if names:
        raise CheckpointError(
            "no usable checkpoint to resume from: " + "; ".join(problems)
        )
    return None


def evaluate(
    model, blocks: torch.Tensor, session: Session, per_rank_batch: int, n: int
):
    """Mean validation loss over the first `n` blocks, each rank a stride of them
    (the same number of forward calls on every rank: FSDP gathers in each)."""
    model.eval()
    idx = torch.arange(n)[session.rank :: session.world]
    total = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for i in range(0, len(idx), per_rank_batch):
            x, y = batch(blocks, idx[i : i + per_rank_batch], session.device)
            loss = lm_loss(model(x), y)
            total += torch.tensor(
                [float(loss) * y.numel(), y.numel()], dtype=torch.float64
            )
    model.train()
    if isinstance(model, FSDPModule):
        model.reshard()  # the root keeps its gathered parameters after forward
    if session.world > 1:
        dist.all_reduce(total)
    return float(total[0] / total[1])


def _gather(values: list[float], world: int) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if world > 1:
        dist.all_reduce(t)
    return t.tolist()


MEMORY_KEYS = (
    "param_bytes",
    "grad_bytes",
    "optim_bytes",
    "total_bytes",
    "peak_rss_bytes",
)


def _memory_per_rank(memory: dict[str, int], rank: int, world: int) -> list[dict]:
    """Every rank's memory report, on every rank (one all-reduce of a table)."""
    table = [[0.0] * len(MEMORY_KEYS) for _ in range(world)]
    table[rank] = [float(memory[k]) for k in MEMORY_KEYS]
    flat = _gather([v for row in table for v in row], world)
    n = len(MEMORY_KEYS)
    return [
        dict(zip(MEMORY_KEYS, (int(v) for v in flat[r * n : (r + 1) * n]), strict=True))
        for r in range(world)
    ]


def run_training(cfg: dict[str, Any], session: Session) -> dict[str, Any]:
    """Train until cfg's epochs or max_steps; return the last metrics."""
    world, rank, device = session.world, session.rank, session.device
    torch.manual_seed(cfg["seed"])
    torch.set_num_threads(max(1, int(cfg.get("threads_per_worker", 1))))
    config = GPTConfig.from_dict(cfg["model"])
    seq_len = int(cfg["seq_len"])
    corpus = corpus_for(cfg, config.vocab_size)
    order = BatchOrder(len(corpus.train), cfg["batch_size"], cfg["seed"])
    per_rank = cfg["batch_size"] // world
    n_val = min(cfg["val_blocks"], len(corpus.val)) // world * world
    bf16 = use_bf16(cfg["precision"], device)
    model = build_parallel_model(
        config,
        cfg["strategy"],
        device,
        bf16=bf16,
        activation_checkpointing=cfg["activation_checkpointing"],
        cpu_offload=cfg["cpu_offload"],
        seed=cfg["seed"],
    )
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=cfg["lr"],
        betas=(0.9, 0.95),
        weight_decay=cfg["weight_decay"],
    )

    manifest = restore(session, model, optimizer, config, cfg)
    step = 0 if manifest is None else int(manifest["position"]["global_step"])
    starts = [] if manifest is None else list(manifest["starts"])
    curve = [] if manifest is None else [list(p) for p in manifest["loss_curve"]]
    starts.append(step)
    attempt = len(starts)
    if manifest is not None and manifest["data"]["fingerprint"] != corpus.fingerprint:
        if rank == 0:
            print("[raygpu] warning: the corpus differs from the checkpoint's")
    total_steps = cfg["epochs"] * order.steps_per_epoch
    if cfg.get("max_steps"):
        total_steps = min(total_steps, cfg["max_steps"])
    every = cfg.get("checkpoint_every") or order.steps_per_epoch
    flops = flops_per_token(config, seq_len)
    n_params = num_parameters(config)
    if rank == 0:
        what = "starting" if step == 0 else f"resuming at step {step}"
        print(
            f"[raygpu] {what}: {cfg['strategy']} over {world} worker(s) on {device}, "
            f"{n_params:,} parameters, bf16={bf16}, {len(corpus.train)} train blocks, "
            f"{order.steps_per_epoch} steps an epoch, to step {total_steps}"
        )

    metrics: dict[str, Any] = {}
    loss_sum, steps_done, t0 = 0.0, 0, time.perf_counter()
    while step < total_steps:
        epoch, in_epoch = order.position(step)
        x, y = batch(
            corpus.train, order.rank_indices(epoch, in_epoch, rank, world), device
        )
        for group in optimizer.param_groups:
            group["lr"] = cfg["lr"] * min(1.0, (step + 1) / max(1, cfg["warmup_steps"]))
        optimizer.zero_grad(set_to_none=True)
        with autocast(model, device, bf16):
            loss = lm_loss(model(x), y)
        loss.backward()
        if cfg["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        optimizer.step()
        step += 1
        loss_sum += float(loss.detach())
        steps_done += 1
        if step % every and step != total_steps:
            continue
        elapsed = time.perf_counter() - t0
        memory = rank_memory(model, optimizer)  # after the step: P, G and state held
        val_loss = (
            evaluate(model, corpus.val, session, per_rank, n_val) if n_val else math.nan
        )
        summed = _gather([loss_sum, steps_done], world)
        train_loss = summed[0] / (summed[1] or 1)
        memory_per_rank = _memory_per_rank(memory, rank, world)
        tokens = cfg["batch_size"] * seq_len * steps_done
        curve.append([step, train_loss])
        metrics = {
            "step": step,
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_perplexity": math.nan if math.isnan(val_loss) else math.exp(val_loss),
            "tokens_per_second": tokens / max(elapsed, 1e-9),
            "model_flops_per_second": tokens * flops / max(elapsed, 1e-9),
            "parameters": n_params,
            "world_size": world,
            "strategy": cfg["strategy"],
            "start_step": starts[-1],
            "attempt": attempt,
            "memory_per_rank": memory_per_rank,
        }
        save_checkpoint(
            session,
            model,
            optimizer,
            metrics,
            {
                "format": ckpt.FORMAT,
                "strategy": cfg["strategy"],
                "world_size": world,
                "model": config.to_dict(),
                "seq_len": seq_len,
                "batch_size": cfg["batch_size"],
                "seed": cfg["seed"],
                "data": data_record(cfg, corpus),
                "position": {
                    "global_step": step,
                    "epoch": order.position(step)[0],
                    "step_in_epoch": order.position(step)[1],
                },
                "starts": starts,
                "loss_curve": curve,
                "metrics": metrics,
            },
            ckpt.checkpoint_name(step, attempt),
        )
        loss_sum, steps_done, t0 = 0.0, 0, time.perf_counter()
    return metrics


def data_record(cfg: dict[str, Any], corpus) -> dict[str, Any]:
    """What a checkpoint says of its data; a prepared dataset by its URI and
    manifest digest, as train.py's checkpoints name theirs."""
    record = {"source": cfg["data_source"], "fingerprint": corpus.fingerprint}
    if cfg.get("data"):
        record |= {"uri": cfg["data"]["uri"], "manifest_sha256": corpus.fingerprint}
    return record


def save_checkpoint(
    session: Session, model, optimizer, metrics, manifest, name
) -> None:
    """Every rank writes its shard (into the checkpoint folder, or a staging
    folder it then publishes); once all have, rank 0 writes the manifest with
    every file's digest (ckpt.commit)."""
    folder = session.run.join(name)
    if session.publish is None:
        os.makedirs(folder.path, exist_ok=True)
        digests = ckpt.save_shard(folder.path, model, optimizer, session.rank)
    else:
        with tempfile.TemporaryDirectory(prefix="rg-lmckpt-") as tmp:
            digests = ckpt.save_shard(tmp, model, optimizer, session.rank)
            session.publish(metrics, tmp, name)
    ckpt.commit(folder, manifest, digests, session.rank, session.world)


# ---------------------------------------------------------------- the sessions


def local_session(run_dir: str, world: int, rank: int, device: torch.device) -> Session:
    """For a plain `torchrun` (benchmarks, the GPU check): checkpoints are written
    in place into `run_dir` on a filesystem every rank sees, or uploaded to it
    when it is on S3 (each rank its staging folder, as Ray Train's report does)."""
    run = parse_storage(run_dir, "--storage-path")
    if not run.is_remote:
        return Session(world, rank, device, run, None)

    def publish(metrics, folder, name):
        upload_dir(folder, run.join(name))

    return Session(world, rank, device, run, publish)


def train_func(config: dict[str, Any]) -> None:
    """One Ray Train worker: Train set up the process group (gloo or NCCL)."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()

    def publish(metrics, folder, name):
        checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)

    session = Session(
        world=ctx.get_world_size(),
        rank=ctx.get_world_rank(),
        device=ray.train.torch.get_device(),
        run=parse_storage(config["run_uri"], "--storage-path"),
        publish=publish,
    )
    run_training(config, session)
