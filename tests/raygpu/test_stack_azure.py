"""StackOutputs of an Azure stack, and the commands that read them: the identity
is the user-assigned identity's client ID (raygpu serve --llm included), and job
paths use the cloud's storage scheme."""

from __future__ import annotations

import json

from raygpu import clouds, llm, workloads
from raygpu.config import load_stack_file
from raygpu.manifests import ClusterRefs
from raygpu.offline import stack_path
from raygpu.stack import IDENTITY_OUTPUTS, load_outputs

AZURE_OUTPUTS = {
    "cloud": "azure",
    "cluster_name": "raygpu-azure-dev",
    "region": "eastus2",
    "subscription_id": "00000000-0000-0000-0000-000000000000",
    "resource_group": "rg-raygpu-azure-dev",
    "node_resource_group": "rg-raygpu-azure-dev-nodes",
    "storage_account": "raygpuazuredev0123456789",
    "data_bucket": "data@raygpuazuredev0123456789.dfs.core.windows.net",
    "artifacts_bucket": "artifacts@raygpuazuredev0123456789.dfs.core.windows.net",
    "ray_namespace": "ray",
    "ray_identity_client_id": "b6d7208f-35cc-2fd7-803e-8bfc0056890d",
    "ray_cluster_name": "raygpu-azure-dev",
    "ray_head_service": "raygpu-azure-dev-head-svc",
}


def outputs(tmp_path):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(AZURE_OUTPUTS))
    return load_outputs("azure-dev", path)


def test_azure_outputs_name_the_identity_client_id(tmp_path):
    out = outputs(tmp_path)
    assert IDENTITY_OUTPUTS["azure"] == "ray_identity_client_id"
    assert out.cloud == "azure"
    assert out.identity == AZURE_OUTPUTS["ray_identity_client_id"]
    assert out.ray_head_service == "raygpu-azure-dev-head-svc"


def test_llm_refs_take_the_clouds_identity_not_irsa(tmp_path):
    refs = llm.cluster_refs(outputs(tmp_path))
    assert refs.irsa_role_arn == AZURE_OUTPUTS["ray_identity_client_id"]
    assert refs.artifacts_bucket == AZURE_OUTPUTS["artifacts_bucket"]


def test_job_uris_follow_the_clouds_scheme():
    refs = ClusterRefs(
        data_bucket=AZURE_OUTPUTS["data_bucket"],
        artifacts_bucket=AZURE_OUTPUTS["artifacts_bucket"],
        irsa_role_arn="x",
    )
    azure = load_stack_file(stack_path("azure-dev"), "azure-dev")
    assert workloads.prepared_data_uri(azure, refs, "d") == (
        f"abfs://{AZURE_OUTPUTS['data_bucket']}/prepared/d"
    )
    assert workloads.runs_uri(azure, refs) == (
        f"abfs://{AZURE_OUTPUTS['artifacts_bucket']}/runs"
    )
    gcp = load_stack_file(stack_path("gcp-dev"), "gcp-dev")
    assert workloads.raw_data_uri(gcp, refs, "d").startswith("gs://")
    aws = load_stack_file(stack_path("dev"), "dev")
    assert workloads.runs_uri(aws, refs).startswith("s3://")
    assert clouds.AWS.uri("b") == "s3://b"
