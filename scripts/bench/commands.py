"""The training commands the benchmark runs: torchrun with the baseline worker,
Ray Train in a fresh driver (its own cluster or a running head's), and
`ray job submit` of train.py to a running head."""

from __future__ import annotations

import json
from pathlib import Path

from raygpu.names import LOOPBACK
from scripts.bench.proc import Bench, child_env
from scripts.bench.settings import (
    LEAN_ENV,
    PY,
    RAY_JOBS,
    RAYTRAIN_DRIVER,
    TORCHRUN_WORKER,
)

# Variants that start their own head for the run (raytrain_driver --own-cluster).
OWN_CLUSTER_VARIANTS = ("ray_lean", "ray_lean_idleprio", "ray_default")


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


def torchrun(module: str, args: list[str], nproc: int = 2) -> list[str]:
    """torchrun with `nproc` ranks of `module` on a free loopback port (run it
    with proc.child_env, which makes the module and ray_jobs/ importable)."""
    from raygpu.localray import free_port

    return [
        str(Path(PY).with_name("torchrun")),
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        LOOPBACK,
        "--master_port",
        str(free_port()),
        "-m",
        module,
        *args,
    ]


def torchrun_argv(work: dict, out: Path) -> list[str]:
    """torchrun with 2 ranks of the torchrun_worker module."""
    return torchrun(
        TORCHRUN_WORKER,
        [
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
        ],
    )


def training_command(
    bench: Bench, variant: str, work: dict, address: str | None = None
) -> tuple[list[str], dict[str, str], Path, Path, str | None]:
    """(argv, env, marks file, log file, own cluster's temp dir) of one run."""
    marks = bench.new_path(f"{variant}-marks", ".jsonl")
    log = bench.new_path(variant, ".log")
    env = child_env(marks)
    storage = bench.work / "runs"
    run_name = f"{variant}-{bench.counter}"
    temp_dir = None
    if variant == "torchrun":
        argv = torchrun_argv(work, storage / run_name)
    elif variant in OWN_CLUSTER_VARIANTS:
        temp_dir = bench.new_temp_dir()  # stopped by it if the driver dies
        opts = ["--own-cluster", temp_dir]
        if variant != "ray_default":
            opts.append("--lean")
            env.update(LEAN_ENV)
        argv = [PY, "-m", RAYTRAIN_DRIVER, *opts, "--"]
        argv += train_args(work, storage, run_name)
    elif variant == "ray_driver":
        env["RAY_ADDRESS"] = address or ""
        env.update(LEAN_ENV)
        argv = [PY, "-m", RAYTRAIN_DRIVER, "--"]
        argv += train_args(work, storage, run_name)
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
