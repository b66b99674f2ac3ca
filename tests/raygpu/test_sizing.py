"""raygpu.sizing: the one Kubernetes quantity parser and the one head-fits-a-node
rule, which the config model and the manifest builders share."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import pytest

from raygpu import config, manifests, sizing
from raygpu.crd_schema import CRD_VERSION, VENDORED_CRDS
from raygpu.manifests import ManifestError

REPO = Path(__file__).resolve().parents[2]


def kubernetes_quantity_pattern() -> re.Pattern:
    """The Quantity pattern of the vendored KubeRay CRDs (what the API server
    checks every resource amount against)."""
    text = (VENDORED_CRDS / CRD_VERSION / "ray.io_rayclusters.yaml").read_text()
    found = set(re.findall(r"^\s*pattern: (\S*\[KMGTPE\]i\S*)$", text, re.M))
    assert len(found) == 1, found
    return re.compile(found.pop())


NUMBERS = ("1", "0.5", ".5", "5.", "+2", "-3", "1.25", "100")
# Every unit Kubernetes accepts: binary, decimal (n and u too), exponents.
SUFFIXES = (
    "", "n", "u", "m", "k", "M", "G", "T", "P", "E",
    "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "e3", "E3", "e-2", "E+1",
)  # fmt: skip
# Units one of the two former parsers took and Kubernetes does not ("K"), typos,
# and shapes that are no number.
REFUSED = (
    "1K", "1KB", "1gi", "1mi", "1Gb", "1 Gi", "Gi", "", "1.5.5", "1e", "two",
    "8Gi ", " 8Gi", "0x10", "1_000",
)  # fmt: skip


def test_the_parser_accepts_every_unit_kubernetes_accepts():
    pattern = kubernetes_quantity_pattern()
    for number in NUMBERS:
        for suffix in SUFFIXES:
            text = number + suffix
            assert pattern.match(text), text  # the candidates are Kubernetes' own
            sizing.quantity(text)  # raises if refused


@pytest.mark.parametrize("text", REFUSED)
def test_the_parser_refuses_what_kubernetes_refuses(text):
    assert not kubernetes_quantity_pattern().match(text)
    with pytest.raises(sizing.QuantityError):
        sizing.quantity(text)


def test_both_former_units_k_and_lowercase_k_are_settled_as_kubernetes_does():
    # One parser took "K" but not "k", the other both; Kubernetes takes only "k".
    assert sizing.memory_bytes("1k") == 1000
    with pytest.raises(sizing.QuantityError):
        sizing.memory_bytes("1K")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1Ki", 2**10),
        ("3Mi", 3 * 2**20),
        ("8Gi", 8 * 2**30),
        ("1Ti", 2**40),
        ("1Pi", 2**50),
        ("1Ei", 2**60),
        ("1n", Fraction(1, 10**9)),
        ("1u", Fraction(1, 10**6)),
        ("500m", Fraction(1, 2)),
        ("1k", 10**3),
        ("1M", 10**6),
        ("1G", 10**9),
        ("1T", 10**12),
        ("1P", 10**15),
        ("1E", 10**18),  # exa: no digits follow
        ("1E3", 10**3),  # exponent: digits follow
        ("2.5e-1", Fraction(1, 4)),
        ("2.5Gi", Fraction(5, 2) * 2**30),
        ("-1", -1),
    ],
)
def test_quantity_values_are_exact(text, value):
    assert sizing.quantity(text) == value


def test_cpu_and_memory_round_up_as_kubernetes_does():
    assert sizing.cpu_milli("2") == 2000
    assert sizing.cpu_milli("500m") == 500
    assert sizing.cpu_milli("1.5") == 1500
    assert sizing.cpu_milli("0.0001") == 1
    assert sizing.memory_bytes("512Mi") == 512 * 2**20
    assert sizing.memory_bytes("1G") == 10**9
    assert sizing.memory_bytes("1.5") == 2
    with pytest.raises(sizing.QuantityError):
        sizing.memory_bytes("lots")
    with pytest.raises(sizing.QuantityError):
        sizing.cpu_milli(2)  # a number, not the text of a quantity


def test_allocatable_leaves_the_kubelet_and_daemonsets_their_share():
    cpu, memory = sizing.allocatable(4, 16)
    assert cpu == 4000 - (60 + 10 + 5 + 5) - sizing.DAEMONSET_CPU_MILLI
    assert memory == int(16 * 1024 * 0.96) - (255 + 11 * 110) - 100 - 768


# ------------------------------------------------------------ one head rule


HEADS = [
    (cpu, memory)
    for cpu in ("500m", "1", "2", "3", "3400m", "3420m", "3421m", "4", "0")
    for memory in ("512Mi", "1Gi", "8Gi", "13Gi", "13395Mi", "13396Mi", "14Gi")
]


@pytest.mark.parametrize("system", ["m6i.xlarge", "m6i.large", "m6i.2xlarge"])
def test_the_config_and_the_manifests_agree_on_which_heads_fit(system):
    values = {
        **config.stack_file_values(REPO / "Pulumi.dev.yaml"),
        "systemPool": {"instanceTypes": [system]},
        "rayHeadCpu": "500m",
        "rayHeadMemory": "1Gi",
    }
    base = config.load_config("dev", values)
    verdicts = set()
    for cpu, memory in HEADS:
        try:
            config.load_config(
                "dev", {**values, "rayHeadCpu": cpu, "rayHeadMemory": memory}
            )
            config_ok = True
        except config.ConfigError as exc:
            assert set(exc.keys) <= {"raygpu:rayHeadCpu", "raygpu:rayHeadMemory"}
            config_ok = False
        unchecked = base.model_copy(
            update={"ray_head_cpu": cpu, "ray_head_memory": memory}
        )
        try:
            manifests.head_size(unchecked)
            manifest_ok = True
        except ManifestError:
            manifest_ok = False
        assert config_ok == manifest_ok, (system, cpu, memory)
        verdicts.add(config_ok)
    assert verdicts == {True, False}  # the grid straddles the boundary


def test_the_head_boundary_is_what_the_node_leaves():
    cpu, memory = sizing.allocatable(4, 16)
    assert sizing.head_cpu_problem(f"{cpu}m", 4, 16) is None
    assert "3420m" in sizing.head_cpu_problem(f"{cpu + 1}m", 4, 16)
    assert sizing.head_cpu_problem("0", 4, 16)
    assert sizing.head_memory_problem(f"{memory}Mi", 4, 16) is None
    assert sizing.head_memory_problem(f"{memory + 1}Mi", 4, 16)
    assert sizing.head_memory_problem("1Gi", 4, 16) is None
    assert "at least 1Gi" in sizing.head_memory_problem("1023Mi", 4, 16)
