"""Raw data sources for prepare.py, each read through Ray Data.

`plan_source` looks at the input in the driver first (cheap: listings, headers,
schemas), so that a missing label column, a schema that changes between files,
a broken IDX header or an empty input fails before any task starts, naming the
file. It returns a `Source` whose `dataset()` yields the rows in the form
mlcore.cleaning takes (x, label, pool, reason); tasks that meet a corrupt file
raise DataError naming it.

Formats: csv and parquet (a label column; features are the other numeric
columns, or one list column), idx (MNIST's files in pairs; t10k/test files are
the test split), images (one subfolder per class), digits (scikit-learn's
digits.csv.gz, given or the installed one, with the in-memory path's split) and
text (any files, tokenised by bytes).
"""

from __future__ import annotations

import gzip
import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from mlcore.errors import DataError, JobInputError
from mlcore.storage import StoragePath

FORMATS = ("csv", "parquet", "idx", "images", "digits", "text")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SUFFIXES = {
    "csv": (".csv", ".csv.gz"),
    "parquet": (".parquet", ".pq"),
    "images": IMAGE_SUFFIXES,
}
_IDX = re.compile(
    r"^(?P<prefix>.*?)[-_.]?(?P<what>images|labels)[-_.]idx\d-ubyte(\.gz)?$"
)
_IDX_MAGIC = {"images": (0x08, 3), "labels": (0x08, 1)}  # unsigned bytes, ndim


@dataclass
class Options:
    label_column: str = "label"
    split_column: str | None = None
    feature_columns: list[str] | None = None
    shape: tuple[int, int, int] | None = None
    classes: list[str] | None = None
    num_classes: int | None = None


@dataclass
class Source:
    fmt: str
    root: StoragePath
    files: list[str]  # inside root.filesystem, sorted: what the manifest lists
    kind: str = "classification"
    image_shape: tuple[int, int, int] = (1, 1, 1)
    classes: list[str] = field(default_factory=list)
    per: str = "channel"  # statistics per channel (images) or per feature
    build: Callable[[], object] | None = None

    def dataset(self):
        return self.build()

    def rel(self, path: str) -> str:
        return path[len(self.root.path) :].lstrip("/") or path.rsplit("/", 1)[-1]


def list_files(root: StoragePath) -> list[str]:
    """Files under `root` (or `root` itself), sorted; hidden and _-names skipped."""
    fs = root.filesystem
    try:
        info = fs.get_file_info(root.path)
        if info.type == pafs.FileType.File:
            return [root.path]
        if info.type == pafs.FileType.NotFound:
            raise DataError(f"--source {root.uri} does not exist")
        found = fs.get_file_info(pafs.FileSelector(root.path, recursive=True))
    except OSError as exc:
        raise DataError(f"--source {root.uri} cannot be listed: {exc}") from None
    files = [
        i.path
        for i in found
        if i.type == pafs.FileType.File
        and not any(p.startswith((".", "_")) for p in _parts(root, i.path))
    ]
    return sorted(files)


def _parts(root: StoragePath, path: str) -> list[str]:
    return path[len(root.path) :].strip("/").split("/")


def plan_source(fmt: str, root: StoragePath | None, opts: Options) -> Source:
    if fmt not in FORMATS:
        raise JobInputError("--format", f"unknown {fmt!r}; choose one of {FORMATS}")
    if fmt == "digits":
        return _plan_digits(root)
    if root is None:
        raise JobInputError("--source", f"--format {fmt} needs a --source")
    files = list_files(root)
    if fmt in SUFFIXES:  # other files (a README, say) are not input
        files = [f for f in files if f.lower().endswith(SUFFIXES[fmt])]
    if not files:
        raise DataError(f"--source {root.uri}: no input files found (empty input)")
    from mlcore.tables import plan_table

    plan = {"csv": plan_table, "parquet": plan_table, "idx": _plan_idx}
    plan |= {"images": _plan_images, "text": _plan_text}
    return plan[fmt](Source(fmt, root, files), opts)


def _integer_classes(num_classes: int | None) -> list[str]:
    return [str(i) for i in range(num_classes)] if num_classes else []


def sort_labels(values) -> list[str]:
    """Class names in order: numerically when all are integers, else as text."""
    values = sorted(set(values))
    if all(re.fullmatch(r"-?\d+", v) for v in values):
        return sorted(values, key=int)
    return values


def _rows(x: pa.Array, labels, pool, reason) -> pa.Table:
    return pa.table(
        {
            "x": x,
            "label": pa.array(labels, pa.string()),
            "pool": pa.array(pool, pa.string()),
            "reason": pa.array(reason, pa.string()),
        }
    )


def rows_from_numpy(x: np.ndarray, labels, pool, reason=None) -> pa.Table:
    width = math.prod(x.shape[1:])
    flat = pa.array(np.asarray(x, np.float32).reshape(-1))
    arr = pa.FixedSizeListArray.from_arrays(flat, width)
    return _rows(arr, labels, pool, reason or [""] * len(x))


# ------------------------------------------------------------------------ idx


def _read_all(fs: pafs.FileSystem, path: str, name: str) -> bytes:
    try:
        with fs.open_input_stream(path, compression=None) as f:
            data = f.read()
        return gzip.decompress(data) if path.endswith(".gz") else data
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{name}: corrupt IDX file, cannot be read ({exc})") from None


def parse_idx(data: bytes, name: str, what: str) -> np.ndarray:
    """An IDX file's array; DataError naming the file when it is not one."""
    dtype, ndim = _IDX_MAGIC[what]
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != dtype or data[3] != ndim:
        raise DataError(
            f"{name}: corrupt IDX file: magic {data[:4].hex() or 'missing'}, "
            f"expected 0000{dtype:02x}{ndim:02x} ({what}, unsigned bytes)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: corrupt IDX file: truncated header")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    need = header + math.prod(dims)
    if len(data) != need:
        raise DataError(
            f"{name}: corrupt IDX file: its header says {'x'.join(map(str, dims))} "
            f"({need} bytes), the file has {len(data)} bytes"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _plan_idx(source: Source, opts: Options) -> Source:
    pairs: dict[str, dict[str, str]] = {}
    for path in source.files:
        m = _IDX.match(path.rsplit("/", 1)[-1])
        if m is None:
            raise DataError(
                f"{source.rel(path)}: not an IDX file name (expected e.g. "
                "train-images-idx3-ubyte and train-labels-idx1-ubyte)"
            )
        pairs.setdefault(m["prefix"], {})[m["what"]] = path
    items = []
    for prefix, pair in sorted(pairs.items()):
        for what in ("images", "labels"):
            if what not in pair:
                other = source.rel(next(iter(pair.values())))
                raise DataError(f"{other}: its {what} file is missing")
        pool = "test" if re.search(r"t10k|test", prefix) else "trainval"
        items.append({"images": pair["images"], "labels": pair["labels"], "pool": pool})
    source.image_shape = opts.shape or _idx_shape(source, items[0]["images"])
    source.classes = opts.classes or _integer_classes(opts.num_classes or 10)
    fs, names = source.root.filesystem, {p: source.rel(p) for p in source.files}

    def build():
        import ray.data

        return ray.data.from_items(items).map_batches(
            _idx_rows,
            batch_size=1,
            batch_format="pyarrow",
            fn_kwargs={"fs": fs, "names": names, "shape": source.image_shape},
        )

    source.build = build
    return source


def _idx_shape(source: Source, path: str) -> tuple[int, int, int]:
    fs = source.root.filesystem
    try:
        with fs.open_input_stream(path, compression=None) as f:
            head = (
                f.read(16)
                if not path.endswith(".gz")
                else gzip.GzipFile(fileobj=f).read(16)
            )
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{source.rel(path)}: corrupt IDX file ({exc})") from None
    if len(head) < 16 or head[:4] != b"\0\0\x08\x03":
        raise DataError(
            f"{source.rel(path)}: corrupt IDX file: magic {head[:4].hex()}, "
            "expected 00000803 (images, unsigned bytes)"
        )
    return (1, int.from_bytes(head[8:12], "big"), int.from_bytes(head[12:16], "big"))


def _idx_rows(batch: pa.Table, fs, names, shape) -> pa.Table:
    item = batch.to_pylist()[0]
    img_name, lab_name = names[item["images"]], names[item["labels"]]
    images = parse_idx(_read_all(fs, item["images"], img_name), img_name, "images")
    labels = parse_idx(_read_all(fs, item["labels"], lab_name), lab_name, "labels")
    if len(images) != len(labels):
        raise DataError(
            f"{img_name} holds {len(images)} images but {lab_name} {len(labels)} labels"
        )
    if tuple(images.shape[1:]) != tuple(shape[1:]):
        raise DataError(f"{img_name}: images of {images.shape[1:]}, expected {shape}")
    n = len(images)
    return rows_from_numpy(images, [str(v) for v in labels], [item["pool"]] * n)


# --------------------------------------------------------------------- images


def _plan_images(source: Source, opts: Options) -> Source:
    nested = [source.rel(p).split("/") for p in source.files]
    source.classes = opts.classes or sort_labels(p[0] for p in nested if len(p) > 1)
    if not source.classes:
        raise DataError(
            f"--source {source.root.uri}: no class subfolders (put each class's "
            "images in a folder of its own)"
        )
    if opts.shape:
        source.image_shape = opts.shape
    else:
        first = source.files[0]
        with source.root.filesystem.open_input_stream(first, compression=None) as f:
            data = f.read()
        img = _decode(data, source.rel(first), None)
        source.image_shape = (len(img.getbands()), img.height, img.width)
    kwargs = {"root": source.root.path, "shape": source.image_shape}

    def build():
        import ray.data

        return ray.data.read_binary_files(
            source.files, filesystem=source.root.filesystem, include_paths=True
        ).map_batches(_image_rows, batch_format="pyarrow", fn_kwargs=kwargs)

    source.build = build
    return source


def _decode(data: bytes, name: str, mode: str | None):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except UnidentifiedImageError:
        raise DataError(
            f"{name}: corrupt image, cannot be decoded (no image format matches)"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{name}: corrupt image, cannot be decoded ({exc})") from None
    if mode is None:
        mode = "L" if img.mode in ("1", "L", "LA", "I", "I;16", "F", "P") else "RGB"
        if img.mode == "P":
            mode = "RGB"
    return img.convert(mode)


def _image_rows(batch: pa.Table, root, shape) -> pa.Table:
    c, h, w = shape
    mode = "L" if c == 1 else "RGB"
    n = len(batch)
    x = np.full((n, c, h, w), np.nan, np.float32)
    labels, reason = [], []
    for i, (path, data) in enumerate(
        zip(
            batch.column("path").to_pylist(),
            batch.column("bytes").to_pylist(),
            strict=True,
        )
    ):
        rel = path[len(root) :].lstrip("/")
        parts = rel.split("/")
        labels.append(parts[0] if len(parts) > 1 else None)
        img = _decode(data, rel, mode)
        if (img.height, img.width) != (h, w):
            reason.append("wrong_shape")
            continue
        reason.append("" if len(parts) > 1 else "unknown_label")
        pixels = np.asarray(img, np.float32)
        x[i] = pixels[None] if c == 1 else pixels.transpose(2, 0, 1)
    return rows_from_numpy(x, labels, [""] * n, reason)


# --------------------------------------------------------------------- digits


def _plan_digits(root: StoragePath | None) -> Source:
    from mlcore.data import _digits_file, split_indices
    from mlcore.storage import parse_storage

    if root is None:
        path = _digits_file()
        if path is None:
            raise DataError("digits: scikit-learn's digits.csv.gz is not installed")
        root = parse_storage(path, "--source")
    files = list_files(root)
    if len(files) != 1:
        raise DataError(f"--source {root.uri}: digits wants one digits.csv(.gz) file")
    source = Source("digits", root, files, image_shape=(1, 8, 8))
    name = source.rel(files[0])
    try:
        with root.filesystem.open_input_stream(files[0], compression=None) as f:
            data = f.read()
        text = gzip.decompress(data) if files[0].endswith(".gz") else data
        rows = np.loadtxt(io.BytesIO(text), delimiter=",", ndmin=2)
    except (OSError, EOFError, ValueError, gzip.BadGzipFile) as exc:
        raise DataError(f"{name}: not a digits file ({exc})") from None
    if rows.shape[0] == 0:
        raise DataError(f"{name}: no rows (empty input)")
    if rows.shape[1] != 65:
        raise DataError(
            f"{name}: {rows.shape[1]} columns, expected 65 (64 pixels, label)"
        )
    y = rows[:, 64].astype(np.int64)
    pool = np.empty(len(y), dtype=object)
    for split, idx in zip(("train", "val", "test"), split_indices(y), strict=True):
        pool[idx] = split
    table = rows_from_numpy(rows[:, :64], [str(v) for v in y], pool.tolist())
    source.classes = [str(i) for i in range(10)]

    def build():
        import ray.data

        return ray.data.from_arrow(table)

    source.build = build
    return source


# ----------------------------------------------------------------------- text


def _plan_text(source: Source, opts: Options) -> Source:
    source.kind = "tokens"

    def build():
        import ray.data

        return ray.data.read_binary_files(
            source.files, filesystem=source.root.filesystem, include_paths=True
        ).rename_columns({"bytes": "doc", "path": "name"})

    source.build = build
    return source
