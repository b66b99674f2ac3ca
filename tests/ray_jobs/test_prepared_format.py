"""The prepared-dataset format and the cleaning rules, without Ray.

Shards and manifests are written and read on local storage; the sources are
planned in this process (their driver-side checks: headers, schemas, IDX
headers, empty inputs) and their task functions called directly on batches.
"""

from __future__ import annotations

import gzip
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mlcore import prepared as fmt
from mlcore.cleaning import assign_split, clean, clean_documents
from mlcore.errors import DataError, data_error_in
from mlcore.sources import Options, _image_rows, parse_idx, plan_source
from mlcore.storage import parse_storage
from mlcore.tables import _table_rows


def rows(x, labels, pool=None, reason=None):
    from mlcore.sources import rows_from_numpy

    n = len(labels)
    return rows_from_numpy(np.asarray(x, np.float32), labels, pool or [""] * n, reason)


# ------------------------------------------------------------------ cleaning


def test_clean_names_each_reason_and_keeps_the_rest():
    x = np.ones((5, 3), np.float32)
    x[1, 0] = np.nan
    x[2, 2] = np.inf
    batch = rows(x, ["a", "a", "b", "zzz", None])
    # a null feature value (Arrow null, not NaN) in row 0
    values = x.ravel().tolist()
    values[0] = None
    flat = pa.array(values, pa.float32())
    batch = batch.set_column(0, "x", pa.FixedSizeListArray.from_arrays(flat, 3))
    out = clean(batch, ["a", "b"], seed=0, val_fraction=0.2, test_fraction=0.2)
    assert out.column("reason").to_pylist() == [
        "missing",
        "non_finite",
        "non_finite",
        "unknown_label",
        "missing",
    ]
    assert out.column("y").to_pylist() == [0, 0, 1, -1, -1]


def test_the_split_and_order_depend_on_content_and_seed_only():
    rng = np.random.default_rng(1)
    x = rng.random((400, 4)).astype(np.float32)
    labels = [str(i % 3) for i in range(400)]
    whole = clean(rows(x, labels), ["0", "1", "2"], 7, 0.15, 0.15)
    # the same rows in other batches, in another order: the same decisions
    parts = [
        clean(rows(x[i::2][::-1], labels[i::2][::-1]), ["0", "1", "2"], 7, 0.15, 0.15)
        for i in (0, 1)
    ]
    by_digest = {
        d: (o, s)
        for t in parts
        for d, o, s in zip(
            t.column("digest").to_pylist(),
            t.column("order").to_pylist(),
            t.column("split").to_pylist(),
            strict=True,
        )
    }
    for d, o, s in zip(
        whole.column("digest").to_pylist(),
        whole.column("order").to_pylist(),
        whole.column("split").to_pylist(),
        strict=True,
    ):
        assert by_digest[d] == (o, s)
    splits = whole.column("split").to_pylist()
    assert 0.6 < splits.count("train") / 400 < 0.8
    other = clean(rows(x, labels), ["0", "1", "2"], 8, 0.15, 0.15)
    assert other.column("order").to_pylist() != whole.column("order").to_pylist()
    # exact duplicates get equal digests (and so sit side by side once sorted)
    twin = clean(rows(np.vstack([x[:1], x[:1]]), ["0", "0"]), ["0"], 7, 0.1, 0.1)
    assert len(set(twin.column("digest").to_pylist())) == 1


def test_fixed_pools_are_kept_and_trainval_is_split_in_two():
    u = np.random.default_rng(0).random(1000)
    pool = np.array(["test"] * 500 + ["trainval"] * 500, dtype=object)
    split = assign_split(pool, u, val_fraction=0.1, test_fraction=0.3)
    assert set(split[:500]) == {"test"}
    assert set(split[500:]) == {"train", "val"}
    assert 0.1 < list(split[500:]).count("val") / 500 < 0.2  # 0.1 / 0.7


def test_documents_empty_ones_are_refused():
    batch = pa.table({"doc": [b"hello", b"", b"hello"], "name": ["a", "b", "c"]})
    out = clean_documents(batch, 0, 0.1, 0.0)
    assert out.column("reason").to_pylist() == ["", "missing", ""]
    d = out.column("digest").to_pylist()
    assert d[0] == d[2] != d[1]


# -------------------------------------------------------------- the format


def write_dataset(root, n=100, rows_per_shard=30, shape=(1, 2, 2)):
    out = parse_storage(str(root))
    width = int(np.prod(shape))
    writer = fmt.ShardWriter(out, fmt.classification_schema(width), rows_per_shard)
    x = np.arange(n * width, dtype=np.float32).reshape(n, width)
    table = pa.table(
        {
            "x": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), width),
            "y": pa.array(np.arange(n) % 2, pa.int64()),
        }
    )
    for split in fmt.SPLITS:
        writer.add(split, table)
    shards = writer.close()
    stats = fmt.RunningStats(shape, "channel")
    stats.add(x)
    manifest = {
        "format": fmt.FORMAT,
        "version": fmt.FORMAT_VERSION,
        "kind": "classification",
        "schema": {"columns": fmt.schema_dict(fmt.classification_schema(width))},
        "shape": list(shape),
        "classes": ["0", "1"],
        "splits": {
            s: {"rows": sum(p["rows"] for p in shards[s]), "shards": shards[s]}
            for s in fmt.SPLITS
        },
        "normalisation": stats.result().to_dict(),
    }
    digest = fmt.write_manifest(out, manifest)
    return manifest, digest, x


def test_shards_are_bounded_deterministic_and_verify(tmp_path):
    manifest, digest, x = write_dataset(tmp_path / "a")
    shards = manifest["splits"]["train"]["shards"]
    assert [s["rows"] for s in shards] == [30, 30, 30, 10]
    assert [s["path"] for s in shards][:2] == [
        "train/part-00000.parquet",
        "train/part-00001.parquet",
    ]
    again, digest_again, _ = write_dataset(tmp_path / "b")
    assert again == manifest and digest_again == digest  # the same bytes
    data = fmt.open_prepared(str(tmp_path / "a"))
    assert data.digest == digest and data.image_shape == (1, 2, 2)
    fmt.verify(data)
    got = np.concatenate([b[0] for b in fmt.iter_split(data, "val")])
    assert got.shape == (100, 1, 2, 2)
    np.testing.assert_array_equal(got.reshape(100, -1), x)


def test_a_shard_that_fails_its_checksum_is_named(tmp_path):
    write_dataset(tmp_path)
    shard = tmp_path / "val" / "part-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[-40] ^= 0xFF  # same size, other bytes
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        fmt.verify(fmt.open_prepared(str(tmp_path)))
    assert str(err.value) == (
        f"shard {shard} does not match its checksum in manifest.json"
    )


def test_missing_or_resized_shards_and_wrong_schemas_are_named(tmp_path):
    write_dataset(tmp_path)
    (tmp_path / "test" / "part-00003.parquet").unlink()
    with pytest.raises(DataError, match=r"test/part-00003.parquet is missing"):
        fmt.verify(fmt.open_prepared(str(tmp_path)))
    write_dataset(tmp_path)
    shard = tmp_path / "train" / "part-00000.parquet"
    pq.write_table(pa.table({"z": [1.0] * 30}), shard)
    with pytest.raises(DataError, match=r"train/part-00000.parquet has \d+ bytes"):
        fmt.verify(fmt.open_prepared(str(tmp_path)), checksums=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["schema"]["columns"]["x"] = "fixed_size_list<float>[5]"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="does not match its kind's columns"):
        fmt.verify(fmt.open_prepared(str(tmp_path)))


def test_without_a_manifest_nothing_is_a_dataset(tmp_path):
    write_dataset(tmp_path)
    fmt.remove_manifest(parse_storage(str(tmp_path)))
    with pytest.raises(DataError) as err:
        fmt.open_prepared(str(tmp_path))
    assert str(err.value).startswith(
        f"{tmp_path} has no manifest.json: not a complete prepared dataset"
    )
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(DataError, match="not a raygpu prepared-dataset manifest"):
        fmt.open_prepared(str(tmp_path))


def test_normalisation_per_channel_and_per_feature():
    x = np.stack([np.full((2, 3), 1.0), np.full((2, 3), 5.0)])[None]  # (1, 2, 2, 3)
    x = np.concatenate([x, x + 2]).astype(np.float32)  # 2 rows, 2 channels
    per_channel = fmt.RunningStats((2, 2, 3), "channel")
    per_channel.add(x)
    norm = per_channel.result()
    assert norm.shape == (2, 1, 1)
    np.testing.assert_allclose(norm.mean, [2.0, 6.0])
    np.testing.assert_allclose(norm.std, [1.0, 1.0])
    flat = x.reshape(2, -1)
    out = norm.apply(flat)
    assert out.shape == flat.shape and out.dtype == np.float32
    np.testing.assert_allclose(
        out.reshape(2, 2, 2, 3)[:, 0], [[[-1] * 3] * 2, [[1] * 3] * 2]
    )
    tab = np.array([[1.0, 10.0, 3.0], [3.0, 10.0, 5.0]], np.float32)
    per_feature = fmt.RunningStats((1, 1, 3), "feature")
    per_feature.add(tab)
    norm = fmt.Normalisation.from_dict(per_feature.result().to_dict())
    np.testing.assert_allclose(norm.mean, [2.0, 10.0, 4.0])
    assert norm.std[1] == 1.0  # a constant feature is centred, not divided by 0
    np.testing.assert_allclose(norm.apply(tab), [[-1, 0, -1], [1, 0, 1]])


def test_a_task_error_is_found_in_rays_wrapped_text():
    wrapped = RuntimeError(
        "ray::MapBatches(_image_rows)()\n  File ...\n"
        "mlcore.errors.DataError: cats/b.png: corrupt image, cannot be decoded\n"
        "The above exception was the direct cause of the following exception:"
    )
    assert str(data_error_in(wrapped)) == "cats/b.png: corrupt image, cannot be decoded"
    assert data_error_in(RuntimeError("other")) is None


# ------------------------------------------------------------ bad raw input


def csv(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def plan(fmt_name, root, **opts):
    return plan_source(fmt_name, parse_storage(str(root)), Options(**opts))


def test_a_missing_label_column_names_the_file_and_the_columns(tmp_path):
    csv(tmp_path / "a.csv", "f1,f2,label\n1,2,0\n")
    csv(tmp_path / "b.csv", "f1,f2,target\n1,2,0\n")
    with pytest.raises(DataError) as err:
        plan("csv", tmp_path, classes=["0"])
    assert str(err.value) == (
        "b.csv has no label column 'label' (columns: f1, f2, target); name it with "
        "--label-column"
    )


def test_a_schema_that_changes_between_files_names_both(tmp_path):
    csv(tmp_path / "a.csv", "f1,f2,label\n1,2,0\n")
    csv(tmp_path / "b.csv", "f1,f3,label\n1,2,0\n")
    with pytest.raises(DataError) as err:
        plan("csv", tmp_path, classes=["0"])
    assert str(err.value) == (
        "the schema changes between files: b.csv lacks f2; adds f3 (compared with "
        "a.csv)"
    )
    pq.write_table(pa.table({"f": [1.0], "label": [0]}), tmp_path / "p1.parquet")
    pq.write_table(pa.table({"f": ["x"], "label": [0]}), tmp_path / "p2.parquet")
    with pytest.raises(DataError) as err:
        plan("parquet", tmp_path, classes=["0"])  # the CSV files are not input
    assert "p2.parquet types of f (double -> string)" in str(err.value)


def test_empty_inputs_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no input files found"):
        plan("csv", tmp_path / "empty")
    csv(tmp_path / "blank" / "a.csv", "")
    with pytest.raises(DataError, match=r"^a.csv: empty file \(no header row\)$"):
        plan("csv", tmp_path / "blank")
    with pytest.raises(DataError, match="does not exist"):
        plan("csv", tmp_path / "nowhere")


def idx(dims, data: bytes, ndim_code=None) -> bytes:
    head = bytes([0, 0, 8, ndim_code or len(dims)])
    return head + b"".join(d.to_bytes(4, "big") for d in dims) + data


def test_corrupt_idx_files_are_named(tmp_path):
    good = idx([2, 2, 2], bytes(8))
    assert parse_idx(good, "g", "images").shape == (2, 2, 2)
    with pytest.raises(DataError) as err:
        parse_idx(idx([2, 2, 2], bytes(5)), "train-images-idx3-ubyte", "images")
    assert str(err.value) == (
        "train-images-idx3-ubyte: corrupt IDX file: its header says 2x2x2 "
        "(24 bytes), the file has 21 bytes"
    )
    with pytest.raises(DataError, match="magic 00000803, expected 00000801"):
        parse_idx(good, "train-labels-idx1-ubyte", "labels")
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x01" * 20))
    (folder / "train-labels-idx1-ubyte").write_bytes(idx([2], bytes(2)))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: corrupt IDX"):
        plan("idx", folder)
    (folder / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="its images file is missing"):
        plan("idx", folder)


def png(size=(4, 4), value=100, mode="L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, value).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_rows_name_a_corrupt_image_and_count_wrong_shapes():
    root = "/data/imgs"
    batch = pa.table(
        {
            "path": [f"{root}/cat/a.png", f"{root}/dog/b.png", f"{root}/c.png"],
            "bytes": [png(), png((5, 4)), png()],
        }
    )
    out = _image_rows(batch, root, (1, 4, 4))
    assert out.column("reason").to_pylist() == ["", "wrong_shape", "unknown_label"]
    assert out.column("label").to_pylist() == ["cat", "dog", None]
    assert out.column("x").to_pylist()[0] == [100.0] * 16
    broken = pa.table({"path": [f"{root}/cat/x.png"], "bytes": [b"\x89PNG broken"]})
    with pytest.raises(
        DataError, match=r"^cat/x.png: corrupt image, cannot be decoded"
    ):
        _image_rows(broken, root, (1, 4, 4))


def test_table_rows_wrong_lengths_and_text_in_a_number_column():
    table = pa.table(
        {
            "x": pa.array([[1.0, 2.0], [1.0], None], pa.list_(pa.float64())),
            "label": [1, 2, 3],
            "path": ["/d/a.parquet"] * 3,
        }
    )
    out = _table_rows(table, "label", ["x"], None, 2, True, "/d")
    assert out.column("reason").to_pylist() == ["", "wrong_shape", ""]
    assert out.column("label").to_pylist() == ["1", "2", "3"]
    cleaned = clean(out, ["1", "2", "3"], 0, 0.1, 0.1)
    assert cleaned.column("reason").to_pylist() == ["", "wrong_shape", "missing"]
    bad = pa.table({"f": ["1", "x"], "label": [0, 1], "path": ["/d/t.csv"] * 2})
    with pytest.raises(DataError) as err:
        _table_rows(bad, "label", ["f"], None, 1, False, "/d")
    assert str(err.value) == (
        "t.csv: column 'f' holds values that are not numbers (type string)"
    )


def test_the_in_memory_baseline_loads_the_same_rows_normalised(tmp_path):
    from mlcore.ingest import load_in_memory

    manifest, digest, x = write_dataset(tmp_path)
    config = {"uri": str(tmp_path), "normalisation": manifest["normalisation"]}
    ds = load_in_memory(config)
    norm = fmt.Normalisation.from_dict(manifest["normalisation"])
    assert ds.train.x.shape == (100, 1, 2, 2) and ds.val.y.tolist() == [0, 1] * 50
    np.testing.assert_allclose(ds.train.x, norm.apply(x.reshape(100, 1, 2, 2)))
    assert abs(float(ds.train.x.mean())) < 1e-4  # normalised with train's stats
