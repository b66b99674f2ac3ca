"""The results: the issue's targets as measured, the schema check, and
bench/results.md (the markdown writer)."""

from __future__ import annotations

import contextlib
import json
import platform
from typing import Any

from scripts.bench.compress import compress_markdown, compress_targets
from scripts.bench.data_report import data_markdown
from scripts.bench.lmserve_report import lmserve_markdown, lmserve_targets
from scripts.bench.load import generator_name
from scripts.bench.monitoring_report import monitoring_markdown, monitoring_targets
from scripts.bench.settings import (
    CONCURRENCY,
    INTERLEAVED_VARIANTS,
    SCHEMA,
    SECTIONS,
    SERVE_MODELS,
)
from scripts.bench.stats import fmt, fmt_stats
from scripts.bench.tune import tune_markdown, tune_targets


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
    plan = results.get("plan", {}).get("summary", {})
    for stack in ("dev", "prod"):
        add(
            f"plan --policy wall time, {stack} stack (s)",
            "< 10",
            plan.get(f"{stack} --policy"),
            lambda v: v < 10,
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
    data = results.get("data", {})
    add(
        "Ray Data streaming / in-memory DataLoader samples/s (CNN, prepared 3x32x32)",
        ">= 0.9",
        (data.get("ingest") or {}).get("streaming/in_memory"),
        lambda v: v >= 0.9,
    )
    add(
        "digits test accuracy, streamed - in memory (points, median over seeds)",
        ">= -1.0",
        (data.get("accuracy") or {}).get("streaming-in_memory points"),
        lambda v: v >= -1.0,
    )
    lm = results.get("lm", {})
    add(
        "LM FSDP: Ray Train / torchrun tokens/s",
        ">= 0.95",
        lm.get("ray/torchrun"),
        lambda v: v >= 0.95,
    )
    add(
        "LM sharded DCP save / torch.save of the full state",
        "<= 1.0",
        (lm.get("save") or {}).get("sharded/full"),
        lambda v: v <= 1.0,
    )
    tune_targets(results.get("tune", {}), add)
    compress_targets(results.get("compress", {}), add)
    lmserve_targets(results.get("lmserve", {}), add)
    monitoring_targets(results.get("monitoring", {}), add)
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

    lines += lm_markdown(results.get("lm"))
    lines += data_markdown(results.get("data"))
    for name in ("train", "startup", "serve", "allocator", "lm", "data", "tune"):
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
    lines += allocator_markdown(results.get("allocator"))
    lines += tune_markdown(results.get("tune"))
    lines += compress_markdown(results.get("compress"))
    lines += lmserve_markdown(results.get("lmserve"))
    lines += monitoring_markdown(results.get("monitoring"))
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


def lm_markdown(lm: dict[str, Any] | None) -> list[str]:
    if not lm or "skipped" in lm:
        return []
    work, save = lm["work"], lm["save"]
    return [
        "",
        "## 6. Language model (FSDP2)",
        "",
        f"- work: {json.dumps(work, sort_keys=True)}",
        "",
        "| side | tokens/s (steady) | run wall s |",
        "|---|---|---|",
        *(
            f"| {v} | {fmt_stats(s)} | {fmt_stats(lm['run_wall_s'][v], 1)} |"
            for v, s in lm["tokens_per_s"].items()
        ),
        "",
        f"- Ray Train / torchrun: {fmt_stats(lm['ray/torchrun'], 3)}",
        "",
        f"| save, preset {save['preset']} | sharded s | full s | sharded/full |",
        "|---|---|---|---|",
        *(
            f"| {where} | {fmt_stats(s['sharded_s'], 3)} | "
            f"{fmt_stats(s['full_s'], 3)} | {fmt_stats(s['sharded/full'], 3)} |"
            for where, s in (
                ("local disk", save),
                ("S3 API on loopback (moto)", save.get("s3")),
            )
            if s
        ),
    ]


def allocator_markdown(al: dict[str, Any] | None) -> list[str]:
    """Section 5: page faults with glibc's defaults and with the settings."""
    if not al or "skipped" in al:
        return []
    lines = [
        "",
        "## 5. Allocator settings (page faults)",
        "",
        "Minor page faults of the thread that runs the work, in a fresh process "
        "per run: with glibc's defaults and with "
        "`mlcore.allocator.keep_freed_memory()`. "
        + "; ".join(f"{w}: {d}" for w, d in al["workloads"].items())
        + f". Transparent huge pages: {al['transparent_huge_pages']}. "
        f"Faulting = over {al['faulting_above']} pages in one step or batch.",
        "",
        "| workload | setting | faults a step | steps faulting (of) |",
        "|---|---|---|---|",
    ]
    for w, by_setting in al["summary"].items():
        for setting, s in by_setting.items():
            lines.append(
                f"| {w} | {setting} | {fmt_stats(s['faults_per_step'])} | "
                f"{fmt_stats(s['steps_faulting'], 0)} ({s['steps']}) |"
            )
    lines += ["", "| ratio | median (range) |", "|---|---|"]
    for k, s in al["ratios"].items():
        lines.append(f"| {k} | {fmt_stats(s, 0)} |")
    return lines
