"""The data section's preparation input and its single-process pandas baseline.

`dirty_table` writes the raw input both sides read: Parquet files of a list
column `x` (the values of a C x H x W row) and a text `label`, with about 1 %
of the rows of each kind that prepare.py drops: a null value or a null row
(missing), an infinity (non-finite), a list of the wrong length (wrong shape),
a label outside the classes (unknown label) and an exact copy of a good row
(duplicate).

`pandas_prepare` is the same preparation in pandas in one process: the same
drop rules in the same order, the same seeded split and shuffle (the content
digest and seeded keys of mlcore.cleaning, the pure functions prepare.py's
tasks call), per-channel statistics on the train split only, and Parquet
shards written by the same writer (mlcore.prepared.ShardWriter) with the same
size and codec, each with its SHA-256, the sources' SHA-256 and a manifest. So
both sides must write byte-identical shards; the bench checks that they do.

pandas has one NaN for a null and a NaN value, so the table plants nulls as
missing and infinities as non-finite (prepare.py would count a NaN value as
non-finite, this baseline as missing; both drop it).

ray_jobs code (mlcore, prepare) is imported inside the functions: the bench's
own process never calls them, its child programs and the tests do.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

DROP_KINDS = ("null_value", "null_row", "infinity", "wrong_length", "unknown")


def plant(rows: int, seed: int):
    """Which kind of fault each row carries: 0-4 index DROP_KINDS, 5 marks an
    exact copy of the row before it (always a good row), -1 a good row."""
    import numpy as np

    rng = np.random.default_rng(seed)
    draw = rng.integers(0, 100, rows)
    kind = np.where(draw < len(DROP_KINDS) + 1, draw, -1)
    # A copy needs a good row before it.
    copies = np.flatnonzero(kind == len(DROP_KINDS))
    bad = copies[(copies == 0) | (kind[np.maximum(copies - 1, 0)] != -1)]
    kind[bad] = -1
    return kind, rng


def dirty_table(
    folder: Path,
    rows: int,
    shape: tuple[int, int, int],
    files: int = 4,
    seed: int = 0,
) -> dict[str, int]:
    """`files` Parquet parts of `rows` rows in `folder`; the planted counts."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    width = math.prod(shape)
    kind, rng = plant(rows, seed)
    x = rng.random((rows, width), dtype=np.float32)
    labels = rng.integers(0, 10, rows).astype(str).astype(object)
    copy = np.flatnonzero(kind == len(DROP_KINDS))
    x[copy], labels[copy] = x[copy - 1], labels[copy - 1]
    x[kind == 2, 1] = np.inf
    labels[kind == 4] = "unknown"
    values: list[Any] = [list(r) for r in x]
    for i in np.flatnonzero(kind == 0):
        values[i][0] = None
    for i in np.flatnonzero(kind == 1):
        values[i] = None
    for i in np.flatnonzero(kind == 3):
        values[i] = values[i][:-1]
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "x": pa.array(values, pa.list_(pa.float32())),
            "label": pa.array(labels.tolist(), pa.string()),
        }
    )
    per = math.ceil(rows / files)
    for i in range(files):
        pq.write_table(table.slice(i * per, per), folder / f"part-{i:03d}.parquet")
    return {
        "missing": int(((kind == 0) | (kind == 1)).sum()),
        "non_finite": int((kind == 2).sum()),
        "wrong_shape": int((kind == 3).sum()),
        "unknown_label": int((kind == 4).sum()),
        "duplicate": int((kind == 5).sum()),
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 << 20):
            h.update(block)
    return h.hexdigest()


def pandas_prepare(
    source: Path,
    out: Path,
    shape: tuple[int, int, int],
    classes: list[str],
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    max_shard_mb: float = 64.0,
    compression: str = "snappy",
) -> dict[str, Any]:
    """prepare.py's preparation of `source`'s Parquet files, in pandas in this
    process (the defaults are prepare.py's); returns what its manifest says."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from mlcore import prepared as fmt
    from mlcore.cleaning import REASONS, assign_split, digests, order_and_uniform
    from mlcore.storage import parse_storage
    from prepare import _rows_per_shard

    files = sorted(source.glob("*.parquet"))
    sources = [
        {"path": f.name, "bytes": f.stat().st_size, "sha256": _sha256(f)} for f in files
    ]
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    n, width = len(df), math.prod(shape)

    # The checks in prepare.py's order; a row counts under the first that fails.
    present = df["x"].notna().to_numpy()
    length = df["x"].str.len().fillna(-1).to_numpy(np.int64)
    wrong_shape = present & (length != width)
    fits = present & (length == width)
    x = np.full((n, width), np.nan, np.float32)
    if fits.any():
        x[fits] = np.stack(df["x"][fits].to_numpy()).astype(np.float32)
    label = df["label"]
    missing = ~wrong_shape & (
        ~present | np.isnan(x).any(axis=1) | (label.isna() | (label == "")).to_numpy()
    )
    non_finite = ~wrong_shape & ~missing & ~np.isfinite(x).all(axis=1)
    unknown = ~wrong_shape & ~missing & ~non_finite & ~label.isin(classes).to_numpy()
    ok = ~(wrong_shape | missing | non_finite | unknown)

    kept_x = x[ok]
    kept_label = label[ok].to_numpy(dtype=object)
    d = digests(
        [
            r.tobytes() + f"\0{v}\0".encode()
            for r, v in zip(kept_x, kept_label, strict=True)
        ]
    )
    order, u = order_and_uniform(d, seed)
    split = assign_split(np.full(len(d), "", object), u, val_fraction, test_fraction)
    frame = pd.DataFrame(
        {
            "order": order,
            "d0": d[:, 0],
            "d1": d[:, 1],
            "y": pd.Series(kept_label).map({c: i for i, c in enumerate(classes)}),
            "split": split,
        }
    )
    frame = frame.sort_values("order", kind="stable")
    duplicate = frame.duplicated(["d0", "d1"])
    frame = frame[~duplicate.to_numpy()]
    rows_x = kept_x[frame.index.to_numpy()]
    rows_y = frame["y"].to_numpy(np.int64)
    rows_split = frame["split"].to_numpy()

    c = shape[0]
    train = rows_x[rows_split == "train"].reshape(-1, c, width // c)
    mean = train.astype(np.float64).mean(axis=(0, 2))
    std = train.astype(np.float64).std(axis=(0, 2))
    std[std < 1e-6] = 1.0  # as prepared.RunningStats: a constant channel

    root = parse_storage(str(out), "out")
    writer = fmt.ShardWriter(
        root,
        fmt.classification_schema(width),
        _rows_per_shard(max_shard_mb, 4 * width + 8),
        compression,
    )
    for name in fmt.SPLITS:
        rows = rows_split == name
        flat = pa.array(rows_x[rows].ravel())
        writer.add(
            name,
            pa.table(
                {
                    "x": pa.FixedSizeListArray.from_arrays(flat, width),
                    "y": pa.array(rows_y[rows], pa.int64()),
                }
            ),
        )
    shards = writer.close()
    counts = {
        "missing": int(missing.sum()),
        "non_finite": int(non_finite.sum()),
        "wrong_shape": int(wrong_shape.sum()),
        "unknown_label": int(unknown.sum()),
        "duplicate": int(duplicate.sum()),
    }
    manifest = {
        "kind": "classification",
        "rows_read": n,
        "dropped": {r: counts[r] for r in REASONS},
        "splits": {
            s: {"rows": sum(p["rows"] for p in shards[s]), "shards": shards[s]}
            for s in fmt.SPLITS
        },
        "normalisation": {
            "mean": mean.tolist(),
            "std": std.tolist(),
            "shape": [c, 1, 1],
            "image_shape": list(shape),
        },
        "shape": list(shape),
        "classes": list(classes),
        "sources": {"uri": str(source), "files": sources},
    }
    fmt.write_manifest(root, manifest)
    return manifest
