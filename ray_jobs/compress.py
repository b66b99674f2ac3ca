"""Compress a checkpoint into serving variants, and report what each costs.

    python compress.py --checkpoint <run>/checkpoint_epoch0009_attempt01
    python compress.py --checkpoint s3://B/runs/r/checkpoint_... --variants onnx-int8

Reads a checkpoint train.py wrote (its digests checked), makes the variants asked
for (default: every one the model can take) as checkpoint folders of their own
under `<checkpoint>/variants/<variant>/` (or --out): `int8` (torchao),
`onnx`, `onnx-int8` (ONNX Runtime); mlcore.variants describes the format. Then
it measures fp32 and each variant on the CPU, on the test split the checkpoint
was trained on (normalised with the checkpoint's statistics, as the Serve app
does): size on disk, test accuracy, latency p50/p99 at batch 1 and throughput at
batch 32 (alternating rounds, --threads math threads), and writes
`report.json` and `report.md` beside the variants. Serve one with
`serve_app:build_app checkpoint=<checkpoint> variant=<variant>`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch

from mlcore import prepared as prep
from mlcore.checkpointing import META_FILE, MODEL_FILE, load_model, local_copy
from mlcore.compression import (
    check_requested,
    export_onnx,
    refusal,
    write_variant,
)
from mlcore.data import DATASETS, load_dataset
from mlcore.errors import (
    CheckpointError,
    DataError,
    DatasetUnavailable,
    JobInputError,
    StorageError,
)
from mlcore.models import ModelSpec
from mlcore.storage import parse_storage, write_text
from mlcore.variants import (
    ONNX_VARIANTS,
    VARIANTS,
    VARIANTS_DIR,
    Predictor,
    TorchPredictor,
    check_variant,
    load,
)

MADE = VARIANTS[1:]  # fp32 is the checkpoint itself
LATENCY_BATCH, THROUGHPUT_BATCH = 1, 32


# ------------------------------------------------------------------ the data


def eval_data(meta: dict, args: argparse.Namespace) -> tuple[Any, Any, Any, str]:
    """(test x, test y, calibration rows, description) as the model sees them."""
    shape = tuple(meta["model"]["image_shape"])
    data_uri = args.data or (meta.get("data") or {}).get("uri")
    if data_uri and not args.dataset:
        data = prep.open_prepared(data_uri)
        if data.kind != "classification" or data.image_shape != shape:
            raise DataError(f"--data {data_uri} does not hold {shape} images")
        trained_on = (meta.get("data") or {}).get("manifest_sha256")
        if not args.data and trained_on and trained_on != data.digest:
            raise DataError(
                f"the prepared dataset {data_uri} changed since the checkpoint was "
                "trained on it (its manifest digest differs); give --data"
            )
        prep.verify(data, splits=("train", "test"))
        norm = prep.Normalisation.from_dict(meta.get("normalisation") or {})
        test = [(norm.apply(x), y) for x, y in prep.iter_split(data, "test")]
        first, _ = next(prep.iter_split(data, "train", args.calibration_rows))
        tx = np.concatenate([x for x, _ in test])
        ty = np.concatenate([y for _, y in test])
        return tx, ty, norm.apply(first), f"prepared {data.root.uri}"
    config = meta.get("config") or {}
    name = args.dataset or config.get("dataset")
    if not name:
        raise JobInputError(
            "--dataset",
            "the checkpoint does not say what it was trained on; give --dataset "
            f"({', '.join(DATASETS)}) or --data (a prepared dataset)",
        )
    ds = load_dataset(
        name, args.data_dir or config.get("data_dir"), bool(config.get("download"))
    )
    if ds.image_shape != shape:
        raise DataError(f"--dataset {name} holds {ds.image_shape} images, not {shape}")
    calib = ds.train.x[: args.calibration_rows]
    return ds.test.x, ds.test.y, calib, f"{name} test split"


# ---------------------------------------------------------------- measuring


def accuracy(predictor: Predictor, x: np.ndarray, y: np.ndarray) -> float:
    correct = 0
    for i in range(0, len(x), 256):
        correct += int(
            (predictor.logits(x[i : i + 256]).argmax(1) == y[i : i + 256]).sum()
        )
    return correct / max(len(x), 1)


def timed(predictor: Predictor, x: np.ndarray, seconds: float) -> list[float]:
    """Seconds of each call on `x` for about `seconds`, after a warm-up."""
    for _ in range(3):
        predictor.logits(x)
    out, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(out) < 5:
        t0 = time.perf_counter()
        predictor.logits(x)
        out.append(time.perf_counter() - t0)
    return out


def speeds(
    predictors: dict[str, Predictor], x: np.ndarray, rounds: int, seconds: float
) -> dict[str, dict[str, Any]]:
    """Latency at batch 1 and throughput at batch 32 of each predictor, in
    rounds that take the predictors in turn (a different one first each round),
    so that the machine's drift falls on all alike."""
    reps = -(-THROUGHPUT_BATCH // len(x))
    x32 = np.ascontiguousarray(np.concatenate([x] * reps)[:THROUGHPUT_BATCH])
    x1 = np.ascontiguousarray(x[:LATENCY_BATCH])
    names = list(predictors)
    lat = {n: [] for n in names}
    thr = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            lat[n] += timed(predictors[n], x1, seconds / 2)
            batch_s = timed(predictors[n], x32, seconds / 2)
            thr[n].append(THROUGHPUT_BATCH / float(np.median(batch_s)))
    return {
        n: {
            "latency_b1_p50_ms": float(np.percentile(lat[n], 50) * 1e3),
            "latency_b1_p99_ms": float(np.percentile(lat[n], 99) * 1e3),
            "throughput_b32": float(np.median(thr[n])),
            "throughput_b32_rounds": thr[n],
        }
        for n in names
    }


# ------------------------------------------------------------------- the run


def publish(local_dir: str, out_uri: str, names: list[str]) -> None:
    """Copy the variant folders and reports from `local_dir` to S3 (`out_uri`)."""
    import pyarrow.fs as pafs

    out = parse_storage(out_uri, "--out")
    for name in names:
        target = out.join(name)
        if os.path.isdir(os.path.join(local_dir, name)):
            out.filesystem.delete_dir_contents(target.path, missing_dir_ok=True)
        pafs.copy_files(
            os.path.join(local_dir, name),
            target.path,
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=out.filesystem,
        )


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    with local_copy(args.checkpoint, "--checkpoint") as directory:
        model, meta = load_model(directory)
        with open(os.path.join(directory, META_FILE), "rb") as f:
            source_digest = hashlib.sha256(f.read()).hexdigest()
        fp32_bytes = os.path.getsize(os.path.join(directory, MODEL_FILE))
    spec = ModelSpec.from_dict(meta["model"])
    if args.variants == "auto":
        skipped = {v: why for v in MADE if (why := refusal(v, model, spec))}
        wanted = [v for v in MADE if v not in skipped]
    else:
        wanted = args.variants_list
        check_requested(wanted, model, spec)
        skipped = {}
    test_x, test_y, calib, described = eval_data(meta, args)
    out_uri = args.out or parse_storage(args.checkpoint).join(VARIANTS_DIR).uri
    out = parse_storage(out_uri, "--out")
    source = {
        "checkpoint": parse_storage(args.checkpoint).uri,
        "meta_sha256": source_digest,
        "epoch": meta.get("epoch"),
    }
    with tempfile.TemporaryDirectory(prefix="rg-compress-") as tmp:
        local_out = tmp if out.is_remote else out.path
        os.makedirs(local_out, exist_ok=True)
        onnx_fp32 = None
        if any(v in ONNX_VARIANTS for v in wanted):  # one export for both
            t0 = time.monotonic()
            onnx_fp32 = os.path.join(tmp, "fp32.onnx")
            export_onnx(model, spec.image_shape, onnx_fp32)
            print(f"[raygpu] exported to ONNX in {time.monotonic() - t0:.1f}s")
        folders = {}
        for variant in wanted:
            t0 = time.monotonic()
            folders[variant] = write_variant(
                local_out, variant, model, meta, source, calib, onnx_fp32
            )
            print(f"[raygpu] {variant}: made in {time.monotonic() - t0:.1f}s")
        # fp32 is the checkpoint's own model, measured the way the variants are.
        predictors: dict[str, Predictor] = {"fp32": TorchPredictor(model, "fp32")}
        sizes = {"fp32": fp32_bytes}
        for variant, folder in folders.items():
            predictors[variant], vmeta = load(folder, variant, args.threads)
            sizes[variant] = os.path.getsize(os.path.join(folder, vmeta["model_file"]))
        rows = {}
        for name, predictor in predictors.items():
            rows[name] = {
                "backend": predictor.backend,
                "size_bytes": sizes[name],
                "size_ratio": sizes[name] / sizes["fp32"],
                "test_accuracy": accuracy(predictor, test_x, test_y),
            }
            rows[name]["accuracy_delta_points"] = 100 * (
                rows[name]["test_accuracy"] - rows["fp32"]["test_accuracy"]
            )
        if args.rounds:
            measured = speeds(predictors, test_x, args.rounds, args.seconds)
            for name, m in measured.items():
                rows[name] |= m
                rows[name]["throughput_ratio"] = (
                    m["throughput_b32"] / measured["fp32"]["throughput_b32"]
                )
        report = {
            "checkpoint": source["checkpoint"],
            "out": out.uri,
            "model": spec.to_dict(),
            "data": described,
            "test_rows": int(len(test_y)),
            "threads": args.threads,
            "rounds": args.rounds,
            "variants": rows,
            "skipped": skipped,
        }
        write_text(out.join("report.json"), json.dumps(report, indent=2) + "\n")
        write_text(out.join("report.md"), markdown(report))
        if out.is_remote:
            publish(local_out, out.uri, wanted)
    return report


def markdown(report: dict[str, Any]) -> str:
    rows = report["variants"]
    timed_ = "throughput_b32" in rows["fp32"]
    lines = [
        f"# Variants of {report['checkpoint']}",
        "",
        f"{report['model']['name']} {tuple(report['model']['image_shape'])}; "
        f"accuracy on {report['data']} ({report['test_rows']} rows); "
        + (
            f"CPU timings with {report['threads']} thread(s), "
            f"{report['rounds']} alternating rounds"
            if timed_
            else "no timings (--rounds 0)"
        ),
        "",
        "| variant | backend | size (bytes) | size / fp32 | test accuracy | "
        "delta (points) | b1 p50 ms | b1 p99 ms | b32 samples/s | b32 / fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(row: dict, key: str, fmt: str) -> str:
        return format(row[key], fmt) if key in row else "-"

    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['backend']} | {r['size_bytes']} | {r['size_ratio']:.2f} | "
            f"{r['test_accuracy']:.4f} | {r['accuracy_delta_points']:+.2f} | "
            f"{f(r, 'latency_b1_p50_ms', '.3f')} | "
            f"{f(r, 'latency_b1_p99_ms', '.3f')} | "
            f"{f(r, 'throughput_b32', '.0f')} | {f(r, 'throughput_ratio', '.2f')} |"
        )
    for name, why in report["skipped"].items():
        lines += ["", f"- {name} not made: {why}"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="compress.py", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--checkpoint", required=True, help="train.py checkpoint folder")
    p.add_argument(
        "--variants",
        default="auto",
        help=f"comma-separated, from {', '.join(MADE)}; auto: every one the model "
        "can take",
    )
    p.add_argument("--out", help="where the variants go (<checkpoint>/variants)")
    p.add_argument("--dataset", help=f"test data, one of {DATASETS} (the run's)")
    p.add_argument("--data-dir", help="where mnist's files are")
    p.add_argument("--data", help="test data: a prepared dataset (the run's)")
    p.add_argument(
        "--calibration-rows",
        type=int,
        default=256,
        help="training rows that calibrate onnx-int8's activations (256)",
    )
    p.add_argument("--threads", type=int, default=1, help="CPU math threads (1)")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds; 0: none")
    p.add_argument(
        "--seconds", type=float, default=1.0, help="per variant and round (1.0)"
    )
    args = p.parse_args(argv)
    try:
        validate(args)
    except JobInputError as exc:
        p.error(str(exc))
    return args


def validate(args: argparse.Namespace) -> None:
    parse_storage(args.checkpoint, "--checkpoint")
    if args.out:
        parse_storage(args.out, "--out")
    if args.data:
        parse_storage(args.data, "--data")
    if args.data and args.dataset:
        raise JobInputError("--data", "give --data or --dataset, not both")
    if args.dataset and args.dataset not in DATASETS:
        raise JobInputError(
            "--dataset",
            f"unknown {args.dataset!r}; choose one of {', '.join(DATASETS)}",
        )
    if args.variants != "auto":
        names = [v.strip() for v in args.variants.split(",") if v.strip()]
        if not names:
            raise JobInputError("--variants", f"name one or more of {', '.join(MADE)}")
        for name in names:
            check_variant(name, "--variants")
            if name == "fp32":
                raise JobInputError(
                    "--variants",
                    "fp32 is the checkpoint itself; choose from " + ", ".join(MADE),
                )
        args.variants_list = list(dict.fromkeys(names))
    for flag, value, low in (
        ("--calibration-rows", args.calibration_rows, 1),
        ("--threads", args.threads, 1),
        ("--rounds", args.rounds, 0),
    ):
        if value < low:
            raise JobInputError(flag, f"must be at least {low} (got {value})")
    if not (args.seconds > 0 and np.isfinite(args.seconds)):
        raise JobInputError(
            "--seconds", f"must be a positive number (got {args.seconds})"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except JobInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (CheckpointError, DataError, DatasetUnavailable, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(markdown(report), end="")
    print(f"report={report['out']}/report.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
