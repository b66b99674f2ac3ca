"""1b. training, interleaved runs.

A shared machine's speed drifts by tens of percent over tens of seconds (other
tenants of the host), so runs one after the other measure that drift as much as
Ray. Here the two runs are started, warmed up (epoch 0), and then take turns on
the machine in short slices, the other paused (SIGSTOP of its whole process
tree), so both see the same host. An epoch's throughput counts only the time its
run was resumed.
"""

from __future__ import annotations

import time
from typing import Any

from scripts.bench.commands import training_command
from scripts.bench.marks import active_throughput, read_marks, warmed_up
from scripts.bench.proc import Bench, Freezer, kill_group, spawn_logged, tail
from scripts.bench.settings import (
    INTERLEAVED_VARIANTS,
    INTERLEAVED_WORK,
    SLICE_S,
    BenchError,
    log,
)
from scripts.bench.stats import fmt, paired_ratios, stats


def interleaved_round(bench: Bench, first_turn: str) -> dict[str, Any]:
    """Both variants warmed up, then alternating slices; `first_turn` goes first."""
    work = INTERLEAVED_WORK
    runs: dict[str, dict[str, Any]] = {}
    try:
        for v in INTERLEAVED_VARIANTS:  # started together, paused once warm
            argv, env, marks, log_path, temp_dir = training_command(bench, v, work)
            out = open(log_path, "ab")  # noqa: SIM115 - closed below
            proc = spawn_logged(argv, out, env)
            bench.procs.append(proc)
            runs[v] = {
                "proc": proc,
                "out": out,
                "marks": marks,
                "log": log_path,
                "temp_dir": temp_dir,
                "freezer": Freezer(proc.pid, [temp_dir] if temp_dir else []),
                "intervals": [],
            }
        deadline = time.monotonic() + 300
        waiting = set(runs)
        while waiting:
            for v in list(waiting):
                r = runs[v]
                if r["proc"].poll() is not None:
                    raise BenchError(f"{v} exited while warming up; log {r['log']}")
                if warmed_up(r["marks"], work["workers"]):
                    r["freezer"].pause()
                    waiting.discard(v)
            if time.monotonic() > deadline:
                raise BenchError(f"{sorted(waiting)} not warmed up within 300 s")
            time.sleep(0.05)
        order = [first_turn, *(v for v in INTERLEAVED_VARIANTS if v != first_turn)]
        turn = 0
        deadline = time.monotonic() + 400
        while all(r["proc"].poll() is None for r in runs.values()):
            r = runs[order[turn % 2]]
            t0 = time.time()
            r["freezer"].resume()
            time.sleep(SLICE_S)
            r["freezer"].pause()
            r["intervals"].append((t0, time.time()))
            turn += 1
            if time.monotonic() > deadline:
                raise BenchError("interleaved runs still going after 400 s")
        until = time.time()
        for r in runs.values():
            r["freezer"].resume()
        for v, r in runs.items():
            rc = r["proc"].wait(timeout=300)
            if rc != 0:
                raise BenchError(
                    f"{v} exited with {rc}; log {r['log']}:\n{tail(r['log'])}"
                )
    finally:
        for r in runs.values():
            r["freezer"].resume()
            if r["proc"].poll() is None:
                kill_group(r["proc"])
            r["out"].close()
            if r["temp_dir"]:
                bench.stop_head(r["temp_dir"])
    result: dict[str, Any] = {"first_turn": first_turn, "slices": turn}
    for v, r in runs.items():
        result[v] = active_throughput(read_marks(r["marks"]), r["intervals"], until)
    return result


def bench_interleaved(bench: Bench) -> dict[str, Any] | None:
    rounds = []
    for r in range(bench.cfg["interleaved_rounds"]):
        first_turn = INTERLEAVED_VARIANTS[r % 2]
        log(f"train interleaved round {r + 1} ({first_turn} first)")
        res = interleaved_round(bench, first_turn)
        rounds.append(res)
        log(
            "  "
            + ", ".join(
                f"{v}: {fmt(res[v]['samples_per_s'])} samples/s over "
                f"{res[v]['epochs']} epochs ({res[v]['active_s']} s)"
                for v in INTERLEAVED_VARIANTS
            )
        )
    if not rounds:
        return None
    a, b = INTERLEAVED_VARIANTS
    return {
        "work": INTERLEAVED_WORK,
        "slice_s": SLICE_S,
        "rounds": rounds,
        "summary": {v: stats([x[v]["samples_per_s"] for x in rounds]) for v in (a, b)},
        "ratio": paired_ratios(
            [x[a]["samples_per_s"] for x in rounds],
            [x[b]["samples_per_s"] for x in rounds],
        ),
    }
