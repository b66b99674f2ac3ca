"""StackOutputs on a Google Cloud stack: GCP's outputs, without AWS-only ones."""

from __future__ import annotations

import json

import pytest

from raygpu.errors import CommandError
from raygpu.stack import IDENTITY_OUTPUTS, load_outputs

GCP_OUTPUTS = {
    "cloud": "gcp",
    "cluster_name": "raygpu-gcp-dev",
    "region": "us-central1",
    "gcp_project": "my-raygpu-project",
    "data_bucket": "raygpu-gcp-dev-data-abc",
    "artifacts_bucket": "raygpu-gcp-dev-artifacts-abc",
    "ray_namespace": "ray",
    "ray_google_service_account": "ray-1@my-raygpu-project.iam.gserviceaccount.com",
    "ray_cluster_name": "raygpu-gcp-dev",
    "ray_head_service": "raygpu-gcp-dev-head-svc",
}


def test_gcp_outputs_load_and_name_the_google_service_account(tmp_path):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(GCP_OUTPUTS))
    outputs = load_outputs("gcp-dev", path)
    assert outputs.cloud == "gcp"
    assert outputs.identity == GCP_OUTPUTS["ray_google_service_account"]
    assert outputs.region == "us-central1"
    assert outputs.cluster_name == "raygpu-gcp-dev"
    assert outputs.ray_head_service == "raygpu-gcp-dev-head-svc"
    assert IDENTITY_OUTPUTS["gcp"] == "ray_google_service_account"


def test_aws_outputs_without_a_cloud_output_are_aws(tmp_path):
    path = tmp_path / "outputs.json"
    arn = "arn:aws:iam::123456789012:role/r"
    path.write_text(json.dumps({"region": "us-east-1", "irsa_role_arn": arn}))
    outputs = load_outputs("dev", path)
    assert outputs.cloud == "aws" and outputs.identity == arn


def test_missing_identity_and_unknown_cloud_are_one_line_errors(tmp_path):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps({**GCP_OUTPUTS, "ray_google_service_account": ""}))
    with pytest.raises(CommandError, match="'ray_google_service_account' is missing"):
        _ = load_outputs("gcp-dev", path).identity
    path.write_text(json.dumps({**GCP_OUTPUTS, "cloud": "oci"}))
    with pytest.raises(CommandError, match="'oci'; this raygpu knows: aws, gcp"):
        _ = load_outputs("gcp-dev", path).cloud
