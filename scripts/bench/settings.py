"""What the benchmark runs and with which settings: one place for every section."""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RAY_JOBS = REPO / "ray_jobs"
PY = sys.executable
SCHEMA = 1
SECTIONS = (
    "train",
    "startup",
    "serve",
    "plan",
    "allocator",
    "lm",
    "data",
    "tune",
    "compress",
    "lmserve",
    "monitoring",
)

# The benchmark's own programs, run as modules (`python -m`) in child processes
# whose PYTHONPATH holds ray_jobs/ and the repository (proc.child_env). The CPU
# accounting tells processes apart by these names on their command lines.
TORCHRUN_WORKER = "scripts.bench.torchrun_worker"
RAYTRAIN_DRIVER = "scripts.bench.raytrain_driver"
FASTAPI_SERVER = "scripts.bench.fastapi_server"
SERVE_DEPLOY = "scripts.bench.serve_deploy"
SERVE_MODELS_PROGRAM = "scripts.bench.serve_models"
LOAD_GENERATOR = "scripts.bench.load"
ALLOCATOR_PROBE = "scripts.bench.allocator_probe"
COMPRESS_MODELS_PROGRAM = "scripts.bench.compress_models"

# The variable that names a run's timing-marks file: mlcore.marks.MARKS_ENV
# (this process does not import ray_jobs code; tests/scripts checks the two agree).
MARKS_ENV = "RAYGPU_BENCH_MARKS"

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
    # nothing exports them, and the reader costs CPU the replicas lose.
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
        "allocator_rounds": 1,
        "lm_rounds": 1,
        "compress_seeds": (0,),
        "compress_rounds": 1,
        "compress_seconds": 0.5,
        # A smoke run: a grid of 8 points (the is at least 16), 1 seed.
        "tune": {
            "seeds": (0,),
            "grid_points": 2,
            "num_samples": 6,
            "startup_trials": 3,
            "epochs": 3,
        },
        # Fewer rows than the 50,000: a check that the section runs.
        "data_rows": 8_000,
        "data_rounds": 1,
        "data_accuracy_seeds": (0,),
        "data_prepare_rows": 50_000,
    },
    "full": {
        "train_rounds": 3,
        # Ray with its defaults (ray_default) and the idle-priority diagnosis
        # (ray_lean_idleprio) made no measurable difference to throughput
        # against the lean setup (docs/performance.md): their time goes to the
        # interleaved rounds, which keeps the full run under 20 minutes.
        # --quick still runs both once.
        "train_variants": ("torchrun", "ray_lean"),
        "train_default_rounds": 0,
        "interleaved_rounds": 3,
        "startup_rounds": 3,
        "serve_rounds": 3,
        "serve_seconds": 3.0,
        "serve_requests": 20000,
        "plan_rounds": 3,
        "allocator_rounds": 3,
        "lm_rounds": 3,
        "compress_seeds": (0, 1, 2),
        "compress_rounds": 3,
        "compress_seconds": 1.0,
        "data_rows": 50_000,
        "data_rounds": 3,
        "data_accuracy_seeds": (0, 1, 2),
        "data_prepare_rows": 200_000,
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
INTERLEAVED_VARIANTS = ("ray_lean", "torchrun")
INTERLEAVED_WORK = {**TRAIN_WORK, "epochs": 8}
SLICE_S = 2.0
STARTUP_WORK = {"model": "mlp", "dataset": "digits", "epochs": 3, "batch_size": 64}
CONCURRENCY = (1, 8, 32)
# 7. data (scripts/bench/data.py). Both ingest modes run train.py with the same
# work; 2 workers at 0.5 CPU leave Ray Data one of the head's 2 CPUs (Train
# reserves its workers' CPUs first, and each Data read task asks for 1).
DATA_WORK = {
    "ingest": {
        "model": "cnn",
        "epochs": 2,
        "batch_size": 256,
        "num_workers": 2,
        "cpus_per_worker": 0.5,
        "seed": 0,
        "data_seed": 0,
    },
    "accuracy": {
        "model": "mlp",
        "epochs": 10,
        "batch_size": 64,
        "num_workers": 2,
        "cpus_per_worker": 0.5,
    },
    "table_seed": 0,
    "prepare_seed": 0,
    "prepare_shape": (3, 8, 8),
    "prepare_files": 4,
}
SERVE_MODELS = {"mlp": ("digits", (1, 8, 8)), "cnn": ("synthetic", (3, 32, 32))}
# 8. tune (scripts/bench/tune.py): one search space for the grid and for ASHA
# with Optuna; the grid takes 4 values of the log-uniform rate and every choice
# (16 points). 2 trials at once, each 1 worker x 0.5 CPU, fit 2 cores.
TUNE_WORK = {
    "space": {
        "parameters": {
            "lr": {"distribution": "loguniform", "low": 3e-4, "high": 3e-2},
            "batch_size": {"distribution": "choice", "values": [32, 128]},
            "width": {"distribution": "choice", "values": [64, 256]},
        }
    },
    "epochs": 9,
    "grid_points": 4,
    # 8 trials, 3 of them random: in an offline replay of this search over 90
    # Optuna seeds (scripts/bench/tune_replay.py) both targets held in about 90 %
    # of seed triples; the epoch budget (scripts/bench/tune.py) caps the rest.
    "num_samples": 8,
    "startup_trials": 3,
    "grace_period": 1,
    "reduction_factor": 4,
    "max_concurrent": 2,
    "cpus_per_worker": 0.5,
    "seeds": (0, 1, 2),
    # torch's seed in every trial of both searches: the seeds vary Optuna only, so
    # a gap measures the search, not how two initialisations of one model differ.
    "train_seed": 0,
}


class BenchError(RuntimeError):
    """A benchmark step could not run (its message says which and why)."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)
