"""The tune RayJob: tune.py with its experiment under the artifacts bucket's runs/,
valid against the vendored KubeRay CRDs and the operator's rules."""

from __future__ import annotations

import shlex

import pytest
import yaml

from raygpu import crd_schema, workloads
from raygpu.manifests import ClusterRefs
from tests.raygpu.test_manifests import stack_config

REFS = ClusterRefs(
    data_bucket="rg-data", artifacts_bucket="rg-art", irsa_role_arn="arn:x"
)
CRDS_MISSING = crd_schema.crd_dir_problem(None)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_a_search_runs_tune_py_into_the_artifacts_bucket(stack):
    env = {"working_dir": "s3://rg-art/jobs/ray_jobs.zip"}
    job = workloads.tune_rayjob_manifest(
        stack_config(stack),
        REFS,
        name="tune",
        tune_args=["--use-gpu", "--num-samples", "16", "--name", "digits-1"],
        runtime_env=env,
    )
    assert shlex.split(job["spec"]["entrypoint"]) == [
        "python",
        "tune.py",
        "--storage-path",
        "s3://rg-art/runs",
        "--use-gpu",
        "--num-samples",
        "16",
        "--name",
        "digits-1",
    ]
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"]) == env
    assert job["kind"] == "RayJob" and job["spec"]["shutdownAfterJobFinishes"]
    if CRDS_MISSING is None:
        crd_schema.validate_manifest(job)
        assert crd_schema.operator_problems(job) == []
