"""Fixtures of the operator-script tests."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from raygpu.monitoring.local import INSTALL_HINT

FAKE_KUBECTL = Path(__file__).with_name("fake_kubectl.py")
# Region of the AWS tests (orphan scan, teardown) on the loopback moto_server.
REGION = "us-west-2"


@dataclass
class FakeKubectl:
    bin_dir: Path
    log: Path
    pid_file: Path

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def forward_pid(self) -> int:
        return int(self.pid_file.read_text())


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0; it has exited all the same.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def fake_kubectl(tmp_path, monkeypatch) -> FakeKubectl:
    """`kubectl` on PATH answering from tests/scripts/fake_kubectl.py."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "kubectl"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_KUBECTL}" "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    fake = FakeKubectl(bin_dir, tmp_path / "kubectl.log", tmp_path / "forward.pid")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_KUBECTL_LOG", str(fake.log))
    monkeypatch.setenv("FAKE_KUBECTL_PID", str(fake.pid_file))
    monkeypatch.setenv("FAKE_TOKEN", "not-a-real-token")
    monkeypatch.setenv("FAKE_TARGET_PORT", "9")
    return fake


@pytest.fixture
def aws(moto_server):
    """A fresh VPC with a subnet in each of two AZs on the loopback moto_server:
    `(boto3 session, vpc id, [subnet ids])`."""
    session = boto3.Session(region_name=REGION)
    ec2 = session.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=az)[
            "Subnet"
        ]["SubnetId"]
        for i, az in enumerate((f"{REGION}a", f"{REGION}b"))
    ]
    return session, vpc, subnets


def _prometheus_binary(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.skip(f"`{name}` is not installed: {INSTALL_HINT}")
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool's path (Debian's prometheus package); skips saying why without it."""
    return _prometheus_binary("promtool")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """The prometheus server's path; skips saying why without it."""
    return _prometheus_binary("prometheus")
