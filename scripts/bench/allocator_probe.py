"""Page faults of a training loop and of a Serve replica, with and without the
allocator settings (mlcore.allocator.keep_freed_memory): one process per run,
since the settings are process-wide.

    PYTHONPATH=ray_jobs:. python -m scripts.bench.allocator_probe loop|replica \\
        default|tuned

loop: the benchmark's CNN (batch 32, 3x32x32) trained in a second thread, as
Ray Train runs train_func, the call first in that thread when tuned; minor page
faults of that thread per step over 40 steps after 10 warm-up steps.
replica: serve_app.ModelServer built and called in a second thread, as Serve
runs a replica's handlers, on mixed batch sizes; faults per batch over 48
batches after 12. "default" takes the call out of ModelServer. Prints one line
`RGJSON {"faults": [...], "mean": ...}`.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading

STEPS, WARMUP = 40, 10
BATCHES, BATCH_WARMUP = 48, 12
SIZES = (1, 8, 32, 17, 32, 5)  # rows a request


def training_loop(tuned: bool) -> list[int]:
    import torch
    from torch import nn

    from mlcore.allocator import keep_freed_memory, thread_page_faults
    from mlcore.models import ModelSpec, build_model

    if tuned:
        keep_freed_memory()  # where train_func calls it: first in the thread
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(ModelSpec("cnn", (3, 32, 32), 10))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(WARMUP):
        step()
    faults = []
    for _ in range(STEPS):
        before = thread_page_faults()
        step()
        faults.append(thread_page_faults() - before)
    return faults


def replica(tuned: bool) -> list[int]:
    import numpy as np

    from mlcore import allocator
    from mlcore.checkpointing import save
    from mlcore.models import ModelSpec, build_model

    if not tuned:
        allocator.keep_freed_memory = lambda: None  # ModelServer's call taken out
    import serve_app

    with tempfile.TemporaryDirectory() as folder:
        spec = ModelSpec("cnn", (3, 32, 32), 10)
        save(folder, build_model(spec), None, 0, spec, {})
        server = serve_app.ModelServer.func_or_class({"checkpoint": folder})
        rng = np.random.default_rng(0)

        def request(i: int) -> None:
            rows = SIZES[i % len(SIZES)]
            server.forward(rng.random((rows, 3 * 32 * 32), dtype=np.float32))

        for i in range(BATCH_WARMUP):
            request(i)
        faults = []
        for i in range(BATCHES):
            before = allocator.thread_page_faults()
            request(i)
            faults.append(allocator.thread_page_faults() - before)
    return faults


def main(argv: list[str]) -> int:
    workload, setting = argv
    run = {"loop": training_loop, "replica": replica}[workload]
    out: dict = {}

    def in_thread() -> None:  # where Ray Train and Serve run the code
        out["faults"] = run(setting == "tuned")

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    out["mean"] = sum(out["faults"]) / len(out["faults"])
    print("RGJSON " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
