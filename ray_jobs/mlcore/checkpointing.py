"""The checkpoint format: what a folder must hold to be trusted.

A checkpoint folder holds `model.pt` (the unwrapped model's state dict),
`optimizer.pt`, and `meta.json`, written last, which records the epoch, the model
spec, the metrics and a SHA-256 of each file. A folder without `meta.json`, or
whose files do not match their digests (an interrupted upload, a truncated or
edited file), is not a checkpoint: `verify` raises `CheckpointError`.

A run folder holds one checkpoint folder per epoch and attempt, named by
`checkpoint_name`; `list_checkpoints` is the one place that reads them back.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs
import torch

from mlcore.errors import CheckpointError
from mlcore.models import ModelSpec, build_model
from mlcore.storage import StoragePath, download_dir, parse_storage

MODEL_FILE = "model.pt"
OPTIMIZER_FILE = "optimizer.pt"
META_FILE = "meta.json"
FORMAT_VERSION = 1
CHECKPOINT_PREFIX = "checkpoint_epoch"
_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)_attempt(\d+)$")


def checkpoint_name(epoch: int, attempt: int) -> str:
    """The folder name of epoch `epoch`'s checkpoint written by attempt `attempt`."""
    return f"{CHECKPOINT_PREFIX}{epoch:04d}_attempt{attempt:02d}"


@dataclass(frozen=True, order=True)
class Listed:
    """A checkpoint folder found in a run folder (ordered oldest first)."""

    epoch: int
    attempt: int
    name: str
    path: str  # in the filesystem it was listed from, without a trailing "/"


def list_checkpoints(fs: pafs.FileSystem, folder: str) -> list[Listed]:
    """The checkpoint folders directly inside `folder` of `fs`, oldest first
    (by epoch, then attempt); [] when `folder` does not exist. Complete or not:
    `verify` says which can be trusted."""
    found = []
    for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
        match = _NAME.match(info.base_name)
        if match and info.type == pafs.FileType.Directory:
            epoch, attempt = int(match.group(1)), int(match.group(2))
            path = info.path.rstrip("/")
            found.append(Listed(epoch, attempt, info.base_name, path))
    return sorted(found)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save(
    directory: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    epoch: int,
    spec: ModelSpec,
    metrics: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint into `directory` (model unwrapped, state moved to CPU)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, os.path.join(directory, MODEL_FILE))
    files = [MODEL_FILE]
    if optimizer is not None:
        torch.save(optimizer.state_dict(), os.path.join(directory, OPTIMIZER_FILE))
        files.append(OPTIMIZER_FILE)
    meta = {
        "format": FORMAT_VERSION,
        "epoch": epoch,
        "model": spec.to_dict(),
        "metrics": metrics,
        **(extra or {}),
    }
    write_meta(directory, files, meta)


def write_meta(directory: str, files: list[str], meta: dict[str, Any]) -> dict:
    """Write `meta` (plus the format and each of `files`' SHA-256) as meta.json,
    last: what `verify` checks. Serving variants (mlcore.variants) use it too."""
    meta = {
        **meta,
        "format": FORMAT_VERSION,
        "files": {name: _sha256(os.path.join(directory, name)) for name in files},
    }
    with open(os.path.join(directory, META_FILE), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    return meta


def verify(directory: str) -> dict[str, Any]:
    """Return the checkpoint's metadata, or raise CheckpointError saying why not."""
    meta_path = os.path.join(directory, META_FILE)
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(
            f"{directory} is incomplete: {META_FILE} is missing"
        ) from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{meta_path} cannot be read: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{meta_path} is not a raygpu checkpoint (format)")
    for name, digest in meta.get("files", {}).items():
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            raise CheckpointError(f"{directory} is incomplete: {name} is missing")
        if _sha256(path) != digest:
            raise CheckpointError(f"{directory} is corrupt: {name} fails its checksum")
    model_file = meta.get("model_file", MODEL_FILE)  # a variant's may differ
    if model_file not in meta.get("files", {}):
        raise CheckpointError(f"{directory} has no {model_file}")
    return meta


def load_state(directory: str) -> tuple[dict, dict, dict | None]:
    """(meta, model state, optimizer state or None) from a verified checkpoint."""
    meta = verify(directory)
    if meta.get("variant", "fp32") != "fp32":  # its weights need mlcore.variants
        raise CheckpointError(
            f"{directory} is the {meta['variant']} serving variant of a checkpoint, "
            "not a training checkpoint; serve it with variant="
            f"{meta['variant']}, or give the checkpoint it was made from"
        )
    model_state = torch.load(
        os.path.join(directory, MODEL_FILE), map_location="cpu", weights_only=True
    )
    optim_path = os.path.join(directory, OPTIMIZER_FILE)
    optim_state = (
        torch.load(optim_path, map_location="cpu", weights_only=True)
        if OPTIMIZER_FILE in meta["files"]
        else None
    )
    return meta, model_state, optim_state


def load_model(directory: str) -> tuple[torch.nn.Module, dict]:
    """Rebuild the network from a checkpoint folder, in eval mode on the CPU."""
    meta, state, _ = load_state(directory)
    model = build_model(ModelSpec.from_dict(meta["model"]))
    model.load_state_dict(state)
    model.eval()
    return model, meta


@contextmanager
def local_copy(uri: str, field: str = "checkpoint") -> Iterator[str]:
    """A local folder holding the checkpoint at `uri` (local path or s3://)."""
    storage = parse_storage(uri, field)
    try:
        info = storage.filesystem.get_file_info(storage.path)
    except OSError as exc:
        raise CheckpointError(f"{field} {uri} cannot be reached: {exc}") from None
    if info.type.name != "Directory":
        raise CheckpointError(f"{field} {uri} does not exist")
    if not storage.is_remote:
        yield storage.path
        return
    with tempfile.TemporaryDirectory(prefix="rg-ckpt-") as tmp:
        yield download_dir(storage, tmp)


def checkpoint_uri(storage: StoragePath, checkpoint_path: str) -> str:
    """The user-facing URI of a checkpoint path inside `storage`'s filesystem."""
    return storage.uri_of(checkpoint_path)
