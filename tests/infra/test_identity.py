"""Identity component (OIDC provider, IRSA role, storage key policy) under the mock
runtime."""

from __future__ import annotations

import json

import pulumi
import pytest

from infra.identity import Identity, IdentityArgs
from raygpu.offline import RaygpuMocks
from tests.infra.infra_helpers import as_list, run_component, stack_config, statements

ISSUER = "https://oidc.eks.us-east-1.amazonaws.com/id/ABC123"
DATA = "arn:aws:s3:::raygpu-dev-data-1"
ARTIFACTS = "arn:aws:s3:::raygpu-dev-artifacts-1"
KEY = "arn:aws:kms:us-east-1:123456789012:key/k1"
ADMIN = "arn:aws:iam::210987654321:role/platform-admin"


def identity_args(**kw):
    return IdentityArgs(
        oidc_issuer_url=ISSUER,
        data_bucket_arn=DATA,
        artifacts_bucket_arn=ARTIFACTS,
        kms_key_arn=KEY,
        kms_key_id="k1",
        namespace=kw.get("namespace", "ray"),
        service_accounts=kw.get("service_accounts", ("ray-workload", "ray-worker")),
        key_users=kw.get("key_users", (ADMIN,)),
        keep_key_policy=kw.get("keep_key_policy", False),
        region="us-east-1",
        tags={"raygpu:stack": "dev", "raygpu:project": "raygpu"},
    )


@pytest.fixture(scope="module")
def run():
    cfg = stack_config()
    return run_component(lambda: Identity("id", identity_args()), cfg)


def test_oidc_provider_for_the_cluster_issuer(run):
    provider = run.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert provider["inputs"]["url"] == ISSUER
    assert provider["inputs"]["clientIdLists"] == ["sts.amazonaws.com"]
    assert provider["inputs"]["tags"]["raygpu:stack"] == "dev"


def test_trust_is_limited_to_the_two_service_accounts_and_sts_audience(run):
    role = run.one("aws:iam/role:Role")
    (stmt,) = statements(role["inputs"]["assumeRolePolicy"])
    assert stmt["Effect"] == "Allow"
    assert stmt["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert stmt["Principal"]["Federated"].endswith(
        ":oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC123"
    )
    host = "oidc.eks.us-east-1.amazonaws.com/id/ABC123"
    assert stmt["Condition"] == {
        "StringEquals": {
            f"{host}:sub": [
                "system:serviceaccount:ray:ray-workload",
                "system:serviceaccount:ray:ray-worker",
            ],
            f"{host}:aud": "sts.amazonaws.com",
        }
    }


def test_policy_is_scoped_to_the_buckets_and_key_without_wildcards(run):
    policy = run.one("aws:iam/rolePolicy:RolePolicy")["inputs"]["policy"]
    stmts = statements(policy)
    allowed_resources = {
        DATA,
        ARTIFACTS,
        f"{DATA}/*",
        f"{DATA}/prepared/*",
        f"{ARTIFACTS}/*",
        KEY,
    }
    for stmt in stmts:
        assert stmt["Effect"] == "Allow"
        for action in as_list(stmt["Action"]):
            assert "*" not in action, action
        for resource in as_list(stmt["Resource"]):
            assert resource != "*"
            assert resource in allowed_resources, resource
    assert "NotAction" not in policy and "NotResource" not in policy


def test_data_is_read_only_but_prepared_and_artifacts_read_write(run):
    stmts = statements(run.one("aws:iam/rolePolicy:RolePolicy")["inputs"]["policy"])

    def actions_on(resource):
        return {
            a
            for s in stmts
            if resource in as_list(s["Resource"])
            for a in as_list(s["Action"])
        }

    data_objects = actions_on(f"{DATA}/*")
    assert "s3:GetObject" in data_objects
    assert not {a for a in data_objects if a.startswith(("s3:Put", "s3:Delete"))}
    # prepare.py's output prefix, and only it (tests/ray_jobs/test_prepare_s3.py
    # checks the policy under moto's IAM checks)
    prepared = actions_on(f"{DATA}/prepared/*")
    assert {"s3:PutObject", "s3:DeleteObject"} <= prepared
    written = {
        r
        for s in stmts
        for r in as_list(s["Resource"])
        if r.startswith(DATA)
        and set(as_list(s["Action"])) & {"s3:PutObject", "s3:DeleteObject"}
    }
    assert written == {f"{DATA}/prepared/*"}
    artifacts_objects = actions_on(f"{ARTIFACTS}/*")
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"} <= artifacts_objects
    assert "s3:ListBucket" in actions_on(DATA) and "s3:ListBucket" in actions_on(
        ARTIFACTS
    )
    assert {"kms:Decrypt", "kms:GenerateDataKey"} <= actions_on(KEY)


@pulumi.runtime.test
def test_role_and_provider_arn_outputs():
    pulumi.runtime.set_mocks(RaygpuMocks("us-east-1"), project="raygpu", stack="dev")
    ident = Identity("id", identity_args())

    def check(values):
        arn, provider_arn = values
        assert arn.startswith("arn:aws:iam::123456789012:role/")
        assert provider_arn.endswith("oidc.eks.us-east-1.amazonaws.com/id/ABC123")

    return pulumi.Output.all(ident.irsa_role_arn, ident.oidc_provider_arn).apply(check)


def test_trust_follows_the_configured_service_accounts():
    run = run_component(
        lambda: Identity(
            "id", identity_args(namespace="ml", service_accounts=("trainer", "w"))
        ),
        stack_config(),
    )
    doc = json.loads(run.one("aws:iam/role:Role")["inputs"]["assumeRolePolicy"])
    cond = doc["Statement"][0]["Condition"]["StringEquals"]
    subs = next(v for k, v in cond.items() if k.endswith(":sub"))
    assert subs == ["system:serviceaccount:ml:trainer", "system:serviceaccount:ml:w"]


def test_only_the_ray_role_and_listed_users_may_use_the_storage_key(run):
    key_policy = run.one("aws:kms/keyPolicy:KeyPolicy")
    assert key_policy["inputs"]["keyId"] == "k1"
    admin, use = statements(key_policy["inputs"]["policy"])
    role = run.one("aws:iam/role:Role")
    assert sorted(use["Principal"]["AWS"]) == sorted(
        [ADMIN, f"arn:aws:iam::123456789012:role/{role['id']}"]
    )
    # Through S3 only, in this account.
    assert use["Condition"]["StringEquals"] == {
        "kms:ViaService": "s3.us-east-1.amazonaws.com",
        "kms:CallerAccount": "123456789012",
    }
    # The account may manage the key but never use it on data or hand out grants.
    assert admin["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}
    assert not {
        a
        for a in admin["Action"]
        if a.startswith(("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"))
        or a in ("kms:CreateGrant", "kms:ReEncryptFrom", "kms:*")
    }
    assert not key_policy["options"]["retain_on_delete"]


def test_a_retained_data_key_keeps_its_policy():
    run = run_component(
        lambda: Identity("id", identity_args(keep_key_policy=True)), stack_config()
    )
    assert run.one("aws:kms/keyPolicy:KeyPolicy")["options"]["retain_on_delete"]
