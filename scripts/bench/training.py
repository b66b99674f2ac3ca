"""1. train: steady-state samples/s of the CNN on synthetic 3x32x32, 2 workers,
global batch 64, 1 torch thread per worker: torchrun (plain DDP, gloo) vs Ray
Train in a fresh driver with its own cluster (lean; --quick adds Ray's defaults
and an idle-priority diagnosis). First runs in turn, then interleaved rounds
(interleaved.py). The commands run are in commands.py."""

from __future__ import annotations

import contextlib
from typing import Any

from scripts.bench.commands import OWN_CLUSTER_VARIANTS, training_command
from scripts.bench.cpu import (
    CpuSampler,
    IdlePriority,
    overhead_cores,
    ray_daemon_cores,
)
from scripts.bench.interleaved import bench_interleaved
from scripts.bench.marks import (
    first,
    phases,
    read_marks,
    steady_throughput,
    steady_window,
)
from scripts.bench.proc import Bench, run_logged, tail
from scripts.bench.settings import TRAIN_WORK, BenchError, log
from scripts.bench.stats import fmt, paired_ratios, stats


def one_training_run(
    bench: Bench, variant: str, work: dict, address: str | None = None
) -> dict[str, Any]:
    """Run one variant once; return its timings, throughput and CPU use."""
    argv, env, marks, log, temp_dir = training_command(bench, variant, work, address)
    # The diagnosis variant: the same run with Ray's other processes at idle
    # priority (cpu.IdlePriority); its cluster ends with the run.
    idle = IdlePriority([temp_dir]) if variant == "ray_lean_idleprio" else None
    with CpuSampler(bench.markers) as cpu, idle or contextlib.nullcontext():
        rc, t0, t1 = run_logged(argv, log, env, timeout_s=600)
    if variant in OWN_CLUSTER_VARIANTS:
        bench.stop_head(temp_dir)
    if rc != 0:
        raise BenchError(f"{variant} exited with {rc}; log {log}:\n{tail(log)}")
    if idle and idle.idle_worker_threads:
        raise BenchError(
            f"{variant}: {len(idle.idle_worker_threads)} training-worker threads ran "
            "at SCHED_IDLE (inherited from a deprioritized parent); the diagnosis "
            "is void"
        )
    # Processes that a running head starts (job driver, Train workers) inherit
    # the head's environment and so write to the head's file.
    head_marks = read_marks(bench.work / "head-marks.jsonl")
    m = read_marks(marks) + [x for x in head_marks if t0 <= x["t"] <= t1]
    first_step = first(m, "first_step")
    cores = cpu.cores()
    window = steady_window(m)
    steady = cpu.cores_between(*window) if window else None
    # Each worker's training thread in those epochs: share of wall time it ran,
    # and waited runnable on a run queue while another task had its core.
    threads = cpu.worker_waits_between(*window) if window else None

    def mean_of(key: str) -> float | None:
        vals = [t[key] for t in threads or []]
        return round(sum(vals) / len(vals), 3) if vals else None

    return {
        "variant": variant,
        "wall_s": round(t1 - t0, 3),
        "first_step_s": round(first_step - t0, 3) if first_step else None,
        "throughput": steady_throughput(m),
        "phases": phases(m, t0, t1),
        "cpu_cores": cores,
        "ray_daemon_cores": ray_daemon_cores(cores),
        "foreign_cores": cores.get("foreign", 0.0),
        # Cores per group during the measured epochs only (no start-up imports).
        "steady_cores": steady,
        "steady_overhead_cores": overhead_cores(steady) if steady else None,
        "steady_worker_threads": threads,
        "train_thread_run": mean_of("run"),
        "train_thread_runqueue_wait": mean_of("runqueue_wait"),
        "train_thread_preemptions_per_s": mean_of("preemptions_per_s"),
        "idle_priority_threads": len(idle.moved) if idle else None,
        "t_launch": t0,
        "t_fit_start": first(m, "fit_start"),
        "t_exit": t1,
    }


def bench_train(bench: Bench) -> dict[str, Any]:
    variants = bench.cfg["train_variants"]
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(bench.cfg["train_rounds"]):
        for v in variants:
            if v == "ray_default" and r >= bench.cfg["train_default_rounds"]:
                continue
            log(f"train round {r + 1}: {v}")
            res = one_training_run(bench, v, TRAIN_WORK)
            runs[v].append(res)
            log(
                f"  {v}: {fmt(res['throughput']['loop'])} samples/s (loop), "
                f"{fmt(res['throughput']['wall'])} (wall), "
                f"ray daemons {res['ray_daemon_cores']:.2f} cores; "
                f"steady: {res['steady_cores']}"
            )
    summary = {
        v: {
            "loop_samples_per_s": stats([x["throughput"]["loop"] for x in rs]),
            "wall_samples_per_s": stats([x["throughput"]["wall"] for x in rs]),
            "loop_faults_per_step": stats(
                [x["throughput"].get("faults_per_step") for x in rs]
            ),
            "ray_daemon_cores": stats([x["ray_daemon_cores"] for x in rs]),
            "foreign_cores": stats([x["foreign_cores"] for x in rs]),
            "steady_overhead_cores": stats([x["steady_overhead_cores"] for x in rs]),
            "train_thread_run": stats([x["train_thread_run"] for x in rs]),
            "train_thread_runqueue_wait": stats(
                [x["train_thread_runqueue_wait"] for x in rs]
            ),
            "train_thread_preemptions_per_s": stats(
                [x["train_thread_preemptions_per_s"] for x in rs]
            ),
            "run_wall_s": stats([x["wall_s"] for x in rs]),
        }
        for v, rs in runs.items()
    }
    ratios = {}
    base = [x["throughput"]["loop"] for x in runs["torchrun"]]
    base_wall = [x["throughput"]["wall"] for x in runs["torchrun"]]
    for v in variants:
        if v != "torchrun":
            ratios[f"{v}/torchrun"] = paired_ratios(
                [x["throughput"]["loop"] for x in runs[v]], base
            )
            ratios[f"{v}/torchrun (wall)"] = paired_ratios(
                [x["throughput"]["wall"] for x in runs[v]], base_wall
            )
    # A failure here keeps the runs in turn above.
    try:
        interleaved = bench_interleaved(bench)
    except BenchError as exc:
        log(f"interleaved rounds FAILED: {exc}")
        interleaved = {"skipped": f"failed: {str(exc).splitlines()[0]}"}
    return {
        "work": TRAIN_WORK,
        "runs": runs,
        "summary": summary,
        "ratios": ratios,
        "interleaved": interleaved,
    }
