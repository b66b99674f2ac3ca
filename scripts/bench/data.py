"""7. data: Ray Data streaming against in-memory loading, the accuracy either
way gives, and preparation throughput against a single-process pandas
implementation of the same cleaning. One local head of 2 CPUs (lean), shared
by every run of the section; what runs is in settings.DATA_WORK.

1. ingest: train.py on a prepared synthetic dataset (seeded random 3x32x32
   images in 10 classes, mlcore.prepared.write_synthetic) with the same model,
   global batch, workers, CPUs per worker, epochs and seed, streamed through
   Ray Data (`--data`) and loaded whole into each worker (`--data-in-memory`,
   a DataLoader), in alternating order. The figure is the samples/s of each
   run's last epoch (the training loop's own: samples over training-loop
   seconds, the epoch's Ray Data start-up included, validation excluded); the
   target is the median of the paired ratios streaming / in-memory >= 0.9.
   The labels are random: accuracy means nothing here.
2. accuracy: the prepared digits (prepare.py --format digits --seed 0), the
   MLP streamed and held in memory, one pair of runs per train seed; the test
   split (269 rows, about 0.4 point a row) is the same for both.
3. prepare: prepare.py on a dirty Parquet table (data_prepare.dirty_table)
   against data_prepare.pandas_prepare on the same files, alternating; rows/s
   each (rows read over the seconds of the whole preparation; Ray's start-up
   not counted, its Data tasks' start-up counted), and whether both dropped
   the same rows and wrote byte-identical shards.

Ray Data room: Train reserves its workers' CPUs (num_workers x cpus_per_worker
logical CPUs) before Ray Data gets any, and Data's read tasks need 1 CPU
each; with 2 workers at 0.5 CPU on the 2-CPU head one CPU is left to Data.

The harness (`bench_data(bench)`) runs ray_jobs code only in child programs,
each printing one `DATA_BENCH {...}` line:

    PYTHONPATH=ray_jobs:. python -m scripts.bench.data synthetic OUT ROWS SEED
    PYTHONPATH=ray_jobs:. python -m scripts.bench.data dirty OUT ROWS SEED
    PYTHONPATH=ray_jobs:. python -m scripts.bench.data prepare ray|pandas SRC OUT
    PYTHONPATH=ray_jobs:. python -m scripts.bench.data digits OUT
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

PREFIX = "DATA_BENCH "
MODES = ("streaming", "in_memory")
SIDES = ("ray", "pandas")
CLASSES = [str(i) for i in range(10)]


# ------------------------------------------------------------------ children


def _say(result: dict[str, Any]) -> int:
    print(PREFIX + json.dumps(result), flush=True)
    return 0


def _ray_init() -> None:
    import ray

    # Data's tasks import mlcore from ray_jobs/, found through the PYTHONPATH
    # the harness gave (no working_dir upload).
    ray.init(
        log_to_driver=False,
        logging_level="WARNING",
        runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}},
    )


def child_prepare(side: str, source: str, out: str, shape, seed: int) -> int:
    shape_arg = ",".join(str(v) for v in shape)
    if side == "ray":
        import prepare

        _ray_init()
        args = prepare.parse_args(
            ["--format", "parquet", "--source", source, "--output", out]
            + ["--shape", shape_arg, "--classes", ",".join(CLASSES)]
            + ["--seed", str(seed)]
        )
        started = time.perf_counter()
        prepare.run(args)
    else:
        from scripts.bench.data_prepare import pandas_prepare

        started = time.perf_counter()
        pandas_prepare(Path(source), Path(out), tuple(shape), CLASSES, seed=seed)
    return _say({"seconds": time.perf_counter() - started})


def child(argv: list[str]) -> int:
    from scripts.bench.settings import DATA_WORK

    mode, rest = argv[0], argv[1:]
    if mode == "synthetic":
        from mlcore.prepared import write_synthetic

        out, rows, seed = rest[0], int(rest[1]), int(rest[2])
        started = time.perf_counter()
        manifest = write_synthetic(out, rows=rows, seed=seed)
        shards = [s for p in manifest["splits"].values() for s in p["shards"]]
        return _say(
            {
                "mib": sum(s["bytes"] for s in shards) / 2**20,
                "seconds": time.perf_counter() - started,
            }
        )
    if mode == "dirty":
        from scripts.bench.data_prepare import dirty_table

        out, rows, seed = Path(rest[0]), int(rest[1]), int(rest[2])
        shape = tuple(DATA_WORK["prepare_shape"])
        files = DATA_WORK["prepare_files"]
        return _say({"planted": dirty_table(out, rows, shape, files, seed)})
    if mode == "prepare":
        side, source, out = rest
        return child_prepare(
            side, source, out, DATA_WORK["prepare_shape"], DATA_WORK["prepare_seed"]
        )
    if mode == "digits":
        import prepare

        _ray_init()
        seed = str(DATA_WORK["prepare_seed"])
        return prepare.main(["--format", "digits", "--output", rest[0], "--seed", seed])
    print(f"unknown mode {mode!r}; one of synthetic, dirty, prepare, digits")
    return 2


# ------------------------------------------------------------------- harness


def child_result(log: Path) -> dict[str, Any]:
    """The one DATA_BENCH line a child printed into its log."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith(PREFIX):
            return json.loads(line[len(PREFIX) :])
    raise ValueError(f"no {PREFIX.strip()} line in {log}")


def epoch_rates(marks: list[dict[str, Any]]) -> dict[int, float]:
    """samples/s of each epoch from the workers' epoch_end marks: all ranks'
    samples over the slowest rank's training-loop seconds."""
    by_epoch: dict[int, list[dict]] = {}
    for m in marks:
        if m.get("event") == "epoch_end":
            by_epoch.setdefault(int(m["epoch"]), []).append(m)
    return {
        e: sum(m["samples"] for m in ms) / max(max(m["seconds"] for m in ms), 1e-9)
        for e, ms in sorted(by_epoch.items())
    }


def compare(ray: dict[str, Any], pandas: dict[str, Any]) -> dict[str, Any]:
    """Whether both manifests dropped the same rows and list the same shards."""

    def shard_sums(m: dict) -> list[str]:
        return [s["sha256"] for p in m["splits"].values() for s in p["shards"]]

    a, b = ray["normalisation"], pandas["normalisation"]
    diff = max(
        abs(x - y) for k in ("mean", "std") for x, y in zip(a[k], b[k], strict=True)
    )
    return {
        "same_drops": ray["dropped"] == pandas["dropped"],
        "same_rows": {s: p["rows"] for s, p in ray["splits"].items()}
        == {s: p["rows"] for s, p in pandas["splits"].items()},
        "same_shards": shard_sums(ray) == shard_sums(pandas),
        "normalisation_max_abs_diff": diff,
    }


def train_argv(data: Path, runs: Path, name: str, work: dict, mode: str):
    from scripts.bench.settings import PY, RAYTRAIN_DRIVER

    argv = [PY, "-m", RAYTRAIN_DRIVER, "--", "--data", str(data)]
    for flag in ("model", "epochs", "batch_size", "num_workers", "cpus_per_worker"):
        argv += [
            f"--{flag.replace('_', '-')}",
            f"{work[flag]:g}" if isinstance(work[flag], float) else str(work[flag]),
        ]
    argv += ["--seed", str(work["seed"]), "--storage-path", str(runs)]
    argv += ["--run-name", name, "--keep-checkpoints", "1", "--max-failures", "0"]
    return argv + (["--data-in-memory"] if mode == "in_memory" else [])


class Section:
    """The section's runs on one head; every child's log in the work dir."""

    def __init__(self, bench, head):
        from scripts.bench.proc import child_env
        from scripts.bench.settings import LEAN_ENV

        self.bench = bench
        self.env = {**child_env(), **LEAN_ENV, **head.env()}

    def child(self, name: str, args: list[str], timeout_s: float = 900) -> dict:
        from scripts.bench.proc import run_logged, tail
        from scripts.bench.settings import PY, BenchError

        log = self.bench.new_path(name, ".log")
        argv = [PY, "-m", "scripts.bench.data", *map(str, args)]
        rc, t0, t1 = run_logged(argv, log, self.env, timeout_s)
        if rc != 0:
            raise BenchError(f"data {name} exited with {rc}; log {log}:\n{tail(log)}")
        if args[0] == "digits":
            return {"seconds": t1 - t0}
        return child_result(log)

    def train(self, data: Path, name: str, work: dict, mode: str) -> dict:
        from scripts.bench.marks import read_marks
        from scripts.bench.proc import run_logged, tail
        from scripts.bench.settings import BenchError

        runs = self.bench.work / "data-runs"
        log = self.bench.new_path(name, ".log")
        argv = train_argv(data, runs, name, work, mode)
        load0 = os.getloadavg()[0]
        rc, t0, t1 = run_logged(argv, log, self.env, timeout_s=1800)
        if rc != 0:
            raise BenchError(f"{name} exited with {rc}; log {log}:\n{tail(log)}")
        result = json.loads((runs / name / "result.json").read_text())
        # The workers write their marks to the head's file (Bench.start_head).
        marks = read_marks(self.bench.work / "head-marks.jsonl")
        rates = epoch_rates([m for m in marks if t0 <= m["t"] <= t1])
        metrics = result["metrics"]
        return {
            "samples_per_s": float(metrics["samples_per_second"]),
            "epoch_samples_per_s": [round(rates[e], 1) for e in sorted(rates)],
            "test_accuracy": float(metrics["test_accuracy"]),
            "test_samples": int(metrics["test_samples"]),
            "wall_s": round(t1 - t0, 1),
            # the machine's 1-minute load average when the run started and ended
            "loadavg": [round(load0, 1), round(os.getloadavg()[0], 1)],
        }


def bench_ingest(section: Section, rows: int, rounds: int) -> dict[str, Any]:
    from scripts.bench.settings import DATA_WORK, log
    from scripts.bench.stats import fmt, paired_ratios, stats

    work = DATA_WORK["ingest"]
    data = section.bench.work / "data-synthetic"
    made = section.child("data-synthetic", ["synthetic", data, rows, work["data_seed"]])
    log(f"data: wrote {rows} rows ({made['mib']:.0f} MiB) in {made['seconds']:.1f}s")
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    for r in range(rounds):
        for mode in MODES if r % 2 == 0 else MODES[::-1]:
            res = section.train(data, f"data-{mode}-{r}", work, mode)
            runs[mode].append(res)
            log(
                f"data ingest round {r + 1} {mode}: {fmt(res['samples_per_s'])} "
                f"samples/s (epochs {res['epoch_samples_per_s']}), {res['wall_s']}s"
            )
    rate = {m: [x["samples_per_s"] for x in runs[m]] for m in MODES}
    return {
        "rows": rows,
        "mib": round(made["mib"], 1),
        "work": work,
        "runs": runs,
        "samples_per_s": {m: stats(rate[m]) for m in MODES},
        "streaming/in_memory": paired_ratios(rate["streaming"], rate["in_memory"]),
    }


def bench_accuracy(section: Section, seeds: list[int]) -> dict[str, Any]:
    from scripts.bench.settings import DATA_WORK, log
    from scripts.bench.stats import stats

    work = DATA_WORK["accuracy"]
    data = section.bench.work / "data-digits"
    section.child("data-digits", ["digits", data])
    acc: dict[str, list[float]] = {m: [] for m in MODES}
    test_rows = 0
    for i, seed in enumerate(seeds):
        for mode in MODES if i % 2 == 0 else MODES[::-1]:
            res = section.train(
                data, f"data-acc-{mode}-{seed}", {**work, "seed": seed}, mode
            )
            acc[mode].append(res["test_accuracy"])
            test_rows = res["test_samples"]
            log(f"data accuracy seed {seed} {mode}: {res['test_accuracy']:.4f}")
    points = [
        100 * (s - m) for s, m in zip(acc["streaming"], acc["in_memory"], strict=True)
    ]
    return {
        "work": work,
        "train_seeds": seeds,
        "test_rows": test_rows,
        "prepare_seed": DATA_WORK["prepare_seed"],
        "test_accuracy": {m: stats(acc[m]) for m in MODES},
        "per_seed": {m: acc[m] for m in MODES},
        "streaming-in_memory points": stats(points),
    }


def bench_prepare(section: Section, rows: int, rounds: int) -> dict[str, Any]:
    from scripts.bench.settings import DATA_WORK, log
    from scripts.bench.stats import paired_ratios, stats

    source = section.bench.work / "data-dirty"
    made = section.child("data-dirty", ["dirty", source, rows, DATA_WORK["table_seed"]])
    seconds: dict[str, list[float]] = {s: [] for s in SIDES}
    checks = []
    for r in range(rounds):
        outs = {}
        for side in SIDES if r % 2 == 0 else SIDES[::-1]:
            outs[side] = section.bench.work / f"data-prepared-{side}-{r}"
            res = section.child(
                f"data-prepare-{side}-{r}", ["prepare", side, source, outs[side]]
            )
            seconds[side].append(res["seconds"])
            log(
                f"data prepare round {r + 1} {side}: {rows / res['seconds']:.0f} rows/s"
            )
        manifests = {
            s: json.loads((p / "manifest.json").read_text()) for s, p in outs.items()
        }
        checks.append(compare(manifests["ray"], manifests["pandas"]))
    rates = {s: [rows / v for v in seconds[s]] for s in SIDES}
    last = manifests["ray"]
    return {
        "rows": rows,
        "shape": DATA_WORK["prepare_shape"],
        "files": DATA_WORK["prepare_files"],
        "planted": made["planted"],
        "dropped": last["dropped"],
        "kept": {s: p["rows"] for s, p in last["splits"].items()},
        "seconds": {s: stats(seconds[s]) for s in SIDES},
        "rows_per_s": {s: stats(rates[s]) for s in SIDES},
        "ray/pandas": paired_ratios(rates["ray"], rates["pandas"]),
        "same_output": all(
            c["same_drops"] and c["same_rows"] and c["same_shards"] for c in checks
        ),
        "checks": checks,
    }


def bench_data(bench) -> dict[str, Any]:
    """The section: ingest, accuracy and prepare on one lean head."""
    from scripts.bench.settings import DATA_WORK, BenchError, log

    cfg = bench.cfg
    head, head_s = bench.start_head(lean=True)
    section = Section(bench, head)
    out: dict[str, Any] = {"head_start_s": round(head_s, 2), "cluster_cpus": 2}
    parts = (
        ("ingest", lambda: bench_ingest(section, cfg["data_rows"], cfg["data_rounds"])),
        ("accuracy", lambda: bench_accuracy(section, list(cfg["data_accuracy_seeds"]))),
        (
            "prepare",
            lambda: bench_prepare(
                section, cfg["data_prepare_rows"], cfg["data_rounds"]
            ),
        ),
    )
    try:
        for name, run in parts:
            try:
                out[name] = run()
            except BenchError as exc:
                log(f"data {name} FAILED: {exc}")
                out[name] = {"skipped": f"failed: {str(exc).splitlines()[0]}"}
    finally:
        bench.stop_head(head.temp_dir)
    out["seeds"] = {
        "synthetic_data": DATA_WORK["ingest"]["data_seed"],
        "ingest_train": DATA_WORK["ingest"]["seed"],
        "dirty_table": DATA_WORK["table_seed"],
        "prepare": DATA_WORK["prepare_seed"],
        "accuracy_train": list(cfg["data_accuracy_seeds"]),
    }
    return out


if __name__ == "__main__":
    sys.exit(child(sys.argv[1:]))
