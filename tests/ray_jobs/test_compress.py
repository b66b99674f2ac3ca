"""compress.py on real checkpoints: the digits MLP and CNN trained here in a few
seconds (the loop train.py runs), and an untrained MLP on a prepared dataset
(for its normalisation statistics). Every variant is really made (torchao, the
ONNX exporter, ONNX Runtime's quantisers) and loaded back through its digests."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import compress
import serve_app
from mlcore import checkpointing, variants
from mlcore import prepared as prep
from mlcore.data import load_dataset
from mlcore.errors import CheckpointError
from mlcore.models import ModelSpec, build_model
from raygpu import serve as raygpu_serve
from scripts.bench.compress_models import train_checkpoint


def run(argv: list[str]) -> dict:
    return compress.run(compress.parse_args(argv))


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """(checkpoint, report): the digits MLP and every variant, timed briefly."""
    ckpt = train_checkpoint(tmp_path_factory.mktemp("mlp") / "ckpt", "mlp", "digits", 0)
    report = run(["--checkpoint", str(ckpt), "--rounds", "1", "--seconds", "0.2"])
    return ckpt, report


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cnn") / "ckpt"
    ckpt = train_checkpoint(folder, "cnn", "digits", 0, epochs=4)
    return ckpt, run(["--checkpoint", str(ckpt), "--rounds", "0"])


def test_mlp_variants_are_smaller_and_as_accurate(mlp):
    ckpt, report = mlp
    rows = report["variants"]
    assert list(rows) == ["fp32", "int8", "onnx", "onnx-int8"]
    assert report["skipped"] == {}
    assert rows["fp32"]["test_accuracy"] > 0.9
    for name, row in rows.items():
        assert abs(row["accuracy_delta_points"]) <= 1.5, (name, row)
        assert row["latency_b1_p50_ms"] <= row["latency_b1_p99_ms"]
        assert row["throughput_b32"] > 0
    assert rows["int8"]["size_ratio"] <= 0.3
    assert rows["onnx-int8"]["size_ratio"] <= 0.35
    assert 0.9 < rows["onnx"]["size_ratio"] < 1.1
    assert rows["int8"]["backend"] == "torch+torchao"
    saved = json.loads((ckpt / "variants" / "report.json").read_text())
    assert saved["variants"].keys() == rows.keys()
    md = (ckpt / "variants" / "report.md").read_text()
    assert "| onnx-int8 | onnxruntime |" in md


def test_each_variant_is_a_checkpoint_with_its_own_digests(mlp):
    ckpt, _ = mlp
    source = (ckpt / "meta.json").read_bytes()
    for name in ("int8", "onnx", "onnx-int8"):
        folder = ckpt / "variants" / name
        meta = checkpointing.verify(str(folder))
        assert meta["variant"] == name
        assert set(meta["files"]) == {variants.MODEL_FILES[name]}
        assert meta["source"]["meta_sha256"] == variants.meta_digest(source)
        assert meta["model"] == json.loads(source)["model"]
    # The training checkpoint's own digests are untouched by variants/ in it.
    checkpointing.verify(str(ckpt))
    with pytest.raises(CheckpointError, match="serve it with variant=int8"):
        checkpointing.load_model(str(ckpt / "variants" / "int8"))


def test_onnx_takes_any_batch_size_and_matches_torch(mlp):
    ckpt, _ = mlp
    model, _ = checkpointing.load_model(str(ckpt))
    found, _ = variants.load_uri(str(ckpt), "onnx")
    int8, _ = variants.load_uri(str(ckpt), "int8")
    x = load_dataset("digits").test.x
    for n in (1, 7):
        with torch.no_grad():
            want = model(torch.from_numpy(x[:n])).numpy()
        got = found.logits(x[:n])
        assert got.shape == (n, 10)
        np.testing.assert_allclose(got, want, atol=1e-4)
        assert int8.logits(x[:n]).shape == (n, 10)


def test_cnn_goes_through_onnx_runtime_int8_not_torchao(cnn):
    ckpt, report = cnn
    assert "int8" not in report["variants"]
    assert "torchao quantises Linear layers only" in report["skipped"]["int8"]
    row = report["variants"]["onnx-int8"]
    assert row["size_ratio"] <= 0.35
    assert row["accuracy_delta_points"] >= -1.5
    assert "throughput_b32" not in row  # --rounds 0
    meta = checkpointing.verify(str(ckpt / "variants" / "onnx-int8"))
    assert meta["quantisation"]["method"] == "static"
    assert meta["quantisation"]["calibration_rows"] == 256


def test_a_variant_the_model_cannot_take_is_one_line(cnn, capsys):
    ckpt, _ = cnn
    assert compress.main(["--checkpoint", str(ckpt), "--variants", "int8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --variants: int8: torchao quantises Linear layers")
    assert "hold 5% of the cnn's weights" in err and "onnx-int8" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--variants", "int4"], "--variants: unknown variant 'int4'; choose one of"),
        (["--variants", "fp32"], "--variants: fp32 is the checkpoint itself"),
        (["--variants", ","], "--variants: name one or more of int8"),
        (["--dataset", "cifar"], "--dataset: unknown 'cifar'"),
        (["--rounds", "-1"], "--rounds: must be at least 0 (got -1)"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        compress.parse_args(["--checkpoint", str(tmp_path), *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_tampered_variants_are_refused_at_load(mlp, tmp_path):
    ckpt, _ = mlp
    copy = tmp_path / "ckpt"
    shutil.copytree(ckpt, copy)
    onnx = copy / "variants" / "onnx-int8" / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.onnx fails its checksum"):
        variants.load_uri(str(copy), "onnx-int8")
    # The Serve app's replica constructor (what a deploy runs) refuses it too.
    with pytest.raises(CheckpointError, match="fails its checksum"):
        serve_app.ModelServer.func_or_class(
            {"checkpoint": str(copy), "variant": "onnx-int8"}
        )
    # A variant left beside a checkpoint that was replaced: another source.
    meta = json.loads((copy / "meta.json").read_text())
    checkpointing.write_meta(
        str(copy), ["model.pt", "optimizer.pt"], {**meta, "epoch": 99}
    )
    with pytest.raises(CheckpointError, match="made from another checkpoint"):
        variants.load_uri(str(copy), "int8")
    shutil.rmtree(copy / "variants" / "onnx")
    with pytest.raises(CheckpointError, match="has no onnx variant"):
        variants.load_uri(str(copy), "onnx")


def test_prepared_checkpoints_keep_their_statistics(tmp_path, capsys):
    """A checkpoint trained on a prepared dataset: the variant carries the
    statistics, and compress.py measures on the normalised test split."""
    data = tmp_path / "prepared"
    manifest = prep.write_synthetic(str(data), rows=256, shape=(1, 8, 8), held_out=64)
    torch.manual_seed(0)
    spec = ModelSpec("mlp", (1, 8, 8), 10)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    digest = prep.open_prepared(str(data)).digest
    extra = {
        "normalisation": manifest["normalisation"],
        "data": {"uri": str(data), "manifest_sha256": digest},
    }
    checkpointing.save(str(ckpt), build_model(spec), None, 0, spec, {}, extra)
    out = tmp_path / "out"
    argv = ["--checkpoint", str(ckpt), "--variants", "onnx", "--out", str(out)]
    report = run([*argv, "--rounds", "0"])
    assert report["data"] == f"prepared {data}" and report["test_rows"] == 64
    assert abs(report["variants"]["onnx"]["accuracy_delta_points"]) <= 100 / 64
    meta = checkpointing.verify(str(out / "onnx"))
    assert meta["normalisation"] == manifest["normalisation"]
    # A variant folder named directly, outside the checkpoint, serves as well.
    server = serve_app.ModelServer.func_or_class(
        {"checkpoint": str(out / "onnx"), "variant": "onnx"}
    )
    x = next(prep.iter_split(prep.open_prepared(str(data)), "test"))[0]
    model, _ = checkpointing.load_model(str(ckpt))
    norm = prep.Normalisation.from_dict(manifest["normalisation"])
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(norm.apply(x))), dim=1).numpy()
    np.testing.assert_allclose(server.forward(x.reshape(len(x), -1)), want, atol=1e-5)
    # The dataset changed since training: refused unless --data names one.
    (data / "manifest.json").write_text(
        json.dumps({**manifest, "sources": {"changed": True}})
    )
    assert compress.main([*argv, "--rounds", "0"]) == 1
    assert "changed since the checkpoint was trained" in capsys.readouterr().err


def test_a_checkpoint_that_does_not_say_its_data_needs_dataset(tmp_path, capsys):
    spec = ModelSpec("mlp", (1, 8, 8), 10)
    checkpointing.save(str(tmp_path), build_model(spec), None, 0, spec, {})
    assert compress.main(["--checkpoint", str(tmp_path), "--variants", "int8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --dataset: the checkpoint does not say") and (
        err.count("\n") == 1
    )
    # A variant is not a checkpoint to compress.
    report = run(
        ["--checkpoint", str(tmp_path), "--variants", "int8", "--dataset", "digits"]
        + ["--rounds", "0"]
    )
    assert report["variants"]["int8"]["size_ratio"] <= 0.3
    assert compress.main(["--checkpoint", str(tmp_path / "variants" / "int8")]) == 1
    assert "is the int8 serving variant" in capsys.readouterr().err


def test_the_variant_names_agree_everywhere():
    literal = serve_app.ServeArgs.model_fields["variant"].annotation.__args__
    assert literal == variants.VARIANTS == raygpu_serve.VARIANTS


def test_a_checkpoint_in_s3_gets_its_variants_in_s3(moto_server, s3_bucket, tmp_path):
    """compress.py reads and writes s3:// (a real S3 API on loopback); the app's
    loader finds the variant there and copies only the variant's folder."""
    import pyarrow.fs as pafs

    from mlcore.storage import parse_storage

    local = tmp_path / "ckpt"
    local.mkdir()
    spec = ModelSpec("mlp", (1, 8, 8), 10)
    checkpointing.save(str(local), build_model(spec), None, 0, spec, {})
    uri = f"s3://{s3_bucket}/runs/r/checkpoint_epoch0000_attempt01"
    remote = parse_storage(uri)
    pafs.copy_files(str(local), remote.path, destination_filesystem=remote.filesystem)
    argv = ["--checkpoint", uri, "--variants", "int8", "--dataset", "digits"]
    report = run([*argv, "--rounds", "0"])
    assert report["out"] == f"{uri}/variants"
    listed = {
        info.path.removeprefix(remote.path + "/")
        for info in remote.filesystem.get_file_info(
            pafs.FileSelector(remote.path, recursive=True)
        )
        if info.type == pafs.FileType.File
    }
    assert {"variants/int8/model.pt", "variants/int8/meta.json"} <= listed
    assert {"variants/report.json", "variants/report.md"} <= listed
    predictor, meta = variants.load_uri(uri, "int8")
    assert meta["variant"] == "int8" and predictor.backend == "torch+torchao"
    assert predictor.logits(np.zeros((3, 1, 8, 8), np.float32)).shape == (3, 10)
