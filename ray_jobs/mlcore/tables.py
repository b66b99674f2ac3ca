"""CSV and Parquet sources for prepare.py: a label column and numeric features.

Features are the other numeric columns (or those of --feature-columns), or one
list column holding each row's values (with --shape). The driver reads every
file's header or Parquet schema first: a file without the label column, or one
whose columns or types differ from the first file's, fails naming both files.
In the tasks, a null feature or label makes the row `missing`, a list of the
wrong length `wrong_shape`; a column that holds text fails naming the file.
"""

from __future__ import annotations

import gzip
import io
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlcore.errors import DataError, JobInputError
from mlcore.sources import Options, Source, _integer_classes, _rows, sort_labels


def _columns(source: Source, path: str) -> dict[str, str]:
    fs = source.root.filesystem
    try:
        if source.fmt == "parquet":
            with fs.open_input_file(path) as f:
                schema = pq.read_schema(f)
            return {n: str(t) for n, t in zip(schema.names, schema.types, strict=True)}
        with fs.open_input_stream(path, compression=None) as f:
            head = f.read(1 << 16)
        if path.endswith(".gz"):
            head = gzip.GzipFile(fileobj=io.BytesIO(head)).read1(1 << 16)
        line = head.decode("utf-8", errors="replace").splitlines()[:1]
    except (OSError, EOFError, pa.ArrowInvalid) as exc:
        raise DataError(f"{source.rel(path)}: cannot be read ({exc})") from None
    if not line or not line[0].strip():
        raise DataError(f"{source.rel(path)}: empty file (no header row)")
    return {name.strip().strip('"'): "" for name in line[0].split(",")}


def plan_table(source: Source, opts: Options) -> Source:
    first = _columns(source, source.files[0])
    for path in source.files:
        cols = first if path == source.files[0] else _columns(source, path)
        if opts.label_column not in cols:
            raise DataError(
                f"{source.rel(path)} has no label column {opts.label_column!r} "
                f"(columns: {', '.join(cols)}); name it with --label-column"
            )
        if cols != first:
            gone = sorted(set(first) - set(cols))
            new = sorted(set(cols) - set(first))
            changed = sorted(c for c in set(first) & set(cols) if first[c] != cols[c])
            what = "; ".join(
                part
                for part in (
                    gone and f"lacks {', '.join(gone)}",
                    new and f"adds {', '.join(new)}",
                    changed
                    and "types of "
                    + ", ".join(f"{c} ({first[c]} -> {cols[c]})" for c in changed),
                )
                if part
            )
            raise DataError(
                f"the schema changes between files: {source.rel(path)} {what} "
                f"(compared with {source.rel(source.files[0])})"
            )
    skip = {opts.label_column, opts.split_column}
    features = opts.feature_columns or [c for c in first if c not in skip]
    for name in features:
        if name not in first:
            raise DataError(f"{source.rel(source.files[0])} has no column {name!r}")
    list_mode = len(features) == 1 and first[features[0]].startswith(
        ("list", "fixed_size_list", "large_list")
    )
    if list_mode and opts.shape is None:
        raise JobInputError("--shape", "a list feature column needs --shape C,H,W")
    width = math.prod(opts.shape) if list_mode else len(features)
    if opts.shape and math.prod(opts.shape) != width:
        raise JobInputError(
            "--shape",
            f"{opts.shape} holds {math.prod(opts.shape)} values, the "
            f"{len(features)} feature columns {width}",
        )
    source.image_shape = opts.shape or (1, 1, width)
    source.per = "channel" if opts.shape else "feature"
    read_opts = {"filesystem": source.root.filesystem, "include_paths": True}

    def read(columns=None):
        import ray.data

        if source.fmt == "parquet":
            return ray.data.read_parquet(source.files, columns=columns, **read_opts)
        return ray.data.read_csv(source.files, **read_opts)

    source.classes = opts.classes or _integer_classes(opts.num_classes)
    if not source.classes:
        found = read([opts.label_column] if source.fmt == "parquet" else None)
        values = {_label_text(v) for v in found.unique(opts.label_column)}
        source.classes = sort_labels(v for v in values if v not in (None, ""))
    kwargs = {
        "label": opts.label_column,
        "features": features,
        "split": opts.split_column,
        "width": width,
        "list_mode": list_mode,
        "root": source.root.path,
    }
    source.build = lambda: read().map_batches(
        _table_rows, batch_format="pyarrow", fn_kwargs=kwargs
    )
    return source


def _label_text(v) -> str | None:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _table_rows(table: pa.Table, label, features, split, width, list_mode, root):
    paths = table.column("path").to_pylist() if "path" in table.column_names else []
    where = paths[0][len(root) :].lstrip("/") if paths else "input"
    n = len(table)
    reason = np.array([""] * n, dtype=object)
    if list_mode:
        col = table.column(features[0]).combine_chunks()
        lengths = pc.fill_null(pc.list_value_length(col), -1).to_numpy()
        good = lengths == width
        reason[~good & (lengths >= 0)] = "wrong_shape"
        values = np.full((n, width), np.nan, np.float32)
        nulls = np.zeros((n, width), bool)
        nulls[lengths < 0] = True
        if good.any():
            kept = pc.filter(col, pa.array(good))
            flat = _floats(kept.flatten(), features[0], where)
            nulls[good] = (
                flat.is_null().to_numpy(zero_copy_only=False).reshape(-1, width)
            )
            values[good] = _nan_filled(flat).reshape(-1, width)
    else:
        values = np.empty((n, width), np.float32)
        nulls = np.empty((n, width), bool)
        for j, name in enumerate(features):
            col = _floats(table.column(name).combine_chunks(), name, where)
            nulls[:, j] = col.is_null().to_numpy(zero_copy_only=False)
            values[:, j] = _nan_filled(col)
    x = pa.FixedSizeListArray.from_arrays(
        pa.array(values.ravel(), pa.float32(), mask=nulls.ravel()), width
    )
    labels = [_label_text(v) for v in table.column(label).to_pylist()]
    pool = [""] * n
    if split:
        pool = ["" if v is None else str(v) for v in table.column(split).to_pylist()]
        bad = sorted(set(pool) - {"", "train", "val", "test"})
        if bad:
            raise DataError(
                f"{where}: column {split!r} holds {bad[0]!r}; allowed: train, val, "
                "test or empty"
            )
    return _rows(x, labels, pool, reason.tolist())


def _floats(col: pa.Array, name: str, where: str) -> pa.Array:
    if pa.types.is_null(col.type):
        return pa.nulls(len(col), pa.float32())
    try:
        return pc.cast(col, pa.float32())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(
            f"{where}: column {name!r} holds values that are not numbers "
            f"(type {col.type})"
        ) from None


def _nan_filled(col: pa.Array) -> np.ndarray:
    return pc.fill_null(col, np.nan).to_numpy(zero_copy_only=False)
