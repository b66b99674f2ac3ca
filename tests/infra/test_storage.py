"""Storage component under Pulumi's mock runtime."""

from __future__ import annotations

import pulumi
import pytest

from infra.storage import Storage, StorageArgs
from raygpu.offline import RaygpuMocks
from tests.infra.infra_helpers import as_list, run_component, stack_config, statements

BUCKET = "aws:s3/bucket:Bucket"


def storage_run(**overrides):
    cfg = stack_config(**overrides)
    run = run_component(lambda: Storage("st", StorageArgs.from_config(cfg)), cfg)
    return cfg, run


@pytest.fixture(scope="module")
def protected():
    return storage_run(protectDataBucket=True, noncurrentVersionExpirationDays=21)


@pytest.fixture(scope="module")
def unprotected():
    return storage_run(protectDataBucket=False, artifactsForceDestroy=True)


def bucket_ids(run):
    return {r["name"]: r["id"] for r in run.of_type(BUCKET)}


def settings_for(run, typ):
    """{bucket resource name: inputs of its `typ` resource}."""
    names = {v: k for k, v in bucket_ids(run).items()}
    return {names[r["inputs"]["bucket"]]: r["inputs"] for r in run.of_type(typ)}


def test_two_buckets(protected):
    _, run = protected
    assert set(bucket_ids(run)) == {"st-data", "st-artifacts"}


def test_each_bucket_is_tagged_with_its_role(protected):
    # raygpu orphans keeps the data bucket by this tag after a destroy.
    _, run = protected
    roles = {
        r["name"]: r["inputs"]["tags"]["raygpu:bucket"] for r in run.of_type(BUCKET)
    }
    assert roles == {"st-data": "data", "st-artifacts": "artifacts"}


def test_block_public_access_all_four_flags(protected):
    _, run = protected
    bpa = settings_for(run, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert set(bpa) == {"st-data", "st-artifacts"}
    for inputs in bpa.values():
        for flag in (
            "blockPublicAcls",
            "blockPublicPolicy",
            "ignorePublicAcls",
            "restrictPublicBuckets",
        ):
            assert inputs[flag] is True, flag


def test_bucket_owner_enforced(protected):
    _, run = protected
    own = settings_for(run, "aws:s3/bucketOwnershipControls:BucketOwnershipControls")
    assert set(own) == {"st-data", "st-artifacts"}
    assert all(
        i["rule"]["objectOwnership"] == "BucketOwnerEnforced" for i in own.values()
    )


def test_sse_kms_with_bucket_key_and_the_stack_key(protected):
    _, run = protected
    key = run.one("aws:kms/key:Key")
    assert key["inputs"]["enableKeyRotation"] is True
    enc = settings_for(
        run,
        "aws:s3/bucketServerSideEncryptionConfiguration:"
        "BucketServerSideEncryptionConfiguration",
    )
    assert set(enc) == {"st-data", "st-artifacts"}
    for inputs in enc.values():
        (rule,) = inputs["rules"]
        default = rule["applyServerSideEncryptionByDefault"]
        assert default["sseAlgorithm"] == "aws:kms"
        assert default["kmsMasterKeyId"].startswith("arn:aws:kms:")
        assert default["kmsMasterKeyId"].endswith(key["id"])
        assert rule["bucketKeyEnabled"] is True


def test_versioning_enabled(protected):
    _, run = protected
    ver = settings_for(run, "aws:s3/bucketVersioning:BucketVersioning")
    assert set(ver) == {"st-data", "st-artifacts"}
    assert all(
        i["versioningConfiguration"]["status"] == "Enabled" for i in ver.values()
    )


def test_policy_denies_requests_without_tls(protected):
    _, run = protected
    policies = settings_for(run, "aws:s3/bucketPolicy:BucketPolicy")
    assert set(policies) == {"st-data", "st-artifacts"}
    arns = {r["name"]: r["inputs"].get("arn") for r in run.of_type(BUCKET)}
    for name, inputs in policies.items():
        stmts = statements(inputs["policy"])
        tls = [s for s in stmts if s["Condition"].get("Bool")]
        (deny,) = tls
        assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
        assert deny["Condition"]["Bool"]["aws:SecureTransport"] == "false"
        resources = as_list(deny["Resource"])
        assert any(r.endswith("/*") for r in resources)
        assert all(r.startswith(f"arn:aws:s3:::{name}") for r in resources), arns
        # Only denies: the policy grants nothing.
        assert all(s["Effect"] == "Deny" for s in stmts)


def test_artifacts_lifecycle_expires_noncurrent_versions(protected):
    cfg, run = protected
    life = settings_for(
        run, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
    )
    rules = {r["id"]: r for r in life["st-artifacts"]["rules"]}
    expire = rules["expire-noncurrent-versions"]
    assert expire["status"] == "Enabled"
    assert expire["noncurrentVersionExpiration"]["noncurrentDays"] == 21
    assert rules["abort-incomplete-multipart-uploads"]["status"] == "Enabled"
    # Data is never expired by lifecycle.
    for rule in life["st-data"]["rules"]:
        assert "noncurrentVersionExpiration" not in rule and "expiration" not in rule


def test_protected_data_bucket_and_its_key_survive_destroy(protected):
    _, run = protected
    data = run.one(BUCKET, "st-data")
    assert data["options"]["retain_on_delete"] is True
    assert data["inputs"]["forceDestroy"] is False
    assert run.one("aws:kms/key:Key")["options"]["retain_on_delete"] is True
    # ...and so do the settings that keep it private and encrypted.
    data_id = data["id"]
    for r in run.resources:
        if r["inputs"].get("bucket") == data_id:
            assert r["options"]["retain_on_delete"] is True, r["type"]
    artifacts = run.one(BUCKET, "st-artifacts")
    assert artifacts["options"]["retain_on_delete"] is False
    assert artifacts["inputs"]["forceDestroy"] is False


def test_unprotected_data_bucket_is_deleted_with_the_stack(unprotected):
    _, run = unprotected
    assert all(not r["options"]["retain_on_delete"] for r in run.resources)
    assert all(not r["options"]["protect"] for r in run.resources)
    assert run.one(BUCKET, "st-data")["inputs"]["forceDestroy"] is True
    assert run.one(BUCKET, "st-artifacts")["inputs"]["forceDestroy"] is True


def test_buckets_are_tagged(protected):
    cfg, run = protected
    for r in run.of_type(BUCKET) + run.of_type("aws:kms/key:Key"):
        assert r["inputs"]["tags"]["raygpu:stack"] == cfg.stack
        assert r["inputs"]["tags"]["raygpu:project"] == cfg.project


@pulumi.runtime.test
def test_component_outputs_are_bucket_names_and_arns():
    cfg = stack_config()
    pulumi.runtime.set_mocks(RaygpuMocks("us-east-1"), project="raygpu", stack="dev")
    st = Storage("st", StorageArgs.from_config(cfg))

    def check(values):
        data, data_arn, artifacts, artifacts_arn, key_arn = values
        assert data != artifacts
        assert data_arn == f"arn:aws:s3:::{data}"
        assert artifacts_arn == f"arn:aws:s3:::{artifacts}"
        assert key_arn.startswith("arn:aws:kms:us-east-1:")

    return pulumi.Output.all(
        st.data_bucket,
        st.data_bucket_arn,
        st.artifacts_bucket,
        st.artifacts_bucket_arn,
        st.kms_key_arn,
    ).apply(check)
