"""Timing marks: an opt-in record of when a run reaches each point.

When $RAYGPU_BENCH_MARKS names a file, processes append one JSON line per event
to it ({"event", "t", "pid", ...}); the benchmark (scripts/bench) splits a run's
wall time into phases with them and reads each epoch's training-loop figures.
The variable reaches every process of a run through the environment (Ray's
workers inherit it), so a job needs no option for it. Unset, nothing is written
and the training loop gets a hook that does nothing.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from mlcore.allocator import thread_page_faults
from mlcore.loop import LoopHook

MARKS_ENV = "RAYGPU_BENCH_MARKS"


def mark(event: str, **fields: Any) -> None:
    """Append one timing event to $RAYGPU_BENCH_MARKS; does nothing when unset."""
    path = os.environ.get(MARKS_ENV)
    if path:
        line = {"event": event, "t": time.time(), "pid": os.getpid(), **fields}
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")


class MarksHook(LoopHook):
    """Marks a worker's milestones: start, ready, first step, each epoch's
    training loop (samples, seconds, steps and the training thread's minor page
    faults inside the loop) and each report."""

    def __init__(self) -> None:
        self.rank: int | None = None
        self._first_step = True
        self._faults0: int | None = None

    def worker_start(self) -> None:
        mark("worker_start")

    def worker_ready(self, rank: int) -> None:
        self.rank = rank
        mark("worker_ready", rank=rank)

    def epoch_start(self, epoch: int) -> None:
        self._faults0 = thread_page_faults()

    def step_end(self, epoch: int, step: int) -> None:
        if self._first_step:
            self._first_step = False
            mark("first_step", rank=self.rank)

    def epoch_end(self, epoch: int, samples: int, seconds: float, steps: int) -> None:
        now = thread_page_faults()
        faults = None if self._faults0 is None or now is None else now - self._faults0
        mark(
            "epoch_end",
            rank=self.rank,
            epoch=epoch,
            samples=samples,
            seconds=seconds,
            batches=steps,
            page_faults=faults,
        )

    def reported(self, epoch: int) -> None:
        mark("reported", rank=self.rank, epoch=epoch)


def loop_hook() -> LoopHook:
    """A MarksHook when $RAYGPU_BENCH_MARKS is set, else a hook doing nothing."""
    return MarksHook() if os.environ.get(MARKS_ENV) else LoopHook()
