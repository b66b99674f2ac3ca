"""The compression benchmark's models, trained here, and compress.py run on them.

    PYTHONPATH=ray_jobs:. python -m scripts.bench.compress_models --work DIR \\
        --seeds 0,1,2 --rounds 3 --seconds 1

For each seed: the digits MLP and the digits CNN trained in this process (one
worker, the loop train.py runs: mlcore.loop.train_epochs) and saved in train.py's
checkpoint format, then compress.py on each (timings for the first seed only:
accuracy and size are what the other seeds are for). Also the CNN on 3x32x32
(freshly initialised: the serving benchmark's model, for speed, not accuracy),
compressed with timings. Prints one line `RGJSON {...}`: every report, and the
3x32x32 CNN's checkpoint for the Serve rounds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

TRAIN = {"epochs": 10, "batch_size": 64, "lr": 1e-3}


def train_checkpoint(
    folder: Path, model: str, dataset: str, seed: int, epochs: int = TRAIN["epochs"]
) -> Path:
    """Train `model` on `dataset` in this process and save it as train.py does
    (the run's config in meta.json, so compress.py finds its test split)."""
    import torch
    from torch.utils.data import DataLoader

    from mlcore import checkpointing
    from mlcore.data import load_dataset
    from mlcore.loop import split_tensors, train_epochs
    from mlcore.models import ModelSpec, build_model

    # One thread, as train.py's workers have one each by default: on a busy
    # 2-core machine more of them mostly wait on each other.
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    ds = load_dataset(dataset)
    spec = ModelSpec(model, ds.image_shape, ds.num_classes)
    net = build_model(spec)
    optimizer = torch.optim.Adam(net.parameters(), lr=TRAIN["lr"])
    loader = DataLoader(
        split_tensors(ds.train), batch_size=TRAIN["batch_size"], shuffle=True
    )
    metrics: dict[str, Any] = {}
    train_epochs(
        net,
        optimizer,
        loader,
        torch.from_numpy(ds.val.x),
        torch.from_numpy(ds.val.y),
        range(epochs),
        world=1,
        device=torch.device("cpu"),
        use_bf16=False,
        report=lambda epoch, m: metrics.update(m),
    )
    folder.mkdir(parents=True, exist_ok=True)
    config = {"dataset": dataset, "model": model, "seed": seed, **TRAIN}
    checkpointing.save(
        str(folder), net, optimizer, epochs - 1, spec, metrics, {"config": config}
    )
    return folder


def fresh_checkpoint(folder: Path, model: str, shape: tuple[int, int, int]) -> Path:
    """An untrained model saved in the checkpoint format (speed only)."""
    import torch

    from mlcore import checkpointing
    from mlcore.models import ModelSpec, build_model

    torch.manual_seed(0)
    spec = ModelSpec(model, shape, 10)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"dataset": "synthetic", "model": model}
    checkpointing.save(
        str(folder), build_model(spec), None, 0, spec, {}, {"config": config}
    )
    return folder


def compress(checkpoint: Path, rounds: int, seconds: float) -> dict[str, Any]:
    import compress as job

    args = job.parse_args(
        ["--checkpoint", str(checkpoint), "--rounds", str(rounds)]
        + ["--seconds", str(seconds)]
    )
    return job.run(args)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, type=Path)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=1.0)
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    reports: dict[str, list[dict]] = {"mlp": [], "cnn": []}
    for i, seed in enumerate(seeds):
        for model in reports:
            folder = args.work / f"{model}-{seed}"
            ckpt = train_checkpoint(folder, model, "digits", seed)
            rounds = args.rounds if i == 0 else 0
            reports[model].append(compress(ckpt, rounds, args.seconds))
    cnn32 = fresh_checkpoint(args.work / "cnn32", "cnn", (3, 32, 32))
    out = {
        "reports": reports,
        "cnn32": compress(cnn32, args.rounds, args.seconds),
        "cnn32_checkpoint": str(cnn32),
    }
    print("RGJSON " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
