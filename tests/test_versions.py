"""Pins agree: the cluster jobs' requirements match the project's."""

import re

from tests.conftest import REPO


def pins(path):
    """name -> version of every requirement, following `-r FILE` includes."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==(\S+)", line)
        include = re.fullmatch(r"-r\s+(\S+)", line)
        if m:
            found[m.group(1).lower()] = m.group(3)
        elif include:
            found.update(pins(path.parent / include.group(1)))
        elif line:
            raise AssertionError(f"{path.name}: {line!r} is not pinned with ==")
    return found


def test_every_requirement_is_pinned_exactly():
    assert pins(REPO / "requirements.txt")
    assert pins(REPO / "ray_jobs" / "requirements.txt")


def test_the_operator_side_installs_alone_without_ray_or_torch():
    operator = pins(REPO / "requirements-operator.txt")
    assert {"pulumi", "pulumi-aws", "pulumi-kubernetes", "pydantic"} <= set(operator)
    assert not {"ray", "torch", "torchvision"} & set(operator)
    # the full install includes it, and the package's metadata is read from it
    full = pins(REPO / "requirements.txt")
    assert all(full[name] == version for name, version in operator.items())
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'dependencies = { file = ["requirements-operator.txt"] }' in pyproject


def test_job_requirements_match_the_project_pins():
    project = pins(REPO / "requirements.txt")
    jobs = pins(REPO / "ray_jobs" / "requirements.txt")
    assert jobs, "ray_jobs/requirements.txt pins nothing"
    for name, version in jobs.items():
        assert project.get(name) == version, name


def test_installed_ray_and_torch_are_the_pinned_ones():
    import ray
    import torch

    project = pins(REPO / "requirements.txt")
    assert ray.__version__ == project["ray"]
    assert torch.__version__.split("+")[0] == project["torch"]
