"""Shared helpers for the infra component tests (mock runtime, recorded inputs)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from raygpu.config import StackConfig, load_config
from raygpu.offline import OfflineRun, run_under_mocks

# The stack outputs scripts/ rely on (the contract); every test checks these.
CONTRACT_OUTPUTS = frozenset(
    {
        "cluster_name",
        "region",
        "kubeconfig",
        "vpc_id",
        "data_bucket",
        "artifacts_bucket",
        "ray_namespace",
        "ray_service_account",
        "irsa_role_arn",
    }
)


def stack_config(stack: str = "dev", **overrides: Any) -> StackConfig:
    values: dict[str, Any] = {
        "aws:region": "us-east-1",
        "gpuPools": [
            {"name": "a10g", "instanceTypes": ["g5.xlarge"], "maxSize": 2},
        ],
        "budgetMonthlyUsd": 300,
    }
    values.update(overrides)
    return load_config(stack, values)


def run_component(build: Callable[[], Any], cfg: StackConfig) -> OfflineRun:
    """Run `build` (which creates one or more components) under the mocks."""

    def program() -> None:
        build()

    return run_under_mocks(program, stack=cfg.stack, region=cfg.region)


def policy(doc: Any) -> dict[str, Any]:
    return json.loads(doc) if isinstance(doc, str) else doc


def statements(doc: Any) -> list[dict[str, Any]]:
    stmts = policy(doc)["Statement"]
    return stmts if isinstance(stmts, list) else [stmts]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
