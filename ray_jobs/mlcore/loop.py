"""The data-parallel training loop, one function for every launcher.

`train.py`'s `train_func` (Ray Train) and the benchmark's torchrun baseline both
run `train_epochs`: each epoch trains on the rank's shard of the data, validates
on the rank's shard of the validation split, sums the counts over the ranks and
hands the epoch's metrics to the caller's `report` (which writes the checkpoint
its own way). A `LoopHook` is told when the loop reaches each point; the default
one does nothing, and measuring a run means passing another (mlcore.marks).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from mlcore.data import Split

# report(epoch, metrics): called on every rank after each epoch.
Report = Callable[[int, dict[str, float]], None]


class LoopHook:
    """Observes a training worker; every method here does nothing."""

    def worker_start(self) -> None:
        """The worker process starts its setup."""

    def worker_ready(self, rank: int) -> None:
        """Setup done (data, model, optimizer): the epochs start next."""

    def epoch_start(self, epoch: int) -> None:
        """Just before the epoch's first batch, in the training thread."""

    def step_end(self, epoch: int, step: int) -> None:
        """After the optimizer step of batch `step` (0-based) of `epoch`."""

    def epoch_end(self, epoch: int, samples: int, seconds: float, steps: int) -> None:
        """Right after the epoch's last step: its samples, loop seconds, steps."""

    def reported(self, epoch: int) -> None:
        """After `report` returned for `epoch`."""


def split_tensors(split: Split) -> TensorDataset:
    return TensorDataset(torch.from_numpy(split.x), torch.from_numpy(split.y))


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1024):
    """(correct, total) of `model` on (x, y), without gradients."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model(x[i : i + batch])
            correct += int((logits.argmax(dim=1) == y[i : i + batch]).sum())
    return correct, len(x)


def evaluate_batches(model: nn.Module, batches: Iterable) -> tuple[int, int]:
    """(correct, total) of `model` over (x, y) batches, without gradients."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for xb, yb in batches:
            correct += int((model(xb).argmax(dim=1) == yb).sum())
            total += len(yb)
    return correct, total


def train_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    epochs: range,
    *,
    world: int,
    device: torch.device,
    use_bf16: bool,
    report: Report,
    hook: LoopHook | None = None,
    val_batches: Iterable | None = None,
) -> None:
    """Train `model` (DDP-wrapped when world > 1) for `epochs`.

    After each epoch every rank calls `report(epoch, metrics)` with the train
    loss and validation accuracy summed over the ranks, and the epoch's samples
    per second of training loop (all ranks' samples over this rank's seconds).
    `loader` is a DataLoader or any iterable of (x, y) batches, iterated once an
    epoch (a Ray Data shard's, mlcore.ingest); `val_batches`, when given,
    replaces (val_x, val_y) the same way.
    """
    hook = hook or LoopHook()
    loss_fn = nn.CrossEntropyLoss()
    for epoch in epochs:
        if isinstance(getattr(loader, "sampler", None), DistributedSampler):
            loader.sampler.set_epoch(epoch)
        model.train()
        loss_sum, batches, samples = 0.0, 0, 0
        hook.epoch_start(epoch)
        t0 = time.perf_counter()
        for xb, yb in loader:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            hook.step_end(epoch, batches)
            loss_sum += float(loss.detach())
            batches += 1
            samples += len(xb)
        elapsed = time.perf_counter() - t0
        hook.epoch_end(epoch, samples, elapsed, batches)

        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            if val_batches is None:
                correct, total = evaluate(model, val_x, val_y)
            else:
                correct, total = evaluate_batches(model, val_batches)
        stats = torch.tensor(
            [loss_sum, batches, correct, total, samples], dtype=torch.float64
        )
        if world > 1:
            import torch.distributed as dist

            stats = stats.to(device)
            dist.all_reduce(stats)
            stats = stats.cpu()
        report(
            epoch,
            {
                "epoch": epoch,
                "train_loss": float(stats[0] / max(stats[1], 1)),
                "val_accuracy": float(stats[2] / max(stats[3], 1)),
                "samples_per_second": float(stats[4] / max(elapsed, 1e-9)),
            },
        )
        hook.reported(epoch)
