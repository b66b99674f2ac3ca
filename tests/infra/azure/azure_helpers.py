"""Running the real Pulumi program on an Azure stack under Pulumi's mocks.

What Azure computes (ARM IDs, a public IP's address, identities' client IDs, the
cluster's OIDC issuer, the two invokes) is raygpu.offline's `azure-native` row
(raygpu/offline_azure.py), the same mocks `raygpu plan` runs under; `run_azure`
runs the program on a stack's values under them.
"""

from __future__ import annotations

import copy
import runpy
from typing import Any

from raygpu import config, offline
from raygpu.offline_azure import (  # noqa: F401 (the tests' expected values)
    MOCK_CALLER_OBJECT_ID,
    MOCK_EGRESS_IP,
    MOCK_SERVER,
)

STACK_FILE = offline.ROOT / "Pulumi.azure-dev.yaml"


def azure_values(**changes: Any) -> dict[str, Any]:
    """The committed example stack's values with `changes`."""
    values = copy.deepcopy(config.stack_file_values(STACK_FILE))
    values.update(changes)
    return values


def run_azure(values: dict[str, Any], stack: str = "azure-dev") -> offline.OfflineRun:
    """Validate `values` and run infra/__main__.py on them, as `pulumi up` would."""
    cfg = config.load_config(stack, values)
    return offline.run_under_mocks(
        lambda: runpy.run_path(str(offline.PROGRAM), run_name="__main__") and None,
        stack=cfg.stack,
        region=cfg.region,
        project=cfg.project,
        engine_config=config.engine_values(values),
        mocks=offline.mocks_for(cfg),
    )
