"""Data benchmarks: Ray Data streaming against in-memory loading, and preparation
throughput against a single-process pandas implementation of the same cleaning.

    PYTHONPATH=ray_jobs python -m scripts.bench.data      # the full measurement
    PYTHONPATH=ray_jobs python -m scripts.bench.data --rows 2000 --rounds 1 \
        --epochs 1 --model mlp --prepare-rows 20000     # a smoke run

1. ingest: train.py on a synthetic prepared dataset (seeded 3x32x32 images in 10
   classes, mlcore.prepared.write_synthetic) with the same model, global batch,
   workers and seed, once streaming it through Ray Data (`--data`) and once
   loading it whole into each worker (`--data-in-memory`, a DataLoader), in
   alternating order for --rounds rounds. The figure is the samples/s of each
   run's last epoch (the loop's own measure: training seconds, no start-up);
   the result is the ratio of the medians (target >= 0.9). Every run's workers
   take --cpus-per-worker CPUs of one local Ray head started with --cpus CPUs,
   so that Ray Data has the rest to read with: Train reserves its workers' CPUs
   first.
2. prepare: prepare.py on a synthetic table (dirty rows of every kind, exact
   duplicates) on a local Ray, against `pandas_prepare`: the same cleaning,
   split, shuffle, statistics and Parquet shards in one process. rows/s each,
   Ray's start-up not counted.

The seeds: the data's (--seed), train.py's --seed 0 and prepare.py's --seed 0.
Not a section of `python -m scripts.bench` (scripts/bench/cli.py does not call
it); `bench_data(work, args)` returns the section's result dict for that.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RAY_JOBS = REPO / "ray_jobs"
TARGET_RATIO = 0.9


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(RAY_JOBS), str(REPO)])
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    return env


def log(text: str) -> None:
    print(f"[bench data] {text}", file=sys.stderr, flush=True)


# -------------------------------------------------------------------- ingest


def train_run(data: Path, runs: Path, name: str, args, in_memory: bool) -> float:
    """One train.py run in a fresh local Ray; its last epoch's samples/s."""
    argv = [sys.executable, "train.py", "--data", str(data)]
    argv += ["--model", args.model, "--epochs", str(args.epochs)]
    argv += ["--batch-size", str(args.batch_size), "--seed", "0"]
    argv += ["--num-workers", str(args.workers)]
    argv += ["--cpus-per-worker", f"{args.cpus_per_worker:g}"]
    argv += ["--storage-path", str(runs), "--run-name", name]
    if in_memory:
        argv.append("--data-in-memory")
    env = {**_env(), **args.head_env}
    proc = subprocess.run(
        [*argv, "--keep-checkpoints", "1"],
        cwd=RAY_JOBS,
        env=env,
        capture_output=True,
        text=True,
        timeout=args.timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"train.py {name} failed: {proc.stderr[-2000:]}")
    result = json.loads((runs / name / "result.json").read_text())
    return float(result["metrics"]["samples_per_second"])


def bench_ingest(work: Path, args) -> dict[str, Any]:
    from mlcore.prepared import write_synthetic

    data = work / "synthetic"
    started = time.monotonic()
    manifest = write_synthetic(str(data), rows=args.rows, seed=args.seed)
    mib = (
        sum(s["bytes"] for p in manifest["splits"].values() for s in p["shards"])
        / 2**20
    )
    log(f"wrote {args.rows} rows ({mib:.0f} MiB) in {time.monotonic() - started:.1f}s")
    rates: dict[str, list[float]] = {"streaming": [], "in_memory": []}
    for r in range(args.rounds):
        order = ("streaming", "in_memory") if r % 2 == 0 else ("in_memory", "streaming")
        for mode in order:
            rate = train_run(
                data, work / "runs", f"{mode}-{r}", args, mode == "in_memory"
            )
            rates[mode].append(rate)
            log(f"round {r + 1} {mode}: {rate:.1f} samples/s")
    medians = {mode: statistics.median(v) for mode, v in rates.items()}
    ratio = medians["streaming"] / medians["in_memory"]
    return {
        "rows": args.rows,
        "mib": round(mib, 1),
        "model": args.model,
        "global_batch": args.batch_size,
        "workers": args.workers,
        "cpus_per_worker": args.cpus_per_worker,
        "epochs": args.epochs,
        "seeds": {"data": args.seed, "train": 0},
        "samples_per_second": rates,
        "median": medians,
        "ratio": round(ratio, 3),
        "target": TARGET_RATIO,
        "met": ratio >= TARGET_RATIO,
    }


# ------------------------------------------------------------------- prepare


def dirty_table(path: Path, rows: int, features: int = 16, seed: int = 0) -> None:
    """A CSV of `rows` rows: about 1% each missing, non-finite, unknown label,
    exact duplicate."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.random((rows, features)).round(5)
    labels = rng.integers(0, 10, rows).astype(str).astype(object)
    kind = rng.integers(0, 100, rows)
    x[kind == 0, 0] = np.nan
    x[kind == 1, 1] = np.inf
    labels[kind == 2] = "unknown"
    # a duplicate copies a good row (one whose kind is 4 or more)
    dup = np.flatnonzero((kind == 3) & (np.roll(kind, 1) >= 4))
    dup = dup[dup > 0]
    x[dup], labels[dup] = x[dup - 1], labels[dup - 1]
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(features)])
    df["label"] = labels
    df.to_csv(path, index=False)


def pandas_prepare(
    csv: Path, out: Path, classes: list[str], seed: int = 0, shard_rows: int = 65536
) -> dict[str, Any]:
    """The same cleaning as prepare.py, in pandas in this one process."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = pd.read_csv(csv, dtype={"label": str}, keep_default_na=False, na_values=[""])
    features = [c for c in df.columns if c != "label"]
    values = df[features].to_numpy(np.float32)
    missing = df[features].isna().any(axis=1).to_numpy() | df["label"].isna()
    non_finite = ~missing & ~np.isfinite(values).all(axis=1)
    unknown = ~missing & ~non_finite & ~df["label"].isin(classes).to_numpy()
    ok = ~(missing | non_finite | unknown)
    kept = df[ok]
    duplicate = kept.duplicated().to_numpy()
    kept = kept[~duplicate]
    h = pd.util.hash_pandas_object(kept, index=False).to_numpy(np.uint64)
    mix = np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        u = ((h ^ mix) * np.uint64(0xBF58476D1CE4E5B9)) >> np.uint64(11)
    u = u.astype(np.float64) / 2.0**53
    split = np.where(u < 0.7, "train", np.where(u < 0.85, "val", "test"))
    kept = kept.assign(_order=h ^ mix, _split=split).sort_values("_order")
    x = kept[features].to_numpy(np.float32)
    y = kept["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    train = kept["_split"].to_numpy() == "train"
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    for name in ("train", "val", "test"):
        rows = kept["_split"].to_numpy() == name
        xs, ys = x[rows], y[rows]
        (out / name).mkdir(parents=True, exist_ok=True)
        for i, start in enumerate(range(0, len(xs), shard_rows)):
            flat = pa.array(xs[start : start + shard_rows].ravel())
            table = pa.table(
                {
                    "x": pa.FixedSizeListArray.from_arrays(flat, len(features)),
                    "y": pa.array(ys[start : start + shard_rows]),
                }
            )
            pq.write_table(table, out / name / f"part-{i:05d}.parquet")
    return {
        "kept": int(len(kept)),
        "dropped": {
            "missing": int(missing.sum()),
            "non_finite": int(non_finite.sum()),
            "unknown_label": int(unknown.sum()),
            "duplicate": int(duplicate.sum()),
        },
        "mean": mean.tolist()[:2],
        "std": std.tolist()[:2],
    }


def bench_prepare(work: Path, args) -> dict[str, Any]:
    import ray

    import prepare

    csv_dir = work / "table"
    csv_dir.mkdir(parents=True, exist_ok=True)
    csv = csv_dir / "t.csv"
    dirty_table(csv, args.prepare_rows, seed=args.seed)
    classes = [str(i) for i in range(10)]
    started = time.monotonic()
    baseline = pandas_prepare(csv, work / "pandas-out", classes)
    pandas_s = time.monotonic() - started
    log(f"pandas: {args.prepare_rows / pandas_s:.0f} rows/s ({pandas_s:.1f}s)")

    ray.init(address=args.address, logging_level="WARNING", log_to_driver=False)
    try:
        argv = ["--format", "csv", "--source", str(csv_dir), "--output"]
        argv += [str(work / "ray-out"), "--classes", ",".join(classes)]
        started = time.monotonic()
        manifest = prepare.run(prepare.parse_args(argv))
        ray_s = time.monotonic() - started
    finally:
        ray.shutdown()
    log(f"prepare.py: {args.prepare_rows / ray_s:.0f} rows/s ({ray_s:.1f}s)")
    kept = sum(manifest["splits"][s]["rows"] for s in ("train", "val", "test"))
    return {
        "rows": args.prepare_rows,
        "ray_data": {
            "seconds": round(ray_s, 2),
            "rows_per_second": round(args.prepare_rows / ray_s),
            "kept": kept,
            "dropped": manifest["dropped"],
        },
        "pandas": {
            "seconds": round(pandas_s, 2),
            "rows_per_second": round(args.prepare_rows / pandas_s),
            "kept": baseline["kept"],
            "dropped": baseline["dropped"],
        },
    }


# ----------------------------------------------------------------------- CLI


def bench_data(work: Path, args) -> dict[str, Any]:
    """Both parts on one local Ray head of --cpus CPUs, stopped afterwards."""
    from raygpu.localray import start_head, stop_head
    from raygpu.rayclient import client_auth_env

    os.environ.update(client_auth_env())  # token auth, and 127.0.0.1 kept as is
    head = start_head(num_cpus=args.cpus, temp_dir=str(work / "ray"))
    args.address, args.head_env = head.address, head.env()
    result: dict[str, Any] = {"cluster_cpus": args.cpus}
    try:
        if "ingest" in args.parts:
            result["ingest"] = bench_ingest(work, args)
        if "prepare" in args.parts:
            result["prepare"] = bench_prepare(work, args)
    finally:
        stop_head(head.temp_dir)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m scripts.bench.data", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--parts", default="ingest,prepare", help="ingest,prepare")
    p.add_argument("--rows", type=int, default=50_000, help="train rows (50000)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    p.add_argument("--epochs", type=int, default=2, help="the last one is measured")
    p.add_argument("--model", default="cnn")
    p.add_argument("--batch-size", type=int, default=256, help="global batch")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="Ray's CPUs")
    p.add_argument("--prepare-rows", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=0, help="the synthetic data's seed")
    p.add_argument("--timeout", type=float, default=3600.0, help="per train run")
    p.add_argument("--out", type=Path, help="write the result here as JSON")
    args = p.parse_args(argv)
    args.parts = {part.strip() for part in args.parts.split(",") if part.strip()}
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rg-bench-data-") as tmp:
        result = bench_data(Path(tmp), args)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
