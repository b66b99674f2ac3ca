"""Components get their config values one way: `XArgs.from_config(cfg, ...)` from
the StackConfig that infra/__main__.py builds. No Args declares a default of its
own for a config value, so each default lives in raygpu.config only."""

from __future__ import annotations

import dataclasses

import pytest

from infra.budget import CostGuardArgs
from infra.cluster import EksClusterArgs
from infra.identity import IdentityArgs
from infra.network import NetworkArgs
from infra.storage import StorageArgs
from tests.infra.infra_helpers import stack_config

# Fixed rules of a component, not stack config keys.
NOT_CONFIG = {StorageArgs: {"abort_multipart_days"}}


@pytest.mark.parametrize(
    "args", [NetworkArgs, EksClusterArgs, StorageArgs, CostGuardArgs, IdentityArgs]
)
def test_component_args_have_no_defaults_of_their_own(args):
    defaulted = {
        f.name
        for f in dataclasses.fields(args)
        if f.default is not dataclasses.MISSING
        or f.default_factory is not dataclasses.MISSING
    }
    assert defaulted == NOT_CONFIG.get(args, set())
    assert hasattr(args, "from_config")


def test_values_come_from_the_stack_config():
    cfg = stack_config(
        vpcCidr="10.40.0.0/18",
        azCount=2,
        natGatewayMode="per_az",
        flowLogRetentionDays=7,
        rayNamespace="ml",
        rayServiceAccount="trainer",
        rayWorkerServiceAccount="worker",
        protectDataBucket=False,
        dataBucketAccessLogging=True,
        dataKeyUserArns=["arn:aws:iam::210987654321:role/uploader"],
        budgetScope="stack",
    )
    net = NetworkArgs.from_config(cfg)
    assert (net.cidr, net.nat_gateway_mode, net.flow_log_retention_days) == (
        "10.40.0.0/18",
        "per_az",
        7,
    )
    assert net.private_subnet_cidrs == cfg.private_subnet_cidrs
    assert EksClusterArgs.from_config(cfg, ["s1"]).log_retention_days == 7
    storage = StorageArgs.from_config(cfg)
    assert (storage.protect_data, storage.access_logging) == (False, True)
    assert storage.log_retention_days == 7
    assert CostGuardArgs.from_config(cfg).scope == "stack"
    identity = IdentityArgs.from_config(
        cfg,
        oidc_issuer_url="https://oidc",
        data_bucket_arn="d",
        artifacts_bucket_arn="a",
        kms_key_arn="k",
        kms_key_id="k-id",
    )
    assert identity.namespace == "ml"
    assert identity.service_accounts == ("trainer", "worker")
    assert identity.key_users == ("arn:aws:iam::210987654321:role/uploader",)
    assert (identity.keep_key_policy, identity.kms_key_id) == (False, "k-id")
    assert identity.tags == cfg.iam_tags
