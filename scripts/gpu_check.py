"""GPU smoke check of the training path: CUDA, NCCL, bf16 autocast, checkpoints.

Run it on a GPU node (a new pool, a new image) before trusting it with a job,
from the repository root, with ray_jobs/ on PYTHONPATH (where its modules are
top-level, as on the cluster):

    PYTHONPATH=ray_jobs python scripts/gpu_check.py --out gpu_check.json

It needs torch only (not Ray): it runs the same models, data and checkpoint code as
ray_jobs/train.py, inside a one-process NCCL DDP group, and reports throughput in
bf16 and fp32, whether bf16 training reaches the accuracy bar on digits, and
whether a checkpoint written from the GPU loads on a CPU with the same answers.
Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

try:
    from mlcore import checkpointing
    from mlcore.data import load_dataset
    from mlcore.models import ModelSpec, build_model
except ModuleNotFoundError as exc:
    if exc.name != "mlcore":
        raise
    sys.exit(
        "error: mlcore is not importable: run from the repository root as "
        "PYTHONPATH=ray_jobs python scripts/gpu_check.py"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def throughput(model_name: str, bf16: bool, batch: int, steps: int) -> float:
    """Training samples/s of a DDP-wrapped model on random 3x32x32 batches."""
    dev = torch.device("cuda", 0)
    spec = ModelSpec(model_name, (3, 32, 32), 10)
    model = DDP(build_model(spec).to(dev), device_ids=[0])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    loss_fn = nn.CrossEntropyLoss()
    warmup = 5
    for i in range(steps + warmup):
        if i == warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def digits_bf16(epochs: int) -> dict:
    """Train the MLP on digits in bf16 under DDP/NCCL; test accuracy on the GPU."""
    dev = torch.device("cuda", 0)
    ds = load_dataset("digits")
    spec = ModelSpec("mlp", ds.image_shape, ds.num_classes)
    torch.manual_seed(0)
    model = DDP(build_model(spec).to(dev), device_ids=[0])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.from_numpy(ds.train.x).to(dev), torch.from_numpy(ds.train.y).to(dev)
    for _ in range(epochs):
        perm = torch.randperm(len(x), device=dev)
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    model.eval()
    tx = torch.from_numpy(ds.test.x).to(dev)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        gpu_pred = model(tx).argmax(1).cpu()
    acc = float((gpu_pred.numpy() == ds.test.y).mean())
    # the checkpoint written from the GPU model loads on the CPU (serving's path)
    with tempfile.TemporaryDirectory() as tmp:
        checkpointing.save(tmp, model.module, opt, epochs - 1, spec, {"acc": acc})
        cpu_model, _ = checkpointing.load_model(tmp)
    with torch.no_grad():
        cpu_pred = cpu_model(torch.from_numpy(ds.test.x)).argmax(1)
    agree = float((cpu_pred == gpu_pred).float().mean())
    return {"bf16_test_accuracy": acc, "gpu_cpu_prediction_agreement": agree}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=256)
    args = p.parse_args()
    report: dict = {
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
    }
    if not torch.cuda.is_available():
        print("error: CUDA is not available to torch on this machine", file=sys.stderr)
        return 1
    report.update(
        device=torch.cuda.get_device_name(0),
        cuda=torch.version.cuda,
        bf16_supported=torch.cuda.is_bf16_supported(),
        nccl_available=dist.is_nccl_available(),
        nccl=".".join(map(str, torch.cuda.nccl.version())),
    )
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    dist.init_process_group(
        "nccl", rank=0, world_size=1, device_id=torch.device("cuda", 0)
    )
    t = torch.ones(4, device="cuda")
    dist.all_reduce(t)
    report["nccl_all_reduce_ok"] = bool(t.sum().item() == 4)
    for name in ("cnn", "resnet18"):
        for bf16 in (False, True):
            sps = throughput(name, bf16, args.batch, args.steps)
            report[f"{name}_{'bf16' if bf16 else 'fp32'}_samples_per_s"] = round(sps)
    report.update(digits_bf16(epochs=15))
    dist.destroy_process_group()
    ok = (
        report["bf16_supported"]
        and report["nccl_all_reduce_ok"]
        and report["bf16_test_accuracy"] >= 0.95
        and report["gpu_cpu_prediction_agreement"] >= 0.99
    )
    report["ok"] = bool(ok)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
