"""Train the GPT decoder with Ray Train: FSDP2 (the default) or DDP over N workers.

The entry point for `ray job submit --working-dir ray_jobs -- python -m lm.train ...`.
Every `--checkpoint-every` steps (default: each epoch) every worker writes its
shard of a sharded checkpoint to the storage path; a rerun with the same storage
path and run name resumes from the newest good one, at any worker count. At the
end `result.json` goes beside the checkpoints, and with `--export` a consolidated
`export/` folder that a plain model (the serving side) loads. The text is the
standard library's sources, a text folder (`--data-dir`) or a token dataset that
prepare.py wrote (`--data`, verified before any worker starts).

    python -m lm.train --strategy fsdp --preset nano --num-workers 2 \\
        --max-steps 200 --storage-path /tmp/runs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from typing import Any

from lm import checkpoint as ckpt
from lm.data import (
    DEFAULT_MAX_BYTES,
    STDLIB,
    num_blocks,
    plan_corpus,
    split_documents,
    verify_tokens,
)
from lm.model import PRESETS, resolve_config
from lm.parallelize import PRECISIONS, STRATEGIES
from mlcore.controller import controller_env, controller_poll_interval
from mlcore.errors import (
    CheckpointError,
    DatasetUnavailable,
    JobInputError,
    StorageError,
    report_failure,
)
from mlcore.storage import (
    StoragePath,
    check_storage,
    is_remote_uri,
    parse_storage,
    write_text,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lm.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--strategy", default="fsdp", help=f"one of {STRATEGIES} (fsdp)")
    p.add_argument("--model", default="gpt", help="gpt (the only LM here)")
    p.add_argument("--preset", default="nano", help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--n-layer", type=int, default=None, help="blocks (preset's)")
    p.add_argument("--n-head", type=int, default=None, help="heads (preset's)")
    p.add_argument("--d-model", type=int, default=None, help="width (preset's)")
    p.add_argument(
        "--context", type=int, default=None, help="tokens a block (preset's)"
    )
    p.add_argument("--dropout", type=float, default=None, help="dropout (0)")
    p.add_argument("--num-workers", type=int, default=2, help="workers (2)")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per worker, NCCL")
    p.add_argument("--cpus-per-worker", type=int, default=1, help="CPUs (1)")
    p.add_argument("--epochs", type=int, default=1, help="passes over the data (1)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after (0: none)")
    p.add_argument("--batch-size", type=int, default=8, help="global blocks a step (8)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate")
    p.add_argument("--warmup-steps", type=int, default=10, help="linear warm-up (10)")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0, help="max norm (0: off)")
    p.add_argument("--precision", default="auto", help=f"one of {PRECISIONS}")
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--cpu-offload", action="store_true", help="FSDP state on the CPU")
    p.add_argument(
        "--data-dir", default=None, help="text folder or storage URI (stdlib)"
    )
    p.add_argument(
        "--data", default=None, help="prepare.py's tokens: folder or storage URI"
    )
    p.add_argument("--corpus-bytes", type=int, default=DEFAULT_MAX_BYTES)
    p.add_argument("--val-percent", type=int, default=5, help="of documents (5)")
    p.add_argument("--val-blocks", type=int, default=64, help="validated (64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--storage-path",
        default=os.environ.get("RAYGPU_STORAGE_PATH", "~/raygpu-runs"),
        help="local folder or s3://, gs://, abfs:// URI ($RAYGPU_STORAGE_PATH)",
    )
    p.add_argument("--run-name", default=None, help="the same name resumes")
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps (epoch)")
    p.add_argument("--max-failures", type=int, default=3, help="worker restarts (3)")
    p.add_argument("--keep-checkpoints", type=int, default=2, help="kept (2)")
    p.add_argument(
        "--convert-checkpoint",
        action="store_true",
        help="resume from a checkpoint of the other --strategy (resharded)",
    )
    p.add_argument("--export", action="store_true", help="write export/ at the end")
    args = p.parse_args(argv)
    try:
        validate(args)
    except JobInputError as exc:
        p.error(str(exc))
    return args


def validate(args: argparse.Namespace) -> None:
    """Check the flags and set args.config / args.seq_len; JobInputError names
    the flag. Counts the corpus's blocks (sizes only) to check the batch fits."""

    def positive(flag: str, value) -> None:
        if value is None or value <= 0:
            raise JobInputError(flag, f"must be a positive number (got {value})")

    if args.model != "gpt":
        raise JobInputError(
            "--model",
            f"{args.model!r} is not a language model: lm.train (--strategy fsdp) "
            "trains --model gpt; the image models train with --strategy ddp",
        )
    if args.strategy not in STRATEGIES:
        raise JobInputError(
            "--strategy",
            f"unknown {args.strategy!r}; choose one of {', '.join(STRATEGIES)}",
        )
    if args.precision not in PRECISIONS:
        raise JobInputError(
            "--precision",
            f"unknown {args.precision!r}; choose one of {', '.join(PRECISIONS)}",
        )
    for flag in (
        "num_workers",
        "cpus_per_worker",
        "epochs",
        "batch_size",
        "corpus_bytes",
    ):
        positive("--" + flag.replace("_", "-"), getattr(args, flag))
    positive("--keep-checkpoints", args.keep_checkpoints)
    positive("--val-blocks", args.val_blocks)
    for flag in ("max_steps", "checkpoint_every", "warmup_steps"):
        if getattr(args, flag) < 0:
            raise JobInputError("--" + flag.replace("_", "-"), "must be >= 0")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise JobInputError("--lr", f"must be a positive finite number (got {args.lr})")
    if not 0 < args.val_percent < 100:
        raise JobInputError(
            "--val-percent", f"must be in 1-99 (got {args.val_percent})"
        )
    if args.batch_size % args.num_workers:
        raise JobInputError(
            "--batch-size",
            f"the global batch ({args.batch_size}) must divide evenly over "
            f"--num-workers ({args.num_workers})",
        )
    if args.cpu_offload and (args.strategy != "fsdp" or not args.use_gpu):
        raise JobInputError("--cpu-offload", "needs --strategy fsdp and --use-gpu")
    if args.max_failures < -1:
        raise JobInputError("--max-failures", "must be -1 (unlimited) or >= 0")
    args.config, args.seq_len = resolve_config(
        args.preset, args.n_layer, args.n_head, args.d_model, args.context, args.dropout
    )
    if args.run_name is None:
        args.run_name = (
            f"gpt-{args.preset}-{args.strategy}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", args.run_name):
        raise JobInputError(
            "--run-name",
            "use 1-100 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit",
        )
    parse_storage(args.storage_path)
    args.data_digest = None  # the prepared manifest's, once the driver verified it
    if args.data is not None:
        if args.data_dir is not None:
            raise JobInputError(
                "--data", "is the text already tokenised: give --data or --data-dir"
            )
        parse_storage(args.data, "--data")  # read and verified by run()
        return
    args.data_dir = args.data_dir or STDLIB
    if is_remote_uri(args.data_dir):
        parse_storage(args.data_dir, "--data-dir")
    else:
        try:
            docs = plan_corpus(args.data_dir, args.corpus_bytes)
        except DatasetUnavailable as exc:
            raise JobInputError(
                "--data-dir", str(exc).removeprefix("--data-dir ")
            ) from None
        train_docs, val_docs = split_documents(docs, args.val_percent)
        n_train, n_val = (
            num_blocks(train_docs, args.seq_len),
            num_blocks(val_docs, args.seq_len),
        )
        if n_train < args.batch_size:
            raise JobInputError(
                "--batch-size",
                f"the global batch ({args.batch_size} blocks) is larger than the "
                f"training split ({n_train} blocks of {args.seq_len + 1} tokens); "
                "lower it, raise --corpus-bytes or shorten --context",
            )
        if n_val < args.num_workers:
            raise JobInputError(
                "--corpus-bytes",
                f"the validation split has {n_val} blocks, fewer than the "
                f"{args.num_workers} workers; raise it or --val-percent",
            )


def check_resumable(storage: StoragePath, args: argparse.Namespace) -> str | None:
    """Before any worker starts: the checkpoint a rerun resumes from, or None.

    The newest checkpoint with its manifest and every file (size and digest;
    size only on S3, where the workers check digests once they hold the files);
    it must fit the flags (CheckpointMismatch names it and the flag). When the run
    has checkpoints and none is complete, CheckpointError names each and why."""
    run = storage.join(args.run_name)
    try:
        found = ckpt.list_checkpoints(run)
    except OSError as exc:
        raise StorageError(f"run folder {run.uri} cannot be listed: {exc}") from None
    problems = []
    for _, _, folder in found:
        try:
            # Local files are hashed here too; remote ones by the workers.
            manifest = (
                ckpt.verify_remote(folder)
                if folder.is_remote
                else ckpt.verify_local(folder.path)
            )
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        ckpt.check_compatible(
            manifest, folder.uri, args.config, train_config(args, storage)
        )
        return folder.uri
    if problems:
        raise CheckpointError(
            f"run {run.uri} has {len(problems)} checkpoint(s) and none is usable: "
            + "; ".join(problems)
            + ". Delete the run folder to start over, or choose another --run-name."
        )
    return None


def train_config(args: argparse.Namespace, storage: StoragePath) -> dict[str, Any]:
    return {
        "model": args.config.to_dict(),
        "seq_len": args.seq_len,
        "strategy": args.strategy,
        "convert": args.convert_checkpoint,
        "precision": args.precision,
        "activation_checkpointing": args.activation_checkpointing,
        "cpu_offload": args.cpu_offload,
        "data_source": args.data or args.data_dir,
        "data": {"uri": args.data, "digest": args.data_digest} if args.data else None,
        "corpus_bytes": args.corpus_bytes,
        "val_percent": args.val_percent,
        "val_blocks": args.val_blocks,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "warmup_steps": args.warmup_steps,
        "weight_decay": args.weight_decay,
        "grad_clip": args.grad_clip,
        "seed": args.seed,
        "checkpoint_every": args.checkpoint_every,
        "threads_per_worker": args.cpus_per_worker,
        "run_uri": storage.join(args.run_name).uri,
    }


def build_trainer(args: argparse.Namespace, storage: StoragePath):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from lm.loop import train_func

    return TorchTrainer(
        train_func,
        train_loop_config=train_config(args, storage),
        scaling_config=ScalingConfig(
            num_workers=args.num_workers,
            use_gpu=args.use_gpu,
            resources_per_worker={"CPU": args.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=args.run_name,
            storage_path=storage.path,
            storage_filesystem=storage.filesystem if storage.is_remote else None,
            failure_config=FailureConfig(max_failures=args.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=args.keep_checkpoints),
        ),
    )


def prune_strays(run: StoragePath, kept: list[str]) -> list[str]:
    """Delete checkpoint folders Train does not keep (a worker uploaded them
    before it or the driver died, so Train's retention never saw them)."""
    keep = {p.rstrip("/") for p in kept}
    removed = []
    for _, _, folder in ckpt.list_checkpoints(run):
        if folder.path.rstrip("/") not in keep:
            run.filesystem.delete_dir(folder.path)
            removed.append(folder.path.rsplit("/", 1)[-1])
    return removed


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train; write result.json (and export/ with --export); return the result."""
    poll_interval_s = controller_poll_interval()
    storage = parse_storage(args.storage_path)
    check_storage(storage)
    if args.data:
        data = verify_tokens(
            args.data, args.config, args.seq_len, args.batch_size, args.num_workers
        )
        args.data, args.data_digest = data.root.uri, data.digest
    resume_from = check_resumable(storage, args)
    if resume_from:
        print(f"[raygpu] run {args.run_name} resumes from {resume_from}")
    started = time.time()
    with controller_env(poll_interval_s):
        result = build_trainer(args, storage).fit()
    if result.checkpoint is None:
        raise CheckpointError("training finished without a checkpoint")
    run_dir = storage.join(args.run_name)
    kept = [c.path for c, _ in (result.best_checkpoints or [])] + [
        result.checkpoint.path
    ]
    for name in prune_strays(run_dir, kept):
        print(f"[raygpu] removed stray checkpoint {name} (beyond --keep-checkpoints)")
    final = run_dir.join(result.checkpoint.path.rstrip("/").rsplit("/", 1)[-1])
    manifest = ckpt.verify_remote(final)
    summary = {
        "run_name": args.run_name,
        "storage_path": storage.uri,
        "checkpoint": final.uri,
        "metrics": result.metrics or manifest["metrics"],
        "loss_curve": manifest["loss_curve"],
        "starts": manifest["starts"],
        "config": {
            k: v
            for k, v in vars(args).items()
            if not k.startswith("_") and k != "config"
        },
        "model": args.config.to_dict(),
        "data": {"uri": args.data, "manifest_sha256": args.data_digest}
        if args.data
        else None,
        "wall_seconds": round(time.time() - started, 2),
    }
    if args.export:
        ckpt.export_to_storage(final, run_dir.join("export"))
        summary["export"] = run_dir.join("export").uri
    write_text(run_dir.join("result.json"), json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = run(args)
    except Exception as exc:  # one line on stderr (mlcore.errors.failure_line)
        # flags that do not fit a checkpoint or the data, found late: usage
        return report_failure(exc, usage=(ckpt.CheckpointMismatch, JobInputError))
    m = summary["metrics"]
    print(f"checkpoint={summary['checkpoint']}")
    print(f"result={summary['storage_path']}/{args.run_name}/result.json")
    if "export" in summary:
        print(f"export={summary['export']}")
    print(f"val_perplexity={m['val_perplexity']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
