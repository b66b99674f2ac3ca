"""Prepare a dataset on Ray Data: raw files in, clean shuffled Parquet shards out.

The entry point for `ray job submit --working-dir ray_jobs -- python prepare.py
...`, and runnable on a laptop (it starts a local Ray when none is running).

1. Looks at the input (mlcore.sources): listing, headers, schemas; a missing
   label column, a schema that changes between files, a broken IDX header or
   an empty input fails here, naming the file.
2. Hashes every source file (SHA-256) and derives the recipe: sources, options
   and code version. When --output already holds a complete dataset of the
   same recipe whose shards verify, there is nothing to do.
3. Removes any old manifest.json (so nothing stale is accepted meanwhile), then
   on Ray Data: decodes rows, cleans them (mlcore.cleaning: missing or
   non-finite values, wrong shapes, unknown labels; each row's split from its
   content and --seed), sorts them by a seeded key (a shuffle that puts exact
   duplicates side by side), and streams them to this process, which drops
   duplicates, counts every drop by reason, computes the normalisation on the
   train split only and writes Parquet shards of at most --max-shard-mb.
4. Deletes shards of an earlier run that the new dataset does not list, and
   writes manifest.json last (mlcore.prepared documents the format).

    python prepare.py --format digits --output /tmp/prepared/digits
    python prepare.py --format csv --source s3://data/raw/t --label-column y \\
        --output s3://data/prepared/t
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from mlcore import prepared as fmt
from mlcore.cleaning import REASONS, clean, clean_documents
from mlcore.errors import DataError, JobInputError, StorageError, data_error_in
from mlcore.sources import FORMATS, Options, Source, plan_source
from mlcore.storage import StoragePath, check_storage, parse_storage

# The files whose code decides the output bytes: their digest is the version.
CODE_FILES = (
    "prepare.py",
    "mlcore/cleaning.py",
    "mlcore/sources.py",
    "mlcore/tables.py",
    "mlcore/prepared.py",
    "mlcore/data.py",
)
DEFAULT_SEQ_LEN = 256


def code_version() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for name in CODE_FILES:
        with open(os.path.join(here, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()


def source_checksums(source: Source) -> list[dict]:
    fs = source.root.filesystem

    def one(path: str) -> dict:
        try:
            size = fs.get_file_info(path).size
            return {
                "path": source.rel(path),
                "bytes": size,
                "sha256": fmt.sha256_file(fs, path),
            }
        except OSError as exc:
            raise DataError(f"{source.rel(path)}: cannot be read ({exc})") from None

    with ThreadPoolExecutor(fmt.CHECKSUM_THREADS) as pool:
        return list(pool.map(one, source.files))


def options_of(args: argparse.Namespace) -> dict[str, Any]:
    """What decides the output besides the sources and the code."""
    keys = (
        "format",
        "label_column",
        "split_column",
        "feature_columns",
        "shape",
        "classes",
        "num_classes",
        "seed",
        "val_fraction",
        "test_fraction",
        "max_shard_mb",
        "compression",
        "seq_len",
    )
    return {k: getattr(args, k) for k in keys}


# ------------------------------------------------------------------- writing


class Dedupe:
    """Keeps the first of each run of equal digests in a sorted stream."""

    def __init__(self) -> None:
        self.last: bytes | None = None

    def keep(self, digests: list[bytes]) -> np.ndarray:
        out = np.ones(len(digests), bool)
        for i, d in enumerate(digests):
            out[i] = d != self.last
            self.last = d
        return out


def _rows_per_shard(max_shard_mb: float, row_bytes: int) -> int:
    return max(1, int(max_shard_mb * (1 << 20) // max(row_bytes, 1)))


def write_classification(
    ds, source: Source, out: StoragePath, args, counts: Counter
) -> dict:
    width = math.prod(source.image_shape)
    writer = fmt.ShardWriter(
        out,
        fmt.classification_schema(width),
        _rows_per_shard(args.max_shard_mb, 4 * width + 8),
        args.compression,
    )
    stats = fmt.RunningStats(source.image_shape, source.per)
    dedupe = Dedupe()
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=4096):
        counts["read"] += len(batch)
        reason = np.array(batch.column("reason").to_pylist(), dtype=object)
        for r, n in Counter(reason[reason != ""]).items():
            counts[r] += n
        valid = batch.filter(pa.array(reason == ""))
        keep = dedupe.keep(valid.column("digest").to_pylist())
        counts["duplicate"] += int((~keep).sum())
        valid = valid.filter(pa.array(keep))
        for split in fmt.SPLITS:
            part = valid.filter(pc.equal(valid.column("split"), split))
            if not len(part):
                continue
            if split == "train":
                stats.add(fmt.xy_arrays(part, source.image_shape)[0])
            writer.add(split, part.select(["x", "y"]))
    return {"shards": writer.close(), "normalisation": stats.result().to_dict()}


def write_tokens(ds, out: StoragePath, args, counts: Counter) -> dict:
    block = args.seq_len + 1
    writer = fmt.ShardWriter(
        out,
        fmt.tokens_schema(block),
        _rows_per_shard(args.max_shard_mb, 4 * block),
        args.compression,
    )
    carry = {s: np.zeros(0, np.int32) for s in fmt.SPLITS}
    tokens = Counter()
    documents = Counter()
    dedupe = Dedupe()
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=256):
        counts["read"] += len(batch)
        reason = np.array(batch.column("reason").to_pylist(), dtype=object)
        counts["missing"] += int((reason != "").sum())
        valid = batch.filter(pa.array(reason == ""))
        keep = dedupe.keep(valid.column("digest").to_pylist())
        counts["duplicate"] += int((~keep).sum())
        valid = valid.filter(pa.array(keep))
        for doc, split in zip(
            valid.column("doc").to_pylist(),
            valid.column("split").to_pylist(),
            strict=True,
        ):
            ids = np.frombuffer(doc, np.uint8).astype(np.int32)
            stream = np.concatenate([carry[split], ids, [fmt.EOT]]).astype(np.int32)
            documents[split] += 1
            tokens[split] += len(ids) + 1
            full = len(stream) // block * block
            if full:
                blocks = stream[:full].reshape(-1, block)
                arr = pa.FixedSizeListArray.from_arrays(pa.array(blocks.ravel()), block)
                writer.add(split, pa.table({"tokens": arr}))
            carry[split] = stream[full:]
    return {
        "shards": writer.close(),
        "tokens": {
            "tokenizer": "bytes",
            "seq_len": args.seq_len,
            "block": block,
            "vocab_size": fmt.TOKEN_VOCAB,
            "eot": fmt.EOT,
            "documents": {s: documents[s] for s in fmt.SPLITS},
            "tokens": {s: tokens[s] for s in fmt.SPLITS},
            "tail_tokens_dropped": {s: int(len(carry[s])) for s in fmt.SPLITS},
        },
    }


def remove_stale_shards(out: StoragePath, shards: dict[str, list[dict]]) -> list[str]:
    """Shard files of an earlier run that the new manifest does not list."""
    listed = {s["path"] for split in shards.values() for s in split}
    removed = []
    for split in fmt.SPLITS:
        folder = out.join(split)
        try:
            found = out.filesystem.get_file_info(
                pafs.FileSelector(folder.path, allow_not_found=True)
            )
            for info in found:
                rel = f"{split}/{info.base_name}"
                if info.type == pafs.FileType.File and rel not in listed:
                    out.filesystem.delete_file(info.path)
                    removed.append(rel)
        except OSError as exc:
            raise DataError(f"cannot tidy {folder.uri}: {exc}") from None
    return removed


# ----------------------------------------------------------------------- run


def already_prepared(out: StoragePath, recipe: str) -> dict | None:
    """The existing manifest when it has this recipe and its shards verify."""
    try:
        existing = fmt.open_prepared(out.uri, "--output")
    except DataError:
        return None
    if existing.manifest.get("recipe") != recipe:
        return None
    try:
        fmt.verify(existing)
    except DataError as exc:
        print(f"[prepare] the existing dataset does not verify ({exc}); rewriting")
        return None
    return existing.manifest


def _ray_data():
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(logging_level="WARNING", log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    return ray.data


def run(args: argparse.Namespace) -> dict:
    started = time.time()
    out = parse_storage(args.output, "--output")
    check_storage(out, needs="the prepared dataset needs")
    root = parse_storage(args.source, "--source") if args.source else None
    opts = Options(
        label_column=args.label_column,
        split_column=args.split_column,
        feature_columns=args.feature_columns,
        shape=args.shape,
        classes=args.classes,
        num_classes=args.num_classes,
    )
    _ray_data()
    source = plan_source(args.format, root, opts)
    sources = source_checksums(source)
    options = options_of(args)
    code = code_version()
    recipe = fmt.sha256_bytes(
        json.dumps({"sources": sources, "options": options, "code": code}).encode()
    )
    existing = already_prepared(out, recipe)
    if existing is not None:
        print(f"[prepare] {out.uri} is already prepared from these inputs")
        return existing
    fmt.remove_manifest(out)

    counts: Counter = Counter()
    if source.kind == "tokens":
        ds = source.dataset().map_batches(
            clean_documents,
            batch_format="pyarrow",
            fn_kwargs={
                "seed": args.seed,
                "val_fraction": args.val_fraction,
                "test_fraction": args.test_fraction,
            },
        )
        written = write_tokens(ds.sort("order"), out, args, counts)
    else:
        ds = source.dataset().map_batches(
            clean,
            batch_format="pyarrow",
            fn_kwargs={
                "classes": source.classes,
                "seed": args.seed,
                "val_fraction": args.val_fraction,
                "test_fraction": args.test_fraction,
            },
        )
        written = write_classification(ds.sort("order"), source, out, args, counts)
    shards = written.pop("shards")
    rows = {s: sum(x["rows"] for x in shards[s]) for s in fmt.SPLITS}
    check_rows(source, rows, counts, args)
    removed = remove_stale_shards(out, shards)
    if removed:
        print(f"[prepare] removed {len(removed)} shard(s) of an earlier run")
    schema = (
        fmt.tokens_schema(args.seq_len + 1)
        if source.kind == "tokens"
        else fmt.classification_schema(math.prod(source.image_shape))
    )
    manifest = {
        "format": fmt.FORMAT,
        "version": fmt.FORMAT_VERSION,
        "kind": source.kind,
        "schema": {"columns": fmt.schema_dict(schema)},
        "rows_read": counts["read"],
        "dropped": {r: counts[r] for r in REASONS},
        "splits": {s: {"rows": rows[s], "shards": shards[s]} for s in fmt.SPLITS},
        "sources": {"uri": source.root.uri, "format": source.fmt, "files": sources},
        "options": options,
        "code_version": code,
        "recipe": recipe,
        "pyarrow": pa.__version__,
        **written,
    }
    if source.kind == "classification":
        manifest["shape"] = list(source.image_shape)
        manifest["classes"] = list(source.classes)
    digest = fmt.write_manifest(out, manifest)
    print(
        f"[prepare] wrote {out.uri}: rows {rows}, dropped "
        f"{ {r: counts[r] for r in REASONS if counts[r]} }, manifest sha256 "
        f"{digest[:12]}, {time.time() - started:.1f}s"
    )
    return manifest


def check_rows(source: Source, rows: dict, counts: Counter, args) -> None:
    if counts["read"] == 0:
        raise DataError(f"--source {source.root.uri}: the input holds no rows")
    if rows["train"] == 0:
        dropped = {r: counts[r] for r in REASONS if counts[r]}
        raise DataError(
            f"--source {source.root.uri}: no rows left for training after cleaning "
            f"(read {counts['read']}, dropped {dropped})"
        )
    if source.kind == "classification":
        empty = [s for s in ("val", "test") if rows[s] == 0]
        if empty:
            raise DataError(
                f"--source {source.root.uri}: split {empty[0]} is empty "
                f"({counts['read']} rows read); give more rows or larger fractions"
            )


# --------------------------------------------------------------------------- CLI


def _shape(text: str) -> tuple[int, int, int]:
    try:
        dims = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not C,H,W (three numbers)")
    return dims


def _names(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give one or more comma-separated names")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="prepare.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    p.add_argument(
        "--source", help="raw data: local path or storage URI (digits: optional)"
    )
    p.add_argument(
        "--output", required=True, help="prepared dataset folder or storage URI"
    )
    p.add_argument("--label-column", default="label", help="csv/parquet (label)")
    p.add_argument("--split-column", help="csv/parquet: a column fixing the split")
    p.add_argument("--feature-columns", type=_names, help="default: all the others")
    p.add_argument("--shape", type=_shape, help="C,H,W of a row (default 1,1,F)")
    p.add_argument("--classes", type=_names, help="the labels allowed, in order")
    p.add_argument("--num-classes", type=int, help="labels are 0..N-1")
    p.add_argument("--seed", type=int, default=0, help="split and shuffle (0)")
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--test-fraction", type=float, default=0.15)
    p.add_argument("--max-shard-mb", type=float, default=64.0, help="shard size (64)")
    p.add_argument("--compression", default="snappy", help="Parquet codec (snappy)")
    p.add_argument(
        "--seq-len", type=int, default=DEFAULT_SEQ_LEN, help="text: tokens a block"
    )
    args = p.parse_args(argv)
    try:
        validate(args)
    except JobInputError as exc:
        p.error(str(exc))
    return args


def validate(args: argparse.Namespace) -> None:
    if args.format not in FORMATS:
        raise JobInputError("--format", f"unknown {args.format!r}; one of {FORMATS}")
    for flag, value in (
        ("--val-fraction", args.val_fraction),
        ("--test-fraction", args.test_fraction),
    ):
        if not 0.0 <= value < 1.0:
            raise JobInputError(flag, f"must be in [0, 1) (got {value})")
    if args.val_fraction + args.test_fraction >= 1.0:
        raise JobInputError("--test-fraction", "val + test must leave rows to train")
    if not args.max_shard_mb > 0:
        raise JobInputError("--max-shard-mb", "must be a positive number")
    if args.seq_len < 1:
        raise JobInputError("--seq-len", "must be a positive number")
    if args.num_classes is not None and args.num_classes < 1:
        raise JobInputError("--num-classes", "must be a positive number")
    if args.compression not in ("snappy", "zstd", "gzip", "lz4", "none"):
        raise JobInputError("--compression", "one of snappy, zstd, gzip, lz4, none")
    if args.source is not None:
        parse_storage(args.source, "--source")
    parse_storage(args.output, "--output")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        manifest = run(args)
    except (DataError, StorageError, JobInputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a Ray Data task's DataError arrives wrapped
        found = data_error_in(exc)
        reason = str(found) if found else f"{type(exc).__name__}: {exc}"
        print(f"error: {' '.join(reason.split())[:2000]}", file=sys.stderr)
        return 1
    rows = {s: manifest["splits"][s]["rows"] for s in fmt.SPLITS}
    print(f"prepared={args.output}")
    print(f"rows={json.dumps(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
