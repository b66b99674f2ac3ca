"""The node pools of a stack: the CPU system pool and the GPU pools.

minSize, maxSize and desiredSize relate to each other: each later one checks
itself against the earlier ones in `info.data` (see raygpu.config.model).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import Field, StrictInt, StrictStr, ValidationInfo, field_validator

from raygpu import instance_types
from raygpu.config.fields import (
    ConfigModel,
    Entries,
    bad,
    listing,
    matching,
    one_of,
    several,
)
from raygpu.names import (
    AWS_GPU_LABEL,
    GPU_MODEL_LABEL,
    GPU_NODE_ROLE,
    GPU_TAINT_EFFECT,
    GPU_TAINT_KEY,
    GPU_TAINT_VALUE,
    NODE_ROLE_LABEL,
    POOL_LABEL,
    SYSTEM_NODE_ROLE,
)

MAX_POOL_NODES = 100
MAX_DISK_GIB = 16384
SYSTEM_DESIRED_SIZE = 2

_PoolName = matching(
    r"^[a-z][a-z0-9-]{0,29}$",
    "1-30 lowercase letters, digits or '-', starting with a letter",
)
_InstanceTypes = listing(StrictStr, Entries(1))
_Nodes = Annotated[StrictInt, Field(le=MAX_POOL_NODES)]
_CapacityType = one_of("ON_DEMAND", "SPOT")


def _max_not_below_min(value: int, info: ValidationInfo) -> int:
    low = info.data.get("min_size")
    if low is not None and value < low:
        raise bad(f"must be >= minSize ({low}), got {value}")
    return value


def _desired_within(default: Callable[[int, int], int]) -> Any:
    """A pool's desiredSize: `default(minSize, maxSize)` when not given, then
    checked against both."""

    def check(value: int | None, info: ValidationInfo) -> int | None:
        low, high = info.data.get("min_size"), info.data.get("max_size")
        if low is None or high is None:
            return value  # minSize or maxSize is wrong, and says so
        value = default(low, high) if value is None else value
        if not low <= value <= high:
            raise bad(
                f"must be between minSize ({low}) and maxSize ({high}), got {value}"
            )
        return value

    return check


class _NodeSpecs(ConfigModel, ABC):
    """What the Kubernetes layer reads of the node types of a pool on any cloud."""

    @abstractmethod
    def _specs(self) -> Sequence[Any]:
        """The specs (vcpus, memory_gib) of the pool's node types."""

    @property
    def vcpus(self) -> int:
        return min(s.vcpus for s in self._specs())

    @property
    def memory_gib(self) -> float:
        return min(s.memory_gib for s in self._specs())


class GpuPoolSizes(_NodeSpecs):
    """minSize and maxSize of a GPU pool on any cloud, and its labels. A cloud's
    pool class lists it first and the class of its own leading keys (name, type)
    second: pydantic puts the last base's fields first, as the docs table shows."""

    min_size: _Nodes = Field(0, ge=0, description="Minimum nodes; 0 scales to zero")
    max_size: _Nodes = Field(2, ge=1, description="Maximum nodes, >= minSize")

    _check_max = field_validator("max_size")(_max_not_below_min)

    @property
    @abstractmethod
    def gpu_model(self) -> str:
        """The `raygpu.io/gpu-model` label of the pool's nodes."""

    @property
    def node_labels(self) -> dict[str, str]:
        """The labels the stack sets (GKE and AKS add their accelerator label)."""
        return {
            NODE_ROLE_LABEL: GPU_NODE_ROLE,
            POOL_LABEL: self.name,
            GPU_MODEL_LABEL: self.gpu_model,
        }


class SystemPoolSizes(_NodeSpecs):
    """minSize, maxSize and desiredSize of the system pool on any cloud, and its
    labels; a cloud's pool class lists it first, as with `GpuPoolSizes`."""

    min_size: _Nodes = Field(2, ge=1, description="Minimum nodes")
    max_size: _Nodes = Field(3, ge=1, description="Maximum nodes, >= minSize")
    desired_size: _Nodes | None = Field(
        None,
        ge=0,
        description="Nodes at creation, minSize..maxSize",
        json_schema_extra={
            "shown_default": f"`{SYSTEM_DESIRED_SIZE}`, moved into minSize..maxSize"
        },
    )

    _check_max = field_validator("max_size")(_max_not_below_min)
    _check_desired = field_validator("desired_size")(
        _desired_within(lambda low, high: min(max(SYSTEM_DESIRED_SIZE, low), high))
    )

    @property
    def node_labels(self) -> dict[str, str]:
        return {NODE_ROLE_LABEL: SYSTEM_NODE_ROLE}


class _GpuPoolKeys(ConfigModel):
    """The keys of an AWS GPU pool ahead of its sizes."""

    name: _PoolName = Field(
        description="Pool name, unique; the `raygpu.io/pool` label and the Ray "
        "worker group",
    )
    instance_types: _InstanceTypes = Field(
        description="GPU instance types from raygpu/instance_types.py, all of one "
        "GPU model (the `raygpu.io/gpu-model` label)",
    )
    capacity_type: _CapacityType = Field(
        "ON_DEMAND", description="On-demand or spot instances"
    )

    @field_validator("instance_types")
    @classmethod
    def _gpu_types_of_one_model(cls, types: tuple[str, ...]) -> tuple[str, ...]:
        allowed = ", ".join(instance_types.gpu_instance_names())
        problems = []
        for i, name in enumerate(types):
            if not instance_types.is_gpu_instance(name):
                what = "a GPU" if instance_types.is_known(name) else "a known"
                problems.append(
                    ((i,), f"{name!r} is not {what} instance type; allowed: {allowed}")
                )
        if problems:
            raise several(problems)
        models = {instance_types.INSTANCE_TYPES[n].gpu_model for n in types}
        if len(models) > 1:
            raise bad(
                "must all have the same GPU model (the pool's nodes carry one "
                f"GPU-model label), got {', '.join(sorted(models))}"
            )
        return types


class GpuPoolConfig(GpuPoolSizes, _GpuPoolKeys):
    """One managed GPU node group (and one Ray worker group)."""

    desired_size: _Nodes | None = Field(
        None,
        ge=0,
        description="Nodes at creation, minSize..maxSize; Pulumi leaves later "
        "changes by autoscalers alone",
        json_schema_extra={"shown_default": "minSize"},
    )
    disk_size_gib: StrictInt = Field(
        200,
        ge=100,
        le=MAX_DISK_GIB,
        description="Root volume in GiB (gp3, encrypted); Ray GPU images are large",
    )

    _check_desired = field_validator("desired_size")(
        _desired_within(lambda low, high: low)
    )

    def _specs(self) -> list[instance_types.InstanceSpec]:
        return [instance_types.INSTANCE_TYPES[n] for n in self.instance_types]

    @property
    def gpus_per_node(self) -> int:
        return min(s.gpus for s in self._specs())

    @property
    def gpu_model(self) -> str:
        return self._specs()[0].gpu_model or ""

    @property
    def node_labels(self) -> dict[str, str]:
        gpu = f"nvidia-{self.gpu_model.lower()}"
        return {**super().node_labels, AWS_GPU_LABEL: gpu}

    @property
    def taints(self) -> tuple[tuple[str, str, str], ...]:
        """(key, value, effect) in Kubernetes spelling."""
        return ((GPU_TAINT_KEY, GPU_TAINT_VALUE, GPU_TAINT_EFFECT),)

    def node_usd_hour(self) -> float:
        """Price of the dearest instance type of the pool (an upper bound)."""
        attr = "spot_usd_hour" if self.capacity_type == "SPOT" else "on_demand_usd_hour"
        return max(getattr(s, attr) for s in self._specs())


class _SystemPoolKeys(ConfigModel):
    """The key of the AWS system pool ahead of its sizes."""

    instance_types: _InstanceTypes = Field(
        ("m6i.xlarge",),
        description="CPU instance types from raygpu/instance_types.py",
    )

    @field_validator("instance_types")
    @classmethod
    def _known_cpu_types(cls, types: tuple[str, ...]) -> tuple[str, ...]:
        allowed = ", ".join(instance_types.cpu_instance_names())
        problems = []
        for i, name in enumerate(types):
            if not instance_types.is_known(name):
                problem = f"unknown instance type {name!r}; allowed: {allowed}"
                problems.append(((i,), problem))
            elif instance_types.is_gpu_instance(name):
                problem = (
                    f"{name!r} is a GPU instance type; the system pool runs the "
                    f"operators and the Ray head on CPU instances: {allowed}"
                )
                problems.append(((i,), problem))
        if problems:
            raise several(problems)
        return types


class SystemPoolConfig(SystemPoolSizes, _SystemPoolKeys):
    """The on-demand CPU node group of the operators and the Ray head."""

    disk_size_gib: StrictInt = Field(
        50, ge=20, le=MAX_DISK_GIB, description="Root volume in GiB (gp3, encrypted)"
    )

    def _specs(self) -> list[instance_types.InstanceSpec]:
        return [instance_types.INSTANCE_TYPES[n] for n in self.instance_types]

    def node_usd_hour(self) -> float:
        return max(s.on_demand_usd_hour for s in self._specs())
