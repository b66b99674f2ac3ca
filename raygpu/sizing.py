"""Kubernetes quantities, and what a node leaves for Ray's pods.

The one quantity parser (Kubernetes' `resource.Quantity` grammar: a decimal number
with an optional binary suffix Ki..Ei, decimal suffix n, u, m, k, M..E, or an
exponent e<int>) and the one rule for whether the Ray head fits a system node.
The config model (`raygpu.config`) and the manifest builders (`raygpu.manifests`)
both import them; this module imports neither.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction

BINARY_SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
DECIMAL_SUFFIXES = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
# "1E" is one exa; "1E3" is 1 * 10**3 (the exponent wins when digits follow).
_QUANTITY_RE = re.compile(
    rf"^(?P<number>{_NUMBER})"
    rf"(?:(?P<suffix>[KMGTPE]i|[numkMGTPE])|[eE](?P<exponent>[+-]?[0-9]+))?$"
)

# What a node keeps for itself (see `allocatable`).
# Kernel/firmware: EC2's nominal memory is a little more than the OS sees.
OS_MEMORY_FRACTION = 0.04
# EKS AMI kube-reserved memory: 255 MiB + 11 MiB per pod, at up to 110 pods.
KUBE_RESERVED_MEMORY_MIB = 255 + 11 * 110
EVICTION_HARD_MEMORY_MIB = 100
# DaemonSets on every node: aws-node (VPC CNI), kube-proxy, EBS CSI node,
# EKS Pod Identity agent, the NVIDIA device plugin on GPU nodes.
DAEMONSET_CPU_MILLI = 500
DAEMONSET_MEMORY_MIB = 768
MIN_HEAD_MEMORY_GIB = 1


class QuantityError(ValueError):
    """Text that is not a Kubernetes quantity."""


def quantity(text: str) -> Fraction:
    """The exact value of a Kubernetes quantity ("8Gi", "500m", "1.5", "2e3")."""
    match = _QUANTITY_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise QuantityError(f"{text!r} is not a Kubernetes quantity")
    value = Fraction(Decimal(match["number"]))
    if match["exponent"] is not None:
        return value * Fraction(10) ** int(match["exponent"])
    suffix = match["suffix"] or ""
    return value * BINARY_SUFFIXES.get(suffix, DECIMAL_SUFFIXES.get(suffix, 1))


def cpu_milli(text: str) -> int:
    """A CPU quantity in millicores, rounded up as Kubernetes does."""
    return math.ceil(quantity(text) * 1000)


def memory_bytes(text: str) -> int:
    """A memory quantity in bytes, rounded up as Kubernetes does."""
    return math.ceil(quantity(text))


def kube_reserved_cpu_milli(vcpus: int) -> int:
    """The EKS AMI's kube-reserved CPU: 6 % of the first core, 1 % of the second,
    0.5 % of the next two, 0.25 % of the rest."""
    shares = [60, 10, 5, 5] + [2.5] * max(0, vcpus - 4)
    return int(math.ceil(sum(shares[:vcpus])))


def allocatable(vcpus: int, memory_gib: float) -> tuple[int, int]:
    """(millicores, MiB) a node of this size leaves for one big pod, after the
    kubelet's reservations, the eviction threshold and the DaemonSets."""
    cpu = vcpus * 1000 - kube_reserved_cpu_milli(vcpus) - DAEMONSET_CPU_MILLI
    memory = int(memory_gib * 1024 * (1 - OS_MEMORY_FRACTION))
    memory -= KUBE_RESERVED_MEMORY_MIB + EVICTION_HARD_MEMORY_MIB
    memory -= DAEMONSET_MEMORY_MIB
    return cpu, memory


def head_cpu_problem(cpu: str, vcpus: int, memory_gib: float) -> str | None:
    """What is wrong with the head's CPU request on a system node of this size
    (None when it fits); raises QuantityError for text that is no quantity."""
    left, _ = allocatable(vcpus, memory_gib)
    if 0 < cpu_milli(cpu) <= left:
        return None
    return (
        f"must be above 0 and fit the smallest system instance ({vcpus} vCPUs leave "
        f"{left}m after the kubelet's reservations and DaemonSets), got {cpu!r}"
    )


def head_memory_problem(memory: str, vcpus: int, memory_gib: float) -> str | None:
    """What is wrong with the head's memory request on a system node of this size
    (None when it fits); raises QuantityError for text that is no quantity."""
    _, left = allocatable(vcpus, memory_gib)
    if MIN_HEAD_MEMORY_GIB * 2**30 <= memory_bytes(memory) <= left * 2**20:
        return None
    return (
        f"must be at least {MIN_HEAD_MEMORY_GIB}Gi and fit the smallest system "
        f"instance ({memory_gib:g} GiB leave {left}Mi after the kubelet's "
        f"reservations and DaemonSets), got {memory!r}"
    )
