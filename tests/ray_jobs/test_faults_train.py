"""Training survives real faults: a killed worker, a killed driver, bad checkpoints.

Every fault happens for real on a local Ray cluster: a RayTrainWorker process gets
SIGKILL mid-run, the job's driver process gets SIGKILL, checkpoint files in
storage are corrupted or removed. The tests assert what a user relies on: the run
finishes, at most the epoch in progress is run again, the accuracy bar still
holds, and a checkpoint that cannot be trusted is never used.
"""

import json
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

import train
from mlcore import checkpointing
from tests.ray_jobs.fault_helpers import (
    alive_actor_pids,
    checkpoints,
    complete_checkpoints,
    driver_pid,
    sigkill,
    submit_train,
    wait_job,
    wait_until,
)

pytestmark = pytest.mark.slow
LOCAL = pafs.LocalFileSystem()


def test_a_worker_killed_mid_run_restarts_from_the_latest_checkpoint(
    ray_head, tmp_path
):
    run = tmp_path / "worker-kill"
    epochs = 16
    client, job_id = submit_train(
        ray_head,
        [
            "--num-workers=2",
            # an epoch takes about 1 s here: the kill comes about 2 epochs after
            # the first registered checkpoint, so 16 leave room on a slow machine
            f"--epochs={epochs}",
            "--batch-size=64",
            f"--storage-path={tmp_path}",
            "--run-name=worker-kill",
            "--max-failures=3",
            "--keep-checkpoints=100",  # keep every one: they are the evidence
        ],
    )
    try:
        # A checkpoint counts once Train has registered it (all ranks reported),
        # which its snapshot in storage records; kill only after that.
        (registered,) = wait_until(
            lambda: (e := registered_epoch(run)) is not None and (e,),
            180,
            "a first registered checkpoint",
        )
        # the workers that wrote it (Train may have replaced a group at start-up)
        pids = wait_until(
            lambda: len(p := alive_actor_pids(ray_head, "RayTrainWorker")) == 2 and p,
            60,
            "two RayTrainWorker actors",
        )
        assert b"RayTrainWorker" in Path(f"/proc/{pids[-1]}/cmdline").read_bytes()
        sigkill(pids[-1])
        killed_at = time.monotonic()
        before = [c[0] for c in complete_checkpoints(LOCAL, str(run))]
        # what attempt 1 left, seen when attempt 2 writes its first checkpoint
        # (stray ones are pruned when the run ends)
        at_restart = wait_until(
            lambda: restarted(checkpoints(LOCAL, str(run))),
            240,
            "a checkpoint from the restarted workers",
        )
        status, logs = wait_job(client, job_id, timeout_s=300)
    finally:
        client.stop_job(job_id)
    assert status == "SUCCEEDED", logs[-3000:]
    recovered_s = time.monotonic() - killed_at

    found = checkpoints(LOCAL, str(run))
    first = [e for e, a, _ in at_restart if a == 1]
    second = [e for e, a, _ in found if a == 2]
    assert {a for _, a, _ in found} <= {1, 2}, found  # exactly one restart
    assert second == list(range(min(second), epochs)), found  # finished the run
    # The restart begins right after the newest checkpoint attempt 1 wrote,
    # registered by Train or not (or repeats that epoch if its upload was cut
    # short): only the epoch in progress when the worker died runs again.
    rerun = max(first) + 1 - min(second)
    assert rerun in (0, 1), (at_restart, found)
    assert min(second) >= max(before), (before, found)
    assert min(second) >= registered + 1, (registered, found)
    meta = checkpointing.verify(found[-1][2])
    assert meta["starts"] == [0, min(second)]

    result = json.loads((run / "result.json").read_text())
    assert result["metrics"]["attempt"] == 2
    assert result["metrics"]["start_epoch"] == min(second)
    assert result["metrics"]["test_accuracy"] >= 0.95
    why = "its checkpoint upload was cut short" if rerun else "in progress"
    print(
        f"\nworker kill: registered epoch {registered}, checkpoints written "
        f"{before} at the kill; attempt 1 wrote epochs {first}, attempt 2 ran "
        f"{second}; epochs run again: 1 (epoch {min(second)}: {why}); "
        f"test_accuracy={result['metrics']['test_accuracy']:.4f}; kill to finish "
        f"{recovered_s:.1f}s"
    )


def restarted(found: list) -> list:
    """`found` once it holds a checkpoint of the second attempt, else []."""
    return found if any(a == 2 for _, a, _ in found) else []


def registered_epoch(run: Path) -> int | None:
    """Epoch of the latest checkpoint in Train's snapshot, None before any."""
    try:
        snapshot = json.loads((run / "checkpoint_manager_snapshot.json").read_text())
        return int(snapshot["latest_checkpoint_result"]["metrics"]["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def flip_bytes(path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _train(storage, *extra) -> list[str]:
    return [
        "--num-workers=1",
        "--batch-size=32",
        f"--storage-path={storage}",
        "--run-name=corrupt",
        *extra,
    ]


def test_a_corrupt_latest_checkpoint_is_skipped_and_all_bad_stops_clearly(
    ray_cluster, tmp_path, capsys
):
    run = tmp_path / "corrupt"
    assert train.main(_train(tmp_path, "--epochs=3", "--keep-checkpoints=3")) == 0
    names = [p.name for p in sorted(run.glob("checkpoint_epoch*"))]
    assert names[-1] == "checkpoint_epoch0002_attempt01"

    # Bytes flipped in the latest model.pt: its checksum fails, the rerun
    # resumes from epoch 1's checkpoint and trains epoch 2 again.
    flip_bytes(run / names[-1] / "model.pt")
    capsys.readouterr()
    assert train.main(_train(tmp_path, "--epochs=4", "--keep-checkpoints=3")) == 0
    out = capsys.readouterr().out
    assert "resumes from " + str(run / "checkpoint_epoch0001_attempt01") in out
    result = json.loads((run / "result.json").read_text())
    assert result["metrics"]["start_epoch"] == 2
    assert result["checkpoint"].endswith("checkpoint_epoch0003_attempt02")
    assert checkpointing.verify(result["checkpoint"])["starts"] == [0, 2]

    # Every checkpoint bad (one incomplete, the others corrupt): a clear
    # message naming each, in seconds, before any worker starts.
    for i, folder in enumerate(sorted(run.glob("checkpoint_epoch*"))):
        if i == 0:
            (folder / "meta.json").unlink()
        else:
            flip_bytes(folder / "model.pt")
    started = time.monotonic()
    rc = train.main(_train(tmp_path, "--epochs=5"))
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert err.startswith(f"error: run {run} has 3 checkpoint(s) and none is usable")
    assert "meta.json is missing" in err and "fails its checksum" in err
    assert "Traceback" not in err
    assert elapsed < 30
    print(f"\nall checkpoints bad: refused in {elapsed:.1f}s")


def test_a_killed_driver_resubmitted_resumes_from_the_latest_checkpoint(
    ray_head, tmp_path
):
    run = tmp_path / "driver-kill"
    argv = [
        "--num-workers=1",
        "--epochs=16",
        "--batch-size=32",
        f"--storage-path={tmp_path}",
        "--run-name=driver-kill",
    ]
    client, job_id = submit_train(ray_head, argv)
    try:
        pid = driver_pid(client, job_id)
        wait_until(
            lambda: len(complete_checkpoints(LOCAL, str(run))) >= 1,
            180,
            "a first checkpoint",
        )
        sigkill(pid)
        status, _ = wait_job(client, job_id, timeout_s=120)
    finally:
        client.stop_job(job_id)
    assert status == "FAILED"
    # the driver's Train controller and workers go with it
    wait_until(
        lambda: not alive_actor_pids(ray_head, "RayTrainWorker"), 120, "workers gone"
    )
    left = complete_checkpoints(LOCAL, str(run))
    assert left and max(e for e, _, _ in left) < 15, left
    last = max(e for e, _, _ in left)

    client, job_id = submit_train(ray_head, argv)  # the same job again
    try:
        status, logs = wait_job(client, job_id, timeout_s=300)
    finally:
        client.stop_job(job_id)
    assert status == "SUCCEEDED", logs[-3000:]
    result = json.loads((run / "result.json").read_text())
    start = result["metrics"]["start_epoch"]
    # resumed after the newest checkpoint written before the kill (registered
    # by Train or not): the one before only if that one's upload was cut short
    assert start in (last, last + 1), (start, left)
    # and retention holds after the fault: stray checkpoints are gone too
    assert [e for e, _, _ in checkpoints(LOCAL, str(run))] == [14, 15]
    assert result["metrics"]["epoch"] == 15
    assert checkpointing.verify(result["checkpoint"])["starts"] == [0, start]
    print(
        f"\ndriver kill: latest checkpoint at the kill epoch {last}; the resubmitted "
        f"job started at epoch {start} (0 would be a restart from scratch)"
    )
