"""The monitoring section's targets and its part of the report
(scripts/bench/monitoring.py measures)."""

from __future__ import annotations

from typing import Any

from scripts.bench.monitoring import BASELINE, CONDITIONS, TARGET_CONDITION, rotated
from scripts.bench.stats import fmt, fmt_stats

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


def pair_rows(section: dict[str, Any]) -> list[str]:
    """One row per pair: each phase's two windows and their ratio."""
    prom, base = TARGET_CONDITION, BASELINE
    got = {
        (phase, w["pair"], w["condition"]): w
        for phase in ("train", "serve")
        for w in section[phase]
    }
    pairs = sorted({w["pair"] for w in section["train"] + section["serve"]})
    rows = []
    for p in pairs:
        t = {c: got.get(("train", p, c), {}) for c in (base, prom)}
        v = {c: got.get(("serve", p, c), {}) for c in (base, prom)}

        def ratio(d: dict, key: str) -> str:
            a, b = d[prom].get(key), d[base].get(key)
            return fmt(a / b, 3) if a and b else "-"

        def both(d: dict, key: str, digits: int = 1) -> str:
            return " / ".join(fmt(d[c].get(key), digits) for c in (base, prom))

        def cores(d: dict, key: str, name: str) -> str:
            return " / ".join(fmt(d[c].get(key, {}).get(name), 2) for c in (base, prom))

        rows.append(
            f"| {p + 1} | {' '.join(rotated(list(CONDITIONS), p))} "
            f"| {both(t, 'samples_per_s')} ({both(t, 'epochs', 0)}) "
            f"| {ratio(t, 'samples_per_s')} "
            f"| {both(v, 'rps')} | {ratio(v, 'rps')} | {both(v, 'p99_ms', 0)} "
            f"| {both(t, 'scrapes', 0)} / {both(v, 'scrapes', 0)} "
            f"| {fmt(t[prom].get('scrape_s'), 3)} / {fmt(v[prom].get('scrape_s'), 3)} "
            f"| {fmt(t[prom].get('prometheus_cores'), 3)} / "
            f"{fmt(v[prom].get('prometheus_cores'), 3)} "
            f"| {cores(t, 'cores', 'ray_workers')} "
            f"| {cores(t, 'machine_cores', 'idle')} "
            f"| {cores(t, 'machine_cores', 'steal')} |"
        )
    return rows


def monitoring_markdown(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    if "skipped" in section:
        return ["", "## Monitoring overhead", "", f"skipped: {section['skipped']}"]
    w, la, win = section["work"], section["loadavg"], section["windows"]
    tw = w["train"]
    first = next(iter(section["train"]), {})
    lines = [
        "",
        "## Monitoring overhead",
        "",
        "One local Ray head (metrics collection on, "
        f"{section['head_cpus']} logical CPUs on the machine's cores), first "
        f"{w['warmup']}. One Prometheus scraping it every "
        f"{CONDITIONS[TARGET_CONDITION]} s ({first.get('targets', '-')} targets), "
        "switched between running (prometheus_15s) and stopped by SIGSTOP (none: "
        "no scrape, no CPU) in windows that go in pairs, the order alternating "
        "(A B, B A, ...); each window measures from "
        f"{win['settle_s']:g} s after its switch. Training: one Ray Train run, "
        f"{tw['model']} on {tw['dataset']}, {tw['workers']} workers, global batch "
        f"{tw['batch_size']}, windows of {win['train_window_s']:g} s, a window's "
        "samples/s over the epochs (after epoch 0) wholly inside it (training-loop "
        f"time). Serve: {w['serve']}, one {win['serve_s']:g}-s load a window. "
        "Ratios paired within a pair. Scrapes = Prometheus's `up` samples in the "
        "window (every target, each scrape) and the seconds they took "
        "(`scrape_duration_seconds`); Prometheus cores = its own CPU over the "
        "window; Ray workers' cores = the training workers' CPU over the window; "
        "machine idle and steal = the whole machine's idle CPU and the CPU its "
        "hypervisor gave to other guests (/proc/stat). Other users during the "
        "training run: "
        f"{fmt(section.get('train_foreign_cores'), 2)} cores. "
        f"Load average at start {la['start']}, at end {la['end']}.",
        "",
        "| pair | order | train samples/s none / prom (epochs) | ratio "
        "| Serve rps none / prom | ratio | Serve p99 ms none / prom "
        "| scrapes none / prom (train / serve) | scrape s, prom (train / serve) "
        "| Prometheus cores, prom (train / serve) "
        "| train: Ray workers' cores none / prom "
        "| train: machine idle cores none / prom "
        "| train: machine steal cores none / prom |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *pair_rows(section),
        "",
        "| ratio | median (range) |",
        "|---|---|",
    ]
    for k, r in section["ratios"].items():
        lines.append(f"| {k} | {fmt_stats(r, 3)} |")
    return lines
