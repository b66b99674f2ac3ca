"""Cleaning a batch of raw rows: why a row is dropped, where a kept row goes.

A source hands over rows as `x` (fixed-size float32 lists, NaN where it had
nothing), `label` (text or null), `pool` (the split a source fixes: "train",
"val", "test", "trainval" when only the test split is fixed, or "" for any)
and `reason` (why the source already refused the row, or ""). `clean` adds
`y` (the class index), the final `reason`, a content `digest`, a seeded
`order` key and the `split`: pure functions of the row and the seed, so any
task on any machine decides the same. Sorting by `order` shuffles the rows
deterministically and puts exact duplicates (the same features, label and
fixed split) side by side, where the writer drops all but one.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Drop reasons, in the order they are checked (a row counts under the first).
REASONS = ("missing", "non_finite", "wrong_shape", "unknown_label", "duplicate")
POOLS = ("", "train", "val", "test", "trainval")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def splitmix64(v: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, vectorised: a well-mixed 64-bit hash of v."""
    with np.errstate(over="ignore"):
        z = v.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))) & _MASK64


def digests(rows: list[bytes]) -> np.ndarray:
    """16-byte BLAKE2b digests of each row's bytes, as an (n, 2) uint64 array."""
    raw = b"".join(hashlib.blake2b(r, digest_size=16).digest() for r in rows)
    return np.frombuffer(raw, dtype="<u8").reshape(len(rows), 2)


def order_and_uniform(d: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A sort key (int64 >= 0) and a uniform number in [0, 1) per digest, both
    from the seed: the shuffle and the split, independent of each other."""
    s = splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    key = splitmix64(d[:, 0] ^ s) >> np.uint64(1)
    u = splitmix64(d[:, 1] ^ splitmix64(np.array([s], np.uint64))[0])
    return key.astype(np.int64), (u >> np.uint64(11)).astype(np.float64) / 2.0**53


def assign_split(
    pool: np.ndarray, u: np.ndarray, val_fraction: float, test_fraction: float
) -> np.ndarray:
    """The split of each row: its pool's when fixed, else by `u` and fractions."""
    split = np.where(
        u < 1.0 - val_fraction - test_fraction,
        "train",
        np.where(u < 1.0 - test_fraction, "val", "test"),
    ).astype(object)
    trainval_val = val_fraction / max(1.0 - test_fraction, 1e-12)
    split[pool == "trainval"] = np.where(u < trainval_val, "val", "train")[
        pool == "trainval"
    ]
    for fixed in ("train", "val", "test"):
        split[pool == fixed] = fixed
    return split


def clean(
    batch: pa.Table,
    classes: list[str],
    seed: int,
    val_fraction: float,
    test_fraction: float,
) -> pa.Table:
    """The batch with y, reason, digest, order and split (see the module)."""
    n = len(batch)
    x_col = batch.column("x").combine_chunks()
    width = x_col.type.list_size
    reason = np.array(batch.column("reason").to_pylist(), dtype=object)
    x_null = np.asarray(x_col.is_null().to_numpy(zero_copy_only=False))
    flat = x_col.flatten()
    value_null = flat.is_null().to_numpy(zero_copy_only=False).reshape(n, width)
    x = (
        pc.fill_null(flat, np.nan).to_numpy(zero_copy_only=False).astype(np.float32)
    ).reshape(n, width)
    labels = batch.column("label").to_pylist()
    index = {name: i for i, name in enumerate(classes)}
    y = np.array([index.get(v, -1) if v is not None else -1 for v in labels])
    label_null = np.array([v is None or v == "" for v in labels], dtype=bool)

    ok = reason == ""
    missing = ok & (x_null | value_null.any(axis=1) | label_null)
    reason[missing] = "missing"
    ok = reason == ""
    non_finite = ok & ~np.isfinite(x).all(axis=1)
    reason[non_finite] = "non_finite"
    ok = reason == ""
    reason[ok & (y < 0)] = "unknown_label"

    pool = np.array(batch.column("pool").to_pylist(), dtype=object)
    # Exact duplicates: the same features, label and fixed split.
    encoded = [x[i].tobytes() + f"\0{labels[i]}\0{pool[i]}".encode() for i in range(n)]
    d = digests(encoded)
    order, u = order_and_uniform(d, seed)
    split = assign_split(pool, u, val_fraction, test_fraction)
    return pa.table(
        {
            "x": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), width),
            "y": pa.array(y, pa.int64()),
            "reason": pa.array(reason.tolist(), pa.string()),
            "digest": pa.array([r.tobytes() for r in d], pa.binary(16)),
            "order": pa.array(order, pa.int64()),
            "split": pa.array(split.tolist(), pa.string()),
        }
    )


def clean_documents(
    batch: pa.Table, seed: int, val_fraction: float, test_fraction: float
) -> pa.Table:
    """Text documents (`doc` bytes, `name`): empty ones refused, digest, order
    and split by content (a duplicate lands where its twin does)."""
    docs = batch.column("doc").to_pylist()
    reason = ["" if doc else "missing" for doc in docs]
    d = digests([doc or b"" for doc in docs])
    order, u = order_and_uniform(d, seed)
    pool = np.array([""] * len(docs), dtype=object)
    split = assign_split(pool, u, val_fraction, test_fraction)
    return pa.table(
        {
            "doc": pa.array([doc or b"" for doc in docs], pa.binary()),
            "reason": pa.array(reason, pa.string()),
            "digest": pa.array([r.tobytes() for r in d], pa.binary(16)),
            "order": pa.array(order, pa.int64()),
            "split": pa.array(split.tolist(), pa.string()),
        }
    )
