"""The serving benchmark's models: checkpoints, and the bare model's ceiling.

    PYTHONPATH=ray_jobs:. python -m scripts.bench.serve_models --work DIR --seconds 2

Saves a freshly initialised model per serving model (settings.SERVE_MODELS) in
the real checkpoint format under DIR/ckpt-<name>, then measures each one here,
in one thread, on batches of c (settings.CONCURRENCY): the rps and latency no
server can beat. Prints one line `RGJSON {"checkpoints": ..., "bare_ceiling": ...}`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from scripts.bench.settings import CONCURRENCY, SERVE_MODELS
from scripts.bench.stats import percentile


def make_checkpoints(work: Path) -> dict[str, str]:
    """A freshly initialised model per serving model, saved in the real format."""
    import torch

    from mlcore import checkpointing
    from mlcore.models import ModelSpec, build_model

    out = {}
    for name, (_, shape) in SERVE_MODELS.items():
        torch.manual_seed(0)
        spec = ModelSpec(name, shape, 10)
        folder = work / f"ckpt-{name}"
        folder.mkdir()
        checkpointing.save(str(folder), build_model(spec), None, 0, spec, {})
        out[name] = str(folder)
    return out


def bare_ceiling(checkpoint: str, seconds: float) -> dict[str, Any]:
    """The model in this process, one thread, on batches of c: rps and latency."""
    import torch

    from mlcore.checkpointing import load_model

    torch.set_num_threads(1)
    model, meta = load_model(checkpoint)
    shape = tuple(meta["model"]["image_shape"])
    out = {}
    for c in CONCURRENCY:
        x = torch.rand(c, *shape)
        lat = []
        with torch.inference_mode():
            model(x)
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                torch.softmax(model(x), dim=1).numpy()
                lat.append(time.perf_counter() - t0)
        lat.sort()
        total = sum(lat)
        out[str(c)] = {
            "rps": c * len(lat) / total,
            "p50_ms": percentile(lat, 50) * 1e3,
            "p99_ms": percentile(lat, 99) * 1e3,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, type=Path)
    p.add_argument("--seconds", required=True, type=float, help="per batch size")
    args = p.parse_args(argv)
    ckpts = make_checkpoints(args.work)
    ceiling = {m: bare_ceiling(ckpts[m], args.seconds) for m in ckpts}
    out = {"checkpoints": ckpts, "bare_ceiling": ceiling}
    print("RGJSON " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
