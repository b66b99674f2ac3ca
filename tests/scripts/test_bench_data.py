"""scripts/bench/data*.py without Ray: the pandas baseline does the preparation
prepare.py does (the same drops, the same shards), and the section's figures
reach the targets and results.md."""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scripts.bench import cli, report, stats
from scripts.bench.data import compare, epoch_rates, train_argv
from scripts.bench.data_prepare import dirty_table, pandas_prepare

SHAPE = (3, 2, 2)
CLASSES = [str(i) for i in range(10)]


def prepare_without_ray(source, out, seed: int) -> tuple[dict, Counter]:
    """prepare.py's own steps on the rows its Parquet source hands over, in
    this process: the tasks' row decoding and cleaning, the sort by the seeded
    key, then its writer (prepare.run runs the same functions on Ray Data)."""
    import prepare
    from mlcore.cleaning import clean
    from mlcore.storage import parse_storage
    from mlcore.tables import _table_rows

    table = pa.concat_tables(pq.read_table(f) for f in sorted(source.iterdir()))
    width = SHAPE[0] * SHAPE[1] * SHAPE[2]
    rows = _table_rows(table, "label", ["x"], None, width, True, str(source))
    cleaned = clean(rows, CLASSES, seed, 0.15, 0.15).sort_by("order")

    class Sorted:  # the one method of a Ray dataset the writer calls
        def iter_batches(self, batch_format: str, batch_size: int):
            assert batch_format == "pyarrow"
            for batch in cleaned.to_batches(max_chunksize=batch_size):
                yield pa.Table.from_batches([batch])

    counts: Counter = Counter()
    written = prepare.write_classification(
        Sorted(),
        SimpleNamespace(image_shape=SHAPE, per="channel"),
        parse_storage(str(out)),
        SimpleNamespace(max_shard_mb=0.02, compression="snappy"),
        counts,
    )
    return written, counts


def test_the_pandas_baseline_writes_what_prepare_writes(tmp_path):
    planted = dirty_table(tmp_path / "raw", rows=4000, shape=SHAPE, files=3, seed=1)
    assert all(n > 0 for n in planted.values()), planted
    ours = pandas_prepare(
        tmp_path / "raw", tmp_path / "pandas", SHAPE, CLASSES, seed=3, max_shard_mb=0.02
    )
    assert ours["dropped"] == planted
    assert ours["rows_read"] == 4000
    kept = sum(p["rows"] for p in ours["splits"].values())
    assert kept == 4000 - sum(planted.values())
    assert sum(len(p["shards"]) for p in ours["splits"].values()) > 3  # bounded

    written, counts = prepare_without_ray(tmp_path / "raw", tmp_path / "ray", seed=3)
    assert {r: counts[r] for r in planted} == planted
    theirs = {
        "dropped": {r: counts[r] for r in ours["dropped"]},
        "splits": {
            s: {"rows": sum(p["rows"] for p in v), "shards": v}
            for s, v in written["shards"].items()
        },
        "normalisation": written["normalisation"],
    }
    check = compare(theirs, ours)
    assert check["same_drops"] and check["same_rows"] and check["same_shards"]
    assert check["normalisation_max_abs_diff"] < 1e-9
    for split in ("train", "val", "test"):  # the very same bytes on disk
        for shard in ours["splits"][split]["shards"]:
            a = (tmp_path / "pandas" / shard["path"]).read_bytes()
            assert a == (tmp_path / "ray" / shard["path"]).read_bytes()


def test_another_seed_splits_otherwise_and_compare_notices(tmp_path):
    dirty_table(tmp_path / "raw", rows=2000, shape=SHAPE, files=1, seed=0)
    a = pandas_prepare(tmp_path / "raw", tmp_path / "a", SHAPE, CLASSES, seed=0)
    b = pandas_prepare(tmp_path / "raw", tmp_path / "b", SHAPE, CLASSES, seed=1)
    check = compare(a, b)
    assert check["same_drops"] and not check["same_shards"]
    assert check["normalisation_max_abs_diff"] > 0


def test_epoch_rates_take_the_slowest_rank():
    marks = [
        {"event": "epoch_end", "epoch": 0, "rank": 0, "samples": 500, "seconds": 2.0},
        {"event": "epoch_end", "epoch": 0, "rank": 1, "samples": 500, "seconds": 4.0},
        {"event": "epoch_end", "epoch": 1, "rank": 0, "samples": 500, "seconds": 1.0},
        {"event": "epoch_end", "epoch": 1, "rank": 1, "samples": 500, "seconds": 1.25},
        {"event": "reported", "epoch": 1, "rank": 0},
    ]
    assert epoch_rates(marks) == {0: 250.0, 1: 800.0}


def test_both_modes_train_the_same_work(tmp_path):
    work = {
        "model": "cnn",
        "epochs": 2,
        "batch_size": 256,
        "num_workers": 2,
        "cpus_per_worker": 0.5,
        "seed": 7,
    }
    streamed = train_argv(tmp_path / "d", tmp_path / "r", "n", work, "streaming")
    held = train_argv(tmp_path / "d", tmp_path / "r", "n", work, "in_memory")
    assert held == [*streamed, "--data-in-memory"]
    flags = dict(zip(streamed[4::2], streamed[5::2], strict=False))
    assert flags["--cpus-per-worker"] == "0.5" and flags["--seed"] == "7"
    assert flags["--batch-size"] == "256" and flags["--num-workers"] == "2"


def _run(rate: float, epochs: list[float], acc: float = 0.1) -> dict:
    return {
        "samples_per_s": rate,
        "epoch_samples_per_s": epochs,
        "test_accuracy": acc,
        "test_samples": 269,
        "wall_s": 100.0,
        "loadavg": [1.5, 2.25],
    }


def _data_results() -> dict:
    ingest_work = {
        "model": "cnn",
        "epochs": 2,
        "batch_size": 256,
        "num_workers": 2,
        "cpus_per_worker": 0.5,
    }
    return {
        "seeds": {
            "synthetic_data": 0,
            "ingest_train": 0,
            "dirty_table": 0,
            "prepare": 0,
            "accuracy_train": [0, 1, 2],
        },
        "ingest": {
            "rows": 50000,
            "mib": 600.0,
            "work": ingest_work,
            "runs": {
                "streaming": [_run(380.0, [360.0, 380.0])],
                "in_memory": [_run(400.0, [390.0, 400.0])],
            },
            "samples_per_s": {
                "streaming": stats.stats([380.0]),
                "in_memory": stats.stats([400.0]),
            },
            "streaming/in_memory": stats.stats([0.95]),
        },
        "accuracy": {
            "work": {**ingest_work, "model": "mlp", "epochs": 10, "batch_size": 64},
            "train_seeds": [0, 1, 2],
            "test_rows": 269,
            "prepare_seed": 0,
            "per_seed": {
                "streaming": [0.96, 0.97, 0.95],
                "in_memory": [0.97, 0.97, 0.96],
            },
            "test_accuracy": {
                "streaming": stats.stats([0.96, 0.97, 0.95]),
                "in_memory": stats.stats([0.97, 0.97, 0.96]),
            },
            "streaming-in_memory points": stats.stats([-1.0, 0.0, -1.0]),
        },
        "prepare": {"skipped": "failed: no table"},
    }


def test_the_data_section_reaches_targets_and_markdown():
    res = {
        "schema": 1,
        "date": "d",
        "mode": "full",
        "machine": {"cpus": 2, "loadavg_start": [1.0], "loadavg_end": [1.0]},
        "versions": {"ray": "x"},
        "command": "python -m scripts.bench --only data",
        "wall_s": 10.0,
        "data": _data_results(),
    }
    res["targets"] = report.targets(res)
    names = {t["name"]: t for t in res["targets"]}
    ratio = names[
        "Ray Data streaming / in-memory DataLoader samples/s (CNN, prepared 3x32x32)"
    ]
    assert ratio["median"] == 0.95 and ratio["met"] is True
    points = names[
        "digits test accuracy, streamed - in memory (points, median over seeds)"
    ]
    assert points["median"] == -1.0 and points["met"] is True
    md = report.render_markdown(res)
    assert "## 7. Data: Ray Data streaming, accuracy, preparation" in md
    assert "Seeds: synthetic data 0, ingest training 0" in md
    assert "digits training 0, 1, 2" in md
    assert "2 workers x 0.5 CPU" in md
    row = "| 1 | streaming | 380 (360, 380) | 400 (390, 400) | 0.950 |"
    assert f"{row} 0.923 | 1.5-2.2 / 1.5-2.2 |" in md
    assert "| 0 | 0.9600 | 0.9700 | -1.00 |" in md
    assert "one row is 0.37 points" in md
    assert "Preparation: skipped: failed: no table" in md
    assert report.check_schema(res) == []
    json.dumps(res)  # results.json takes it as it is


def test_data_is_a_section_of_the_bench():
    assert cli.parse_args(["--only", "data"]).sections == ["data"]
    with pytest.raises(SystemExit):
        cli.parse_args(["--only", "dataa"])
