"""Reading the timing marks that runs write (ray_jobs/mlcore/marks.py): phases,
steady-state throughput and page faults a step."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

# The milestones of a run, in order.
PHASES = (
    "launch",
    "driver_start",
    "fit_start",
    "worker_start",
    "worker_ready",
    "first_step",
    "last_epoch_end",
    "last_report",
    "fit_end",
    "exit",
)


def read_marks(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def first(marks: list[dict], event: str, **match) -> float | None:
    times = [
        m["t"]
        for m in marks
        if m["event"] == event and all(m.get(k) == v for k, v in match.items())
    ]
    return min(times) if times else None


def last(marks: list[dict], event: str) -> float | None:
    times = [m["t"] for m in marks if m["event"] == event]
    return max(times) if times else None


def last_of_first(marks: list[dict], event: str) -> float | None:
    """When the slowest rank reached `event` (the ranks' first marks, latest one)."""
    per_pid: dict[int, float] = {}
    for m in marks:
        if m["event"] == event:
            per_pid[m["pid"]] = min(per_pid.get(m["pid"], m["t"]), m["t"])
    return max(per_pid.values()) if per_pid else None


def steady_throughput(marks: list[dict], skip_epochs: int = 1) -> dict[str, Any]:
    """Samples/s over the epochs after the first `skip_epochs`.

    loop: all ranks' samples / the slowest rank's training-loop seconds (as train.py
    reports samples_per_second). wall: the same samples over the time between
    epoch ends, i.e. with validation, checkpoint and reporting in between.
    faults_per_step: page faults a step inside the training loops.
    """
    ends = [m for m in marks if m["event"] == "epoch_end"]
    epochs = sorted({m["epoch"] for m in ends})
    steady = [e for e in epochs if e >= skip_epochs]
    if not steady:
        return {"loop": None, "wall": None, "epochs": 0, "faults_per_step": None}
    steady_ends = [m for m in ends if m["epoch"] in steady]
    samples = sum(m["samples"] for m in steady_ends)
    loop_s = sum(max(m["seconds"] for m in ends if m["epoch"] == e) for e in steady)
    wall = None
    window = steady_window(marks, skip_epochs)
    if window:
        span = window[1] - window[0]
        wall = samples / span if span > 0 else None
    return {
        "loop": samples / loop_s if loop_s > 0 else None,
        "wall": wall,
        "epochs": len(steady),
        "faults_per_step": faults_per_step(steady_ends),
    }


def steady_window(marks: list[dict], skip_epochs: int = 1) -> tuple | None:
    """(start, end) wall-clock times of the epochs steady_throughput measures."""
    ends = [m for m in marks if m["event"] == "epoch_end"]
    end_t: dict[int, float] = {}
    for m in ends:
        end_t[m["epoch"]] = max(end_t.get(m["epoch"], m["t"]), m["t"])
    steady = sorted(e for e in end_t if e >= skip_epochs)
    if not steady or steady[0] - 1 not in end_t:
        return None
    return end_t[steady[0] - 1], end_t[steady[-1]]


def faults_per_step(ends: list[dict]) -> float | None:
    """Minor page faults a training step inside the training loop (each rank's
    training thread, from these epoch_end marks), None when they carry no count
    (off Linux)."""
    counted = [m for m in ends if m.get("page_faults") is not None]
    steps = sum(m.get("batches", 0) for m in counted)
    if not counted or steps <= 0:
        return None
    return sum(m["page_faults"] for m in counted) / steps


def phases(marks: list[dict], t0: float, t_end: float) -> dict[str, float | None]:
    """Seconds between the run's milestones (None when a mark is missing)."""
    points = [
        ("launch", t0),
        ("driver_start", first(marks, "driver_start")),
        ("fit_start", first(marks, "fit_start")),
        ("worker_start", first(marks, "worker_start")),
        ("worker_ready", last_of_first(marks, "worker_ready")),
        ("first_step", first(marks, "first_step")),
        ("last_epoch_end", last(marks, "epoch_end")),
        ("last_report", last(marks, "reported")),
        ("fit_end", first(marks, "fit_end")),
        ("exit", t_end),
    ]
    present = [(n, t) for n, t in points if t is not None]
    out: dict[str, float | None] = {}
    for (a, ta), (b, tb) in zip(present, present[1:], strict=False):
        out[f"{a}->{b}"] = round(tb - ta, 3)
    return out


def phase_order(key: str) -> int:
    """Sort key of a phases() key ('a->b'): the position of its first milestone."""
    return PHASES.index(key.split("->")[0])


def overlap_seconds(t_a: float, t_b: float, intervals: list[tuple[float, float]]):
    """Seconds of [t_a, t_b] that fall inside the (start, end) intervals."""
    return sum(max(0.0, min(t_b, end) - max(t_a, start)) for start, end in intervals)


def active_throughput(
    marks: list[dict],
    intervals: list[tuple[float, float]],
    until: float,
    skip_epochs: int = 1,
) -> dict[str, Any]:
    """Samples/s of the epochs after `skip_epochs` that all ranks ended by `until`,
    over the training-loop time that fell inside `intervals` (when the run was
    resumed): an epoch counts its slowest rank's active seconds."""
    ends = [m for m in marks if m["event"] == "epoch_end"]
    ranks = {m.get("rank") for m in ends}
    by_epoch: dict[int, list[dict]] = {}
    for m in ends:
        by_epoch.setdefault(m["epoch"], []).append(m)
    active, epochs, counted = 0.0, 0, []
    for epoch, ms in sorted(by_epoch.items()):
        if epoch < skip_epochs or len(ms) < len(ranks):
            continue
        if max(m["t"] for m in ms) > until:
            continue
        counted += ms
        active += max(
            overlap_seconds(m["t"] - m["seconds"], m["t"], intervals) for m in ms
        )
        epochs += 1
    samples = sum(m["samples"] for m in counted)
    return {
        "samples_per_s": samples / active if active > 0 else None,
        "epochs": epochs,
        "active_s": round(active, 2),
        "faults_per_step": faults_per_step(counted),
    }


def warmed_up(marks: Path, ranks: int) -> bool:
    """All ranks have ended epoch 0."""
    ends = [m for m in read_marks(marks) if m["event"] == "epoch_end"]
    return len({m.get("rank") for m in ends if m["epoch"] == 0}) >= ranks
