"""The same training loop without Ray: one process, or one per rank under torchrun.

    torchrun --nproc-per-node 2 -m lm.local --strategy fsdp --preset nano \\
        --max-steps 50 --storage-path /tmp/runs --run-name plain

Takes lm.train's flags (storage and run name say where checkpoints go: a
filesystem every rank sees, or S3; --num-workers is the launcher's world size). The
benchmark's baseline for Ray Train and the GPU check use it; needs torch only.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from lm.loop import local_session, run_training
from lm.train import parse_args, train_config
from mlcore.storage import check_storage, parse_storage


def main(argv: list[str] | None = None) -> int:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args([*argv, f"--num-workers={world}"])
    if args.use_gpu:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    backend = "nccl" if args.use_gpu else "gloo"
    if "MASTER_ADDR" in os.environ:
        dist.init_process_group(
            backend, rank=rank, world_size=world, timeout=timedelta(minutes=10)
        )
    else:  # one process: FSDP still wants a process group (and a mesh)
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    storage = parse_storage(args.storage_path)
    check_storage(storage)
    session = local_session(storage.join(args.run_name).uri, world, rank, device)
    try:
        metrics = run_training(train_config(args, storage), session)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        print("metrics=" + json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
