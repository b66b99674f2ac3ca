"""The node pools of a Google Cloud stack: the CPU system pool and the GPU pools.

They offer what the Kubernetes layer reads of a pool on any cloud (name, vcpus,
memory_gib, gpus_per_node, node_labels, taints, sizes), so raygpu/manifests.py
builds the same Ray worker groups from them as from the AWS pools. GKE node pool
sizes here are totals over the stack's zones (`total_*_node_count`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, StrictBool, StrictInt, ValidationInfo, field_validator

from raygpu import clouds
from raygpu.config.fields import ConfigModel, bad, matching
from raygpu.config.pools import MAX_DISK_GIB, GpuPoolSizes, SystemPoolSizes
from raygpu.names import GPU_TAINT_EFFECT, GPU_TAINT_KEY


@dataclass(frozen=True)
class MachineSpec:
    vcpus: int
    memory_gib: float
    # (accelerator type, count) a machine family comes with; None for N1, which
    # takes attached T4s (ATTACHABLE), and for CPU machines.
    gpus: tuple[str, int] | None = None


# GKE accelerator types (the `cloud.google.com/gke-accelerator` label) and the GPU
# model they carry (the `raygpu.io/gpu-model` label, spelled as on AWS).
ACCELERATORS = {
    "nvidia-l4": "L4",
    "nvidia-tesla-t4": "T4",
    "nvidia-tesla-a100": "A100-40G",
    "nvidia-a100-80gb": "A100-80G",
    "nvidia-h100-80gb": "H100",
}
# Accelerators attached to N1 machines, and the counts GKE accepts.
ATTACHABLE = {"nvidia-tesla-t4": (1, 2, 4)}

# Compute Engine machine types (cloud.google.com/compute/docs/machine-resource).
MACHINES = {
    "e2-standard-4": MachineSpec(4, 16),
    "e2-standard-8": MachineSpec(8, 32),
    "n2-standard-4": MachineSpec(4, 16),
    "n2-standard-8": MachineSpec(8, 32),
    "n1-standard-4": MachineSpec(4, 15),
    "n1-standard-8": MachineSpec(8, 30),
    "n1-standard-16": MachineSpec(16, 60),
    "g2-standard-4": MachineSpec(4, 16, ("nvidia-l4", 1)),
    "g2-standard-8": MachineSpec(8, 32, ("nvidia-l4", 1)),
    "g2-standard-12": MachineSpec(12, 48, ("nvidia-l4", 1)),
    "g2-standard-16": MachineSpec(16, 64, ("nvidia-l4", 1)),
    "g2-standard-24": MachineSpec(24, 96, ("nvidia-l4", 2)),
    "g2-standard-48": MachineSpec(48, 192, ("nvidia-l4", 4)),
    "a2-highgpu-1g": MachineSpec(12, 85, ("nvidia-tesla-a100", 1)),
    "a2-highgpu-2g": MachineSpec(24, 170, ("nvidia-tesla-a100", 2)),
    "a2-ultragpu-1g": MachineSpec(12, 170, ("nvidia-a100-80gb", 1)),
    "a3-highgpu-8g": MachineSpec(208, 1872, ("nvidia-h100-80gb", 8)),
}
CPU_MACHINES = tuple(n for n, s in MACHINES.items() if s.gpus is None)
GPU_MACHINES = tuple(n for n, s in MACHINES.items() if s.gpus is not None)
ATTACHING_MACHINES = tuple(n for n in CPU_MACHINES if n.startswith("n1-"))

_PoolName = matching(
    r"^[a-z][a-z0-9-]{0,29}$",
    "1-30 lowercase letters, digits or '-', starting with a letter",
)
_Machine = matching(r"^[a-z0-9]+-[a-z0-9-]+$", "a machine type like g2-standard-8")
_Accelerator = matching(r"^nvidia-[a-z0-9-]+$", "a GKE accelerator like nvidia-l4")


def _allowed(names: tuple[str, ...]) -> str:
    return ", ".join(names)


class _GcpGpuPoolKeys(ConfigModel):
    """The keys of a GKE GPU pool ahead of its sizes."""

    name: _PoolName = Field(
        description="Pool name, unique; the `raygpu.io/pool` label and the Ray "
        "worker group",
    )
    machine_type: _Machine = Field(
        description="A GPU machine type (G2, A2, A3) or an N1 type with attached "
        "T4s, from raygpu/config/gcp_pools.py",
    )
    accelerator_type: _Accelerator = Field(
        description="The GKE accelerator: the one a G2/A2/A3 type comes with, "
        "nvidia-tesla-t4 on N1",
    )
    accelerator_count: StrictInt = Field(
        ge=1,
        le=8,
        description="GPUs per node: the machine type's own count; 1, 2 or 4 T4s on N1",
    )
    spot: StrictBool = Field(False, description="Spot VMs (preemptible, cheaper)")

    @field_validator("machine_type")
    @classmethod
    def _gpu_machine(cls, name: str) -> str:
        if name not in GPU_MACHINES + ATTACHING_MACHINES:
            raise bad(
                f"{name!r} is not a known GPU machine type; allowed: "
                f"{_allowed(GPU_MACHINES + ATTACHING_MACHINES)}"
            )
        return name

    @field_validator("accelerator_type")
    @classmethod
    def _machine_accelerator(cls, accel: str, info: ValidationInfo) -> str:
        machine = info.data.get("machine_type")
        spec = MACHINES.get(machine) if machine else None
        if spec is None:
            return accel  # machineType is wrong, and says so
        allowed = (spec.gpus[0],) if spec.gpus else tuple(ATTACHABLE)
        if accel not in allowed:
            raise bad(f"{machine} takes {_allowed(allowed)}, got {accel!r}")
        return accel

    @field_validator("accelerator_count")
    @classmethod
    def _machine_count(cls, count: int, info: ValidationInfo) -> int:
        machine, accel = (
            info.data.get("machine_type"),
            info.data.get("accelerator_type"),
        )
        if machine is None or accel is None:
            return count
        spec = MACHINES[machine]
        allowed = (spec.gpus[1],) if spec.gpus else ATTACHABLE[accel]
        if count not in allowed:
            listed = ", ".join(str(c) for c in allowed)
            raise bad(f"{machine} with {accel} takes {listed} GPUs, got {count}")
        return count


class GcpGpuPoolConfig(GpuPoolSizes, _GcpGpuPoolKeys):
    """One GKE GPU node pool (and one Ray worker group)."""

    disk_size_gib: StrictInt = Field(
        200,
        ge=100,
        le=MAX_DISK_GIB,
        description="Boot disk in GiB (pd-balanced, encrypted); Ray GPU images "
        "are large",
    )

    def _specs(self) -> list[MachineSpec]:
        return [MACHINES[self.machine_type]]

    @property
    def instance_types(self) -> tuple[str, ...]:
        return (self.machine_type,)

    @property
    def gpus_per_node(self) -> int:
        return self.accelerator_count

    @property
    def gpu_model(self) -> str:
        return ACCELERATORS[self.accelerator_type]

    @property
    def taints(self) -> tuple[tuple[str, str, str], ...]:
        """(key, value, effect) in Kubernetes spelling: GKE's own GPU taint."""
        return ((GPU_TAINT_KEY, clouds.GCP.gpu_taint_value, GPU_TAINT_EFFECT),)


class _GcpSystemPoolKeys(ConfigModel):
    """The key of the GKE system pool ahead of its sizes."""

    machine_type: _Machine = Field(
        "e2-standard-4",
        description="A CPU machine type from raygpu/config/gcp_pools.py",
    )

    @field_validator("machine_type")
    @classmethod
    def _cpu_machine(cls, name: str) -> str:
        if name not in CPU_MACHINES:
            what = "a GPU" if name in GPU_MACHINES else "an unknown"
            raise bad(
                f"{name!r} is {what} machine type; the system pool runs the "
                f"operators and the Ray head on: {_allowed(CPU_MACHINES)}"
            )
        return name


class GcpSystemPoolConfig(SystemPoolSizes, _GcpSystemPoolKeys):
    """The on-demand CPU node pool of the operators and the Ray head."""

    disk_size_gib: StrictInt = Field(
        50,
        ge=20,
        le=MAX_DISK_GIB,
        description="Boot disk in GiB (pd-balanced, encrypted)",
    )

    def _specs(self) -> list[MachineSpec]:
        return [MACHINES[self.machine_type]]
