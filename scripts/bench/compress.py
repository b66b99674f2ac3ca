"""compress: compress.py's serving variants against fp32, and Serve with them.

1. In a child (scripts.bench.compress_models): the digits MLP and CNN trained
   for each seed and compressed by compress.py (its report: size, test accuracy;
   batch-1 latency and batch-32 throughput for the first seed, alternating
   rounds, one thread), and the CNN on 3x32x32 (the serving benchmark's model,
   untrained: speed only).
2. Serve on a HAProxy head (serveIngress: haproxy): the 3x32x32 CNN as fp32 and
   as its best variant (the highest batch-32 throughput in its report), each
   with settings.SERVE_REPLICAS replicas of 0.5 CPU, one instance a request
   (binary body), at c=32, the two apps in turn each round.

Targets: torchao int8 of the MLP at <= 0.3x fp32's size and <= 0.5 point of
accuracy lost (means over the seeds); ONNX Runtime (fp32 graph) >= 1.3x torch
eager at batch 32 on the 3x32x32 CNN (paired by round); Serve with the best
variant >= 1.3x fp32's requests/s at c=32 (paired by round).
"""

from __future__ import annotations

import json
import statistics
import subprocess
from typing import Any

from raygpu.names import LOOPBACK
from scripts.bench.proc import Bench, child_env
from scripts.bench.serving import SERVE_REPLICAS, deploy_model, one_load, serve_body
from scripts.bench.settings import (
    COMPRESS_MODELS_PROGRAM,
    PY,
    REPO,
    SERVE_LEAN_ENV,
    BenchError,
    log,
)
from scripts.bench.stats import paired_ratios, stats

SERVE_C = 32
SHAPE_32 = (3, 32, 32)


def compress_models(bench: Bench) -> dict[str, Any]:
    cfg = bench.cfg
    argv = [PY, "-m", COMPRESS_MODELS_PROGRAM, "--work", str(bench.work / "compress")]
    argv += ["--seeds", ",".join(str(s) for s in cfg["compress_seeds"])]
    argv += ["--rounds", str(cfg["compress_rounds"])]
    argv += ["--seconds", str(cfg["compress_seconds"])]
    log_path = bench.new_path("compress-models", ".log")
    with open(log_path, "w") as logf:
        proc = subprocess.run(
            argv,
            cwd=REPO,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=logf,
            text=True,
            timeout=1800,
        )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RGJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(
            f"compress_models failed ({proc.returncode}):\n"
            + log_path.read_text()[-2000:]
        )
    return json.loads(line[len("RGJSON ") :])


def mean_stats(values: list[float]) -> dict[str, Any]:
    """stats() with the mean in the median's place: the targets over seeds are
    means (the issue's), the range still min-max."""
    s = stats(values)
    if values:
        s["median"] = statistics.fmean(values)
    return s


def summarise(out: dict[str, Any]) -> dict[str, Any]:
    """Per model and variant: size, accuracy delta and timings, over seeds."""
    summary: dict[str, Any] = {}
    reports = {**out["reports"], "cnn32": [out["cnn32"]]}
    for model, runs in reports.items():
        for variant in runs[0]["variants"]:
            rows = [r["variants"][variant] for r in runs]
            timed = [r for r in rows if "throughput_b32" in r]
            entry = {
                "size_bytes": rows[0]["size_bytes"],
                "size_ratio": mean_stats([r["size_ratio"] for r in rows]),
                "test_accuracy": mean_stats([r["test_accuracy"] for r in rows]),
                "accuracy_delta_points": mean_stats(
                    [r["accuracy_delta_points"] for r in rows]
                ),
            }
            if timed:
                t = timed[0]
                entry |= {
                    "latency_b1_p50_ms": t["latency_b1_p50_ms"],
                    "latency_b1_p99_ms": t["latency_b1_p99_ms"],
                    "throughput_b32": stats(t["throughput_b32_rounds"]),
                }
            summary[f"{model}/{variant}"] = entry
        summary[f"{model}/skipped"] = runs[0]["skipped"]
    return summary


def eager_ratio(report: dict[str, Any], variant: str) -> dict[str, Any]:
    rows = report["variants"]
    if "throughput_b32_rounds" not in rows.get(variant, {}):
        return stats([])
    return paired_ratios(
        rows[variant]["throughput_b32_rounds"], rows["fp32"]["throughput_b32_rounds"]
    )


def best_variant(report: dict[str, Any]) -> str:
    rows = {k: v for k, v in report["variants"].items() if k != "fp32"}
    return max(rows, key=lambda k: rows[k].get("throughput_b32", 0.0))


def serve_rounds(bench: Bench, checkpoint: str, best: str) -> dict[str, Any]:
    from raygpu.localray import free_port

    env = SERVE_LEAN_ENV if bench.serve_lean else {}
    head, head_s = bench.start_head(lean=True, env=env, serve_ingress="haproxy")
    log(f"compress: haproxy head up in {head_s:.1f}s")
    port = free_port()
    apps = {
        "cnn-fp32": (checkpoint, True, "fp32"),
        f"cnn-{best}": (checkpoint, True, best),
    }
    runs: dict[str, list] = {name: [] for name in apps}
    try:
        dep_s = deploy_model(bench, head, port, apps)
        log(f"compress: fp32 and {best} apps deployed in {dep_s:.1f}s")
        body = serve_body(SHAPE_32, "application/octet-stream")
        for r in range(bench.cfg["serve_rounds"]):
            order = list(apps) if r % 2 == 0 else list(reversed(apps))
            for name in order:
                url = f"http://{LOOPBACK}:{port}/{name}/predict"
                res = one_load(bench, url, body, "application/octet-stream", SERVE_C)
                runs[name].append(res)
            log(
                f"compress serve c={SERVE_C} round {r + 1}: "
                + ", ".join(f"{n} {runs[n][-1]['rps']:.0f}" for n in apps)
            )
    finally:
        bench.stop_head(head.temp_dir)

    def rps(name: str) -> list[float]:
        return [x["rps"] for x in runs[name]]

    return {
        "best": best,
        "concurrency": SERVE_C,
        "replicas": SERVE_REPLICAS,
        "summary": {
            name: {
                "rps": stats(rps(name)),
                "p50_ms": stats([x["p50_ms"] for x in rs]),
                "p99_ms": stats([x["p99_ms"] for x in rs]),
            }
            for name, rs in runs.items()
        },
        "ratio": paired_ratios(rps(f"cnn-{best}"), rps("cnn-fp32")),
        "runs": runs,
    }


def bench_compress(bench: Bench) -> dict[str, Any]:
    out = compress_models(bench)
    summary = summarise(out)
    mlp_int8 = [r["variants"]["int8"] for r in out["reports"]["mlp"]]
    cnn32 = out["cnn32"]
    result = {
        "work": {
            "seeds": list(bench.cfg["compress_seeds"]),
            "timing_rounds": bench.cfg["compress_rounds"],
            "timing_seconds": bench.cfg["compress_seconds"],
            "models": "digits MLP and CNN trained in-process (10 epochs, Adam 1e-3, "
            "batch 64) per seed; cnn32 = the CNN on 3x32x32, untrained (speed)",
            "threads": 1,
        },
        "summary": summary,
        "mlp_int8_size_ratio": mean_stats([r["size_ratio"] for r in mlp_int8]),
        "mlp_int8_accuracy_drop_points": mean_stats(
            [-r["accuracy_delta_points"] for r in mlp_int8]
        ),
        "ratios": {
            f"{model} {v}/fp32 b32": eager_ratio(report, v)
            for model, report in (("cnn32", cnn32), ("cnn", out["reports"]["cnn"][0]))
            for v in ("onnx", "onnx-int8")
        },
    }
    try:
        result["serve"] = serve_rounds(
            bench, out["cnn32_checkpoint"], best_variant(cnn32)
        )
    except BenchError as exc:
        result["serve"] = {"skipped": f"failed: {exc}"}
    return result


# ---------------------------------------------------------------- the report


def compress_targets(section: dict[str, Any], add) -> None:
    """The issue's compression targets, through report.targets' `add`."""
    add(
        "int8 (torchao) digits MLP size / fp32 (mean over seeds)",
        "<= 0.3",
        section.get("mlp_int8_size_ratio"),
        lambda v: v <= 0.3,
    )
    add(
        "int8 (torchao) digits MLP accuracy drop, points (mean over seeds)",
        "<= 0.5",
        section.get("mlp_int8_accuracy_drop_points"),
        lambda v: v <= 0.5,
    )
    add(
        "ONNX Runtime / torch eager throughput, batch 32, CNN 3x32x32",
        ">= 1.3",
        (section.get("ratios") or {}).get("cnn32 onnx/fp32 b32"),
        lambda v: v >= 1.3,
    )
    add(
        "Serve best variant / fp32 rps, CNN 3x32x32, HAProxy, c=32",
        ">= 1.3",
        (section.get("serve") or {}).get("ratio"),
        lambda v: v >= 1.3,
    )


def compress_markdown(section: dict[str, Any] | None) -> list[str]:
    from scripts.bench.stats import fmt, fmt_stats

    if not section:
        return []
    if "skipped" in section:
        return ["", "## compress", "", f"skipped: {section['skipped']}"]
    work = section["work"]
    lines = [
        "",
        "## 8. Compression (compress.py)",
        "",
        f"{work['models']}. Seeds {work['seeds']}: size and accuracy are means over "
        f"them (range min-max); CPU timings ({work['threads']} thread, "
        f"{work['timing_rounds']} alternating rounds of {work['timing_seconds']} s) "
        "come from the first seed. Accuracy on each model's test split.",
        "",
        "| model | variant | size (bytes) | size / fp32 | test accuracy "
        "| delta (points) | b1 p50 ms | b1 p99 ms | b32 samples/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, s in section["summary"].items():
        model, variant = key.split("/")
        if variant == "skipped":
            lines += [f"| {model} | {v} | not made: {why} |" for v, why in s.items()]
            continue
        lines.append(
            f"| {model} | {variant} | {s['size_bytes']} | "
            f"{fmt_stats(s['size_ratio'], 2)} | {fmt_stats(s['test_accuracy'], 4)} | "
            f"{fmt_stats(s['accuracy_delta_points'], 2)} | "
            f"{fmt(s.get('latency_b1_p50_ms'), 3)} | "
            f"{fmt(s.get('latency_b1_p99_ms'), 3)} | "
            f"{fmt_stats(s.get('throughput_b32'), 0)} |"
        )
    lines += ["", "| ratio (batch-32 throughput, paired by round) | median (range) |"]
    lines += ["|---|---|"]
    lines += [f"| {k} | {fmt_stats(s, 2)} |" for k, s in section["ratios"].items()]
    sv = section.get("serve") or {}
    if "skipped" in sv:
        lines += ["", f"Serve: skipped: {sv['skipped']}"]
    elif sv:
        lines += [
            "",
            f"Serve, CNN 3x32x32 behind HAProxy, {sv['replicas']} replicas of 0.5 CPU "
            f"per app, one instance a request (binary), c={sv['concurrency']}; best "
            f"variant {sv['best']}:",
            "",
            "| app | rps | p50 ms | p99 ms |",
            "|---|---|---|---|",
        ]
        for name, s in sv["summary"].items():
            lines.append(
                f"| {name} | {fmt_stats(s['rps'])} | {fmt_stats(s['p50_ms'], 2)} | "
                f"{fmt_stats(s['p99_ms'], 2)} |"
            )
        lines += ["", f"- {sv['best']} / fp32 rps: {fmt_stats(sv['ratio'], 2)}"]
    return lines
