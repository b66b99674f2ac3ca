"""The GPT on a real local Ray cluster: FSDP2 over 2 workers submitted as a job,
with one worker killed mid-run, then a resume at 1 worker past a damaged shard.
(DDP against FSDP memory, on the same loop without Ray: test_lm_checkpoint.py.)

Every run: preset "nano" (about 0.5M parameters) at context 64 on 300 kB of the
standard library's source, global batch 4, a checkpoint every 10 steps.
"""

from __future__ import annotations

import json
import math
import shlex
import time
from pathlib import Path

import pytest
import torch

from lm import checkpoint as ckpt
from lm import train as lm_train
from lm.model import PRESETS, num_parameters
from mlcore.storage import parse_storage
from tests.conftest import RAY_JOBS
from tests.ray_jobs.fault_helpers import (
    alive_actor_pids,
    job_client,
    sigkill,
    wait_job,
    wait_until,
)
from tests.ray_jobs.lm_ranks import fixed_input
from tests.ray_jobs.test_lm_checkpoint import SMALL, flip_bytes

pytestmark = pytest.mark.slow
LM = [*SMALL, "--checkpoint-every=10", "--keep-checkpoints=3"]
NANO_PARAMS = num_parameters(PRESETS["nano"])


def train(storage, *extra) -> dict:
    assert lm_train.main([*LM, f"--storage-path={storage}", *extra]) == 0
    return json.loads((Path(storage) / run_name(extra) / "result.json").read_text())


def run_name(argv) -> str:
    return next(a.split("=", 1)[1] for a in argv if a.startswith("--run-name="))


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    return tmp_path_factory.mktemp("lm-ray")


STEPS = 80


def registered_step(run: Path) -> int | None:
    """Step of the newest checkpoint Train has registered (its snapshot)."""
    try:
        snapshot = json.loads((run / "checkpoint_manager_snapshot.json").read_text())
        return int(snapshot["latest_checkpoint_result"]["metrics"]["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@pytest.fixture(scope="module")
def fsdp_run(ray_head, storage):
    """`python -m lm.train` submitted as a job, 2 FSDP workers; once Train has
    registered a first checkpoint one worker gets SIGKILL. (result, registered
    step at the kill, seconds from the kill to the end)."""
    argv = [
        *LM,
        "--num-workers=2",
        f"--max-steps={STEPS}",
        "--keep-checkpoints=100",  # every one is evidence
        "--max-failures=3",
        f"--storage-path={storage}",
        "--run-name=fsdp",
    ]
    client = job_client(ray_head)
    job_id = client.submit_job(
        entrypoint="python -m lm.train " + shlex.join(argv),
        runtime_env={"working_dir": str(RAY_JOBS), "excludes": ["__pycache__"]},
    )
    run = storage / "fsdp"
    try:
        registered = wait_until(
            lambda: registered_step(run), 180, "a first registered checkpoint"
        )
        pids = wait_until(
            lambda: len(p := alive_actor_pids(ray_head, "RayTrainWorker")) == 2 and p,
            60,
            "two RayTrainWorker actors",
        )
        sigkill(pids[-1])
        killed_at = time.monotonic()
        status, logs = wait_job(client, job_id, timeout_s=300)
    finally:
        client.stop_job(job_id)
    assert status == "SUCCEEDED", logs[-3000:]
    result = json.loads((run / "result.json").read_text())
    return result, registered, time.monotonic() - killed_at


def test_a_worker_killed_mid_run_resumes_from_the_latest_sharded_checkpoint(fsdp_run):
    result, registered, recovered_s = fsdp_run
    start = result["starts"][1]
    assert result["starts"] == [0, start] and start >= registered  # one restart
    assert start < STEPS, "the kill came after the run had finished"
    assert result["metrics"]["attempt"] == 2 and result["metrics"]["step"] == STEPS
    # the curve carries on from the checkpoint it resumed: each interval once
    assert [s for s, _ in result["loss_curve"]] == list(range(10, STEPS + 1, 10))
    final = ckpt.verify_local(result["checkpoint"])
    assert final["world_size"] == 2 and final["starts"] == [0, start]
    print(
        f"\nworker kill: registered step {registered}, resumed at step {start}, "
        f"kill to finish {recovered_s:.1f}s"
    )


def test_fsdp_on_two_workers_trains_with_each_rank_holding_half(fsdp_run):
    result = fsdp_run[0]
    losses = [loss for _, loss in result["loss_curve"]]
    assert losses[0] < math.log(320) + 0.2
    assert losses[-1] < 0.7 * losses[0]  # the loss goes down
    metrics = result["metrics"]
    assert metrics["strategy"] == "fsdp" and metrics["world_size"] == 2
    assert metrics["val_perplexity"] < 50 and metrics["tokens_per_second"] > 0
    assert len(metrics["memory_per_rank"]) == 2
    for rank in metrics["memory_per_rank"]:
        # each rank holds half of every fp32 parameter (dim 0 padded to even)
        assert abs(rank["param_bytes"] - 2 * NANO_PARAMS) < 1024
    manifest = ckpt.verify_local(result["checkpoint"])
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata"} <= set(manifest["files"])


def test_a_one_worker_rerun_skips_a_damaged_shard_and_carries_the_loss_on(
    fsdp_run, ray_cluster, storage, capsys
):
    before = dict(fsdp_run[0]["loss_curve"])
    run = storage / "fsdp"
    flip_bytes(run / ckpt.checkpoint_name(STEPS, 2) / "__1_0.distcp")
    previous = next(
        folder.path
        for step, _, folder in ckpt.list_checkpoints(parse_storage(str(run)))
        if step == STEPS - 10
    )
    capsys.readouterr()
    resumed = train(
        storage,
        "--num-workers=1",
        f"--max-steps={STEPS + 10}",
        "--run-name=fsdp",
        "--export",
    )
    out = capsys.readouterr().out
    assert f"resumes from {previous}" in out
    assert resumed["starts"][-1] == STEPS - 10
    assert resumed["metrics"]["world_size"] == 1
    after = dict(resumed["loss_curve"])
    assert list(after) == list(range(10, STEPS + 11, 10))
    # steps STEPS-9..STEPS again, on 1 worker: the same global batches and losses
    assert abs(after[STEPS] - before[STEPS]) < 1e-4 * before[STEPS], (before, after)
    assert after[STEPS + 10] < after[10]
    model, meta = ckpt.load_exported(resumed["export"])
    assert meta["position"]["global_step"] == STEPS + 10
    with torch.no_grad():
        assert torch.isfinite(model(fixed_input())).all()
