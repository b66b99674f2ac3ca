"""The data path's RayJobs: prepare raw/<dataset> into prepared/<dataset>, then
train on it; both valid against the vendored KubeRay CRDs."""

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
def test_prepare_then_train_on_the_prepared_prefix(stack):
    cfg = stack_config(stack)
    env = {"working_dir": "s3://rg-art/jobs/ray_jobs.zip"}
    prep = workloads.prepare_rayjob_manifest(
        cfg,
        REFS,
        name="prep",
        dataset="cats",
        data_format="images",
        prepare_args=["--seed", "1"],
        runtime_env=env,
    )
    assert shlex.split(prep["spec"]["entrypoint"]) == [
        "python",
        "prepare.py",
        "--format",
        "images",
        "--source",
        "s3://rg-data/raw/cats",
        "--output",
        "s3://rg-data/prepared/cats",
        "--seed",
        "1",
    ]
    assert yaml.safe_load(prep["spec"]["runtimeEnvYAML"]) == env
    fit = workloads.train_prepared_rayjob_manifest(
        cfg, REFS, name="fit", dataset="cats", train_args=["--use-gpu"]
    )
    assert shlex.split(fit["spec"]["entrypoint"]) == [
        "python",
        "train.py",
        "--data",
        "s3://rg-data/prepared/cats",
        "--storage-path",
        "s3://rg-art/runs",
        "--use-gpu",
    ]
    if CRDS_MISSING is None:
        for obj in (prep, fit):
            crd_schema.validate_manifest(obj)
            assert crd_schema.operator_problems(obj) == []
