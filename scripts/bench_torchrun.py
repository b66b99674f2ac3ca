"""Plain DDP training under `torchrun`: the baseline for Ray Train in the benchmark.

    torchrun --nproc_per_node 2 scripts/bench_torchrun.py --model cnn \\
        --dataset synthetic --epochs 3 --batch-size 64 --out /tmp/ckpt

The same work as `train.py`'s `train_func`: the same dataset split, model, seed,
Adam, global batch (split over the ranks), DistributedSampler, per-epoch
validation on each rank's shard with an all-reduce of the counts, a checkpoint
written by rank 0 after every epoch (mlcore.checkpointing), and the same
allocator settings (mlcore.allocator). Without Ray: gloo process group, no
controller, no reporting. Timing marks go to $RAYGPU_BENCH_MARKS like train.py's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

RAY_JOBS = Path(__file__).resolve().parents[1] / "ray_jobs"
sys.path.insert(0, str(RAY_JOBS))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torch.utils.data.distributed import DistributedSampler  # noqa: E402

from mlcore import checkpointing  # noqa: E402
from mlcore.allocator import keep_freed_memory, thread_page_faults  # noqa: E402
from mlcore.data import load_dataset  # noqa: E402
from mlcore.models import ModelSpec, build_model  # noqa: E402
from train import (  # noqa: E402
    checkpoint_name,
    evaluate,
    mark,
    mark_epoch_end,
    split_tensors,
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mlp")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64, help="global batch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--out", required=True, help="checkpoint folder")
    args = p.parse_args()

    mark("worker_start")
    keep_freed_memory()  # as train_func does: the same allocator on both sides
    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    ds = load_dataset(args.dataset)
    spec = ModelSpec(args.model, ds.image_shape, ds.num_classes)
    model = DistributedDataParallel(build_model(spec))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    train_set = split_tensors(ds.train)
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank)
    loader = DataLoader(train_set, batch_size=args.batch_size // world, sampler=sampler)
    val_x = torch.from_numpy(ds.val.x[rank::world])
    val_y = torch.from_numpy(ds.val.y[rank::world])
    mark("worker_ready", rank=rank)

    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        model.train()
        loss_sum, batches, samples = 0.0, 0, 0
        faults0 = thread_page_faults()
        t0 = time.perf_counter()
        for xb, yb in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            if batches == 0 and epoch == 0:
                mark("first_step", rank=rank)
            loss_sum += float(loss.detach())
            batches += 1
            samples += len(xb)
        elapsed = time.perf_counter() - t0
        mark_epoch_end(rank, epoch, samples, elapsed, batches, faults0)
        correct, total = evaluate(model, val_x, val_y)
        stats = torch.tensor(
            [loss_sum, batches, correct, total, samples], dtype=torch.float64
        )
        dist.all_reduce(stats)
        if rank == 0:
            metrics = {
                "epoch": epoch,
                "train_loss": float(stats[0] / max(stats[1], 1)),
                "val_accuracy": float(stats[2] / max(stats[3], 1)),
            }
            with tempfile.TemporaryDirectory(prefix="rg-ckpt-") as tmp:
                checkpointing.save(tmp, model.module, optimizer, epoch, spec, metrics)
                dest = os.path.join(args.out, checkpoint_name(epoch, 1))
                shutil.copytree(tmp, dest, dirs_exist_ok=True)
        dist.barrier()
        mark("reported", rank=rank, epoch=epoch)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
