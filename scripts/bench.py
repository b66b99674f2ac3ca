"""`make bench`: Ray Train against torchrun, Ray Serve against FastAPI, start-up cost.

    scripts/bench.py            # full run (< 20 min on 2 cores), writes bench/
    scripts/bench.py --quick    # one round of everything, for development
    scripts/bench.py --only train,serve --out /tmp/bench

Everything runs on this machine, on 127.0.0.1, in this process tree; every Ray
cluster and server it starts is stopped, also on failure or Ctrl-C. Each pair of
things compared runs alternately (A B A B ...) and every figure is reported as the
median and range over the rounds; ratios are taken run by run within a round.
Results: bench/results.json and bench/results.md (docs/performance.md explains).

1. train: steady-state samples/s of the CNN on synthetic 3x32x32, 2 workers,
   global batch 64, 1 torch thread per worker: torchrun (plain DDP, gloo) vs Ray
   Train in a fresh driver with its own cluster (lean; --quick adds Ray's
   defaults and an idle-priority diagnosis). First runs in turn, then
   interleaved rounds: both runs warmed up, then alternating 2-s slices with
   the other one paused, so the host's drift in speed falls on both alike.
2. startup: a 3-epoch toy DDP run (digits MLP): torchrun, TorchTrainer.fit() in a
   fresh driver joining a running cluster, `ray job submit` to it; time to the
   first optimizer step, total, and where the time goes (timing marks).
3. serve: rps and p50/p99 at concurrency 1/8/32 for the bare model on batches,
   Ray Serve with and without batching, and a single-process FastAPI server,
   for the digits MLP and the CNN.
4. plan: wall time of scripts/plan.py per stack.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RAY_JOBS = REPO / "ray_jobs"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from raygpu.serve_ingress import DEFAULT_INGRESS  # noqa: E402
from scripts import bench_load  # noqa: E402
from scripts.bench_proc import (  # noqa: E402
    CpuSampler,
    Freezer,
    IdlePriority,
    overhead_cores,
    ray_daemon_cores,
)

SCHEMA = 1
SECTIONS = ("train", "startup", "serve", "plan")
PY = sys.executable
LOOPBACK = "127.0.0.1"

# Environment for the "lean" Ray setup (what bench found worth cutting; see
# docs/performance.md). Applied to the driver and so to the cluster it starts.
LEAN_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_enable_metrics_collection": "0",
    "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",
    "RAY_TRAIN_ENABLE_CONTROLLER_STRUCTURED_LOGGING": "0",
    "RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING": "0",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
}
# Serve on a 2-core machine: no extra event-loop threads per replica and router.
SERVE_LEAN_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    # Deleting one model's apps before the next: HAProxy-fronted replicas drain
    # 30 s by default so load balancers can deregister them; nothing to wait
    # for here (shutdown only, no effect on the measured requests).
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
    # HAProxy writes a log line per request that the HAProxyManager actor reads
    # to feed Serve's per-request metrics; with metrics collection off (LEAN_ENV)
    # nothing exports them, and the reader cost 0.06 core at CNN c=32 (0.01 off).
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
}
# Same for both sides: one math thread per worker process.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

MODES = {
    "quick": {
        "train_rounds": 1,
        "train_variants": ("torchrun", "ray_lean", "ray_lean_idleprio", "ray_default"),
        "train_default_rounds": 1,
        "interleaved_rounds": 1,
        "startup_rounds": 1,
        "serve_rounds": 1,
        "serve_seconds": 3.0,
        "serve_requests": 3000,
        "plan_rounds": 1,
    },
    "full": {
        "train_rounds": 3,
        # Ray with its defaults (ray_default) made no measurable difference to
        # throughput against the lean setup (0.88x against 0.89x torchrun in the
        # 2026-11-28 run), nor did the idle-priority diagnosis (ray_lean_idleprio,
        # 0.83x against 0.87x in the 2026-11-29 run): their time goes to the
        # interleaved rounds, which keeps the full run under 20 minutes. --quick
        # still runs both once.
        "train_variants": ("torchrun", "ray_lean"),
        "train_default_rounds": 0,
        "interleaved_rounds": 3,
        "startup_rounds": 3,
        "serve_rounds": 3,
        "serve_seconds": 3.0,
        "serve_requests": 20000,
        "plan_rounds": 3,
    },
}
TRAIN_WORK = {
    "model": "cnn",
    "dataset": "synthetic",
    "epochs": 3,
    "batch_size": 64,
    "workers": 2,
    "threads_per_worker": 1,
}
STARTUP_WORK = {"model": "mlp", "dataset": "digits", "epochs": 3, "batch_size": 64}
CONCURRENCY = (1, 8, 32)
SERVE_MODELS = {"mlp": ("digits", (1, 8, 8)), "cnn": ("synthetic", (3, 32, 32))}


class BenchError(RuntimeError):
    """A benchmark step could not run (its message says which and why)."""


# ------------------------------------------------------------------- statistics


def stats(values: list[float]) -> dict[str, Any]:
    """Median and range of a list of numbers (NaNs dropped)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
        "values": [round(v, 4) for v in vals],
    }


def paired_ratios(a: list[float], b: list[float]) -> dict[str, Any]:
    """Stats of a[i] / b[i] over the rounds in which both ran."""
    ratios = [x / y for x, y in zip(a, b, strict=False) if x and y]
    return stats(ratios)


def fmt(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def fmt_stats(s: dict[str, Any] | None, digits: int = 1) -> str:
    """'median (min-max)', or '-' when nothing was measured."""
    if not s or s.get("median") is None:
        return "-"
    if s["n"] == 1:
        return fmt(s["median"], digits)
    return (
        f"{fmt(s['median'], digits)} ({fmt(s['min'], digits)}-{fmt(s['max'], digits)})"
    )


# ----------------------------------------------------------------- timing marks


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


def last_of_first(marks: list[dict], event: str) -> float | None:
    """When the slowest rank reached `event` (the ranks' first marks, latest one)."""
    per_pid: dict[int, float] = {}
    for m in marks:
        if m["event"] == event:
            per_pid[m["pid"]] = min(per_pid.get(m["pid"], m["t"]), m["t"])
    return max(per_pid.values()) if per_pid else None


# --------------------------------------------------------------------- processes


def spawn_logged(
    argv: list[str], out: Any, env: dict[str, str], cwd: Path = REPO
) -> subprocess.Popen:
    """Start argv in its own session (so its group can be killed), output to `out`."""
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def run_logged(
    argv: list[str],
    log: Path,
    env: dict[str, str],
    timeout_s: float,
    cwd: Path = REPO,
) -> tuple[int, float, float]:
    """Run argv (own process group), output to `log`: (rc, start, end) in time.time.

    On timeout the whole group is killed and BenchError raised.
    """
    with open(log, "ab") as out:
        t0 = time.time()
        proc = spawn_logged(argv, out, env, cwd)
        try:
            rc = proc.wait(timeout=timeout_s)
        except BaseException:
            kill_group(proc)
            raise
        t1 = time.time()
    return rc, t0, t1


def kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def base_env(marks: Path | None = None) -> dict[str, str]:
    from raygpu.rayclient import client_auth_env

    env = {**os.environ, **client_auth_env(), **THREAD_ENV}
    env.pop("RAY_ADDRESS", None)
    env["PATH"] = os.pathsep.join([str(Path(PY).parent), env["PATH"]])
    env["RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS"] = "0"
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if marks is not None:
        env["RAYGPU_BENCH_MARKS"] = str(marks)
    return env


class Bench:
    """Holds the work dir, the CPU-sampler markers and everything to clean up."""

    def __init__(self, work: Path, mode: str):
        self.work = work
        self.mode = mode
        self.cfg = MODES[mode]
        self.markers: list[str] = []
        self.heads: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.notes: list[str] = []
        self.counter = 0
        self.serve_lean = True

    def new_path(self, stem: str, suffix: str = "") -> Path:
        self.counter += 1
        return self.work / f"{self.counter:03d}-{stem}{suffix}"

    def cleanup(self) -> None:
        from raygpu.localray import stop_head

        for proc in self.procs:
            if proc.poll() is None:
                kill_group(proc)
        for temp_dir in self.heads:
            stop_head(temp_dir)
        self.heads.clear()

    def start_head(
        self,
        lean: bool,
        env: dict[str, str] | None = None,
        serve_ingress: str = DEFAULT_INGRESS,
    ) -> Any:
        from raygpu.localray import start_head

        temp_dir = tempfile.mkdtemp(prefix="rg-bench-", dir="/tmp")
        self.heads.append(temp_dir)
        self.markers.append(temp_dir)
        extra = {**THREAD_ENV, **(LEAN_ENV if lean else {}), **(env or {})}
        extra["RAYGPU_BENCH_MARKS"] = str(self.work / "head-marks.jsonl")
        t0 = time.monotonic()
        head = start_head(
            num_cpus=2, temp_dir=temp_dir, extra_env=extra, serve_ingress=serve_ingress
        )
        return head, time.monotonic() - t0

    def stop_head(self, temp_dir: str) -> None:
        from raygpu.localray import stop_head

        stop_head(temp_dir)
        if temp_dir in self.heads:
            self.heads.remove(temp_dir)


# ------------------------------------------------------------------ 1. training


def train_args(work: dict, storage: Path, run_name: str) -> list[str]:
    return [
        "--model",
        work["model"],
        "--dataset",
        work["dataset"],
        "--epochs",
        str(work["epochs"]),
        "--batch-size",
        str(work["batch_size"]),
        "--num-workers",
        "2",
        "--cpus-per-worker",
        "1",
        "--storage-path",
        str(storage),
        "--run-name",
        run_name,
        "--max-failures",
        "0",
    ]


def torchrun_argv(work: dict, out: Path) -> list[str]:
    torchrun = str(Path(PY).with_name("torchrun"))
    from raygpu.localray import free_port

    return [
        torchrun,
        "--nproc_per_node",
        "2",
        "--master_addr",
        LOOPBACK,
        "--master_port",
        str(free_port()),
        str(REPO / "scripts" / "bench_torchrun.py"),
        "--model",
        work["model"],
        "--dataset",
        work["dataset"],
        "--epochs",
        str(work["epochs"]),
        "--batch-size",
        str(work["batch_size"]),
        "--out",
        str(out),
    ]


def training_command(
    bench: Bench, variant: str, work: dict, address: str | None = None
) -> tuple[list[str], dict[str, str], Path, Path, str | None]:
    """(argv, env, marks file, log file, own cluster's temp dir) of one run."""
    marks = bench.new_path(f"{variant}-marks", ".jsonl")
    log = bench.new_path(variant, ".log")
    env = base_env(marks)
    storage = bench.work / "runs"
    run_name = f"{variant}-{bench.counter}"
    temp_dir = None
    if variant == "torchrun":
        argv = torchrun_argv(work, storage / run_name)
    elif variant in OWN_CLUSTER_VARIANTS:
        temp_dir = tempfile.mkdtemp(prefix="rg-bench-", dir="/tmp")
        bench.markers.append(temp_dir)
        bench.heads.append(temp_dir)  # stopped by its marker if the driver dies
        opts = ["--own-cluster", temp_dir]
        if variant != "ray_default":
            opts.append("--lean")
            env.update(LEAN_ENV)
        argv = [
            PY,
            str(REPO / "scripts" / "bench_raytrain.py"),
            *opts,
            "--",
            *train_args(work, storage, run_name),
        ]
    elif variant == "ray_driver":
        env["RAY_ADDRESS"] = address or ""
        env.update(LEAN_ENV)
        argv = [
            PY,
            str(REPO / "scripts" / "bench_raytrain.py"),
            "--",
            *train_args(work, storage, run_name),
        ]
    elif variant == "ray_job_submit":
        env.update(LEAN_ENV)
        argv = [
            str(Path(PY).with_name("ray")),
            "job",
            "submit",
            "--address",
            address or "",
            "--working-dir",
            str(RAY_JOBS),
            "--runtime-env-json",
            json.dumps({"excludes": ["__pycache__/", "*.pyc", "data/"]}),
            "--",
            "python",
            "train.py",
            *train_args(work, storage, run_name),
        ]
    else:  # pragma: no cover - programming error
        raise ValueError(variant)
    return argv, env, marks, log, temp_dir


def one_training_run(
    bench: Bench, variant: str, work: dict, address: str | None = None
) -> dict[str, Any]:
    """Run one variant once; return its timings, throughput and CPU use."""
    argv, env, marks, log, temp_dir = training_command(bench, variant, work, address)
    # The diagnosis variant: the same run with Ray's other processes at idle
    # priority (bench_proc.IdlePriority); its cluster ends with the run.
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


# Variants that start their own head for the run (bench_raytrain --own-cluster).
OWN_CLUSTER_VARIANTS = ("ray_lean", "ray_lean_idleprio", "ray_default")


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


# ----------------------------------------------- 1b. training, interleaved runs
#
# This machine's speed drifts by tens of percent over tens of seconds (other
# tenants of the host): one torchrun run's epochs ranged 451-635 samples/s. Runs
# one after the other measure that drift as much as Ray. Here the two runs are
# started, warmed up (epoch 0), and then take turns on the machine in short
# slices, the other paused (SIGSTOP of its whole process tree), so both see the
# same host. An epoch's throughput counts only the time its run was resumed.

INTERLEAVED_VARIANTS = ("ray_lean", "torchrun")
INTERLEAVED_WORK = {**TRAIN_WORK, "epochs": 8}
SLICE_S = 2.0


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


# ------------------------------------------------------------------- 2. startup


def bench_startup(bench: Bench) -> dict[str, Any]:
    head, head_s = bench.start_head(lean=True)
    log(f"startup: head up in {head_s:.1f}s at {head.address}")
    variants = ("torchrun", "ray_driver", "ray_job_submit")
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    try:
        for r in range(bench.cfg["startup_rounds"]):
            for v in variants:
                log(f"startup round {r + 1}: {v}")
                address = head.address if v == "ray_driver" else head.dashboard_url
                res = one_training_run(bench, v, STARTUP_WORK, address)
                if v != "torchrun":
                    res["processes_up_s"] = train_process_timeline(head.temp_dir, res)
                runs[v].append(res)
                log(
                    f"  {v}: first step {fmt(res['first_step_s'])}s, "
                    f"total {fmt(res['wall_s'])}s"
                )
        with CpuSampler(bench.markers) as idle:
            time.sleep(5)
        idle_cores = idle.cores()
    finally:
        bench.stop_head(head.temp_dir)
    summary = {}
    for v, rs in runs.items():
        keys = sorted({k for x in rs for k in x["phases"]}, key=_phase_order)
        summary[v] = {
            "first_step_s": stats([x["first_step_s"] for x in rs]),
            "total_s": stats([x["wall_s"] for x in rs]),
            "phases": {k: stats([x["phases"].get(k) for x in rs]) for k in keys},
        }
        actors = {a for x in rs for a in x.get("processes_up_s", {})}
        if actors:
            up = {a: stats([x["processes_up_s"].get(a) for x in rs]) for a in actors}
            summary[v]["processes_up_s"] = dict(
                sorted(up.items(), key=lambda kv: kv[1]["median"])
            )
    ratios = {}
    for v in ("ray_driver", "ray_job_submit"):
        ratios[f"{v}/torchrun first step"] = paired_ratios(
            [x["first_step_s"] for x in runs[v]],
            [x["first_step_s"] for x in runs["torchrun"]],
        )
        ratios[f"{v}/torchrun total"] = paired_ratios(
            [x["wall_s"] for x in runs[v]], [x["wall_s"] for x in runs["torchrun"]]
        )
    return {
        "work": STARTUP_WORK,
        "head_start_s": round(head_s, 2),
        "idle_cluster_cores": idle_cores,
        "runs": runs,
        "summary": summary,
        "ratios": ratios,
    }


def ray_process_starts(temp_dir: str) -> list[dict[str, Any]]:
    """Every Ray worker process of a head's session: actor, pid, start time.

    Ray names each worker's stdout file worker-<id>-<job>-<pid>.out and writes
    ':actor_name:<class>' into it when the process becomes an actor; the first
    line of python-core-worker-<id>_<pid>.log is stamped (local time) when the
    process has imported Ray and connected.
    """
    logs = Path(temp_dir) / "session_latest" / "logs"
    out = []
    for f in logs.glob("worker-*.out"):
        parts = f.stem.split("-")
        if len(parts) != 4:
            continue
        _, worker_id, _, pid = parts
        core = logs / f"python-core-worker-{worker_id}_{pid}.log"
        try:
            head = f.read_text(errors="replace")[:4096]
            with core.open(errors="replace") as fh:
                stamp = fh.readline()[1:24]
            started = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")
        except (OSError, ValueError):
            continue
        actor = (
            head.split(":actor_name:", 1)[1].split()[0]
            if ":actor_name:" in head
            else None
        )
        out.append({"actor": actor, "pid": int(pid), "t": started.timestamp()})
    return sorted(out, key=lambda x: x["t"])


def train_process_timeline(temp_dir: str, run: dict[str, Any]) -> dict[str, float]:
    """Seconds after fit() started at which each of the run's actor processes
    was up (workers: the last one), from Ray's logs."""
    origin = run.get("t_fit_start")
    if origin is None:
        return {}
    out: dict[str, float] = {}
    for p in ray_process_starts(temp_dir):
        if p["actor"] is None or not run["t_launch"] <= p["t"] <= run["t_exit"]:
            continue
        at = round(p["t"] - origin, 2)
        out[p["actor"]] = max(out.get(p["actor"], at), at)
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


_ORDER = (
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


def _phase_order(key: str) -> int:
    return _ORDER.index(key.split("->")[0])


# -------------------------------------------------------------------- 3. serving


def make_checkpoints(bench: Bench) -> dict[str, str]:
    """A freshly initialised model per serving model, saved in the real format."""
    sys.path.insert(0, str(RAY_JOBS))
    import torch

    from mlcore import checkpointing
    from mlcore.models import ModelSpec, build_model

    out = {}
    for name, (_, shape) in SERVE_MODELS.items():
        torch.manual_seed(0)
        spec = ModelSpec(name, shape, 10)
        folder = bench.work / f"ckpt-{name}"
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
            "p50_ms": bench_load.percentile(lat, 50) * 1e3,
            "p99_ms": bench_load.percentile(lat, 99) * 1e3,
        }
    return out


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"the server for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise BenchError(f"{url} did not answer within {timeout_s:.0f}s")


SERVE_DEPLOY = r"""
import json, sys
sys.path.insert(0, {ray_jobs!r})
import ray
from ray import serve
from ray.serve.schema import LoggingConfig
import serve_app
ray.init(address={address!r}, runtime_env={{"working_dir": {ray_jobs!r},
         "excludes": ["__pycache__/", "*.pyc", "data/"]}}, log_to_driver=False)
serve.start(http_options={{"host": "127.0.0.1", "port": {port}}})
for name in list(serve.status().applications):  # one model's apps at a time
    serve.delete(name)
for name, (ckpt, batching) in json.loads({apps!r}).items():
    args = serve_app.ServeArgs(checkpoint=ckpt, batching=batching,
                               num_replicas={replicas}, num_cpus=0.5,
                               max_ongoing_requests=64)
    serve.run(serve_app.build_app(args), name=name, route_prefix="/" + name,
              blocking=False,
              logging_config=LoggingConfig(enable_access_log={access_log},
                                           log_level="WARNING"))
print("deployed", flush=True)
"""


def one_load(
    bench: Bench, url: str, body: bytes, content_type: str, c: int
) -> dict[str, Any]:
    seconds = bench.cfg["serve_seconds"]
    requests = bench.cfg["serve_requests"]
    body_file = bench.work / f"body-{len(body)}-{content_type.split('/')[1]}"
    if not body_file.exists():
        body_file.write_bytes(body)
    if bench_load.wrk_path():
        script = bench.work / f"wrk-{len(body)}-{content_type.split('/')[1]}.lua"
        if not script.exists():
            script.write_text(bench_load.wrk_script(body, content_type, requests))
        argv = bench_load.wrk_argv(url, str(script), c, seconds)
    else:
        argv = [
            PY,
            str(REPO / "scripts" / "bench_load.py"),
            url,
            str(body_file),
            content_type,
            str(c),
            str(requests),
            str(seconds),
        ]
    # Only the generator is reaped meanwhile: the children's CPU time is its own.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output = proc.communicate(timeout=seconds + 30)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise BenchError(f"the load generator for {url} did not stop") from None
    span = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    usage = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = next((x for x in output.splitlines() if x.startswith("RGJSON ")), None)
    if line is None:
        raise BenchError(f"the load generator printed no result for {url}:\n{output}")
    res = json.loads(line[len("RGJSON ") :])
    if res["errors"]:
        raise BenchError(
            f"{res['errors']} of {res['requests']} requests to {url} failed "
            f"(c={c}, {content_type})"
        )
    res["rps"] = res["requests"] / max(res["duration_s"], 1e-9)
    res["generator_cpu_s"] = round(usage, 3)
    res["generator_cores"] = usage / span
    return res


def serve_body(shape: tuple[int, int, int], content_type: str) -> bytes:
    import numpy as np

    x = np.random.default_rng(0).random(math.prod(shape), dtype=np.float32)
    if content_type == "application/json":
        return json.dumps({"instances": [x.round(4).tolist()]}).encode()
    return x.astype("<f4").tobytes()


# Serve variants per head ingress: name -> batching. FastAPI is measured beside
# the HAProxy head only (paired round by round with its variants).
SERVE_VARIANTS = {
    "haproxy": {"serve_batched": True, "serve_unbatched": False},
    "proxy": {"serve_batched_proxy": True},
}
SERVE_REPLICAS = 2  # one per core; FastAPI is one process (the baseline)


def start_fastapi(bench: Bench, ckpts: dict[str, str]) -> dict[str, int]:
    from raygpu.localray import free_port

    servers = {}
    for name, ckpt in ckpts.items():
        port = free_port()
        flog = open(bench.new_path(f"fastapi-{name}", ".log"), "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                PY,
                str(REPO / "scripts" / "bench_fastapi.py"),
                "--checkpoint",
                ckpt,
                "--port",
                str(port),
            ],
            env=base_env(),
            stdout=flog,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        bench.procs.append(proc)
        servers[name] = port
        wait_http(f"http://{LOOPBACK}:{port}/healthz", 120, proc)
    return servers


def deploy_model(bench: Bench, head: Any, port: int, apps: dict[str, Any]) -> float:
    env = base_env()
    env["RAY_ADDRESS"] = head.address
    code = SERVE_DEPLOY.format(
        ray_jobs=str(RAY_JOBS),
        address=head.address,
        port=port,
        apps=json.dumps(apps),
        replicas=SERVE_REPLICAS,
        access_log=False,
    )
    dlog = bench.new_path("serve-deploy", ".log")
    rc, t0, t1 = run_logged([PY, "-c", code], dlog, env, timeout_s=300)
    if rc != 0:
        raise BenchError(f"Serve deploy failed ({rc}):\n{tail(dlog)}")
    for name in apps:
        wait_http(f"http://{LOOPBACK}:{port}/{name}/healthz", 120)
    return t1 - t0


def bench_serve(bench: Bench) -> dict[str, Any]:
    from raygpu.localray import free_port

    ckpts = make_checkpoints(bench)
    ceiling = {
        m: bare_ceiling(ckpts[m], 1.0 if bench.mode == "quick" else 2.0) for m in ckpts
    }
    serve_env = SERVE_LEAN_ENV if bench.serve_lean else {}
    binary = "application/octet-stream"
    runs: dict[str, Any] = {}
    heads: dict[str, Any] = {}
    idle_cores: dict[str, Any] = {}
    try:
        servers = start_fastapi(bench, ckpts)
        fastapi_url = {m: f"http://{LOOPBACK}:{servers[m]}/predict" for m in ckpts}
        for ingress, variants in SERVE_VARIANTS.items():
            head, head_s = bench.start_head(
                lean=True, env=serve_env, serve_ingress=ingress
            )
            heads[ingress] = {"start_s": round(head_s, 2)}
            log(f"serve: {ingress} head up in {head_s:.1f}s")
            port = free_port()
            try:
                for model, (_, shape) in SERVE_MODELS.items():
                    apps = {
                        f"{model}-{v}": (ckpts[model], b) for v, b in variants.items()
                    }
                    dep_s = deploy_model(bench, head, port, apps)
                    log(f"serve: {ingress} {model} apps deployed in {dep_s:.1f}s")
                    with CpuSampler(bench.markers) as idle:
                        time.sleep(3)
                    idle_cores[f"{ingress}/{model}"] = idle.cores()
                    urls = {
                        v: f"http://{LOOPBACK}:{port}/{model}-{v}/predict"
                        for v in variants
                    }
                    if ingress == "haproxy":
                        urls["fastapi"] = fastapi_url[model]
                    body = serve_body(shape, binary)
                    for c in CONCURRENCY:
                        for r in range(bench.cfg["serve_rounds"]):
                            for v, url in urls.items():
                                res = one_load(bench, url, body, binary, c)
                                runs.setdefault(f"{model}/{v}/c{c}", []).append(res)
                            log(
                                f"serve {ingress} {model} c={c} round {r + 1}: "
                                + ", ".join(
                                    f"{v} {runs[f'{model}/{v}/c{c}'][-1]['rps']:.0f}"
                                    for v in urls
                                )
                            )
                    if ingress == "haproxy" and model == "cnn":
                        # The request format: JSON lists of floats vs binary, c=32.
                        jbody = serve_body(shape, "application/json")
                        for r in range(bench.cfg["serve_rounds"]):
                            for v in ("serve_batched", "fastapi"):
                                res = one_load(
                                    bench, urls[v], jbody, "application/json", 32
                                )
                                runs.setdefault(f"cnn/{v}-json/c32", []).append(res)
                            log(f"serve cnn json c=32 round {r + 1} done")
            finally:
                bench.stop_head(head.temp_dir)
    finally:
        for proc in bench.procs:
            kill_group(proc)
        bench.procs.clear()
    summary = {
        key: {
            "rps": stats([x["rps"] for x in rs]),
            "p50_ms": stats([x["p50_ms"] for x in rs]),
            "p99_ms": stats([x["p99_ms"] for x in rs]),
            "errors": sum(x["errors"] for x in rs),
            "generator_cores": stats([x.get("generator_cores") for x in rs]),
        }
        for key, rs in runs.items()
    }

    def rps(key: str) -> list[float]:
        return [x["rps"] for x in runs[key]]

    ratios = {}
    for model in SERVE_MODELS:
        for c in CONCURRENCY:
            b = rps(f"{model}/serve_batched/c{c}")
            fa = rps(f"{model}/fastapi/c{c}")
            ratios[f"{model} c{c} serve_batched/fastapi"] = paired_ratios(b, fa)
            ratios[f"{model} c{c} serve_batched/serve_unbatched"] = paired_ratios(
                b, rps(f"{model}/serve_unbatched/c{c}")
            )
            ratios[f"{model} c{c} serve_batched/serve_batched_proxy"] = paired_ratios(
                b, rps(f"{model}/serve_batched_proxy/c{c}")
            )
            ratios[f"{model} c{c} serve_batched_proxy/fastapi"] = paired_ratios(
                rps(f"{model}/serve_batched_proxy/c{c}"), fa
            )
            ceil = ceiling[model][str(c)]["rps"]
            ratios[f"{model} c{c} serve_batched/bare"] = stats([x / ceil for x in b])
    return {
        "generator": generator_name(),
        "request": "one instance per request, float32 little-endian body "
        "(application/octet-stream, X-Instances: 1); JSON body where marked",
        "checkpoints": "freshly initialised models saved with "
        "mlcore.checkpointing.save (speed, not accuracy)",
        "setup": f"serve_* = {SERVE_REPLICAS} replicas of 1 torch thread each behind "
        "HAProxy (serveIngress: haproxy); serve_batched_proxy = the same app "
        "behind Ray's proxy (serveIngress: proxy, Ray's default), measured on a "
        "second head after the HAProxy rounds, paired by round number; fastapi = "
        "one uvicorn process, one torch thread",
        "serve_env": serve_env,
        "bare_ceiling": ceiling,
        "heads": heads,
        "idle_cores": idle_cores,
        "runs": runs,
        "summary": summary,
        "ratios": ratios,
    }


def generator_name() -> str:
    path = bench_load.wrk_path()
    if not path:
        return "python-asyncio (wrk not installed: apt-get install -y wrk)"
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10
        )
        return (out.stdout or out.stderr).split("[")[0].strip() or "wrk"
    except (OSError, subprocess.SubprocessError):
        return "wrk"


# ----------------------------------------------------------------------- 4. plan


def bench_plan(bench: Bench) -> dict[str, Any]:
    script = REPO / "scripts" / "plan.py"
    if not script.exists():
        return {"skipped": "scripts/plan.py does not exist yet"}
    runs: dict[str, list[float]] = {"dev": [], "prod": []}
    for _ in range(bench.cfg["plan_rounds"]):
        for stack in runs:
            log_path = bench.new_path(f"plan-{stack}", ".log")
            rc, t0, t1 = run_logged(
                [PY, str(script), "--stack", stack], log_path, base_env(), 300
            )
            if rc != 0:
                return {"skipped": f"plan --stack {stack} failed: {tail(log_path, 3)}"}
            runs[stack].append(t1 - t0)
    return {"summary": {s: stats(v) for s, v in runs.items()}}


# -------------------------------------------------------------------- reporting


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    from importlib import metadata

    for pkg in ("ray", "torch", "torchvision", "fastapi", "uvicorn"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    out["load_generator"] = generator_name()
    return out


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, measured (met is None when not measured)."""
    out = []

    def add(name, target, s, ok):
        med = s.get("median") if s else None
        out.append(
            {
                "name": name,
                "target": target,
                "median": med,
                "min": s.get("min") if s else None,
                "max": s.get("max") if s else None,
                "met": None if med is None else bool(ok(med)),
            }
        )

    train = results.get("train", {})
    add(
        "Ray Train (lean) / torchrun throughput, interleaved slices",
        ">= 0.95",
        (train.get("interleaved") or {}).get("ratio"),
        lambda v: v >= 0.95,
    )
    add(
        "Ray Train (lean) / torchrun throughput, runs in turn",
        ">= 0.95",
        train.get("ratios", {}).get("ray_lean/torchrun"),
        lambda v: v >= 0.95,
    )
    st = results.get("startup", {}).get("ratios", {})
    for v in ("ray_driver", "ray_job_submit"):
        add(
            f"{v} / torchrun time to first step",
            "<= 2.0",
            st.get(f"{v}/torchrun first step"),
            lambda v: v <= 2.0,
        )
    sv = results.get("serve", {})
    for variant, label in (
        ("serve_batched", "HAProxy ingress"),
        ("serve_batched_proxy", "Ray proxy ingress"),
    ):
        add(
            f"Serve batched ({label}) / FastAPI rps, CNN c=32",
            ">= 1.5",
            sv.get("ratios", {}).get(f"cnn c32 {variant}/fastapi"),
            lambda v: v >= 1.5,
        )
        add(
            f"Serve batched ({label}) p99 ms, MLP c=8",
            "< 50",
            sv.get("summary", {}).get(f"mlp/{variant}/c8", {}).get("p99_ms"),
            lambda v: v < 50,
        )
    return out


def render_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"- date: {results['date']}, mode: {results['mode']}, "
        f"{m['cpus']} CPUs, load average at start {m['loadavg_start']}, "
        f"at end {m['loadavg_end']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
        f"- command: `{results['command']}`; wall time {results['wall_s']:.0f} s",
        "- figures: median (min-max) over the rounds; ratios paired within a round",
    ]
    for note in results.get("notes", []):
        lines.append(f"- note: {note}")
    lines += [
        "",
        "## Targets",
        "",
        "| target | goal | measured | met |",
        "|---|---|---|---|",
    ]
    for t in results.get("targets", []):
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        s = {"median": t["median"], "min": t["min"], "max": t["max"], "n": 2}
        lines.append(f"| {t['name']} | {t['target']} | {fmt_stats(s, 2)} | {met} |")

    tr = results.get("train")
    if tr and "skipped" not in tr:
        w = tr["work"]
        lines += [
            "",
            "## 1. Training throughput",
            "",
            f"{w['model']} on {w['dataset']} 3x32x32, {w['workers']} workers, "
            f"global batch {w['batch_size']}, {w['threads_per_worker']} thread per "
            f"worker, {w['epochs']} epochs, epoch 0 excluded. loop = samples / "
            "training-loop seconds; wall = the same samples over the time between "
            "epoch ends (validation, checkpoint, report included). Ray daemons = "
            "CPU cores used by gcs/raylet/dashboard/agents/idle workers while the "
            "run lasted. Steady overhead = cores used by everything but the two "
            "training workers (Ray's daemons, Train's controller and helper "
            "actors, the driver; torchrun's agent) during the measured epochs. "
            + (
                "ray_lean_idleprio is ray_lean with those Ray processes moved to "
                "SCHED_IDLE while it runs, so they only get a core the workers "
                "leave free: a diagnosis of what they cost, not a setting raygpu "
                "ships. "
                if "ray_lean_idleprio" in tr["summary"]
                else ""
            )
            + "Training thread = each worker's busiest thread in the measured epochs "
            "(/proc schedstat, mean of the two workers): share of wall time it ran, "
            "share it waited runnable on a run queue while another task had the "
            "core, and involuntary context switches (preemptions) per second. "
            "Page faults a step = minor page faults of the training threads inside "
            "the training loop, per step (see ray_jobs/mlcore/allocator.py).",
            "",
            "| variant | loop samples/s | wall samples/s | Ray daemons (cores) "
            "| steady overhead (cores) | other users (cores) "
            "| training thread ran | run-queue wait | preemptions/s "
            "| page faults a step |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for v, s in tr["summary"].items():
            lines.append(
                f"| {v} | {fmt_stats(s['loop_samples_per_s'])} | "
                f"{fmt_stats(s['wall_samples_per_s'])} | "
                f"{fmt_stats(s['ray_daemon_cores'], 2)} | "
                f"{fmt_stats(s.get('steady_overhead_cores'), 2)} | "
                f"{fmt_stats(s['foreign_cores'], 2)} | "
                f"{fmt_stats(s.get('train_thread_run'), 2)} | "
                f"{fmt_stats(s.get('train_thread_runqueue_wait'), 3)} | "
                f"{fmt_stats(s.get('train_thread_preemptions_per_s'), 0)} | "
                f"{fmt_stats(s.get('loop_faults_per_step'), 0)} |"
            )
        lines += ["", "| ratio | median (range) |", "|---|---|"]
        for k, s in tr["ratios"].items():
            lines.append(f"| {k} | {fmt_stats(s, 2)} |")
        il = tr.get("interleaved")
        if il and "skipped" in il:
            lines += ["", f"Interleaved runs: skipped: {il['skipped']}"]
        elif il:
            iw = il["work"]
            a, b = INTERLEAVED_VARIANTS
            lines += [
                "",
                "### Interleaved runs",
                "",
                f"The same work for {iw['epochs']} epochs. Both runs start together; "
                "each is paused (SIGSTOP of its whole process tree) once all its "
                "ranks have ended epoch 0, and then they take turns on the machine "
                f"in {il['slice_s']:.0f}-s slices, the other one paused, until one "
                "finishes, so the host's drift in speed falls on both alike. "
                "samples/s = samples of the epochs after the first that ended "
                "while both ran / the training-loop time that fell in the run's "
                "own slices (slowest rank). Rounds alternate which run goes first. "
                "Page faults a step: as in the table above, over the same epochs.",
                "",
                f"| round | first turn | {a} samples/s (epochs) "
                f"| {b} samples/s (epochs) | {a}/{b} "
                f"| page faults a step, {a} / {b} |",
                "|---|---|---|---|---|---|",
            ]
            for i, r in enumerate(il["rounds"], 1):
                ra, rb = r[a]["samples_per_s"], r[b]["samples_per_s"]
                ratio = ra / rb if ra and rb else None
                lines.append(
                    f"| {i} | {r['first_turn']} | {fmt(ra)} ({r[a]['epochs']}) | "
                    f"{fmt(rb)} ({r[b]['epochs']}) | {fmt(ratio, 3)} | "
                    f"{fmt(r[a].get('faults_per_step'), 0)} / "
                    f"{fmt(r[b].get('faults_per_step'), 0)} |"
                )
            lines.append(
                f"| median (range) | | {fmt_stats(il['summary'][a])} | "
                f"{fmt_stats(il['summary'][b])} | {fmt_stats(il['ratio'], 3)} | |"
            )

    su = results.get("startup")
    if su and "skipped" not in su:
        w = su["work"]
        lines += [
            "",
            "## 2. Time to first step (3-epoch toy DDP run)",
            "",
            f"{w['model']} on {w['dataset']}, 2 workers, {w['epochs']} epochs, a "
            f"checkpoint per epoch. Ray runs join a head started once "
            f"({su['head_start_s']:.1f} s to start). Seconds from the command's "
            "launch.",
            "",
            "| variant | first step (s) | total (s) |",
            "|---|---|---|",
        ]
        for v, s in su["summary"].items():
            lines.append(
                f"| {v} | {fmt_stats(s['first_step_s'])} | {fmt_stats(s['total_s'])} |"
            )
        lines += ["", "| ratio | median (range) |", "|---|---|"]
        for k, s in su["ratios"].items():
            lines.append(f"| {k} | {fmt_stats(s, 2)} |")
        lines += ["", "Where the time goes (seconds, median (range)):", ""]
        for v, s in su["summary"].items():
            lines.append(
                f"- {v}: "
                + "; ".join(f"{k} {fmt_stats(p)}" for k, p in s["phases"].items())
            )
        procs = {
            v: s["processes_up_s"]
            for v, s in su["summary"].items()
            if s.get("processes_up_s")
        }
        if procs:
            lines += [
                "",
                "Ray processes up, seconds after `fit()` started (from Ray's worker "
                "logs: when each actor's process had imported Ray and connected; "
                "RayTrainWorker: the last of the two):",
                "",
            ]
            for v, up in procs.items():
                lines.append(
                    f"- {v}: " + "; ".join(f"{a} {fmt_stats(x)}" for a, x in up.items())
                )

    sv = results.get("serve")
    if sv and "skipped" not in sv:
        lines += [
            "",
            "## 3. Serving",
            "",
            f"Generator: {sv['generator']}, closed loop on 127.0.0.1. "
            f"Request: {sv['request']}. Checkpoints: {sv['checkpoints']}. "
            + (f"{sv['setup']}. " if sv.get("setup") else "")
            + "bare = the model in-process on a batch of c (1 thread): the ceiling.",
            "",
            "| model | c | variant | rps | p50 ms | p99 ms | generator cores |",
            "|---|---|---|---|---|---|---|",
        ]
        for model in SERVE_MODELS:
            for c in CONCURRENCY:
                b = sv["bare_ceiling"][model][str(c)]
                lines.append(
                    f"| {model} | {c} | bare (batch {c}) | {fmt(b['rps'])} | "
                    f"{fmt(b['p50_ms'], 2)} | {fmt(b['p99_ms'], 2)} | - |"
                )
                for key, s in sv["summary"].items():
                    mm, v, cc = key.split("/")
                    if mm == model and cc == f"c{c}":
                        lines.append(
                            f"| {model} | {c} | {v} | {fmt_stats(s['rps'])} | "
                            f"{fmt_stats(s['p50_ms'], 2)} | "
                            f"{fmt_stats(s['p99_ms'], 2)} | "
                            f"{fmt_stats(s['generator_cores'], 2)} |"
                        )
        lines += ["", "| ratio (rps) | median (range) |", "|---|---|"]
        for k, s in sv["ratios"].items():
            lines.append(f"| {k} | {fmt_stats(s, 2)} |")

    for name in ("train", "startup", "serve"):
        if "skipped" in results.get(name, {}):
            lines += ["", f"## {name}", "", f"skipped: {results[name]['skipped']}"]
    pl = results.get("plan")
    if pl:
        lines += ["", "## 4. Offline plan", ""]
        if "skipped" in pl:
            lines.append(f"skipped: {pl['skipped']}")
        else:
            lines += ["| stack | wall s |", "|---|---|"]
            for s, st in pl["summary"].items():
                lines.append(f"| {s} | {fmt_stats(st)} |")
    return "\n".join(lines) + "\n"


REQUIRED_KEYS = ("schema", "date", "mode", "machine", "versions", "targets")


def check_schema(results: dict[str, Any]) -> list[str]:
    """Problems with a results object (empty when it is well formed)."""
    problems = [f"missing key {k!r}" for k in REQUIRED_KEYS if k not in results]
    if results.get("schema") != SCHEMA:
        problems.append(f"schema must be {SCHEMA}")
    if not isinstance(results.get("machine", {}).get("cpus"), int):
        problems.append("machine.cpus must be an integer")
    for section in SECTIONS:
        if section not in results:
            continue
        body = results[section]
        if "skipped" in body:
            continue
        for key, s in body.get("summary", {}).items():
            if section == "plan":
                continue
            if not isinstance(s, dict):
                problems.append(f"{section}.summary.{key} is not an object")
    for t in results.get("targets", []):
        if set(t) != {"name", "target", "median", "min", "max", "met"}:
            problems.append(f"target {t.get('name')!r} has the wrong keys")
    return problems


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one round of each section")
    p.add_argument(
        "--only", default=",".join(SECTIONS), help=f"sections, from {SECTIONS}"
    )
    p.add_argument("--out", default=str(REPO / "bench"), help="results folder")
    p.add_argument("--keep-work", action="store_true", help="keep logs and marks")
    p.add_argument(
        "--serve-default-env",
        action="store_true",
        help="run Serve with Ray's default threading (the 'before' measurement)",
    )
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        p.error(f"--only: unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    mode = "quick" if args.quick else "full"
    work = Path(tempfile.mkdtemp(prefix="rg-bench-work-"))
    bench = Bench(work, mode)
    bench.serve_lean = not args.serve_default_env
    started = time.monotonic()
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "mode": mode,
        "command": " ".join(["scripts/bench.py", *getattr(args, "argv", [])]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_start": loadavg(),
        },
        "versions": versions(),
        "notes": [],
    }
    if not bench_load.wrk_path():
        results["notes"].append(
            "wrk is not installed (apt-get install -y wrk): the Python asyncio "
            "generator was used; it costs more CPU, which the servers lose"
        )
    sections = {
        "train": bench_train,
        "startup": bench_startup,
        "serve": bench_serve,
        "plan": bench_plan,
    }
    previous = {signal.SIGTERM: signal.getsignal(signal.SIGTERM)}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        for name in args.sections:
            log(f"section {name}")
            t0 = time.monotonic()
            try:
                results[name] = sections[name](bench)
            except BenchError as exc:
                results[name] = {"skipped": f"failed: {exc}"}
                results["notes"].append(f"{name} failed: {str(exc).splitlines()[0]}")
                log(f"{name} FAILED: {exc}")
            results[name]["section_s"] = round(time.monotonic() - t0, 1)
    finally:
        bench.cleanup()
        signal.signal(signal.SIGTERM, previous[signal.SIGTERM])
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"logs kept in {work}")
    results["machine"]["loadavg_end"] = loadavg()
    results["wall_s"] = round(time.monotonic() - started, 1)
    foreign = [
        r["foreign_cores"]
        for sec in ("train", "startup")
        for rs in results.get(sec, {}).get("runs", {}).values()
        for r in rs
    ]
    if foreign and max(foreign) > 0.1:
        results["notes"].append(
            f"shared machine: other users' processes used up to "
            f"{max(foreign):.2f} cores during the training runs"
        )
    results["targets"] = targets(results)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = run(args)
    except (BenchError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    problems = check_schema(results)
    if problems:
        print("error: bad results: " + "; ".join(problems), file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(render_markdown(results))
    log(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    for t in results["targets"]:
        log(f"target {t['name']} {t['target']}: median {fmt(t['median'], 2)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
