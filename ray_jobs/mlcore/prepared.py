"""The prepared-dataset format: what prepare.py writes and training trusts.

A prepared dataset is a folder (local or s3://) holding

    train/part-00000.parquet, ...   shuffled shards of bounded size per split
    val/part-00000.parquet, ...
    test/part-00000.parquet, ...
    manifest.json                   written last: without it, nothing is complete

Two kinds, by the manifest's `kind`:

- `classification`: columns `x` (fixed_size_list<float32>[F], the raw features,
  row-major in `shape` = [C, H, W]) and `y` (int64, an index into `classes`).
  Features are stored as read, not normalised: `normalisation` (mean and std
  from the train split only, per channel for images, per feature for tables)
  is applied by training and serving alike (Normalisation.apply).
- `tokens`: one column `tokens` (fixed_size_list<int32>[block]), blocks cut in
  order from each split's token stream: every document's bytes (ids 0-255)
  followed by the end-of-text id 256; `block` = seq_len + 1 (inputs and
  next-token targets). The last partial block of a split is dropped.

manifest.json holds the schema, the rows per split and per drop reason, the
statistics, every shard with its rows, bytes and SHA-256, the sources with
theirs, the options, the code version, and `recipe`: the digest of sources,
options and code that lets a rerun with the same inputs do nothing. Its own
SHA-256 (`digest`) names the data a model saw; checkpoints carry it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mlcore.errors import DataError
from mlcore.storage import StoragePath, parse_storage

FORMAT = "raygpu-prepared"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")
KINDS = ("classification", "tokens")
EOT = 256  # the end-of-text token id (as ray_jobs/lm's tokenizer)
TOKEN_VOCAB = 257
CHECKSUM_THREADS = 8


def classification_schema(num_features: int) -> pa.Schema:
    return pa.schema([("x", pa.list_(pa.float32(), num_features)), ("y", pa.int64())])


def tokens_schema(block: int) -> pa.Schema:
    return pa.schema([("tokens", pa.list_(pa.int32(), block))])


def schema_dict(schema: pa.Schema) -> dict[str, str]:
    """Column -> type, list types without their item's name (Parquet renames
    it on the way back)."""
    return {f.name: _type_name(f.type) for f in schema}


def _type_name(t: pa.DataType) -> str:
    if pa.types.is_fixed_size_list(t):
        return f"fixed_size_list<{_type_name(t.value_type)}>[{t.list_size}]"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{_type_name(t.value_type)}>"
    return str(t)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(fs: pafs.FileSystem, path: str) -> str:
    h = hashlib.sha256()
    with fs.open_input_stream(path, compression=None) as f:
        while block := f.read(4 << 20):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class Normalisation:
    """x -> (x - mean) / std, broadcast over a row of shape `image_shape`.

    `shape` is the statistics' shape: (C, 1, 1) per channel, (1, 1, F) per
    feature. The one transform of raw features, for training and serving."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    shape: tuple[int, ...]
    image_shape: tuple[int, ...]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """float32 of `x`'s shape ((n, F) or (n, *image_shape)), normalised."""
        mean = np.asarray(self.mean, np.float32).reshape(self.shape)
        std = np.asarray(self.std, np.float32).reshape(self.shape)
        rows = np.asarray(x, np.float32).reshape(len(x), *self.image_shape)
        return ((rows - mean) / std).reshape(x.shape)

    def to_dict(self) -> dict:
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "shape": list(self.shape),
            "image_shape": list(self.image_shape),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Normalisation:
        try:
            return cls(
                mean=tuple(float(v) for v in d["mean"]),
                std=tuple(float(v) for v in d["std"]),
                shape=tuple(int(v) for v in d["shape"]),
                image_shape=tuple(int(v) for v in d["image_shape"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"normalisation statistics are malformed: {exc}") from None


class RunningStats:
    """Mean and standard deviation over rows, grouped by a statistics shape."""

    def __init__(self, image_shape: tuple[int, ...], per: str):
        c, h, w = image_shape
        self.image_shape = image_shape
        self.shape = (c, 1, 1) if per == "channel" else (1, h, w)
        self.axes = (0, 2, 3) if per == "channel" else (0, 1)
        self.count = 0
        self.total = np.zeros(self.shape, np.float64)
        self.squares = np.zeros(self.shape, np.float64)

    def add(self, x: np.ndarray) -> None:
        rows = x.reshape(len(x), *self.image_shape).astype(np.float64)
        self.total += rows.sum(axis=self.axes).reshape(self.shape)
        self.squares += (rows * rows).sum(axis=self.axes).reshape(self.shape)
        self.count += len(x) * math.prod(self.image_shape) // math.prod(self.shape)

    def result(self) -> Normalisation:
        n = max(self.count, 1)
        mean = self.total / n
        var = np.maximum(self.squares / n - mean * mean, 0.0)
        std = np.sqrt(var)
        std[std < 1e-6] = 1.0  # a constant feature: centred, not blown up
        return Normalisation(
            tuple(float(v) for v in mean.ravel()),
            tuple(float(v) for v in std.ravel()),
            self.shape,
            self.image_shape,
        )


# ------------------------------------------------------------------- writing


class ShardWriter:
    """Parquet shards per split, `rows_per_shard` rows each (the last fewer),
    named `<split>/part-NNNNN.parquet`, each written whole with its SHA-256.

    Bytes depend only on the rows and options (no timestamps), so the same rows
    give the same shards and checksums."""

    def __init__(
        self,
        out: StoragePath,
        schema: pa.Schema,
        rows_per_shard: int,
        compression: str = "snappy",
    ):
        self.out = out
        self.schema = schema
        self.rows_per_shard = max(1, int(rows_per_shard))
        self.compression = compression
        self.pending: dict[str, list[pa.Table]] = {s: [] for s in SPLITS}
        self.pending_rows = dict.fromkeys(SPLITS, 0)
        self.shards: dict[str, list[dict]] = {s: [] for s in SPLITS}

    def add(self, split: str, table: pa.Table) -> None:
        if not len(table):
            return
        self.pending[split].append(table.cast(self.schema))
        self.pending_rows[split] += len(table)
        while self.pending_rows[split] >= self.rows_per_shard:
            self._flush(split, self.rows_per_shard)

    def close(self) -> dict[str, list[dict]]:
        for split in SPLITS:
            if self.pending_rows[split]:
                self._flush(split, self.pending_rows[split])
        return self.shards

    def _flush(self, split: str, rows: int) -> None:
        table = pa.concat_tables(self.pending[split]).combine_chunks()
        shard, rest = table.slice(0, rows), table.slice(rows)
        self.pending[split] = [rest] if len(rest) else []
        self.pending_rows[split] = len(rest)
        name = f"{split}/part-{len(self.shards[split]):05d}.parquet"
        buffer = io.BytesIO()
        pq.write_table(
            shard,
            buffer,
            compression=self.compression,
            row_group_size=max(1, min(rows, 8192)),
        )
        data = buffer.getvalue()
        write_bytes(self.out.join(name), data, what=f"shard {name}")
        self.shards[split].append(
            {
                "path": name,
                "rows": rows,
                "bytes": len(data),
                "sha256": sha256_bytes(data),
            }
        )


def write_bytes(target: StoragePath, data: bytes, what: str) -> None:
    """Write a whole object; a local file appears only once complete."""
    fs = target.filesystem
    try:
        fs.create_dir(target.path.rsplit("/", 1)[0], recursive=True)
        if target.is_remote:  # an S3 object exists only once its upload completes
            with fs.open_output_stream(target.path) as f:
                f.write(data)
            return
        tmp = f"{target.path}.tmp-{os.getpid()}"
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        fs.move(tmp, target.path)
    except OSError as exc:
        raise DataError(
            f"writing {what} to {target.uri} failed: {_short(exc)}"
        ) from None


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def write_manifest(out: StoragePath, manifest: dict) -> str:
    """Write manifest.json (last: it marks the dataset complete); its digest."""
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    write_bytes(out.join(MANIFEST), data, what=MANIFEST)
    return sha256_bytes(data)


def remove_manifest(out: StoragePath) -> None:
    """Before rewriting shards: the old manifest must not vouch for new files."""
    target = out.join(MANIFEST)
    try:
        if target.filesystem.get_file_info(target.path).type != pafs.FileType.NotFound:
            target.filesystem.delete_file(target.path)
    except OSError as exc:
        raise DataError(f"cannot remove {target.uri}: {_short(exc)}") from None


# ------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Prepared:
    """A prepared dataset whose manifest has been read (and maybe verified)."""

    root: StoragePath
    manifest: dict
    digest: str  # SHA-256 of manifest.json

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.manifest["shape"])

    @property
    def num_classes(self) -> int:
        return len(self.manifest["classes"])

    @property
    def normalisation(self) -> Normalisation:
        return Normalisation.from_dict(self.manifest["normalisation"])

    def rows(self, split: str) -> int:
        return int(self.manifest["splits"][split]["rows"])

    def shards(self, split: str) -> list[dict]:
        return list(self.manifest["splits"][split]["shards"])

    def shard_paths(self, split: str) -> list[str]:
        """Shard paths inside `root.filesystem` (what read_parquet takes)."""
        return [self.root.join(s["path"]).path for s in self.shards(split)]

    def schema(self) -> pa.Schema:
        if self.kind == "tokens":
            return tokens_schema(int(self.manifest["tokens"]["block"]))
        return classification_schema(math.prod(self.image_shape))


def open_prepared(uri: str, field: str = "--data") -> Prepared:
    """Read a prepared dataset's manifest; DataError when it is not complete."""
    root = parse_storage(uri, field)
    target = root.join(MANIFEST)
    try:
        with root.filesystem.open_input_stream(target.path, compression=None) as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(
            f"{root.uri} has no {MANIFEST}: not a complete prepared dataset "
            "(prepare.py writes it last; rerun prepare.py to complete it)"
        ) from None
    except OSError as exc:
        raise DataError(f"{target.uri} cannot be read: {_short(exc)}") from None
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise DataError(f"{target.uri} is not JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{target.uri} is not a raygpu prepared-dataset manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise DataError(
            f"{target.uri} has format version {manifest.get('version')!r}; this "
            f"code reads version {FORMAT_VERSION} (rerun prepare.py)"
        )
    if manifest.get("kind") not in KINDS:
        raise DataError(f"{target.uri}: unknown kind {manifest.get('kind')!r}")
    return Prepared(root, manifest, sha256_bytes(data))


def verify(
    prepared: Prepared, checksums: bool = True, splits: tuple[str, ...] = SPLITS
) -> None:
    """Every shard of `splits` the manifest lists: present, with the manifest's
    schema and row count and (with `checksums`) its SHA-256. DataError names
    the shard."""
    expected = schema_dict(prepared.schema())
    if prepared.manifest.get("schema", {}).get("columns") != expected:
        raise DataError(
            f"{prepared.root.uri}/{MANIFEST}: schema {prepared.manifest.get('schema')} "
            f"does not match its kind's columns {expected}"
        )
    shards = [s for split in splits for s in prepared.shards(split)]

    def check(shard: dict) -> None:
        target = prepared.root.join(shard["path"])
        fs = target.filesystem
        try:
            info = fs.get_file_info(target.path)
            if info.type == pafs.FileType.NotFound:
                raise DataError(f"shard {target.uri} is missing")
            if info.size != shard["bytes"]:
                raise DataError(
                    f"shard {target.uri} has {info.size} bytes, the manifest "
                    f"says {shard['bytes']}"
                )
            if checksums and sha256_file(fs, target.path) != shard["sha256"]:
                raise DataError(
                    f"shard {target.uri} does not match its checksum in {MANIFEST}"
                )
            with fs.open_input_file(target.path) as f:
                meta = pq.ParquetFile(f).metadata
                found = schema_dict(meta.schema.to_arrow_schema())
        except OSError as exc:
            raise DataError(
                f"shard {target.uri} cannot be read: {_short(exc)}"
            ) from None
        if found != expected:
            raise DataError(f"shard {target.uri} has columns {found}, not {expected}")
        if meta.num_rows != shard["rows"]:
            raise DataError(
                f"shard {target.uri} has {meta.num_rows} rows, the manifest says "
                f"{shard['rows']}"
            )

    with ThreadPoolExecutor(CHECKSUM_THREADS) as pool:
        list(pool.map(check, shards))


def iter_split(prepared: Prepared, split: str, batch_rows: int = 4096) -> Iterator:
    """(x as (n, *shape) float32 raw, y int64) batches of a classification split,
    read in order without Ray (evaluation and the served check)."""
    shape = prepared.image_shape
    fs = prepared.root.filesystem
    for path in prepared.shard_paths(split):
        with fs.open_input_file(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows):
                x, y = xy_arrays(batch, shape)
                yield x, y


def xy_arrays(batch, shape) -> tuple[np.ndarray, np.ndarray]:
    """A pyarrow batch/table of the classification schema as numpy arrays."""
    x = batch.column("x")
    if isinstance(x, pa.ChunkedArray):
        x = x.combine_chunks()
    flat = x.flatten().to_numpy(zero_copy_only=False)
    xs = flat.astype(np.float32, copy=False).reshape(len(batch), *shape)
    y = batch.column("y").to_numpy(zero_copy_only=False).astype(np.int64)
    return xs, y


def write_synthetic(
    uri: str,
    rows: int,
    shape: tuple[int, int, int] = (3, 32, 32),
    held_out: int = 512,
    seed: int = 0,
    compression: str = "none",
) -> dict:
    """A prepared dataset of seeded random images in 10 classes (`rows` train,
    `held_out` val and test each), written without Ray: for benchmarks and
    tests of ingestion, where accuracy means nothing. Returns the manifest."""
    out = parse_storage(uri, "uri")
    width = math.prod(shape)
    schema = classification_schema(width)
    writer = ShardWriter(out, schema, (16 << 20) // (4 * width), compression)
    rng = np.random.default_rng(seed)
    stats = RunningStats(shape, "channel")
    for split, n in (("train", rows), ("val", held_out), ("test", held_out)):
        for start in range(0, n, 2048):
            x = rng.random((min(2048, n - start), width), dtype=np.float32)
            if split == "train":
                stats.add(x)
            xs = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), width)
            y = pa.array(rng.integers(0, 10, len(x)), pa.int64())
            writer.add(split, pa.table({"x": xs, "y": y}))
    shards = writer.close()
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kind": "classification",
        "schema": {"columns": schema_dict(schema)},
        "shape": list(shape),
        "classes": [str(i) for i in range(10)],
        "splits": {
            s: {"rows": sum(p["rows"] for p in shards[s]), "shards": shards[s]}
            for s in SPLITS
        },
        "normalisation": stats.result().to_dict(),
        "sources": {"synthetic": {"seed": seed, "rows": rows}},
    }
    write_manifest(out, manifest)
    return manifest
