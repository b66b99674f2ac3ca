"""The benchmark's command line: which sections, which mode, where the results go.

python -m scripts.bench                  # full run (< 20 min on 2 cores), bench/
python -m scripts.bench --quick          # one round of everything
python -m scripts.bench --only train,serve --out /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from scripts.bench import load
from scripts.bench.allocator import bench_allocator
from scripts.bench.compress import bench_compress
from scripts.bench.data import bench_data
from scripts.bench.lm import bench_lm
from scripts.bench.lmserve import bench_lmserve
from scripts.bench.lmserve_report import PLOT_FILE, plot
from scripts.bench.monitoring import bench_monitoring
from scripts.bench.proc import Bench
from scripts.bench.report import check_schema, render_markdown, targets, versions
from scripts.bench.serving import bench_serve
from scripts.bench.settings import REPO, SCHEMA, SECTIONS, BenchError, log
from scripts.bench.startup import bench_plan, bench_startup
from scripts.bench.stats import fmt
from scripts.bench.training import bench_train
from scripts.bench.tune import bench_tune

DESCRIPTION = (
    "make bench: Ray Train against torchrun, Ray Serve against FastAPI, "
    "start-up cost, the offline plan, the allocator settings, Ray Data "
    "ingestion and preparation"
)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.bench", description=DESCRIPTION)
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
        "command": " ".join(["python -m scripts.bench", *getattr(args, "argv", [])]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_start": loadavg(),
        },
        "versions": versions(),
        "notes": [],
    }
    if not load.wrk_path():
        results["notes"].append(
            "wrk is not installed (apt-get install -y wrk): the Python asyncio "
            "generator was used; it costs more CPU, which the servers lose"
        )
    sections = {
        "train": bench_train,
        "startup": bench_startup,
        "serve": bench_serve,
        "plan": bench_plan,
        "allocator": bench_allocator,
        "lm": bench_lm,
        "data": bench_data,
        "tune": bench_tune,
        "compress": bench_compress,
        "lmserve": bench_lmserve,
        "monitoring": bench_monitoring,
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
    if "runs" in results.get("lmserve", {}):
        plot(results["lmserve"], out / PLOT_FILE)
    log(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    for t in results["targets"]:
        log(f"target {t['name']} {t['target']}: median {fmt(t['median'], 2)}")
    return 0
