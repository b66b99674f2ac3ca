"""11. monitoring: what a Prometheus scraping the cluster costs the work on it.

One local Ray head (metrics collection on, as on a stack) with the serve
section's CNN app deployed, warmed up (unmeasured), and one Prometheus
(raygpu.monitoring.local's, scraping the head through Ray's service-discovery
file every 15 s, its default). The two conditions take turns in short windows
on the same head: Prometheus running and scraping, or no Prometheus at all, its
process stopped (SIGSTOP: it scrapes nothing and takes no CPU). Windows run in
pairs whose order alternates (A B, B A, ...), so a drift in the machine's speed
falls on both conditions of a pair alike, and each pair is one paired round.
First one long training run (Ray Train, a driver joining the head) with the
windows switched under it, an epoch counting for the window it lies in; then
Serve requests/s at c=32, one load per window. Each window starts
`settle_s` after the switch: a resumed Prometheus first makes the scrape it
missed, which would otherwise put one scrape more in a window than 15-s
scraping does. Each window's scrapes, and the seconds they took, are read back
from Prometheus's own `up` and `scrape_duration_seconds` (none in the windows
without it).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from raygpu.names import LOOPBACK
from raygpu.serve_ingress import LOCAL_INGRESS
from scripts.bench.cpu import classify
from scripts.bench.marks import read_marks
from scripts.bench.proc import Bench, machine_cpu_s, snapshot
from scripts.bench.serving import deploy_model, one_load, serve_body, serve_models
from scripts.bench.settings import (
    LEAN_ENV,
    MARKS_ENV,
    SERVE_LEAN_ENV,
    SERVE_MODELS,
    THREAD_ENV,
    TRAIN_WORK,
    BenchError,
    log,
)
from scripts.bench.stats import fmt_stats, paired_ratios, stats
from scripts.bench.training import one_training_run

BASELINE = "none"
# Condition -> scrape interval in seconds (None: no Prometheus). The is
# Prometheus's default interval.
CONDITIONS = {BASELINE: None, "prometheus_15s": 15}
TARGET_CONDITION = "prometheus_15s"
MODEL = "cnn"
APP = f"{MODEL}-serve_batched"
CONCURRENCY = 32
MON_MODES = {
    # A training window spans one 15-s scrape or more of its own; a Serve
    # window one. Pairs: the paired rounds, their order alternating.
    "full": {
        "pairs": 8,
        "train_window_s": 25.0,
        "serve_s": 15.0,
        "settle_s": 2.0,
        "warmup_s": 5.0,
    },
    "quick": {
        "pairs": 1,
        "train_window_s": 8.0,
        "serve_s": 4.0,
        "settle_s": 1.0,
        "warmup_s": 2.0,
    },
}
# The head as a stack runs it: Ray's metrics on (LEAN_ENV turns them off, which
# would leave Prometheus nothing to scrape), the rest of the lean setup kept.
HEAD_ENV = {
    **THREAD_ENV,
    **LEAN_ENV,
    **SERVE_LEAN_ENV,
    "RAY_enable_metrics_collection": "1",
}
# Logical CPUs: the two Train workers (1 each) and the two Serve replicas (0.5
# each) fit at once; they take turns on the 2 cores, never loaded together.
HEAD_CPUS = 3
HEAD_MARKS = "head-marks.jsonl"


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def start_monitored_head(bench: Bench) -> Any:
    from raygpu.localray import start_head

    temp_dir = bench.new_temp_dir()  # bench.cleanup stops it if a round fails
    env = {**HEAD_ENV, MARKS_ENV: str(bench.work / HEAD_MARKS)}
    return start_head(num_cpus=HEAD_CPUS, temp_dir=temp_dir, extra_env=env)


def schedule(conditions: list[str], pairs: int) -> list[tuple[int, str]]:
    """(pair, condition) of each window: A B, B A, A B, ..."""
    return [(i, c) for i in range(pairs) for c in rotated(conditions, i)]


def rotated(conditions: list[str], r: int) -> list[str]:
    """Pair r's order: the conditions rotated by r, so each leads in turn."""
    k = r % len(conditions)
    return conditions[k:] + conditions[:k]


class Switch:
    """The measurement's one Prometheus, scraping (running) or not there at all
    (stopped: SIGSTOP leaves it no timer to fire, so no scrape and no CPU)."""

    def __init__(self, pid: int):
        self.pid = pid

    def set(self, condition: str) -> None:
        scraping = CONDITIONS[condition] is not None
        os.kill(self.pid, signal.SIGCONT if scraping else signal.SIGSTOP)

    def resume(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)


def scrape_query(t0: float, t1: float, metric: str = "up", fn: str = "count") -> str:
    """PromQL: over the window [t0, t1), `fn`_over_time of `metric` over every
    target, summed: the scrapes made (`up`), or the seconds they took. In whole
    milliseconds, the end left out: the scrape a resumed Prometheus makes at a
    switch is stamped at the switch, and belongs to the window after it."""
    start_ms, end_ms = math.ceil(t0 * 1000), math.ceil(t1 * 1000) - 1
    span = max(1, end_ms - start_ms)
    return f"sum({fn}_over_time({metric}[{span}ms] @ {end_ms / 1000:.3f}))"


def scrape_counts(url: str, windows: dict[str, tuple[float, float]]) -> dict:
    """Per window, the scrapes Prometheus made (all targets) and the seconds
    they took; and the targets."""
    from raygpu.monitoring import local

    def value(promql: str) -> float:
        result = local.query(url, promql)
        return float(result[0]["value"][1]) if result else 0.0

    out: dict[str, Any] = {
        name: int(value(scrape_query(*w))) for name, w in windows.items()
    }
    out["seconds"] = {
        name: round(value(scrape_query(*w, "scrape_duration_seconds", "sum")), 3)
        for name, w in windows.items()
    }
    out["targets"] = int(value("count(up)"))
    return out


@contextlib.contextmanager
def serve_load_settings(bench: Bench, seconds: float):
    """one_load reads its length from the mode's settings: these windows' own."""
    saved = bench.cfg
    bench.cfg = {**saved, "serve_seconds": seconds, "serve_requests": 10**7}
    try:
        yield
    finally:
        bench.cfg = saved


def epochs_between(marks: list[dict], t0: float, t1: float) -> list[dict]:
    """The epochs every rank ended in (t0, t1]: each one's training-loop start
    (its first rank's), end (its last rank's) and samples (all ranks')."""
    ends = [m for m in marks if m["event"] == "epoch_end" and t0 < m["t"] <= t1]
    ranks = {m.get("rank") for m in ends}
    by_epoch: dict[int, list[dict]] = {}
    for m in ends:
        by_epoch.setdefault(m["epoch"], []).append(m)
    return [
        {
            "epoch": e,
            "start": min(m["t"] - m["seconds"] for m in ms),
            "end": max(m["t"] for m in ms),
            "samples": sum(m["samples"] for m in ms),
        }
        for e, ms in sorted(by_epoch.items())
        if len(ms) == len(ranks)
    ]


def window_throughput(epochs: list[dict], t0: float, t1: float) -> dict[str, Any]:
    """Samples/s of the epochs after epoch 0 that lie wholly in [t0, t1]."""
    inside = [
        e for e in epochs if e["epoch"] >= 1 and t0 <= e["start"] and e["end"] <= t1
    ]
    loop_s = sum(e["end"] - e["start"] for e in inside)
    samples = sum(e["samples"] for e in inside)
    return {
        "samples_per_s": samples / loop_s if loop_s > 0 else None,
        "epochs": len(inside),
    }


def epoch_wall_s(marks: list[dict], t0: float, t1: float) -> float:
    """Seconds from one epoch's end to the next's in the run between t0 and t1."""
    ends = [e["end"] for e in epochs_between(marks, t0, t1)]
    if len(ends) < 2:
        raise BenchError("monitoring: the warm-up run ended fewer than 2 epochs")
    return (ends[-1] - ends[0]) / (len(ends) - 1)


def warmed_up_after(path: Path, since: float, ranks: int, stop: threading.Event):
    """Wait until every rank of the run launched at `since` ended epoch 0 (True),
    or `stop` is set or 300 s pass (False)."""
    deadline = time.monotonic() + 300
    while not stop.is_set() and time.monotonic() < deadline:
        done = {
            m.get("rank")
            for m in read_marks(path)
            if m["event"] == "epoch_end" and m["epoch"] == 0 and m["t"] > since
        }
        if len(done) >= ranks:
            return True
        stop.wait(0.2)
    return False


def open_window(pair: int, condition: str, switch: Switch, settle_s: float) -> dict:
    """Switch to `condition`; the window measures from `settle_s` later."""
    switch.set(condition)
    t = time.time()
    return {
        "pair": pair,
        "condition": condition,
        "switched": t,
        "start": t + settle_s,
        "_snap": snapshot(),
        "_machine": machine_cpu_s(),
    }


def close_window(w: dict, pid: int) -> dict:
    """The window's end, and Prometheus's cores over it (from its switch)."""
    w["end"] = time.time()
    seconds = w["end"] - w["switched"]
    after = snapshot()
    used = group_cpu_s(w.pop("_snap"), after, pid)
    if pid in after:  # absent if Prometheus has gone
        w["prometheus_cores"] = round(used["prometheus"] / seconds, 4)
    w["cores"] = {g: round(s / seconds, 3) for g, s in sorted(used.items()) if s > 0}
    m0, m1 = w.pop("_machine"), machine_cpu_s()
    w["machine_cores"] = {k: round((m1[k] - m0[k]) / seconds, 3) for k in m1}
    return w


def group_cpu_s(before: dict, after: dict, prometheus: int) -> dict[str, float]:
    """CPU seconds each group of processes (cpu.classify; the `prometheus` pid
    its own) spent between two proc.snapshot()s; a process new since `before`
    counts all of its own."""
    used: dict[str, float] = {}
    for pid, (cpu, cmd, _) in after.items():
        group = "prometheus" if pid == prometheus else classify(cmd)
        used[group] = used.get(group, 0.0) + cpu - before.get(pid, (0.0,))[0]
    return used


def add_scrapes(url: str, windows: list[dict]) -> None:
    """Each window's scrapes and their seconds, read back from Prometheus."""
    spans = {str(i): (w["start"], w["end"]) for i, w in enumerate(windows)}
    counts = scrape_counts(url, spans)
    for i, w in enumerate(windows):
        w["scrapes"] = counts[str(i)]
        w["scrape_s"] = counts["seconds"][str(i)]
    if windows:
        windows[0]["targets"] = counts["targets"]


def train_phase(
    bench: Bench, head: Any, prom: Any, switch: Switch, cfg: dict, wall_s: float
) -> dict[str, Any]:
    """One training run long enough for every window, switched under it."""
    plan = schedule(list(CONDITIONS), cfg["pairs"])
    span = len(plan) * cfg["train_window_s"]
    work = {**TRAIN_WORK, "epochs": 2 + math.ceil(1.2 * span / wall_s)}
    path = bench.work / HEAD_MARKS
    windows: list[dict] = []
    stop = threading.Event()
    t_launch = time.time()

    def switch_windows() -> None:
        try:
            if not warmed_up_after(path, t_launch, work["workers"], stop):
                return
            for pair, condition in plan:
                w = open_window(pair, condition, switch, cfg["settle_s"])
                stopped = stop.wait(cfg["train_window_s"])
                windows.append(close_window(w, switch.pid))
                if stopped:
                    return
        finally:
            switch.resume()

    thread = threading.Thread(target=switch_windows, daemon=True)
    thread.start()
    try:
        run = one_training_run(bench, "ray_driver", work, head.address)
    finally:
        stop.set()
        thread.join()
    epochs = epochs_between(read_marks(path), t_launch, run["t_exit"])
    for w in windows:
        w |= window_throughput(epochs, w["start"], w["end"])
    add_scrapes(prom.url, windows)
    return {
        "epochs": work["epochs"],
        "foreign_cores": run["foreign_cores"],
        "windows": windows,
    }


def serve_phase(
    bench: Bench, url: str, body: bytes, prom: Any, switch: Switch, cfg: dict
) -> dict[str, Any]:
    """One c=32 load per window, the windows switched between loads."""
    windows: list[dict] = []
    try:
        for pair, condition in schedule(list(CONDITIONS), cfg["pairs"]):
            w = open_window(pair, condition, switch, cfg["settle_s"])
            time.sleep(cfg["settle_s"])
            with serve_load_settings(bench, cfg["serve_s"]):
                serve = one_load(
                    bench, url, body, "application/octet-stream", CONCURRENCY
                )
            w = close_window(w, switch.pid)
            windows.append(w | {k: serve[k] for k in ("rps", "p99_ms", "requests")})
    finally:
        switch.resume()
    add_scrapes(prom.url, windows)
    return {"windows": windows}


def warm_up(bench: Bench, head: Any, url: str, body: bytes, cfg: dict) -> float:
    """An unmeasured training run and Serve load first (a new head's first run
    starts its worker processes); returns the run's seconds per epoch."""
    work = {**TRAIN_WORK, "epochs": 3}
    run = one_training_run(bench, "ray_driver", work, head.address)
    with serve_load_settings(bench, cfg["warmup_s"]):
        one_load(bench, url, body, "application/octet-stream", CONCURRENCY)
    marks = read_marks(bench.work / HEAD_MARKS)
    return epoch_wall_s(marks, run["t_launch"], run["t_exit"])


def by_pair(windows: list[dict], key: str) -> dict[str, list[float | None]]:
    """Per condition, `key` of its window in each pair (None where missing)."""
    pairs = sorted({w["pair"] for w in windows})
    got = {(w["pair"], w["condition"]): w.get(key) for w in windows}
    return {c: [got.get((p, c)) for p in pairs] for c in CONDITIONS}


def summarise(train: list[dict], serve: list[dict]) -> dict[str, Any]:
    """Per condition, medians over its windows; each condition / no Prometheus
    paired within a pair of windows."""
    summary: dict[str, dict] = {c: {} for c in CONDITIONS}
    ratios = {}
    for label, windows, key in (
        ("train", train, "samples_per_s"),
        ("serve", serve, "rps"),
        ("serve", serve, "p99_ms"),
    ):
        values = by_pair(windows, key)
        for c in CONDITIONS:
            summary[c][f"{label}_{key}"] = stats(values[c])
        if key == "p99_ms":
            continue
        for c in CONDITIONS:
            mine = [w for w in windows if w["condition"] == c]
            summary[c][f"{label}_scrapes"] = stats([w.get("scrapes") for w in mine])
            summary[c][f"{label}_prometheus_cores"] = stats(
                [w.get("prometheus_cores") for w in mine]
            )
            if c != BASELINE:
                ratios[f"{c}/{BASELINE} {label}"] = paired_ratios(
                    values[c], values[BASELINE]
                )
    return {"summary": summary, "ratios": ratios}


def bench_monitoring(bench: Bench) -> dict[str, Any]:
    from raygpu.errors import UsageError
    from raygpu.localray import free_port
    from raygpu.monitoring import local

    cfg = MON_MODES[bench.mode]
    try:  # before the head starts, not minutes into it
        local.find_binary()
    except UsageError as exc:
        raise BenchError(f"monitoring: {exc}") from None
    load0 = loadavg()
    ckpts, _ = serve_models(bench)
    head = start_monitored_head(bench)
    try:
        port = free_port()
        deploy_model(bench, head, port, {APP: (ckpts[MODEL], True)})
        url = f"http://{LOOPBACK}:{port}/{APP}/predict"
        body = serve_body(SERVE_MODELS[MODEL][1], "application/octet-stream")
        wall_s = warm_up(bench, head, url, body, cfg)
        folder = bench.new_path("prometheus")
        interval = CONDITIONS[TARGET_CONDITION]
        with local.running(head.temp_dir, free_port(), interval, folder) as prom:
            switch = Switch(prom.process.pid)
            log(f"monitoring: training, {cfg['pairs']} pairs of windows")
            train = train_phase(bench, head, prom, switch, cfg, wall_s)
            log(f"monitoring: Serve, {cfg['pairs']} pairs of windows")
            serve = serve_phase(bench, url, body, prom, switch, cfg)
    finally:
        bench.stop_head(head.temp_dir)
    out = summarise(train["windows"], serve["windows"])
    for label, r in out["ratios"].items():
        log(f"  {label}: {fmt_stats(r, 3)}")
    return {
        "work": {
            "train": {**TRAIN_WORK, "epochs": train["epochs"]},
            "serve": f"{MODEL} app, Serve batching, 2 replicas x 0.5 CPU, "
            f"{LOCAL_INGRESS} ingress (a local head's default), c={CONCURRENCY}",
            "warmup": f"a 3-epoch training run and {cfg['warmup_s']:g} s of Serve "
            "load, unmeasured",
        },
        "windows": {
            k: cfg[k] for k in ("pairs", "train_window_s", "serve_s", "settle_s")
        },
        "conditions": CONDITIONS,
        "head_env": HEAD_ENV,
        "head_cpus": HEAD_CPUS,
        "loadavg": {"start": load0, "end": loadavg()},
        "train_foreign_cores": train["foreign_cores"],
        "train": train["windows"],
        "serve": serve["windows"],
        **out,
    }
