"""Datasets, models and the checkpoint format, in-process (no Ray)."""

import gzip
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mlcore import checkpointing
from mlcore.data import load_dataset
from mlcore.errors import CheckpointError, DatasetUnavailable, JobInputError
from mlcore.models import ModelSpec, build_model


def test_digits_split_is_fixed_disjoint_and_stratified():
    a, b = load_dataset("digits"), load_dataset("digits")
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, split).y, getattr(b, split).y)
        np.testing.assert_array_equal(getattr(a, split).x, getattr(b, split).x)
    sizes = [len(a.train.y), len(a.val.y), len(a.test.y)]
    assert sum(sizes) == 1797
    assert 0.14 < sizes[2] / 1797 < 0.16
    # disjoint: no image appears in two splits
    rows = {s: {r.tobytes() for r in getattr(a, s).x} for s in ("train", "val", "test")}
    assert not rows["train"] & rows["test"]
    assert not rows["val"] & rows["test"]
    assert set(np.unique(a.test.y)) == set(range(10))
    assert a.image_shape == (1, 8, 8) and a.num_features == 64
    assert (
        a.train.x.dtype == np.float32 and 0 <= a.train.x.min() <= a.train.x.max() <= 1
    )


def test_digits_read_from_the_file_matches_load_digits():
    from sklearn.datasets import load_digits

    from mlcore import data

    assert data._digits_file() is not None  # the direct read, not the fallback
    images, target = data._digits_arrays()
    bunch = load_digits()
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(target, bunch.target)


def test_loading_digits_does_not_import_sklearn():
    code = (
        "import sys; from mlcore.data import load_dataset; "
        "ds = load_dataset('digits'); "
        "n = len(ds.train.y) + len(ds.val.y) + len(ds.test.y); "
        "print(n, 'sklearn' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-c", code]
    out = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1797", "False"]


def test_digits_falls_back_to_sklearn_when_its_file_moved(monkeypatch):
    from mlcore import data

    assert data._digits_file() is not None
    direct = load_dataset("digits")
    monkeypatch.setattr(data, "_digits_file", lambda: None)
    via_sklearn = load_dataset("digits")
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(
            getattr(direct, split).x, getattr(via_sklearn, split).x
        )
        np.testing.assert_array_equal(
            getattr(direct, split).y, getattr(via_sklearn, split).y
        )


def test_digits_without_its_file_or_sklearn_fails_clearly(monkeypatch):
    from mlcore import data

    monkeypatch.setattr(data, "_digits_file", lambda: None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import fails
    with pytest.raises(DatasetUnavailable, match="scikit-learn, which cannot be"):
        load_dataset("digits")


@pytest.mark.parametrize(
    "content,fragment",
    [
        (b"0,1,2\n3,4,5\n", "3 columns per row, expected 65"),
        (b"0,1,x\n", "cannot be read (ValueError"),
        (None, "cannot be read ("),  # not gzip at all
    ],
)
def test_a_broken_digits_file_fails_naming_it(monkeypatch, tmp_path, content, fragment):
    from mlcore import data

    bad = tmp_path / "digits.csv.gz"
    if content is None:
        bad.write_bytes(b"this is not gzip")
    else:
        with gzip.open(bad, "wb") as f:
            f.write(content)
    monkeypatch.setattr(data, "_digits_file", lambda: str(bad))
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("digits")
    assert fragment in str(err.value) and str(bad) in str(err.value)


def test_mnist_without_files_fails_clearly_and_downloads_nothing(tmp_path):
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("mnist", data_dir=str(tmp_path), download=False)
    msg = str(err.value)
    assert str(tmp_path) in msg and "--dataset digits" in msg
    assert not any((tmp_path / "MNIST").rglob("*.gz"))


def test_unknown_dataset_names_the_flag():
    with pytest.raises(JobInputError, match="--dataset: unknown dataset 'cifar'"):
        load_dataset("cifar")


@pytest.mark.parametrize(
    "name,shape",
    [
        ("mlp", (1, 8, 8)),
        ("cnn", (1, 8, 8)),
        ("cnn", (1, 28, 28)),
        ("resnet18", (3, 32, 32)),
    ],
)
def test_models_take_their_input_shape(name, shape):
    model = build_model(ModelSpec(name, shape, 10))
    out = model(torch.zeros(4, *shape))
    assert out.shape == (4, 10)


def test_mlp_is_input_256_128_classes():
    model = build_model(ModelSpec("mlp", (1, 28, 28), 10))
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (784, 256),
        (256, 128),
        (128, 10),
    ]


def _saved_checkpoint(tmp_path):
    spec = ModelSpec("mlp", (1, 8, 8), 10)
    model = build_model(spec)
    opt = torch.optim.Adam(model.parameters())
    checkpointing.save(str(tmp_path), model, opt, 3, spec, {"val_accuracy": 0.5})
    return model


def test_checkpoint_round_trip(tmp_path):
    model = _saved_checkpoint(tmp_path)
    loaded, meta = checkpointing.load_model(str(tmp_path))
    assert meta["epoch"] == 3 and meta["metrics"]["val_accuracy"] == 0.5
    x = torch.rand(5, 1, 8, 8)
    model.eval()
    torch.testing.assert_close(loaded(x), model(x))


def test_incomplete_checkpoint_is_rejected(tmp_path):
    _saved_checkpoint(tmp_path)
    os.remove(tmp_path / checkpointing.META_FILE)
    with pytest.raises(CheckpointError, match="incomplete"):
        checkpointing.verify(str(tmp_path))


def test_corrupt_checkpoint_is_rejected(tmp_path):
    _saved_checkpoint(tmp_path)
    path = tmp_path / checkpointing.MODEL_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt: model.pt fails its checksum"):
        checkpointing.verify(str(tmp_path))
