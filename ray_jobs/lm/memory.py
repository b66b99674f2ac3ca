"""What a rank holds: parameter, gradient and optimizer-state bytes, measured
from the tensors themselves.

Each tensor is counted by the storage under it (a DTensor by its local shard's),
once per storage: FSDP's padded shards count in full, DDP's gradients, which are
views of its communication buckets, count once as the buckets. Measured after an
optimizer step, when FSDP has freed every gathered parameter.
"""

from __future__ import annotations

import resource
from collections.abc import Iterable

import torch
from torch import nn
from torch.distributed.tensor import DTensor


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages under `tensors` (DTensors: the local part)."""
    seen: dict[tuple[str, int], int] = {}
    for t in tensors:
        if t is None:
            continue
        s = _local(t).untyped_storage()
        if s.nbytes():
            seen[(str(s.device), s.data_ptr())] = s.nbytes()
    return sum(seen.values())


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [
        v
        for state in optimizer.state.values()
        for v in state.values()
        if isinstance(v, torch.Tensor)
    ]


def rank_memory(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """This rank's parameter, gradient and optimizer-state bytes and their sum,
    beside the process's peak resident set (and the GPU's peak when on one)."""
    params = list(model.parameters())
    out = {
        "param_bytes": storage_bytes(params),
        "grad_bytes": storage_bytes(p.grad for p in params),
        "optim_bytes": storage_bytes(optimizer_tensors(optimizer)),
    }
    out["total_bytes"] = out["param_bytes"] + out["grad_bytes"] + out["optim_bytes"]
    # ru_maxrss is in KiB on Linux
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda_peak_bytes"] = int(torch.cuda.max_memory_allocated())
    return out
