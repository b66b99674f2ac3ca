"""`make plan` and `make render` on a fresh checkout install the operator's side only.

A real virtualenv is made by the Makefile's own targets (`make VENV=... plan`), so
this also checks that the operator's requirements are enough for plan and render,
and that a command needing Ray says how to get it in one line.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_plan_and_render_install_and_run_without_ray_or_torch(tmp_path):
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    out = {}
    for target in ("plan", "render"):
        proc = subprocess.run(
            ["make", f"VENV={venv}", target, f"OUT={tmp_path / 'rendered'}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,
            env=env,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        out[target] = proc.stdout
    assert "Estimated cost, USD/hour" in out["plan"]
    assert (tmp_path / "rendered" / "20-raycluster-raygpu-dev.yaml").is_file()
    python = venv / "bin" / "python"
    missing = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util as u; "
            "print([m for m in ('ray', 'torch') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.stdout.strip() == "[]"
    demo = subprocess.run(
        [str(venv / "bin" / "raygpu"), "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert demo.returncode == 2
    assert demo.stderr.count("\n") == 1 and "make venv" in demo.stderr
    shutil.rmtree(venv)
