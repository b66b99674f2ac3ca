"""Datasets with a fixed, seeded train/validation/test split.

- `digits`: scikit-learn's handwritten digits (1,797 images of 8x8), shipped inside
  the package: the offline default.
- `mnist`: torchvision's MNIST (70,000 images of 28x28), read from `data_dir`; it
  is downloaded only when the caller allows it, under a file lock so that several
  workers on one node do not download it at once.
- `synthetic`: seeded random images of 3x32x32 in 10 classes (CIFAR-shaped), for
  throughput benchmarks with a larger model; its accuracy means nothing.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np

from mlcore.errors import DatasetUnavailable, JobInputError

DATASETS = ("digits", "mnist", "synthetic")
SPLIT_SEED = 20240611  # the split never changes between runs, workers or resumes
VAL_FRACTION = 0.15
TEST_FRACTION = 0.15


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # float32, (n, *image_shape), values in [0, 1]
    y: np.ndarray  # int64, (n,)


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    image_shape: tuple[int, int, int]  # (channels, height, width)
    num_classes: int

    @property
    def num_features(self) -> int:
        c, h, w = self.image_shape
        return c * h * w


def split_indices(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified (train, val, test) row indices with a fixed seed: the same on
    every worker and run (prepare.py gives the digits the same split)."""
    rng = np.random.default_rng(SPLIT_SEED)
    train_idx, val_idx, test_idx = [], [], []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * VAL_FRACTION))
        n_test = int(round(len(idx) * TEST_FRACTION))
        val_idx.append(idx[:n_val])
        test_idx.append(idx[n_val : n_val + n_test])
        train_idx.append(idx[n_val + n_test :])
    parts = []
    for chunks in (train_idx, val_idx, test_idx):
        idx = np.concatenate(chunks)
        rng.shuffle(idx)
        parts.append(idx)
    return parts[0], parts[1], parts[2]


def _split(x: np.ndarray, y: np.ndarray) -> tuple[Split, Split, Split]:
    train, val, test = (Split(x=x[i], y=y[i]) for i in split_indices(y))
    return train, val, test


def _digits_file() -> str | None:
    """scikit-learn's digits.csv.gz, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "datasets", "data", "digits.csv.gz")
        if os.path.isfile(path):
            return path
    return None


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images as (n, 8, 8) in 0..16, labels) of scikit-learn's digits.

    Read straight from the file scikit-learn ships (one row per image: 64 pixels
    then the label), which is what `load_digits` does: importing scikit-learn
    (and SciPy) for it costs each training process CPU-seconds, paid on every
    worker before its first step. Falls back to `load_digits` when the
    file is not where it used to be.
    """
    path = _digits_file()
    if path is None:
        try:
            from sklearn.datasets import load_digits
        except ImportError as exc:
            raise DatasetUnavailable(
                f"digits comes with scikit-learn, which cannot be imported ({exc}); "
                "install the pinned requirements (requirements.txt)"
            ) from None
        bunch = load_digits()
        return bunch.images, bunch.target
    try:
        rows = np.loadtxt(path, delimiter=",", ndmin=2)
    except (ValueError, OSError, EOFError) as exc:
        raise DatasetUnavailable(
            f"digits: {path} cannot be read ({type(exc).__name__}: {exc}); "
            "reinstall scikit-learn"
        ) from None
    if rows.shape[1] != 65:
        raise DatasetUnavailable(
            f"digits: {path} has {rows.shape[1]} columns per row, expected 65 "
            "(64 pixels and a label); reinstall scikit-learn"
        )
    return rows[:, :64].reshape(-1, 8, 8), rows[:, 64].astype(np.int64)


def _digits() -> Dataset:
    images, target = _digits_arrays()
    x = (images.astype(np.float32) / 16.0)[:, None, :, :]
    y = target.astype(np.int64)
    train, val, test = _split(x, y)
    return Dataset("digits", train, val, test, (1, 8, 8), 10)


def _mnist(data_dir: str, download: bool) -> Dataset:
    try:
        from torchvision.datasets import MNIST
    except ImportError as exc:  # pragma: no cover - torchvision is pinned
        raise DatasetUnavailable(f"mnist needs torchvision: {exc}") from exc

    os.makedirs(data_dir, exist_ok=True)

    def load(train: bool):
        return MNIST(root=data_dir, train=train, download=False)

    try:
        parts = [load(True), load(False)]
    except RuntimeError:
        if not download:
            raise DatasetUnavailable(
                f"mnist: the dataset files are not under {data_dir}/MNIST/raw and "
                "downloading is off. Put the four MNIST files there, pass "
                "--download on a machine with internet access, or use "
                "--dataset digits (offline)."
            ) from None
        from filelock import FileLock

        try:
            with FileLock(os.path.join(data_dir, ".mnist.lock")):
                parts = [
                    MNIST(root=data_dir, train=t, download=True) for t in (True, False)
                ]
        except Exception as exc:  # any network or file failure
            raise DatasetUnavailable(
                f"mnist: download into {data_dir} failed ({type(exc).__name__}: "
                f"{exc}). Use --dataset digits to train offline."
            ) from None
    x = np.concatenate([p.data.numpy() for p in parts]).astype(np.float32) / 255.0
    y = np.concatenate([p.targets.numpy() for p in parts]).astype(np.int64)
    train, val, test = _split(x[:, None, :, :], y)
    return Dataset("mnist", train, val, test, (1, 28, 28), 10)


def _synthetic(n: int = 2048) -> Dataset:
    rng = np.random.default_rng(SPLIT_SEED)
    x = rng.random((n, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, size=n).astype(np.int64)
    train, val, test = _split(x, y)
    return Dataset("synthetic", train, val, test, (3, 32, 32), 10)


def load_dataset(
    name: str, data_dir: str | None = None, download: bool = False
) -> Dataset:
    if name == "digits":
        return _digits()
    if name == "mnist":
        data_dir = data_dir or os.path.expanduser("~/.cache/raygpu/data")
        return _mnist(data_dir, download)
    if name == "synthetic":
        return _synthetic()
    raise JobInputError(
        "--dataset", f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}"
    )
