"""The node pools of an Azure stack: the CPU system pool and the GPU pools.

They offer what the Kubernetes layer reads of a pool on any cloud (name, vcpus,
memory_gib, gpus_per_node, node_labels, taints, sizes), so raygpu/manifests.py
builds the same Ray worker groups from them as from the AWS and GCP pools. An AKS
pool has one VM size.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, StrictBool, StrictInt, field_validator

from raygpu.config.fields import ConfigModel, bad, matching
from raygpu.config.pools import MAX_DISK_GIB, GpuPoolSizes, SystemPoolSizes
from raygpu.names import GPU_TAINT_EFFECT, GPU_TAINT_KEY, GPU_TAINT_VALUE

# AKS puts this taint on every Spot pool itself; the stack declares it too, so
# Pulumi sees no drift and Ray's workers tolerate it.
SPOT_TAINT = ("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule")


@dataclass(frozen=True)
class VmSpec:
    vcpus: int
    memory_gib: float
    gpus: int = 0
    gpu_model: str | None = None  # the `raygpu.io/gpu-model` label, as on AWS


# Azure VM sizes (learn.microsoft.com/azure/virtual-machines/sizes). Only sizes
# with whole GPUs: the fractional NVadsA10 v5 sizes are vGPU partitions that the
# NVIDIA device plugin does not advertise.
VM_SIZES = {
    "Standard_D2s_v5": VmSpec(2, 8),
    "Standard_D4s_v5": VmSpec(4, 16),
    "Standard_D8s_v5": VmSpec(8, 32),
    "Standard_D16s_v5": VmSpec(16, 64),
    "Standard_D4as_v5": VmSpec(4, 16),
    "Standard_D8as_v5": VmSpec(8, 32),
    "Standard_NC4as_T4_v3": VmSpec(4, 28, 1, "T4"),
    "Standard_NC8as_T4_v3": VmSpec(8, 56, 1, "T4"),
    "Standard_NC16as_T4_v3": VmSpec(16, 110, 1, "T4"),
    "Standard_NC64as_T4_v3": VmSpec(64, 440, 4, "T4"),
    "Standard_NV36ads_A10_v5": VmSpec(36, 440, 1, "A10"),
    "Standard_NV72ads_A10_v5": VmSpec(72, 880, 2, "A10"),
    "Standard_NC24ads_A100_v4": VmSpec(24, 220, 1, "A100-80G"),
    "Standard_NC48ads_A100_v4": VmSpec(48, 440, 2, "A100-80G"),
    "Standard_NC96ads_A100_v4": VmSpec(96, 880, 4, "A100-80G"),
}
CPU_SIZES = tuple(n for n, s in VM_SIZES.items() if not s.gpus)
GPU_SIZES = tuple(n for n, s in VM_SIZES.items() if s.gpus)

# AKS: a Linux pool's name is 1-12 lowercase letters and digits.
_PoolName = matching(
    r"^[a-z][a-z0-9]{0,11}$",
    "1-12 lowercase letters or digits, starting with a letter (AKS pool names)",
)
_VmSize = matching(r"^Standard_[A-Za-z0-9_]+$", "a VM size like Standard_D4s_v5")


class _AzureGpuPoolKeys(ConfigModel):
    """The keys of an AKS GPU pool ahead of its sizes."""

    name: _PoolName = Field(
        description="Pool name, unique; the AKS pool, the `raygpu.io/pool` label "
        "and the Ray worker group",
    )
    vm_size: _VmSize = Field(
        description="A GPU VM size (NCasT4_v3, NVadsA10_v5, NCadsA100_v4) from "
        "raygpu/config/azure_pools.py",
    )
    spot: StrictBool = Field(
        False,
        description="Spot VMs (evicted when Azure needs the capacity, deleted on "
        "eviction; much cheaper)",
    )

    @field_validator("vm_size")
    @classmethod
    def _gpu_size(cls, name: str) -> str:
        if name not in GPU_SIZES:
            what = "a CPU" if name in CPU_SIZES else "not a known GPU"
            raise bad(f"{name!r} is {what} VM size; allowed: {', '.join(GPU_SIZES)}")
        return name


class AzureGpuPoolConfig(GpuPoolSizes, _AzureGpuPoolKeys):
    """One AKS GPU node pool (mode User; and one Ray worker group)."""

    disk_size_gib: StrictInt = Field(
        200,
        ge=100,
        le=MAX_DISK_GIB,
        description="OS disk in GiB (managed, encrypted at rest); Ray GPU images "
        "are large",
    )

    def _specs(self) -> list[VmSpec]:
        return [VM_SIZES[self.vm_size]]

    @property
    def instance_types(self) -> tuple[str, ...]:
        return (self.vm_size,)

    @property
    def gpus_per_node(self) -> int:
        return VM_SIZES[self.vm_size].gpus

    @property
    def gpu_model(self) -> str:
        return VM_SIZES[self.vm_size].gpu_model or ""

    @property
    def taints(self) -> tuple[tuple[str, str, str], ...]:
        """(key, value, effect) in Kubernetes spelling: the GPU taint, and AKS's
        own Spot taint on a Spot pool."""
        gpu = (GPU_TAINT_KEY, GPU_TAINT_VALUE, GPU_TAINT_EFFECT)
        return (gpu, SPOT_TAINT) if self.spot else (gpu,)


class _AzureSystemPoolKeys(ConfigModel):
    """The key of the AKS system pool ahead of its sizes."""

    vm_size: _VmSize = Field(
        "Standard_D4s_v5",
        description="A CPU VM size from raygpu/config/azure_pools.py",
    )

    @field_validator("vm_size")
    @classmethod
    def _cpu_size(cls, name: str) -> str:
        if name not in CPU_SIZES:
            what = "a GPU" if name in GPU_SIZES else "an unknown"
            raise bad(
                f"{name!r} is {what} VM size; the system pool runs the operators "
                f"and the Ray head on: {', '.join(CPU_SIZES)}"
            )
        return name


class AzureSystemPoolConfig(SystemPoolSizes, _AzureSystemPoolKeys):
    """The on-demand CPU pool (AKS mode System) of the operators and the Ray head."""

    disk_size_gib: StrictInt = Field(
        50,
        ge=30,
        le=MAX_DISK_GIB,
        description="OS disk in GiB (managed, encrypted at rest)",
    )

    def _specs(self) -> list[VmSpec]:
        return [VM_SIZES[self.vm_size]]
