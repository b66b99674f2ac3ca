"""11. monitoring: what a Prometheus scraping the cluster costs the work on it.

Each round starts one local Ray head (metrics collection on, as on a stack) with
the serve section's CNN app deployed behind a local head's default ingress,
warms both up (unmeasured), and measures, per condition, a shortened run of the
training section's workload (Ray Train, a driver joining the head), then Serve
requests/s at c=32: with no Prometheus at all, and with raygpu.monitoring.local's
Prometheus scraping the head through Ray's service-discovery file every 15 s
(its default). The training runs take turns (the order rotates each round); the
Serve windows go A B B A, so each condition's two stand on both sides of the
other's and a drift through the round falls on both alike. Ratios are paired
within a round. Each window's scrapes, and the seconds they took, are read back
from Prometheus's own `up` and `scrape_duration_seconds`.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from pathlib import Path
from typing import Any

from raygpu.names import LOOPBACK
from raygpu.serve_ingress import LOCAL_INGRESS
from scripts.bench.proc import CLK_TCK, Bench
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
from scripts.bench.stats import fmt, fmt_stats, paired_ratios, stats
from scripts.bench.training import one_training_run

BASELINE = "none"
# Condition -> scrape interval in seconds (None: no Prometheus running). The
# issue's is Prometheus's default interval; a shorter one would only add rounds.
CONDITIONS = {BASELINE: None, "prometheus_15s": 15}
TARGET_CONDITION = "prometheus_15s"
MODEL = "cnn"
APP = f"{MODEL}-serve_batched"
CONCURRENCY = 32
MON_MODES = {
    # The measured epochs span two 15-s scrapes or more; a Serve window one. An
    # even number of rounds: each condition leads the training runs in half.
    "full": {"rounds": 4, "epochs": 6, "serve_s": 15.0, "warmup_s": 5.0},
    "quick": {"rounds": 1, "epochs": 4, "serve_s": 4.0, "warmup_s": 2.0},
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


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def start_monitored_head(bench: Bench) -> Any:
    from raygpu.localray import start_head

    temp_dir = bench.new_temp_dir()  # bench.cleanup stops it if a round fails
    env = {**HEAD_ENV, MARKS_ENV: str(bench.work / "head-marks.jsonl")}
    return start_head(num_cpus=HEAD_CPUS, temp_dir=temp_dir, extra_env=env)


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of one process (/proc/PID/stat), None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def scrape_query(t0: float, t1: float, metric: str = "up", fn: str = "count") -> str:
    """PromQL: over the window (t0, t1], `fn`_over_time of `metric` over every
    target, summed: the scrapes made (`up`), or the seconds they took."""
    span = max(1, round((t1 - t0) * 1000))
    return f"sum({fn}_over_time({metric}[{span}ms] @ {t1:.3f}))"


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


@contextlib.contextmanager
def prometheus_for(bench: Bench, head: Any, condition: str):
    """The condition's Prometheus, ready and scraping the head (None: none)."""
    from raygpu.localray import free_port
    from raygpu.monitoring import local

    interval = CONDITIONS[condition]
    if interval is None:
        yield None
        return
    folder = bench.new_path(f"prometheus-{condition}")
    with local.running(head.temp_dir, free_port(), interval, folder) as prom:
        yield prom


def prometheus_figures(prom: Any, cpu0: float | None, window: tuple) -> dict:
    """The window's scrapes (and their seconds) and Prometheus's own cores."""
    out: dict[str, Any] = {"scrapes": scrape_counts(prom.url, {"window": window})}
    cpu1 = process_cpu_s(prom.process.pid)
    if cpu0 is not None and cpu1 is not None:
        out["prometheus_cores"] = round((cpu1 - cpu0) / (window[1] - window[0]), 4)
    return out


def train_window(bench: Bench, head: Any, condition: str, cfg: dict) -> dict:
    """One condition's training run, Prometheus (if any) up through it."""
    work = {**TRAIN_WORK, "epochs": cfg["epochs"]}
    with prometheus_for(bench, head, condition) as prom:
        cpu0 = process_cpu_s(prom.process.pid) if prom else None
        train = one_training_run(bench, "ray_driver", work, head.address)
        res: dict[str, Any] = {
            "train_samples_per_s": train["throughput"]["loop"],
            "train_wall_samples_per_s": train["throughput"]["wall"],
            "train_epochs": train["throughput"]["epochs"],
            "train_foreign_cores": train["foreign_cores"],
        }
        if prom is not None:
            window = (train["t_launch"], train["t_exit"])
            res["train_prometheus"] = prometheus_figures(prom, cpu0, window)
    return res


def serve_window(
    bench: Bench, head: Any, url: str, body: bytes, condition: str, cfg: dict
) -> dict:
    """One Serve window of the condition: c=32 for the mode's seconds."""
    with prometheus_for(bench, head, condition) as prom:
        cpu0 = process_cpu_s(prom.process.pid) if prom else None
        s0 = time.time()
        with serve_load_settings(bench, cfg["serve_s"]):
            serve = one_load(bench, url, body, "application/octet-stream", CONCURRENCY)
        s1 = time.time()
        res: dict[str, Any] = {
            "rps": serve["rps"],
            "p99_ms": serve["p99_ms"],
            "requests": serve["requests"],
            "seconds": round(s1 - s0, 2),
        }
        if prom is not None:
            res |= prometheus_figures(prom, cpu0, (s0, s1))
    return res


def combine(condition: str, train: dict, windows: list[dict]) -> dict:
    """A condition's figures in its round: its training run, its Serve windows."""
    res = {"condition": condition, "scrape_interval_s": CONDITIONS[condition]}
    res |= {k: v for k, v in train.items() if k != "train_prometheus"}
    res["serve_rps"] = round(statistics.mean(w["rps"] for w in windows), 2)
    res["serve_p99_ms"] = round(statistics.mean(w["p99_ms"] for w in windows), 2)
    res["serve_requests"] = sum(w["requests"] for w in windows)
    res["serve_windows"] = windows
    prom = [train.get("train_prometheus")] + [w for w in windows if "scrapes" in w]
    if prom[0] is not None:
        scrapes = [p["scrapes"] for p in prom]
        res["scrapes"] = {
            "train": scrapes[0]["window"],
            "serve": sum(x["window"] for x in scrapes[1:]),
            "train_s": scrapes[0]["seconds"]["window"],
            "serve_s": round(sum(x["seconds"]["window"] for x in scrapes[1:]), 3),
            "targets": scrapes[0]["targets"],
        }
        cores = [p["prometheus_cores"] for p in prom if "prometheus_cores" in p]
        if cores:
            res["prometheus_cores"] = round(statistics.mean(cores), 4)
    return res


def warm_up(bench: Bench, head: Any, url: str, body: bytes, cfg: dict) -> None:
    """An unmeasured training run and Serve load first: a new head's first run
    starts its worker processes, which no condition should pay for alone."""
    work = {**TRAIN_WORK, "epochs": 2}
    one_training_run(bench, "ray_driver", work, head.address)
    with serve_load_settings(bench, cfg["warmup_s"]):
        one_load(bench, url, body, "application/octet-stream", CONCURRENCY)


def serve_order(order: list[str]) -> list[str]:
    """A B B A: each condition's Serve windows on both sides of the other's."""
    return order + order[::-1]


def rotated(conditions: list[str], r: int) -> list[str]:
    """Round r's order: the conditions rotated by r, so each leads in turn."""
    k = r % len(conditions)
    return conditions[k:] + conditions[:k]


def monitoring_round(
    bench: Bench, ckpt: str, order: list[str], cfg: dict
) -> dict[str, Any]:
    from raygpu.localray import free_port

    load0 = loadavg()
    head = start_monitored_head(bench)
    try:
        port = free_port()
        deploy_model(bench, head, port, {APP: (ckpt, True)})
        url = f"http://{LOOPBACK}:{port}/{APP}/predict"
        body = serve_body(SERVE_MODELS[MODEL][1], "application/octet-stream")
        warm_up(bench, head, url, body, cfg)
        trains = {c: train_window(bench, head, c, cfg) for c in order}
        windows: dict[str, list[dict]] = {c: [] for c in order}
        for condition in serve_order(order):
            windows[condition].append(
                serve_window(bench, head, url, body, condition, cfg)
            )
        runs = {c: combine(c, trains[c], windows[c]) for c in order}
        for c in order:
            r = runs[c]
            log(
                f"  {c}: train {fmt(r['train_samples_per_s'])} samples/s, serve "
                + " / ".join(fmt(w["rps"]) for w in r["serve_windows"])
                + " rps"
                + (f", scrapes {r['scrapes']}" if "scrapes" in r else "")
            )
    finally:
        bench.stop_head(head.temp_dir)
    return {"order": order, "loadavg": [load0, loadavg()], "runs": runs}


def summarise(rounds: list[dict], conditions: list[str]) -> dict[str, Any]:
    """Medians per condition, and each condition / no Prometheus paired by round."""

    def values(cond: str, key: str) -> list[float | None]:
        return [r["runs"][cond][key] if cond in r["runs"] else None for r in rounds]

    summary = {
        c: {
            "train_samples_per_s": stats(values(c, "train_samples_per_s")),
            "serve_rps": stats(values(c, "serve_rps")),
            "serve_p99_ms": stats(values(c, "serve_p99_ms")),
        }
        for c in conditions
    }
    for c in conditions:
        if c == BASELINE:
            continue
        runs = [r["runs"][c] for r in rounds if c in r["runs"]]
        for window in ("train", "serve", "train_s", "serve_s"):
            summary[c][f"scrapes_{window}"] = stats(
                [x.get("scrapes", {}).get(window) for x in runs]
            )
        summary[c]["prometheus_cores"] = stats(
            [x.get("prometheus_cores") for x in runs]
        )
    ratios = {}
    for c in conditions:
        if c != BASELINE:
            for key, label in (
                ("train_samples_per_s", "train"),
                ("serve_rps", "serve"),
            ):
                ratios[f"{c}/{BASELINE} {label}"] = paired_ratios(
                    values(c, key), values(BASELINE, key)
                )
    return {"summary": summary, "ratios": ratios}


def bench_monitoring(bench: Bench) -> dict[str, Any]:
    mode = MON_MODES[bench.mode]
    conditions = list(CONDITIONS)
    from raygpu.errors import UsageError
    from raygpu.monitoring import local

    try:  # before the first round, not minutes into it
        local.find_binary()
    except UsageError as exc:
        raise BenchError(f"monitoring: {exc}") from None
    load0 = loadavg()
    ckpts, _ = serve_models(bench)
    rounds = []
    for r in range(mode["rounds"]):
        order = rotated(conditions, r)
        log(f"monitoring round {r + 1}: {', '.join(order)}")
        rounds.append(monitoring_round(bench, ckpts[MODEL], order, mode))
    if not rounds:
        raise BenchError("monitoring: no rounds to run")
    return {
        "work": {
            "train": {**TRAIN_WORK, "epochs": mode["epochs"]},
            "serve": f"{MODEL} app, Serve batching, 2 replicas x 0.5 CPU, "
            f"{LOCAL_INGRESS} ingress (a local head's default), "
            f"c={CONCURRENCY}, {mode['serve_s']:g} s",
            "warmup": f"a 2-epoch training run and {mode['warmup_s']:g} s of Serve "
            "load, unmeasured",
        },
        "conditions": CONDITIONS,
        "head_env": HEAD_ENV,
        "head_cpus": HEAD_CPUS,
        "loadavg": {"start": load0, "end": loadavg()},
        "rounds": rounds,
        **summarise(rounds, conditions),
    }


# ------------------------------------------------------------ targets, report

TARGETS = (("train", ">= 0.98", 0.98), ("serve", ">= 0.97", 0.97))


def monitoring_targets(section: dict[str, Any], add) -> None:
    """The issue's targets (15-s scrapes / none), through report.targets' `add`."""
    ratios = section.get("ratios") or {}
    for label, goal, bound in TARGETS:
        what = "training samples/s" if label == "train" else "Serve requests/s"
        add(
            f"Prometheus scraping every 15 s / none: {what}",
            goal,
            ratios.get(f"{TARGET_CONDITION}/{BASELINE} {label}"),
            lambda v, b=bound: v >= b,
        )


def monitoring_markdown(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    if "skipped" in section:
        return ["", "## Monitoring overhead", "", f"skipped: {section['skipped']}"]
    w, la = section["work"], section["loadavg"]
    tw = w["train"]
    lines = [
        "",
        "## Monitoring overhead",
        "",
        "One local Ray head a round (metrics collection on, "
        f"{section['head_cpus']} logical CPUs on the machine's cores), first "
        f"{w.get('warmup', 'no warm-up')}. Per "
        f"condition: Ray Train, {tw['model']} on {tw['dataset']}, "
        f"{tw['workers']} workers, global batch {tw['batch_size']}, "
        f"{tw['epochs']} epochs, epoch 0 excluded (loop samples/s); then Serve, "
        f"{w['serve']}. Conditions: "
        + ", ".join(
            f"{c} ({'no Prometheus' if s is None else f'scrape every {s} s'})"
            for c, s in section["conditions"].items()
        )
        + "; the training runs' order rotates each round, the Serve windows go "
        "A B B A (a condition's Serve rps: the mean of its two), ratios paired "
        "within a round. Scrapes = Prometheus's `up` samples in the windows "
        "(every target, each scrape), and the seconds they took "
        "(`scrape_duration_seconds`); Prometheus cores = its own CPU over the "
        "condition's windows; other users = CPU of processes outside the bench "
        "during the training run. "
        f"Load average at start {la['start']}, at end {la['end']}.",
        "",
        "| round | condition | train samples/s | Serve rps (windows) | Serve p99 ms "
        "| scrapes (train / serve) | scrape s (train / serve) | targets "
        "| Prometheus cores | other users (cores, training) "
        "| load average (round start / end) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(section["rounds"], 1):
        for c in r["order"]:
            x = r["runs"][c]
            sc = x.get("scrapes")
            each = " / ".join(fmt(w["rps"]) for w in x.get("serve_windows", []))
            lines.append(
                f"| {i} | {c} | {fmt(x['train_samples_per_s'])} | "
                f"{fmt(x['serve_rps'])} ({each}) | {fmt(x['serve_p99_ms'])} | "
                + (
                    f"{sc['train']} / {sc['serve']} | "
                    f"{fmt(sc['train_s'], 3)} / {fmt(sc['serve_s'], 3)} | "
                    f"{sc['targets']} | "
                    if sc
                    else "- | - | - | "
                )
                + f"{fmt(x.get('prometheus_cores'), 3)} | "
                f"{fmt(x.get('train_foreign_cores'), 2)} | "
                f"{r['loadavg'][0]} / {r['loadavg'][1]} |"
            )
    lines += ["", "| ratio | median (range) |", "|---|---|"]
    for k, s in section["ratios"].items():
        lines.append(f"| {k} | {fmt_stats(s, 3)} |")
    return lines
