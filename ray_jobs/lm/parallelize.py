"""How the GPT is spread over the workers: one function per technique.

FSDP2 (`fully_shard` on each block, then the root) on a model built on the meta
device and materialised shard by shard, so no rank ever holds the whole model;
DDP (every rank a full replica) for the same model, to compare against. Ray's
`prepare_model(parallel_strategy="fsdp")` wraps the older FSDP1 and refuses the
CPU, so the sharding is done here by hand, on the process group Ray Train set up
(gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    checkpoint_wrapper,
)
from torch.distributed.fsdp import (
    CPUOffloadPolicy,
    FSDPModule,
    MixedPrecisionPolicy,
    fully_shard,
)
from torch.nn.parallel import DistributedDataParallel

from lm.model import GPT, GPTConfig, build_model
from mlcore.errors import JobInputError

STRATEGIES = ("fsdp", "ddp")
PRECISIONS = ("auto", "fp32", "bf16")


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 compute when asked, or on "auto" where the GPU has it."""
    if precision == "bf16":
        return True
    return (
        precision == "auto"
        and device.type == "cuda"
        and torch.cuda.is_available()
        and torch.cuda.is_bf16_supported()
    )


def apply_ac(model: GPT) -> None:
    """Activation checkpointing: each block keeps only its input and recomputes
    the rest in backward (memory for compute). State-dict names are unchanged."""
    for i, block in enumerate(model.blocks):
        model.blocks[i] = checkpoint_wrapper(block, preserve_rng_state=False)


def apply_fsdp(
    model: GPT,
    bf16: bool = False,
    cpu_offload: bool = False,
    reshard_after_forward: bool = True,
) -> None:
    """Shard every block in its own group, then the root (embeddings, final
    norm, head). bf16 parameters for compute with fp32 reductions when `bf16`;
    the sharded fp32 parameters stay the optimizer's."""
    mp = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if bf16
        else MixedPrecisionPolicy()
    )
    kwargs = {"mp_policy": mp}
    if cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy(
            pin_memory=torch.cuda.is_available()
        )
    for block in model.blocks:
        fully_shard(block, reshard_after_forward=reshard_after_forward, **kwargs)
    # The root's parameters are needed again first in backward: keep them.
    fully_shard(model, reshard_after_forward=False, **kwargs)


def build_parallel_model(
    config: GPTConfig,
    strategy: str,
    device: torch.device,
    *,
    bf16: bool = False,
    activation_checkpointing: bool = False,
    cpu_offload: bool = False,
    seed: int = 0,
) -> nn.Module:
    """The GPT, initialised and spread over the current process group.

    Built on the meta device first (no memory), then sharded (FSDP) or left
    whole (DDP), then materialised with `to_empty` and initialised in place: under
    FSDP each rank allocates and initialises only its own shards.
    """
    if strategy not in STRATEGIES:
        raise JobInputError(
            "--strategy", f"unknown {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    if cpu_offload and strategy != "fsdp":
        raise JobInputError("--cpu-offload", "needs --strategy fsdp")
    model = build_model(config, "meta")
    if activation_checkpointing:
        apply_ac(model)
    if strategy == "fsdp":
        apply_fsdp(model, bf16=bf16, cpu_offload=cpu_offload)
        model.to_empty(device="cpu" if cpu_offload else device)
    else:
        model.to_empty(device=device)
    model.init_weights(seed)
    if strategy == "ddp":
        ids = [device.index] if device.type == "cuda" else None
        # Grads as views of DDP's buckets: no second copy of every gradient.
        model = DistributedDataParallel(
            model, device_ids=ids, gradient_as_bucket_view=True
        )
    return model


def unwrap(model: nn.Module) -> GPT:
    """The GPT inside a DDP wrapper (FSDP2 modifies the module in place)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def autocast(model: nn.Module, device: torch.device, bf16: bool):
    """Autocast for DDP in bf16; FSDP2 casts through its MixedPrecisionPolicy."""
    enabled = bf16 and not isinstance(model, FSDPModule)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
