"""The house's rules, checked on the code itself.

Imports between the top-level folders go one way: `infra/` (Pulumi) never imports
Ray or torch, `ray_jobs/` (runs on the cluster) never imports Pulumi or the
operator's package, the operator's package never imports `infra/`, the jobs or
Ray/torch at module level, and nothing of the product imports `scripts/`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RAY_JOBS_MODULES = {
    p.stem if p.is_file() else p.name
    for p in (REPO / "ray_jobs").iterdir()
    if (p.suffix == ".py" or (p / "__init__.py").exists())
}
MAX_LINES = 500


def tracked_python(folder: str) -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", folder],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [REPO / f for f in out if f.endswith(".py") and (REPO / f).exists()]


def imports(path: Path, module_level_only: bool = False) -> set[str]:
    """Top-level names of the modules a file imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if module_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def offenders(folder: str, banned: set[str], module_level_only=False) -> list[str]:
    return [
        f"{p.relative_to(REPO)} imports {', '.join(sorted(hit))}"
        for p in tracked_python(folder)
        if (hit := imports(p, module_level_only) & banned)
    ]


def test_infra_never_imports_ray_torch_or_the_jobs():
    banned = {"ray", "torch", "torchvision", "scripts", *RAY_JOBS_MODULES}
    assert offenders("infra", banned) == []


def test_jobs_never_import_pulumi_or_the_operator_package():
    banned = {"pulumi", "pulumi_aws", "pulumi_kubernetes", "raygpu", "infra"}
    assert offenders("ray_jobs", banned | {"scripts"}) == []


def test_the_operator_package_never_imports_infra_the_jobs_or_scripts():
    assert offenders("raygpu", {"infra", "scripts", *RAY_JOBS_MODULES}) == []
    # Ray and torch only inside the functions that need them: plan, render,
    # destroy and orphans run on an install without either.
    assert offenders("raygpu", {"ray", "torch"}, module_level_only=True) == []


def test_no_sys_path_edits_outside_the_pulumi_program():
    edits = [
        str(p.relative_to(REPO))
        for folder in ("raygpu", "infra", "ray_jobs", "scripts", "tests")
        for p in tracked_python(folder)
        if p != Path(__file__)
        and any(
            f"sys.path.{verb}" in p.read_text(encoding="utf-8")
            for verb in ("insert", "append")
        )
    ]
    assert edits == ["infra/__main__.py"]


def test_no_source_file_outside_tests_is_over_500_lines():
    long = [
        f"{p.relative_to(REPO)}: {n}"
        for folder in ("raygpu", "infra", "ray_jobs", "scripts")
        for p in tracked_python(folder)
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    ]
    assert long == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["plan", "--stack", "dev", "--json"],
        ["render", "--stack", "prod", "--out", "{tmp}"],
        ["status", "--help"],
        ["dashboard", "--help"],
    ],
)
def test_operator_commands_run_without_ray_or_torch(argv, tmp_path):
    """Importing Ray or torch fails in this child: the commands must not need them."""
    argv = [a.replace("{tmp}", str(tmp_path / "out")) for a in argv]
    code = (
        "import sys\n"
        "for name in ('ray', 'torch', 'torchvision'):\n"
        "    sys.modules[name] = None\n"
        "from raygpu.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
