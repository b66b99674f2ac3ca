"""The CrossGuard pack through pulumi_policy's analyzer (scripts/check_policy_pack.py).

pulumi-policy cannot live in .venv (it pins protobuf 5.29), so this runs only where
the pack's environment exists: infra/policy/venv, or $RAYGPU_POLICY_VENV.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("RAYGPU_POLICY_VENV", REPO / "infra" / "policy" / "venv"))
PYTHON = VENV / "bin" / "python"

pytestmark = pytest.mark.skipif(
    not PYTHON.exists(), reason=f"no policy pack environment at {VENV}"
)


def check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(PYTHON), "scripts/check_policy_pack.py", "--stack", "dev", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_pack_passes_dev_and_names_a_broken_endpoint():
    ok = check()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "pack raygpu-security: 31 policies" in ok.stdout
    assert "0 mandatory" in ok.stdout
    broken = check("--break")
    assert broken.returncode == 1
    assert "MANDATORY RG-EKS-01 raygpu-dev-cluster-eks:" in broken.stdout


def test_unknown_documents_in_a_preview_skip_their_checks():
    preview = check("--preview")
    assert preview.returncode == 0, preview.stdout + preview.stderr
    assert "can't run policy" not in preview.stdout
