"""scripts/bench/compress.py: what it makes of compress.py's reports (means over
seeds, the paired ratios, the best variant), its targets and its markdown."""

from __future__ import annotations

from scripts.bench import compress as bench
from scripts.bench import report
from scripts.bench.stats import stats


def row(size: float, acc: float, fp32_acc: float, rounds=None) -> dict:
    out = {
        "backend": "x",
        "size_bytes": int(size * 1000),
        "size_ratio": size,
        "test_accuracy": acc,
        "accuracy_delta_points": 100 * (acc - fp32_acc),
    }
    if rounds:
        out |= {
            "latency_b1_p50_ms": 0.1,
            "latency_b1_p99_ms": 0.3,
            "throughput_b32": sorted(rounds)[len(rounds) // 2],
            "throughput_b32_rounds": rounds,
        }
    return out


def mlp_report(seed: int, timed: bool) -> dict:
    fp32 = 0.96 + seed / 100
    r = [100.0, 110.0, 90.0] if timed else None
    return {
        "variants": {
            "fp32": row(1.0, fp32, fp32, r),
            "int8": row(0.28, fp32 - 0.004 * seed, fp32, r and [10.0, 11.0, 9.0]),
        },
        "skipped": {},
    }


def cnn_report(timed: bool = True) -> dict:
    t = timed or None
    return {
        "variants": {
            "fp32": row(1.0, 0.95, 0.95, t and [100.0, 100.0, 100.0]),
            "onnx": row(1.03, 0.95, 0.95, t and [250.0, 200.0, 300.0]),
            "onnx-int8": row(0.3, 0.95, 0.95, t and [400.0, 500.0, 450.0]),
        },
        "skipped": {"int8": "int8: torchao quantises Linear layers only"},
    }


def section() -> dict:
    out = {
        "reports": {
            "mlp": [mlp_report(s, s == 0) for s in range(3)],
            "cnn": [cnn_report(True), cnn_report(False), cnn_report(False)],
        },
        "cnn32": cnn_report(True),
    }
    cnn32 = out["cnn32"]
    mlp_int8 = [r["variants"]["int8"] for r in out["reports"]["mlp"]]
    return {
        "work": {
            "seeds": [0, 1, 2],
            "timing_rounds": 3,
            "timing_seconds": 1.0,
            "models": "m",
            "threads": 1,
        },
        "summary": bench.summarise(out),
        "mlp_int8_size_ratio": bench.mean_stats([r["size_ratio"] for r in mlp_int8]),
        "mlp_int8_accuracy_drop_points": bench.mean_stats(
            [-r["accuracy_delta_points"] for r in mlp_int8]
        ),
        "ratios": {"cnn32 onnx/fp32 b32": bench.eager_ratio(cnn32, "onnx")},
        "serve": {
            "best": bench.best_variant(cnn32),
            "concurrency": 32,
            "replicas": 2,
            "summary": {
                "cnn-fp32": {"rps": stats([300.0]), "p50_ms": stats([90.0])}
                | {"p99_ms": stats([120.0])},
            },
            "ratio": stats([1.1]),
        },
    }


def test_means_over_seeds_ratios_by_round_and_the_best_variant():
    s = section()
    drop = s["mlp_int8_accuracy_drop_points"]
    assert abs(drop["median"] - 0.4) < 1e-9  # seeds lose 0, 0.4 and 0.8 points
    assert drop["min"] == 0 and abs(drop["max"] - 0.8) < 1e-9
    assert s["ratios"]["cnn32 onnx/fp32 b32"]["values"] == [2.5, 2.0, 3.0]
    assert s["serve"]["best"] == "onnx-int8"  # the highest batch-32 throughput
    mlp = s["summary"]["mlp/int8"]
    assert mlp["throughput_b32"]["median"] == 10.0  # from the timed seed only
    assert s["summary"]["cnn/skipped"] == {
        "int8": "int8: torchao quantises Linear layers only"
    }
    assert bench.eager_ratio(cnn_report(False), "onnx")["median"] is None


def test_the_targets_and_the_markdown():
    res = {"compress": section()}
    names = {t["name"]: t for t in report.targets(res)}
    size = names["int8 (torchao) digits MLP size / fp32 (mean over seeds)"]
    assert size["met"] is True and abs(size["median"] - 0.28) < 1e-9
    drop = names["int8 (torchao) digits MLP accuracy drop, points (mean over seeds)"]
    assert drop["met"] is True
    assert names["ONNX Runtime / torch eager throughput, batch 32, CNN 3x32x32"]["met"]
    serve = names["Serve best variant / fp32 rps, CNN 3x32x32, HAProxy, c=32"]
    assert serve["met"] is False and serve["median"] == 1.1
    md = "\n".join(bench.compress_markdown(res["compress"]))
    assert "| cnn | int8 | not made: int8: torchao quantises Linear layers only |" in md
    assert "| mlp | int8 | 280 | 0.28 (0.28-0.28) |" in md
    assert "| cnn32 onnx/fp32 b32 | 2.50 (2.00-3.00) |" in md
    assert "best variant onnx-int8" in md and "| cnn-fp32 | 300 |" in md
    none = {t["name"]: t for t in report.targets({})}
    assert none[serve["name"]]["met"] is None
