"""Section 7 of bench/results.md: the data section's three parts (data.py),
their work and seeds."""

from __future__ import annotations

from typing import Any

from scripts.bench.data import MODES, SIDES
from scripts.bench.stats import fmt, fmt_stats, stats


def data_markdown(data: dict[str, Any] | None) -> list[str]:
    """Section 7 of results.md: the three parts, their work and seeds."""
    if not data or "skipped" in data:
        return []
    seeds = data["seeds"]
    lines = [
        "",
        "## 7. Data: Ray Data streaming, accuracy, preparation",
        "",
        "One lean head of 2 CPUs for every run. Ray Data's room: Train reserves "
        "its workers' CPUs first (2 workers x 0.5 CPU, one CPU), so Ray Data's "
        "read tasks (1 CPU each) get the other one; both modes run with the same "
        f"reservations. Seeds: synthetic data {seeds['synthetic_data']}, ingest "
        f"training {seeds['ingest_train']}, dirty table {seeds['dirty_table']}, "
        f"prepare.py split and shuffle {seeds['prepare']}, digits training "
        f"{', '.join(map(str, seeds['accuracy_train']))}.",
    ]
    ing = data.get("ingest") or {}
    if "skipped" in ing:
        lines += ["", f"Ingest: skipped: {ing['skipped']}"]
    elif ing:
        w = ing["work"]
        lines += [
            "",
            "### Streaming against in-memory loading",
            "",
            f"{w['model']} on a prepared synthetic 3x32x32 dataset of {ing['rows']} "
            f"train rows ({ing['mib']:.0f} MiB of uncompressed Parquet), "
            f"{w['num_workers']} workers x {w['cpus_per_worker']:g} CPU, global "
            f"batch {w['batch_size']}, {w['epochs']} epochs. streaming = "
            "`train.py --data` (Ray Data `read_parquet`, split across the workers, "
            "`iter_torch_batches` with a local shuffle buffer, normalised per "
            "batch); in memory = `--data-in-memory` (each worker reads the splits "
            "whole and normalises them once, a DataLoader). samples/s = the last "
            "epoch's samples over its training-loop seconds, Ray Data's start-up "
            "for the epoch included; every epoch's figure in brackets, and the "
            "first epoch's ratio (Ray Data's read processes start in it); the "
            "machine's 1-minute load average at each run's start and end (other "
            "users' work shows there). Rounds "
            "alternate which mode goes first. The labels are random: no accuracy "
            "here.",
            "",
            "| round | first | streaming samples/s (epochs) "
            "| in memory samples/s (epochs) | streaming/in memory "
            "| first epoch, streaming/in memory "
            "| load average, streaming / in memory |",
            "|---|---|---|---|---|---|---|",
        ]
        firsts = []
        for i, (s, m) in enumerate(
            zip(ing["runs"]["streaming"], ing["runs"]["in_memory"], strict=False)
        ):
            first = _first_epoch_ratio(s, m)
            firsts.append(first)
            lines.append(
                f"| {i + 1} | {MODES[i % 2]} | {fmt(s['samples_per_s'])} "
                f"({', '.join(fmt(v) for v in s['epoch_samples_per_s'])}) | "
                f"{fmt(m['samples_per_s'])} "
                f"({', '.join(fmt(v) for v in m['epoch_samples_per_s'])}) | "
                f"{fmt(s['samples_per_s'] / m['samples_per_s'], 3)} | "
                f"{fmt(first, 3)} | {_load(s)} / {_load(m)} |"
            )
        sp = ing["samples_per_s"]
        lines.append(
            f"| median (range) | | {fmt_stats(sp['streaming'])} | "
            f"{fmt_stats(sp['in_memory'])} | "
            f"{fmt_stats(ing['streaming/in_memory'], 3)} | "
            f"{fmt_stats(stats(firsts), 3)} | |"
        )
    acc = data.get("accuracy") or {}
    if "skipped" in acc:
        lines += ["", f"Accuracy: skipped: {acc['skipped']}"]
    elif acc:
        w = acc["work"]
        lines += [
            "",
            "### Accuracy, streamed and in memory",
            "",
            f"digits prepared by `prepare.py --format digits --seed "
            f"{acc['prepare_seed']}` (test split {acc['test_rows']} rows: one row "
            f"is {100 / max(acc['test_rows'], 1):.2f} points), {w['model']}, "
            f"{w['epochs']} epochs, global batch {w['batch_size']}, "
            f"{w['num_workers']} workers x {w['cpus_per_worker']:g} CPU; one "
            "streamed and one in-memory run per training seed, the same test split.",
            "",
            "| training seed | streamed | in memory | difference (points) |",
            "|---|---|---|---|",
        ]
        for seed, s, m in zip(
            acc["train_seeds"],
            acc["per_seed"]["streaming"],
            acc["per_seed"]["in_memory"],
            strict=False,
        ):
            lines.append(f"| {seed} | {s:.4f} | {m:.4f} | {100 * (s - m):+.2f} |")
        lines.append(
            "| median (range) | "
            f"{fmt_stats(acc['test_accuracy']['streaming'], 4)} | "
            f"{fmt_stats(acc['test_accuracy']['in_memory'], 4)} | "
            f"{fmt_stats(acc['streaming-in_memory points'], 2)} |"
        )
    pr = data.get("prepare") or {}
    if "skipped" in pr:
        lines += ["", f"Preparation: skipped: {pr['skipped']}"]
    elif pr:
        shape = "x".join(map(str, pr["shape"]))
        lines += [
            "",
            "### Preparation throughput",
            "",
            f"prepare.py (Ray Data, on the head) and a single-process pandas "
            "implementation of the same preparation (scripts/bench/data_prepare.py) "
            f"on the same {pr['files']} Parquet files of {pr['rows']} rows of "
            f"{shape} values: planted {_counts(pr['planted'])}; both dropped "
            f"{_counts(pr['dropped'])} and kept {_counts(pr['kept'])}. rows/s = "
            "rows read over the seconds of the whole preparation (source "
            "checksums, cleaning, split, shuffle, statistics on the train split, "
            "Parquet shards with their checksums, the manifest); Ray's start-up "
            "not counted, its tasks' start-up counted. Byte-identical shards on "
            f"both sides in every round: {'yes' if pr['same_output'] else '**no**'}.",
            "",
            "| side | rows/s | seconds |",
            "|---|---|---|",
        ]
        for side in SIDES:
            lines.append(
                f"| {side} | {fmt_stats(pr['rows_per_s'][side])} | "
                f"{fmt_stats(pr['seconds'][side], 2)} |"
            )
        lines.append(f"| ray/pandas | {fmt_stats(pr['ray/pandas'], 3)} | |")
    return lines


def _first_epoch_ratio(streaming: dict, in_memory: dict) -> float | None:
    """The first epoch's samples/s, streaming over in memory: Ray Data's
    worker processes start in it."""
    a, b = streaming["epoch_samples_per_s"], in_memory["epoch_samples_per_s"]
    return a[0] / b[0] if a and b and b[0] else None


def _load(run: dict[str, Any]) -> str:
    """The 1-minute load average at the run's start and end."""
    load = run.get("loadavg")
    return f"{load[0]:.1f}-{load[1]:.1f}" if load else "-"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())
