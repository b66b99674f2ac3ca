"""Sharded checkpoints through torch.distributed.checkpoint (DCP), and the trust rule.

Every rank saves its own shard of the model and optimizer (`dcp.save` of
`get_state_dict`, so names are the plain model's whatever the wrapping) and its
random-number state, hashing each file as it writes it (no second read), into
its own folder that Ray Train's report merges in storage, or straight into the
checkpoint folder when every rank sees it. Once every rank's files are there
(`commit`: a gather of their digests), one rank writes `manifest.json` into the
checkpoint folder: the model shape, strategy, world size, data position,
metrics and the SHA-256 and size of every file. A folder without a manifest, or
with a file missing, short or failing its digest, is not a checkpoint. Loading
reshards to the current world size (DCP reads whatever pieces each rank needs).

`export_full` turns a sharded checkpoint into one `model.pt` state dict that a
plain `GPT` loads (the serving side), with the same digest rule (`meta.json`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.filesystem import FileSystem
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from lm.model import GPT, GPTConfig, build_model
from mlcore.errors import CheckpointError
from mlcore.storage import StoragePath, read_text, write_text

FORMAT = "raygpu-lm-dcp/1"
EXPORT_FORMAT = "raygpu-lm-export/1"
MANIFEST = "manifest.json"
EXPORT_MODEL = "model.pt"
EXPORT_META = "meta.json"
PREFIX = "checkpoint_step"
_NAME = re.compile(rf"^{PREFIX}(\d+)_attempt(\d+)$")


class CheckpointMismatch(CheckpointError):
    """The checkpoint to resume from does not fit the flags (shape, strategy):
    a usage error, named before any worker starts."""


def checkpoint_name(step: int, attempt: int) -> str:
    return f"{PREFIX}{step:07d}_attempt{attempt:02d}"


def parse_name(name: str) -> tuple[int, int] | None:
    m = _NAME.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def rank_state_file(rank: int) -> str:
    return f"train_state_rank{rank:05d}.pt"


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: str) -> dict[str, Any]:
    return {"sha256": sha256(path), "bytes": os.path.getsize(path)}


class _DigestingStream:
    """A file DCP writes, hashed on the way out."""

    def __init__(self, raw):
        self.raw, self.hash, self.size = raw, hashlib.sha256(), 0

    def write(self, data) -> int:
        n = self.raw.write(data)
        self.hash.update(data)
        self.size += n
        return n

    def tell(self) -> int:
        return self.raw.tell()

    def flush(self) -> None:
        self.raw.flush()

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()


class _DigestingFileSystem(FileSystem):
    """DCP's local filesystem, recording the digest of every file it writes
    (under its final name: `.metadata` is written as a temporary and renamed)."""

    def __init__(self) -> None:
        super().__init__()
        self.digests: dict[str, dict[str, Any]] = {}

    @contextlib.contextmanager
    def create_stream(self, path, mode):
        with super().create_stream(path, mode) as raw:
            if mode != "wb":
                yield raw
                return
            stream = _DigestingStream(raw)
            yield stream
        self.digests[Path(path).name] = {
            "sha256": stream.hash.hexdigest(),
            "bytes": stream.size,
        }

    def rename(self, path, new_path) -> None:
        super().rename(path, new_path)
        if Path(path).name in self.digests:
            self.digests[Path(new_path).name] = self.digests.pop(Path(path).name)


class DigestingWriter(dcp.FileSystemWriter):
    """dcp.FileSystemWriter whose `digests` name each file it wrote."""

    def __init__(self, path: str, **kwargs):
        super().__init__(path, **kwargs)
        self.fs = _DigestingFileSystem()

    @property
    def digests(self) -> dict[str, dict[str, Any]]:
        return self.fs.digests


def rng_state() -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_shard(directory: str, model, optimizer, rank: int) -> dict[str, dict]:
    """This rank's part of a checkpoint, written into local `directory` (its own,
    or the checkpoint folder all ranks share); returns the digests of the files
    this rank wrote (rank 0's include DCP's metadata). A collective."""
    model_sd, optim_sd = get_state_dict(model, optimizer)
    # No fsync: the manifest, not the disk, says a checkpoint is complete, and
    # a staging folder is uploaded next.
    writer = DigestingWriter(directory, sync_files=False)
    dcp.save({"model": model_sd, "optim": optim_sd}, storage_writer=writer)
    digests = dict(writer.digests)
    rng_file = os.path.join(directory, rank_state_file(rank))
    torch.save({"rng": rng_state()}, rng_file)
    digests[rank_state_file(rank)] = file_digest(rng_file)
    return digests


def merge_digests(per_rank: list[dict[str, dict]]) -> dict[str, dict]:
    files: dict[str, dict] = {}
    for digests in per_rank:
        for name, d in digests.items():
            if name in files and files[name] != d:
                raise CheckpointError(f"two ranks wrote different {name}")
            files[name] = d
    return files


def write_manifest(folder: StoragePath, manifest: dict[str, Any]) -> None:
    write_text(folder.join(MANIFEST), json.dumps(manifest, indent=2, sort_keys=True))


def commit(
    folder: StoragePath, manifest: dict[str, Any], digests: dict, rank: int, world: int
) -> None:
    """Once every rank's files are in `folder` (each calls this after its
    upload returned: the gather of their digests is the barrier), rank 0 writes
    the manifest with every file's digest, last. A collective."""
    per_rank = [digests]
    if world > 1:
        per_rank = [None] * world
        dist.all_gather_object(per_rank, digests)
    if rank == 0:
        write_manifest(folder, {**manifest, "files": merge_digests(per_rank)})
    if world > 1:
        dist.barrier()  # nobody carries on (or exits) before the manifest is there


def _parse_manifest(text: str, where: str) -> dict[str, Any]:
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"{where}/{MANIFEST} cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{where}/{MANIFEST} is not a raygpu LM checkpoint")
    if (
        not isinstance(manifest.get("files"), dict)
        or ".metadata" not in manifest["files"]
    ):
        raise CheckpointError(f"{where}/{MANIFEST} lists no DCP metadata")
    return manifest


def verify_local(directory: str, digests: bool = True) -> dict[str, Any]:
    """The manifest of a checkpoint folder on this machine, once every file it
    lists is there with its size (and digest); else CheckpointError saying why."""
    try:
        with open(os.path.join(directory, MANIFEST)) as f:
            manifest = _parse_manifest(f.read(), directory)
    except FileNotFoundError:
        raise CheckpointError(
            f"{directory} is incomplete: {MANIFEST} is missing"
        ) from None
    for name, want in manifest["files"].items():
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise CheckpointError(f"{directory} is incomplete: {name} is missing")
        if os.path.getsize(path) != want["bytes"]:
            raise CheckpointError(f"{directory} is corrupt: {name} has the wrong size")
        if digests and sha256(path) != want["sha256"]:
            raise CheckpointError(f"{directory} is corrupt: {name} fails its checksum")
    return manifest


def verify_remote(folder: StoragePath) -> dict[str, Any]:
    """`verify_local` without the download: the manifest, and every file present
    with its size (digests are checked by the workers once they hold the files)."""
    import pyarrow.fs as pafs

    try:
        manifest = _parse_manifest(read_text(folder.join(MANIFEST)), folder.uri)
    except FileNotFoundError:
        raise CheckpointError(
            f"{folder.uri} is incomplete: {MANIFEST} is missing"
        ) from None
    except OSError as exc:
        if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
            raise CheckpointError(
                f"{folder.uri} is incomplete: {MANIFEST} is missing"
            ) from None
        raise CheckpointError(f"{folder.uri} cannot be read: {exc}") from None
    names = list(manifest["files"])
    infos = folder.filesystem.get_file_info([folder.join(n).path for n in names])
    for name, info in zip(names, infos, strict=True):
        if info.type != pafs.FileType.File:
            raise CheckpointError(f"{folder.uri} is incomplete: {name} is missing")
        if info.size != manifest["files"][name]["bytes"]:
            raise CheckpointError(f"{folder.uri} is corrupt: {name} has the wrong size")
    return manifest


# What a run must keep to carry on from a checkpoint: the batches it has not
# seen follow from the seed, the global batch and the block length.
DATA_FLAGS = {"seed": "--seed", "batch_size": "--batch-size", "seq_len": "--context"}


def check_compatible(
    manifest: dict[str, Any], where: str, config: GPTConfig, run: dict[str, Any]
) -> None:
    """Raise CheckpointMismatch, naming the checkpoint and the flag, when the run
    (`run`: strategy, convert, seed, batch_size, seq_len) cannot carry on from
    it: another model shape, another data order, or another strategy unless
    `convert` (DCP reshards either way; converting is a choice, not a default)."""
    saved = GPTConfig.from_dict(manifest["model"])
    if saved != config:
        raise CheckpointMismatch(
            f"checkpoint {where} was written by another model shape "
            f"({saved.describe()}); this run builds {config.describe()}: use the "
            "same --preset/--n-layer/--n-head/--d-model, or another --run-name"
        )
    for key, flag in DATA_FLAGS.items():
        if manifest[key] != run[key]:
            raise CheckpointMismatch(
                f"checkpoint {where} was written with {flag} {manifest[key]}; this "
                f"run has {flag} {run[key]}, which would change the batches it "
                f"has not seen: use {flag} {manifest[key]}, or another --run-name"
            )
    if manifest["strategy"] != run["strategy"] and not run["convert"]:
        raise CheckpointMismatch(
            f"checkpoint {where} was written with --strategy {manifest['strategy']}; "
            f"this run uses --strategy {run['strategy']}: add --convert-checkpoint "
            f"to reshard it for {run['strategy']}, or use --strategy "
            f"{manifest['strategy']}"
        )


def list_checkpoints(run: StoragePath) -> list[tuple[int, int, StoragePath]]:
    """(step, attempt, folder) of the run's checkpoint folders, newest first."""
    import pyarrow.fs as pafs

    infos = run.filesystem.get_file_info(
        pafs.FileSelector(run.path, allow_not_found=True)
    )
    found = [
        (*key, run.join(info.base_name))
        for info in infos
        if info.type == pafs.FileType.Directory and (key := parse_name(info.base_name))
    ]
    return sorted(found, key=lambda c: c[:2], reverse=True)


def load_shards(directory: str, model, optimizer, rank: int, same_world: bool):
    """Load a verified checkpoint into the (sharded or replicated) model and
    optimizer, resharding as needed; restore this rank's random-number state
    when the world size is the one it was saved at. A collective."""
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=directory)
    set_state_dict(
        model,
        optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optim"],
    )
    rank_file = os.path.join(directory, rank_state_file(rank))
    if same_world and os.path.isfile(rank_file):
        set_rng_state(torch.load(rank_file, weights_only=True)["rng"])
        return True
    return False


# ------------------------------------------------------------------ the export


def export_full(directory: str, out_dir: str) -> dict[str, Any]:
    """Write the consolidated model of a verified checkpoint into `out_dir`
    (`model.pt`, then `meta.json` with its digest, last); return the meta.

    Runs in one process without a process group: DCP reads every shard."""
    manifest = verify_local(directory)
    config = GPTConfig.from_dict(manifest["model"])
    model = build_model(config)
    state = {"model": model.state_dict()}
    dcp.load(state, checkpoint_id=directory, no_dist=True)
    model.load_state_dict(state["model"])
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, EXPORT_MODEL)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    meta = {
        "format": EXPORT_FORMAT,
        "model": config.to_dict(),
        "tokenizer": "bytes",
        "position": manifest["position"],
        "metrics": manifest.get("metrics", {}),
        "source": directory,
        "files": {EXPORT_MODEL: file_digest(path)},
    }
    with open(os.path.join(out_dir, EXPORT_META), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    return meta


def load_exported(directory: str) -> tuple[GPT, dict[str, Any]]:
    """A plain GPT in eval mode on the CPU from an exported folder, and its meta."""
    try:
        with open(os.path.join(directory, EXPORT_META)) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(
            f"{directory} is incomplete: {EXPORT_META} is missing"
        ) from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"{directory}/{EXPORT_META} cannot be read: {exc}"
        ) from None
    if meta.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{directory} is not an exported raygpu LM")
    path = os.path.join(directory, EXPORT_MODEL)
    if (
        not os.path.isfile(path)
        or sha256(path) != meta["files"][EXPORT_MODEL]["sha256"]
    ):
        raise CheckpointError(
            f"{directory} is corrupt: {EXPORT_MODEL} fails its checksum"
        )
    model = build_model(GPTConfig.from_dict(meta["model"]), "meta")
    model.load_state_dict(
        torch.load(path, map_location="cpu", weights_only=True), assign=True
    )
    return model.eval(), meta


def export_to_storage(checkpoint: StoragePath, out: StoragePath) -> dict[str, Any]:
    """`export_full` between storage locations (local or S3): the checkpoint is
    copied down when remote, the export copied up with its meta.json last."""
    import pyarrow.fs as pafs

    from mlcore.storage import download_dir

    with tempfile.TemporaryDirectory(prefix="rg-export-") as tmp:
        src = download_dir(checkpoint, os.path.join(tmp, "ckpt"))
        local_out = os.path.join(tmp, "export")
        meta = export_full(src, local_out)
        out.filesystem.create_dir(out.path, recursive=True)
        for name in (EXPORT_MODEL, EXPORT_META):
            pafs.copy_files(
                os.path.join(local_out, name),
                out.join(name).path,
                source_filesystem=pafs.LocalFileSystem(),
                destination_filesystem=out.filesystem,
            )
    return meta
