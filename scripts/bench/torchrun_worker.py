"""Plain DDP training under `torchrun`: the baseline for Ray Train in the benchmark.

    PYTHONPATH=ray_jobs:. torchrun --nproc_per_node 2 \\
        -m scripts.bench.torchrun_worker --model cnn --dataset synthetic \\
        --epochs 3 --batch-size 64 --out /tmp/ckpt

The same work as `train.py`'s `train_func`, through the same loop function
(mlcore.loop.train_epochs): the same dataset split, model, seed, Adam, global
batch (split over the ranks), DistributedSampler, per-epoch validation on each
rank's shard with an all-reduce of the counts, a checkpoint written by rank 0
after every epoch (mlcore.checkpointing), and the same allocator settings
(mlcore.allocator). Without Ray: gloo process group, no controller, no
reporting. Timing marks go to $RAYGPU_BENCH_MARKS like train.py's (mlcore.marks).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from mlcore import checkpointing
from mlcore.allocator import keep_freed_memory
from mlcore.data import load_dataset
from mlcore.loop import split_tensors, train_epochs
from mlcore.marks import loop_hook
from mlcore.models import ModelSpec, build_model


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

    hook = loop_hook()
    hook.worker_start()
    keep_freed_memory()  # as train_func does: the same allocator on both sides
    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    ds = load_dataset(args.dataset)
    spec = ModelSpec(args.model, ds.image_shape, ds.num_classes)
    model = DistributedDataParallel(build_model(spec))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    train_set = split_tensors(ds.train)
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank)
    loader = DataLoader(train_set, batch_size=args.batch_size // world, sampler=sampler)
    val_x = torch.from_numpy(ds.val.x[rank::world])
    val_y = torch.from_numpy(ds.val.y[rank::world])

    def report(epoch: int, metrics: dict[str, float]) -> None:
        if rank == 0:
            name = checkpointing.checkpoint_name(epoch, 1)
            with tempfile.TemporaryDirectory(prefix="rg-ckpt-") as tmp:
                checkpointing.save(tmp, model.module, optimizer, epoch, spec, metrics)
                dest = os.path.join(args.out, name)
                shutil.copytree(tmp, dest, dirs_exist_ok=True)
        dist.barrier()

    hook.worker_ready(rank)
    train_epochs(
        model,
        optimizer,
        loader,
        val_x,
        val_y,
        range(args.epochs),
        world=world,
        device=torch.device("cpu"),
        use_bf16=False,
        report=report,
        hook=hook,
    )
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
