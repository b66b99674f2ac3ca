"""Resuming a run: which of its checkpoints to trust, and tidying the rest.

Ray Train registers the checkpoints it saw reported; a worker or driver that
died between an upload and its registration leaves others in the run folder.
These functions look at the run folder itself, verify each candidate
(mlcore.checkpointing) and pick the newest good one.
"""

from __future__ import annotations

import tempfile

from mlcore import checkpointing
from mlcore.checkpointing import list_checkpoints
from mlcore.errors import CheckpointError, StorageError
from mlcore.storage import StoragePath, parse_storage


def _run_checkpoints(run_uri: str | None, given=None) -> list:
    """The run's checkpoints in storage, newest first, `given` included.

    They include checkpoints that a worker wrote but Ray Train never registered
    (a worker or the driver died between the upload and the registration): when
    they verify, they hold complete epochs.
    """
    from ray.train import Checkpoint

    if run_uri:
        run = parse_storage(run_uri)
        fs, parent = run.filesystem, run.path
    elif given is not None:
        fs, parent = given.filesystem, given.path.rstrip("/").rsplit("/", 1)[0]
    else:
        return []
    newest_first = [
        Checkpoint(path=c.path, filesystem=fs)
        for c in reversed(list_checkpoints(fs, parent))
    ]
    if given is not None and all(
        c.path != given.path.rstrip("/") for c in newest_first
    ):
        newest_first.insert(0, given)
    return newest_first


def restore(checkpoint, run_uri: str | None = None) -> tuple | None:
    """State from the newest good checkpoint of the run, or None for a fresh one.

    `checkpoint` is the one Ray Train registered last (None when it has none);
    `run_uri` the run folder, whose other checkpoints are candidates too.
    """
    candidates = _run_checkpoints(run_uri, checkpoint)
    problems = []
    for candidate in candidates:
        with candidate.as_directory() as directory:
            try:
                state = checkpointing.load_state(directory)
            except CheckpointError as exc:
                problems.append(str(exc).replace(directory, candidate.path))
                print(f"[raygpu] skipping checkpoint {candidate.path}: {exc}")
                continue
        print(f"[raygpu] restoring from {candidate.path}")
        return state
    if not candidates:
        return None
    raise CheckpointError("no usable checkpoint to resume from: " + "; ".join(problems))


def prune_stray_checkpoints(storage: StoragePath, run_name: str, kept) -> list[str]:
    """Delete the run's checkpoint folders that Ray Train does not keep.

    Train's retention (`--keep-checkpoints`) deletes only checkpoints it
    registered; one uploaded when a worker or the driver died is left behind.
    Called after a successful run with the paths Train kept.
    """
    run = storage.join(run_name)
    keep = {p.rstrip("/") for p in kept}
    removed = []
    for found in list_checkpoints(run.filesystem, run.path):
        if found.path not in keep:
            run.filesystem.delete_dir(found.path)
            removed.append(found.name)
    return removed


def check_resumable(storage: StoragePath, run_name: str) -> str | None:
    """Before training: the checkpoint a rerun will resume from, or None if fresh.

    Verifies the run's checkpoints newest first (as `restore` will on the
    workers) and stops at the first good one. When the run has checkpoints and
    none is usable, raises CheckpointError naming each and why, instead of
    letting every worker restart fail the same way.
    """
    from mlcore.storage import download_dir

    run = storage.join(run_name)
    try:
        found = list_checkpoints(run.filesystem, run.path)
    except OSError as exc:
        raise StorageError(f"run folder {run.uri} cannot be listed: {exc}") from None
    problems = []
    for listed in reversed(found):
        candidate = run.join(listed.name)
        with tempfile.TemporaryDirectory(prefix="rg-verify-") as tmp:
            try:
                checkpointing.verify(download_dir(candidate, tmp))
                return candidate.uri
            except CheckpointError as exc:
                problems.append(str(exc).replace(tmp, candidate.uri))
            except OSError as exc:
                problems.append(f"{candidate.uri} cannot be read: {exc}")
    if problems:
        raise CheckpointError(
            f"run {run.uri} has {len(problems)} checkpoint(s) and none is usable: "
            + "; ".join(problems)
            + ". Delete the run folder to start over, or choose another --run-name."
        )
    return None
