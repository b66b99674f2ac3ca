"""Training on a real local Ray cluster: accuracy, checkpoints, resume."""

import json

import pytest

import train
from mlcore import checkpointing

pytestmark = pytest.mark.slow


def test_two_workers_reach_the_accuracy_bar_via_ray_job_submit(submitted_run):
    run_dir, result, logs = submitted_run
    metrics = result["metrics"]
    assert metrics["test_accuracy"] >= 0.95
    assert metrics["epoch"] == 7
    assert "test_accuracy=" in logs
    # the result file names the checkpoint and the config
    assert result["checkpoint"].endswith("checkpoint_epoch0007_attempt01")
    assert result["config"]["num_workers"] == 2
    assert result["config"]["dataset"] == "digits"


def test_checkpoints_are_written_verified_and_pruned(submitted_run):
    run_dir, result, _ = submitted_run
    kept = sorted(p.name for p in run_dir.glob("checkpoint_epoch*"))
    assert kept == ["checkpoint_epoch0006_attempt01", "checkpoint_epoch0007_attempt01"]
    meta = checkpointing.verify(str(run_dir / kept[-1]))
    assert meta["epoch"] == 7 and meta["starts"] == [0]
    assert meta["model"] == {"name": "mlp", "image_shape": [1, 8, 8], "num_classes": 10}
    assert 0.0 <= meta["metrics"]["val_accuracy"] <= 1.0
    assert meta["metrics"]["train_loss"] > 0


def _run(tmp_path, *extra):
    args = train.parse_args(
        [
            "--num-workers",
            "1",
            "--batch-size",
            "32",
            "--storage-path",
            str(tmp_path),
            "--run-name",
            "resume",
            *extra,
        ]
    )
    return train.run(args)


def test_one_worker_trains_and_a_rerun_resumes_from_the_last_epoch(
    ray_cluster, tmp_path
):
    first = _run(tmp_path, "--epochs", "2")
    assert first["metrics"]["epoch"] == 1
    assert first["metrics"]["start_epoch"] == 0

    second = _run(tmp_path, "--epochs", "4")
    # resumed after epoch 1: epochs 2 and 3 ran, not 0..3
    assert second["metrics"]["start_epoch"] == 2
    assert second["metrics"]["epoch"] == 3
    assert second["metrics"]["attempt"] == 2
    meta = checkpointing.verify(second["checkpoint"])
    assert meta["starts"] == [0, 2]
    saved = json.loads((tmp_path / "resume" / "result.json").read_text())
    assert saved["checkpoint"] == second["checkpoint"]
    assert saved["metrics"]["test_accuracy"] > 0.5
