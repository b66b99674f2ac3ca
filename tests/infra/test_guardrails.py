"""The components' security settings under Pulumi's mock runtime: the data bucket's
access logs, the secrets key's policy and the VPC CNI's network policy
enforcement (the storage key's policy: test_identity.py)."""

from __future__ import annotations

import json

from infra.cluster import EksCluster, EksClusterArgs
from infra.storage import ACCESS_LOG_PREFIX, Storage, StorageArgs
from tests.infra.infra_helpers import run_component, stack_config, statements

BUCKET = "aws:s3/bucket:Bucket"


def storage(**overrides):
    cfg = stack_config(**overrides)
    return run_component(lambda: Storage("st", StorageArgs.from_config(cfg)), cfg)


def test_access_logs_go_to_a_private_bucket_only_s3_may_write():
    run = storage(dataBucketAccessLogging=True, flowLogRetentionDays=90)
    buckets = {r["name"]: r for r in run.of_type(BUCKET)}
    assert set(buckets) == {"st-data", "st-artifacts", "st-access-logs"}
    logs, data = buckets["st-access-logs"], buckets["st-data"]
    assert logs["inputs"]["tags"]["raygpu:bucket"] == "access-logs"
    (logging,) = run.of_type("aws:s3/bucketLogging:BucketLogging")
    assert logging["inputs"]["bucket"] == data["id"]
    assert logging["inputs"]["targetBucket"] == logs["id"]
    assert logging["inputs"]["targetPrefix"] == ACCESS_LOG_PREFIX

    def of_logs(typ):
        (found,) = [r for r in run.of_type(typ) if r["inputs"]["bucket"] == logs["id"]]
        return found["inputs"]

    rule = of_logs(
        "aws:s3/bucketServerSideEncryptionConfiguration:"
        "BucketServerSideEncryptionConfiguration"
    )["rules"][0]
    # S3 delivers access logs only into buckets on S3-managed keys.
    assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "AES256"}
    block = of_logs("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert all(block[k] for k in ("blockPublicAcls", "restrictPublicBuckets"))
    lifecycle = of_logs(
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
    )
    assert lifecycle["rules"][0]["expiration"]["days"] == 90
    deny_http, deny_tls, delivery = statements(
        of_logs("aws:s3/bucketPolicy:BucketPolicy")["policy"]
    )
    assert deny_http["Effect"] == deny_tls["Effect"] == "Deny"
    assert delivery["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert delivery["Action"] == "s3:PutObject"
    assert delivery["Resource"].endswith(f"/{ACCESS_LOG_PREFIX}*")
    assert delivery["Condition"] == {
        "ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{data['id']}"},
        "StringEquals": {"aws:SourceAccount": "123456789012"},
    }


def test_no_access_log_bucket_unless_asked():
    run = storage(dataBucketAccessLogging=False)
    assert {r["name"] for r in run.of_type(BUCKET)} == {"st-data", "st-artifacts"}
    assert run.of_type("aws:s3/bucketLogging:BucketLogging") == []


def test_secrets_key_is_used_by_the_cluster_role_only_and_cni_enforces_policies():
    cfg = stack_config()
    run = run_component(
        lambda: EksCluster("c", EksClusterArgs.from_config(cfg, ["s-a", "s-b"])), cfg
    )
    key = run.one("aws:kms/key:Key")
    role = run.one("aws:iam/role:Role", "c-cluster")
    admin, use, grants = statements(key["inputs"]["policy"])
    assert admin["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}
    assert not [a for a in admin["Action"] if "crypt" in a or "Grant" in a[4:9]]
    assert use["Principal"] == {"AWS": f"arn:aws:iam::123456789012:role/{role['id']}"}
    assert grants["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}
    addon = run.one("aws:eks/addon:Addon", "c-vpc-cni")
    assert json.loads(addon["inputs"]["configurationValues"]) == {
        "enableNetworkPolicy": "true"
    }
    assert (
        "configurationValues"
        not in run.one("aws:eks/addon:Addon", "c-kube-proxy")["inputs"]
    )
