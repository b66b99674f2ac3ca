"""Data-parallel training with Ray Train's TorchTrainer (DDP over N workers).

The entry point for `ray job submit --working-dir ray_jobs -- python train.py ...`.
CPU workers use gloo, GPU workers NCCL (with bf16 autocast where the GPU has it).
Every epoch rank 0 writes a checkpoint to the storage path and every worker reports
its train loss and validation accuracy. A rerun with the same storage path and run
name resumes from the latest good checkpoint. At the end the driver evaluates the
final checkpoint on the test split and writes `result.json` beside the checkpoints.

With --data (a dataset prepare.py wrote) the driver first verifies its manifest
(schema, every shard's checksum), then Ray Train streams the train and val splits
through Ray Data (mlcore.ingest); checkpoints carry the normalisation statistics
and the manifest's digest. Ray Data needs CPUs beside the workers': on a small
machine give the workers fractions (--cpus-per-worker 0.5).

    python train.py --num-workers 2 --dataset digits --storage-path /tmp/runs
    python train.py --num-workers 2 --cpus-per-worker 0.5 --data /tmp/prepared/d
    python train.py --model gpt --strategy fsdp --preset nano   # lm.train, FSDP2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mlcore import checkpointing
from mlcore import prepared as prep
from mlcore.allocator import keep_freed_memory
from mlcore.checkpointing import checkpoint_name
from mlcore.controller import (
    POLL_INTERVAL_ENV,
    controller_env,
    controller_poll_interval,
)
from mlcore.data import DATASETS, load_dataset
from mlcore.errors import CheckpointError, JobInputError, report_failure
from mlcore.loop import evaluate, split_tensors, train_epochs
from mlcore.marks import loop_hook, mark
from mlcore.models import MODELS, ModelSpec, build_model
from mlcore.resume import check_resumable, prune_stray_checkpoints, restore
from mlcore.storage import StoragePath, check_storage, parse_storage, write_text

__all__ = [
    "POLL_INTERVAL_ENV",
    "check_resumable",
    "controller_env",
    "controller_poll_interval",
    "main",
    "prune_stray_checkpoints",
    "restore",
]

PRECISIONS = ("auto", "fp32", "bf16")


# ------------------------------------------------------------------ train_func


def train_func(config: dict[str, Any]) -> None:
    """One data-parallel worker. Knows nothing of storage or the cluster."""
    import ray.train
    import ray.train.torch

    hook = loop_hook()  # timing marks when a benchmark asks for them
    hook.worker_start()
    keep_freed_memory()  # this thread is not the process's main one: see allocator
    torch.manual_seed(config["seed"])
    torch.set_num_threads(max(1, int(config.get("threads_per_worker", 1))))
    ctx = ray.train.get_context()
    world, rank = ctx.get_world_size(), ctx.get_world_rank()
    device = ray.train.torch.get_device()
    use_bf16 = config["precision"] == "bf16" or (
        config["precision"] == "auto"
        and device.type == "cuda"
        and torch.cuda.is_bf16_supported()
    )

    data = config.get("data")
    streamed = data and not data["in_memory"]
    if data:  # a prepared dataset, streamed (mlcore.ingest) or held in memory
        spec = ModelSpec(config["model"], tuple(data["shape"]), data["num_classes"])
        if not streamed:
            from mlcore.ingest import load_in_memory

            ds = load_in_memory(data)
    else:
        ds = load_dataset(config["dataset"], config.get("data_dir"), config["download"])
        spec = ModelSpec(config["model"], ds.image_shape, ds.num_classes)
    model = build_model(spec)

    start_epoch, starts, optim_state = 0, [], None
    state = restore(ray.train.get_checkpoint(), config.get("run_uri"))
    if state is not None:
        meta, model_state, optim_state = state
        model.load_state_dict(model_state)
        start_epoch = int(meta["epoch"]) + 1
        starts = list(meta.get("starts", []))
    starts.append(start_epoch)
    attempt = len(starts)
    if rank == 0:
        how = f"resuming after epoch {start_epoch - 1}" if start_epoch else "starting"
        print(f"[raygpu] {how}: {world} worker(s), device {device}, bf16={use_bf16}")

    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    if optim_state is not None:
        optimizer.load_state_dict(optim_state)

    per_worker_batch = config["batch_size"] // world
    val_x = val_y = val_batches = None
    extra = {"starts": starts, "config": config}
    if data:
        extra |= {
            "normalisation": data["normalisation"],
            "data": {"uri": data["uri"], "manifest_sha256": data["digest"]},
        }
    if streamed:
        from mlcore.ingest import shard_batches

        train_loader, val_batches = shard_batches(
            data, per_worker_batch, config["seed"] * 1000 + rank, start_epoch
        )
    else:
        train_loader = ray.train.torch.prepare_data_loader(
            DataLoader(
                split_tensors(ds.train),
                batch_size=per_worker_batch,
                shuffle=True,
                drop_last=False,
            )
        )
        # Each worker validates its own shard; counts are summed across workers.
        val_x = torch.from_numpy(ds.val.x[rank::world]).to(device)
        val_y = torch.from_numpy(ds.val.y[rank::world]).to(device)
    unwrapped = model.module if hasattr(model, "module") else model

    def report(epoch: int, loop_metrics: dict[str, float]) -> None:
        metrics = {**loop_metrics, "start_epoch": start_epoch, "attempt": attempt}
        with tempfile.TemporaryDirectory(prefix="rg-ckpt-") as tmp:
            ckpt = None
            if rank == 0:
                checkpointing.save(
                    tmp,
                    unwrapped,
                    optimizer,
                    epoch,
                    spec,
                    metrics,
                    extra=extra,
                )
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(
                metrics,
                checkpoint=ckpt,
                checkpoint_dir_name=checkpoint_name(epoch, attempt),
            )

    hook.worker_ready(rank)
    train_epochs(
        model,
        optimizer,
        train_loader,
        val_x,
        val_y,
        range(start_epoch, config["epochs"]),
        world=world,
        device=device,
        use_bf16=use_bf16,
        report=report,
        hook=hook,
        val_batches=val_batches,
    )


# ------------------------------------------------------------------- the trainer


def build_trainer(
    args: argparse.Namespace, storage: StoragePath, data: prep.Prepared | None = None
):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    config = {
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "download": args.download,
        "model": args.model,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "precision": args.precision,
        "threads_per_worker": max(1, int(args.cpus_per_worker)),
        # where to look for checkpoints Train has not registered (see restore)
        "run_uri": storage.join(args.run_name).uri,
    }
    datasets = None
    if data is not None:
        from mlcore.ingest import trainer_inputs

        config["data"], datasets = trainer_inputs(data, args.data_in_memory)
    resources = {"CPU": args.cpus_per_worker}
    return TorchTrainer(
        train_func,
        train_loop_config=config,
        datasets=datasets,
        scaling_config=ScalingConfig(
            num_workers=args.num_workers,
            use_gpu=args.use_gpu,
            resources_per_worker=resources,
        ),
        run_config=RunConfig(
            name=args.run_name,
            storage_path=storage.path,
            storage_filesystem=storage.filesystem if storage.is_remote else None,
            failure_config=FailureConfig(max_failures=args.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=args.keep_checkpoints),
        ),
    )


def evaluate_checkpoint(
    checkpoint, dataset: str, data_dir, download: bool, data=None
) -> dict:
    """Accuracy and loss of a checkpoint on the test split, in this process.

    With `data` (a verified prepared dataset) the test split's raw rows are
    normalised with the checkpoint's own statistics, as the serving app does."""
    with checkpoint.as_directory() as directory:
        model, meta = checkpointing.load_model(directory)
    if data is None:
        ds = load_dataset(dataset, data_dir, download)
        batches = [(ds.test.x, ds.test.y)]
    else:
        norm = prep.Normalisation.from_dict(meta["normalisation"])
        batches = ((norm.apply(x), y) for x, y in prep.iter_split(data, "test"))
    correct = total = 0
    loss_sum = 0.0
    for xb, yb in batches:
        x, y = torch.from_numpy(xb), torch.from_numpy(yb)
        c, n = evaluate(model, x, y)
        correct, total = correct + c, total + n
        with torch.no_grad():
            loss_sum += float(nn.functional.cross_entropy(model(x), y, reduction="sum"))
    return {
        "test_accuracy": correct / max(total, 1),
        "test_loss": loss_sum / max(total, 1),
        "test_samples": total,
        "epoch": meta["epoch"],
    }


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="train.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--num-workers", type=int, default=2, help="DDP workers (2)")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per worker, NCCL")
    p.add_argument(
        "--cpus-per-worker", type=float, default=1, help="CPUs, may be 0.5 (1)"
    )
    p.add_argument("--epochs", type=int, default=10, help="epochs in total (10)")
    p.add_argument("--batch-size", type=int, default=64, help="global batch (64)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--dataset", default="digits", help=f"one of {DATASETS}")
    p.add_argument("--data-dir", default=None, help="where mnist's files are")
    p.add_argument("--download", action="store_true", help="allow mnist download")
    p.add_argument(
        "--data", help="a prepared dataset (prepare.py): folder or storage URI"
    )
    p.add_argument(
        "--data-in-memory",
        action="store_true",
        help="with --data: each worker loads it whole instead of streaming it",
    )
    p.add_argument("--model", default="mlp", help=f"one of {MODELS}, or gpt")
    p.add_argument(
        "--strategy",
        default="ddp",
        choices=("ddp", "fsdp"),
        help="ddp (the image models); fsdp shards --model gpt (lm.train)",
    )
    p.add_argument("--precision", default="auto", help=f"one of {PRECISIONS}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--storage-path",
        default=os.environ.get("RAYGPU_STORAGE_PATH", "~/raygpu-runs"),
        help="local folder or s3://, gs://, abfs:// URI ($RAYGPU_STORAGE_PATH)",
    )
    p.add_argument(
        "--run-name",
        default=None,
        help="run folder under the storage path; the same name resumes",
    )
    p.add_argument("--max-failures", type=int, default=3, help="worker restarts (3)")
    p.add_argument("--keep-checkpoints", type=int, default=2, help="kept (2)")
    args = p.parse_args(argv)
    try:
        validate(args)
    except JobInputError as exc:
        p.error(str(exc))
    return args


def validate(args: argparse.Namespace) -> None:
    def positive(flag: str, value) -> None:
        if value is None or value <= 0:
            raise JobInputError(flag, f"must be a positive number (got {value})")

    positive("--num-workers", args.num_workers)
    positive("--cpus-per-worker", args.cpus_per_worker)
    positive("--epochs", args.epochs)
    positive("--batch-size", args.batch_size)
    if not (args.lr > 0 and np.isfinite(args.lr)):
        raise JobInputError("--lr", f"must be a positive finite number (got {args.lr})")
    if args.batch_size < args.num_workers:
        raise JobInputError(
            "--batch-size",
            f"the global batch ({args.batch_size}) must be at least the number of "
            f"workers ({args.num_workers})",
        )
    if args.dataset not in DATASETS:
        raise JobInputError(
            "--dataset",
            f"unknown {args.dataset!r}; choose one of {', '.join(DATASETS)}",
        )
    if args.model not in MODELS:
        raise JobInputError(
            "--model", f"unknown {args.model!r}; choose one of {', '.join(MODELS)}"
        )
    if args.precision not in PRECISIONS:
        raise JobInputError(
            "--precision",
            f"unknown {args.precision!r}; choose one of {', '.join(PRECISIONS)}",
        )
    if args.max_failures < -1:
        raise JobInputError("--max-failures", "must be -1 (unlimited) or >= 0")
    positive("--keep-checkpoints", args.keep_checkpoints)
    if args.data is not None:
        parse_storage(args.data, "--data")
    elif args.data_in_memory:
        raise JobInputError("--data-in-memory", "goes with --data (a prepared dataset)")
    if args.run_name is None:
        what = "prepared" if args.data else args.dataset
        args.run_name = f"{what}-{args.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", args.run_name):
        raise JobInputError(
            "--run-name",
            "use 1-100 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit",
        )
    parse_storage(args.storage_path)  # raises JobInputError on a malformed URI


def run(args: argparse.Namespace) -> dict:
    """Train, evaluate on the test split, write result.json; return the result."""
    poll_interval_s = controller_poll_interval()
    from ray.train import Checkpoint

    storage = parse_storage(args.storage_path)
    check_storage(storage)
    data = None
    if args.data:
        from mlcore.ingest import open_verified

        data = open_verified(args.data, args.num_workers, args.cpus_per_worker)
    resume_from = check_resumable(storage, args.run_name)
    if resume_from:
        print(f"[raygpu] run {args.run_name} resumes from {resume_from}")
    started = time.time()
    mark("fit_start")
    with controller_env(poll_interval_s):
        result = build_trainer(args, storage, data).fit()
    mark("fit_end")
    if result.error is not None:  # pragma: no cover - fit() raises in V2
        raise RuntimeError(f"training failed: {result.error}")
    if result.checkpoint is None:
        raise CheckpointError("training finished without a checkpoint")
    kept = [c.path for c, _ in (result.best_checkpoints or [])] + [
        result.checkpoint.path
    ]
    for name in prune_stray_checkpoints(storage, args.run_name, kept):
        print(f"[raygpu] removed stray checkpoint {name} (beyond --keep-checkpoints)")
    checkpoint = Checkpoint(
        path=result.checkpoint.path, filesystem=result.checkpoint.filesystem
    )
    metrics = evaluate_checkpoint(
        checkpoint, args.dataset, args.data_dir, args.download, data
    )
    summary = {
        "run_name": args.run_name,
        "storage_path": storage.uri,
        "checkpoint": checkpointing.checkpoint_uri(storage, result.checkpoint.path),
        "metrics": {**(result.metrics or {}), **metrics},
        "config": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "data": {"uri": data.root.uri, "manifest_sha256": data.digest}
        if data
        else None,
        "wall_seconds": round(time.time() - started, 2),
    }
    write_text(
        storage.join(args.run_name, "result.json"), json.dumps(summary, indent=2)
    )
    return summary


def lm_requested(argv: list[str]) -> bool:
    """True when the flags ask for the language model (lm.train trains it)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model")
    pre.add_argument("--strategy", default="ddp")
    known, _ = pre.parse_known_args(argv)
    return known.model == "gpt" or known.strategy == "fsdp"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if lm_requested(argv):
        from lm.train import main as lm_main

        return lm_main(argv)
    mark("driver_start")
    args = parse_args(argv)
    try:
        summary = run(args)
    except Exception as exc:  # one line on stderr (mlcore.errors.failure_line)
        return report_failure(exc)
    m = summary["metrics"]
    print(f"checkpoint={summary['checkpoint']}")
    print(f"result={summary['storage_path']}/{args.run_name}/result.json")
    print(f"test_accuracy={m['test_accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
