"""A model that cannot fit one worker's memory under DDP trains under FSDP.

A real limit, not arithmetic: each of 2 gloo ranks caps its own data segment
(RLIMIT_DATA: heap and private mappings, what tensors live in) at its size after
start-up plus the same budget, then builds preset "base" cut to 6 blocks (about
43 million parameters) and takes an AdamW step. The budget sits between what FSDP
at 2 ranks holds (half the parameters, gradients and optimizer state) and what
DDP holds (all of them). Both runs use the same fixed glibc mmap threshold, so
that freed buffers (FSDP's gathered parameters) go back to the kernel instead of
staying mapped and counted.
"""

from __future__ import annotations

import json

import pytest

from lm.model import num_parameters, resolve_config
from raygpu.localray import free_port
from tests.ray_jobs.lm_ranks import launch

pytestmark = pytest.mark.slow
PRESET, N_LAYER = "base", 6


def run_capped(strategy: str, budget_mb: int, tmp_path) -> list[dict]:
    out = tmp_path / strategy
    files = [tmp_path / f"{strategy}.rank{r}.json" for r in range(2)]
    args = ["-m", "tests.ray_jobs.lm_ranks", "memory", strategy, PRESET]
    procs = launch(
        [*args, str(N_LAYER), str(budget_mb), str(out)],
        world=2,
        port=free_port(),
        timeout_s=180,
        env={"MALLOC_MMAP_THRESHOLD_": str(4 << 20)},
        until=lambda: all(f.exists() for f in files),
    )
    missing = [f.name for f in files if not f.exists()]
    assert not missing, [p.stdout[-2000:] for p in procs]
    return [json.loads(f.read_text()) for f in files]


def test_a_model_too_big_for_a_worker_under_ddp_trains_under_fsdp(tmp_path):
    config, _ = resolve_config(PRESET, n_layer=N_LAYER)
    param_bytes = 4 * num_parameters(config)  # fp32
    # DDP holds params + grads + two Adam moments: 4x; FSDP at 2 ranks half that.
    ddp_state, fsdp_state = 4 * param_bytes, 2 * param_bytes
    budget_mb = int(0.8 * ddp_state) >> 20
    assert fsdp_state < budget_mb << 20 < ddp_state

    ddp = run_capped("ddp", budget_mb, tmp_path)
    fsdp = run_capped("fsdp", budget_mb, tmp_path)

    for rank in ddp:
        assert rank["ok"] is False, rank
        assert (
            "can't allocate memory" in rank["error"] or "MemoryError" in rank["error"]
        )
    for rank in fsdp:
        assert rank["ok"] is True, rank
        assert rank["loss"] < 6.5
        held = rank["memory"]["total_bytes"]
        assert held < budget_mb << 20
        assert abs(held - fsdp_state) / fsdp_state < 0.01  # measured, not assumed
    print(
        f"\nRLIMIT_DATA {budget_mb} MiB a rank over start-up, {PRESET} with "
        f"{N_LAYER} blocks ({param_bytes / 4e6:.0f}M parameters): DDP failed "
        f"({ddp[0]['error'][:70]}...); FSDP trained holding "
        f"{fsdp[0]['memory']['total_bytes'] / 2**20:.0f} MiB of parameters, "
        "gradients and optimizer state a rank"
    )
