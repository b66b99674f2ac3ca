"""2. startup: a 3-epoch toy DDP run (digits MLP): torchrun, TorchTrainer.fit() in
a fresh driver joining a running cluster, `ray job submit` to it; time to the
first optimizer step, total, and where the time goes (timing marks, Ray's
worker logs). 4. plan: wall time of the offline plan per stack."""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any

from scripts.bench.cpu import CpuSampler
from scripts.bench.marks import phase_order
from scripts.bench.proc import Bench, child_env, run_logged, tail
from scripts.bench.settings import PY, STARTUP_WORK, log
from scripts.bench.stats import fmt, paired_ratios, stats
from scripts.bench.training import one_training_run


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
        keys = sorted({k for x in rs for k in x["phases"]}, key=phase_order)
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


def bench_plan(bench: Bench) -> dict[str, Any]:
    """4. plan: wall time of `raygpu plan --stack S` (the offline plan with cost),
    and of `plan --policy` (the security rules over the planned resources too)."""
    runs: dict[str, list[float]] = {
        f"{stack}{flag}": [] for flag in ("", " --policy") for stack in ("dev", "prod")
    }
    for _ in range(bench.cfg["plan_rounds"]):
        for key in runs:
            stack, *flags = key.split()
            log_path = bench.new_path(f"plan-{stack}{''.join(flags)}", ".log")
            argv = [PY, "-m", "raygpu", "plan", "--stack", stack, *flags]
            rc, t0, t1 = run_logged(argv, log_path, child_env(), 300)
            if rc != 0:
                return {"skipped": f"plan --stack {key} failed: {tail(log_path, 3)}"}
            runs[key].append(t1 - t0)
    return {"summary": {s: stats(v) for s, v in runs.items()}}
