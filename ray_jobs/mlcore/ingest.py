"""Training from a prepared dataset (mlcore.prepared) through Ray Data.

The driver verifies the manifest and hands Ray Train one `read_parquet` dataset
per split (`datasets=`); Train splits them across the workers, and each worker
streams its shard with `iter_torch_batches`: the shards are read, batched and
normalised while the model trains, so a dataset larger than the object store
(or the worker's memory) passes through in bounded memory.

Ray Data runs its read tasks beside the training workers and needs CPUs left
over for them: Train reserves its workers' CPUs first. `data_room` says how
many remain; fractional CPUs per worker (--cpus-per-worker 0.5) leave room on
a small machine.
"""

from __future__ import annotations

import numpy as np
import torch
from ray.data.collate_fn import ArrowBatchCollateFn

from mlcore.errors import DataError
from mlcore.prepared import (
    SPLITS,
    Normalisation,
    Prepared,
    iter_split,
    open_prepared,
    verify,
    xy_arrays,
)

VAL_BATCH = 1024
# Rows a worker's local shuffle buffer holds (besides the prepared shards'
# own shuffle); at least a batch.
SHUFFLE_ROWS = 4096


def read_split(prepared: Prepared, split: str):
    """The split's shards as a Ray Data dataset (read lazily, streamed)."""
    import ray.data

    # Ray Data's default Parquet reader (datasource V2) lists the files again at
    # every epoch and starts a pool of footer-reading actors, new processes, to
    # do it: each epoch's first batch waits for them. The manifest already names
    # every shard, so the V1 reader reads their footers once, here.
    ctx = ray.data.DataContext.get_current()
    before, ctx.use_datasource_v2 = ctx.use_datasource_v2, False
    try:
        return ray.data.read_parquet(
            prepared.shard_paths(split),
            filesystem=prepared.root.filesystem,
            columns=["x", "y"],
        )
    finally:
        ctx.use_datasource_v2 = before


def open_verified(uri: str, num_workers: int, cpus_per_worker: float) -> Prepared:
    """The prepared dataset at `uri`, verified (schema, every shard's checksum)
    before any worker starts; warns when Ray Data would have no CPU to read with."""
    import time

    import ray

    data = open_prepared(uri)
    if data.kind != "classification":
        raise DataError(f"--data {uri} holds {data.kind}, not classification")
    started = time.monotonic()
    verify(data)
    shards = [s for split in SPLITS for s in data.shards(split)]
    mib = sum(s["bytes"] for s in shards) / 2**20
    if not ray.is_initialized():
        ray.init(logging_level="WARNING")
    resources = ray.cluster_resources()
    store = resources.get("object_store_memory", 0.0) / 2**20
    print(
        f"[raygpu] verified {data.root.uri}: {len(shards)} shard(s), {mib:.1f} MiB, "
        f"manifest sha256 {data.digest[:12]} ({time.monotonic() - started:.1f}s); "
        f"streamed through an object store of {store:.0f} MiB"
    )
    cpus = resources.get("CPU", 0.0)
    left = data_room(cpus, num_workers, cpus_per_worker)
    if left < 1:
        print(
            f"[raygpu] warning: the workers reserve {num_workers} x "
            f"{cpus_per_worker:g} of the cluster's {cpus:g} CPUs, leaving Ray Data "
            f"{left:g} to read with; it waits for more (fewer --cpus-per-worker, "
            "e.g. 0.5, leaves it room)"
        )
    return data


def trainer_inputs(prepared: Prepared, in_memory: bool) -> tuple[dict, dict | None]:
    """What train.py's workers get of a verified dataset: its config entry
    (URI, digest, shape, classes, statistics) and, unless each worker loads it
    whole, the `datasets=` for the TorchTrainer."""
    entry = {
        "uri": prepared.root.uri,
        "digest": prepared.digest,
        "shape": list(prepared.image_shape),
        "num_classes": prepared.num_classes,
        "normalisation": prepared.manifest["normalisation"],
        "in_memory": in_memory,
    }
    if in_memory:
        return entry, None
    return entry, {s: read_split(prepared, s) for s in ("train", "val")}


def shard_batches(data: dict, batch_size: int, seed: int, first_epoch: int):
    """(train, val) batches of this worker's shards of the Train datasets."""
    import ray.train

    norm = data["normalisation"]
    train = EpochBatches(
        ray.train.get_dataset_shard("train"),
        batch_size,
        norm,
        shuffle=True,
        seed=seed,
        first_epoch=first_epoch,
    )
    val = EpochBatches(
        ray.train.get_dataset_shard("val"), VAL_BATCH, norm, shuffle=False
    )
    return train, val


def load_in_memory(data: dict):
    """The train and val splits of `data` (train.py's config entry) read whole
    and normalised, as mlcore.data's in-memory datasets: the streaming path's
    baseline."""
    from mlcore.data import Dataset, Split

    prepared = open_prepared(data["uri"])
    norm = Normalisation.from_dict(data["normalisation"])

    def split(name: str) -> Split:
        parts = list(iter_split(prepared, name))
        x = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0,))
        y = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0,), int)
        return Split(x=norm.apply(x), y=y)

    empty = Split(x=np.zeros((0, *prepared.image_shape), np.float32), y=np.zeros(0))
    shape = prepared.image_shape
    return Dataset("prepared", split("train"), split("val"), empty, shape, 0)


def data_room(cluster_cpus: float, num_workers: int, cpus_per_worker: float) -> float:
    """CPUs that Ray Data has for reading once Train has reserved its workers'."""
    return cluster_cpus - num_workers * cpus_per_worker


class XYBatches(ArrowBatchCollateFn):
    """An Arrow batch of (x, y) rows -> (normalised x of `image_shape`, y)."""

    def __init__(self, normalisation: dict):
        super().__init__()
        self.normalisation = Normalisation.from_dict(normalisation)

    def __call__(self, batch):
        x, y = xy_arrays(batch, self.normalisation.image_shape)
        x = self.normalisation.apply(x)
        return torch.from_numpy(x), torch.from_numpy(y)


class EpochBatches:
    """Each iteration streams one epoch of a worker's dataset shard.

    With `shuffle`, rows pass a local shuffle buffer seeded by (seed, epoch):
    each epoch another order."""

    def __init__(
        self,
        shard,
        batch_size: int,
        normalisation: dict,
        *,
        shuffle: bool,
        seed: int = 0,
        first_epoch: int = 0,
    ):
        self.shard = shard
        self.batch_size = batch_size
        self.collate = XYBatches(normalisation)
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = first_epoch

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        shuffle = {}
        if self.shuffle:
            shuffle = {
                "local_shuffle_buffer_size": max(SHUFFLE_ROWS, self.batch_size),
                "local_shuffle_seed": self.seed * 100_003 + epoch,
            }
        return iter(
            self.shard.iter_torch_batches(
                batch_size=self.batch_size,
                collate_fn=self.collate,
                drop_last=False,
                **shuffle,
            )
        )
