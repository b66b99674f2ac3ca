"""The config's security inputs: endpoint and Serve networks, the workers' own
account, and placeholders, which `plan` warns about and `pulumi up` refuses."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from raygpu.config import (
    ConfigError,
    engine_values,
    placeholders,
    stack_file_values,
)
from raygpu.offline import ROOT
from tests.infra.infra_helpers import stack_config


@pytest.mark.parametrize(
    "given, kept",
    [
        ("198.18.4.7", "198.18.4.7/32"),  # a bare address is one host
        ("198.18.4.0/24", "198.18.4.0/24"),
        ("10.0.0.0/8", "10.0.0.0/8"),  # private networks may be wide
        ("172.16.0.0/12", "172.16.0.0/12"),
    ],
)
def test_endpoint_networks_accepted(given, kept):
    assert stack_config(publicEndpointCidrs=[given]).public_endpoint_cidrs == (kept,)


@pytest.mark.parametrize(
    "given, message",
    [
        ("198.18.0.0/23", "198.18.0.0/23 is a public network wider than a /24"),
        ("203.0.112.0/20", "is a public network wider than a /24"),
        ("0.0.0.0/0", "opens the Kubernetes API to the internet"),
        ("10.0.0.0/7", "opens the Kubernetes API to the internet"),
    ],
)
def test_endpoint_networks_refused(given, message):
    with pytest.raises(ConfigError) as refused:
        stack_config(publicEndpointCidrs=["198.18.4.7", given])
    assert refused.value.keys == ["raygpu:publicEndpointCidrs[1]"]
    assert message in str(refused.value)


def test_serve_sources_must_be_private_networks():
    assert stack_config(serveAllowedCidrs=["10.30.0.0/16"]).serve_allowed_cidrs == (
        "10.30.0.0/16",
    )
    with pytest.raises(ConfigError) as refused:
        stack_config(serveAllowedCidrs=["0.0.0.0/0"])
    assert refused.value.keys == ["raygpu:serveAllowedCidrs[0]"]
    assert "not a private network" in str(refused.value)


def test_workers_need_their_own_service_account():
    with pytest.raises(ConfigError) as refused:
        stack_config(rayServiceAccount="ray", rayWorkerServiceAccount="ray")
    assert refused.value.keys == ["raygpu:rayWorkerServiceAccount"]
    assert "workers need their own account" in str(refused.value)


def test_placeholders_in_the_committed_examples():
    dev = placeholders(stack_file_values(ROOT / "Pulumi.dev.yaml"))
    prod = placeholders(stack_file_values(ROOT / "Pulumi.prod.yaml"))
    assert [k for k, _ in dev] == ["raygpu:publicEndpointCidrs[0]"]
    assert [k for k, _ in prod] == [
        "raygpu:adminPrincipalArns[0]",
        "raygpu:dataKeyUserArns[0]",
        "raygpu:budgetAlertEmail",
    ]
    assert "documentation address range (RFC 5737)" in dev[0][1]
    assert "example account ID" in prod[0][1]
    assert "example domain (RFC 2606)" in prod[2][1]


@pytest.mark.parametrize(
    "values, found",
    [
        ({"publicEndpointCidrs": ["192.0.2.10/32"]}, 1),
        ({"serveAllowedCidrs": ["10.1.0.0/16"], "budgetAlertEmail": "a@b.io"}, 0),
        ({"budgetAlertEmail": "ops@alerts.example.org"}, 1),
        ({"budgetAlertEmail": "me@myexample.com"}, 0),  # not example.com itself
        ({"dataKeyUserArns": ["arn:aws:iam::444455556666:role/x"]}, 1),
        ({"adminPrincipalArns": ["arn:aws:iam::210987654321:role/x"]}, 0),
    ],
)
def test_placeholder_detection(values, found):
    assert len(placeholders(values)) == found


def test_the_pulumi_program_refuses_placeholders_outside_the_mocks():
    """from_pulumi, as `pulumi up` runs it (no mock monitor), on dev's values."""
    engine = engine_values(stack_file_values(ROOT / "Pulumi.dev.yaml"))
    script = textwrap.dedent(
        f"""
        import pulumi
        from raygpu.config import ConfigError, from_pulumi
        pulumi.runtime.set_all_config({engine!r}, [])
        try:
            from_pulumi()
        except ConfigError as exc:
            print("refused:", exc)
        else:
            print("accepted")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "refused: raygpu:publicEndpointCidrs[0]: 203.0.113.0/24 is a documentation "
        "address range (RFC 5737): put your own network here (a placeholder; "
        "`pulumi up` refuses it)"
    )
