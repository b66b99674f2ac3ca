"""Running the real Pulumi program on a Google Cloud stack under Pulumi's mocks.

The mocks are the product's own (raygpu.offline's Google Cloud row: a service
account's email, a cluster's endpoint, resource IDs, the GCS service agent and the
project number), so these tests exercise what `raygpu plan` runs.
"""

from __future__ import annotations

import copy
import runpy
from typing import Any

from raygpu import config, offline

MOCK_PROJECT_NUMBER = offline.MOCK_PROJECT_NUMBER
STACK_FILE = offline.ROOT / "Pulumi.gcp-dev.yaml"


def gcp_values(**changes: Any) -> dict[str, Any]:
    """The committed example stack's values with `changes`."""
    values = copy.deepcopy(config.stack_file_values(STACK_FILE))
    values.update(changes)
    return values


def run_gcp(values: dict[str, Any], stack: str = "gcp-dev") -> offline.OfflineRun:
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
