"""The monitoring keys of an AWS stack: whether the monitoring stack is installed
(raygpu/monitoring/stack.py, infra/monitoring.py), Prometheus's retention and
volume, and the optional Amazon Managed Service for Prometheus workspace it
remote-writes to. `StackConfig` inherits them, so each is declared once, here.

The workspace is given by its ARN and its endpoint URL (`aws amp
describe-workspace`: `arn`, `prometheusEndpoint`), both or neither; empty is off.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
)

from raygpu.config.fields import ConfigModel, bad, matching

# A Prometheus duration such as 15d or 12h30m (its units, largest first).
_Retention = matching(
    r"^(?=\d)(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$",
    'a Prometheus duration like "15d" or "12h" (units y, w, d, h, m, s, ms)',
)
# An AMP workspace's ARN and endpoint, with its region and ID as named groups: the
# same as raygpu.monitoring.remote_write's, which could read these (config cannot
# import it: remote_write imports manifests, which imports config).
WORKSPACE_ARN_PATTERN = (
    r"^arn:aws(-[a-z]+)*:aps:(?P<region>[a-z0-9-]+):\d{12}:workspace/(?P<id>ws-[\w-]+)$"
)
WORKSPACE_URL_PATTERN = (
    r"^https://aps-workspaces\.(?P<region>[a-z0-9-]+)\.amazonaws\.com"
    r"/workspaces/(?P<id>ws-[\w-]+)/?$"
)


def _empty_is_none(value: Any) -> Any:
    return None if value in (None, "") else value


_WorkspaceArn = Annotated[
    matching(
        WORKSPACE_ARN_PATTERN,
        "an AMP workspace ARN like arn:aws:aps:us-east-1:123456789012:workspace/ws-...",
    )
    | None,
    BeforeValidator(_empty_is_none),
]
_WorkspaceUrl = Annotated[
    matching(
        WORKSPACE_URL_PATTERN,
        "an AMP endpoint like "
        "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-.../",
    )
    | None,
    BeforeValidator(_empty_is_none),
]
# gp3 volumes hold 1 GiB to 16 TiB.
MAX_STORAGE_GIB = 16384


class MonitoringKeys(ConfigModel):
    """`raygpu:monitoring*` and `raygpu:ampWorkspace*`."""

    monitoring: StrictBool = Field(
        True,
        description="Install the monitoring stack (kube-prometheus-stack, the DCGM "
        "exporter, Ray's monitors and dashboards, the EBS CSI driver its volume "
        "needs); its system-node requests fit the dev node (docs/operations.md)",
    )
    monitoring_retention: _Retention = Field(
        "15d", description="How long Prometheus keeps samples"
    )
    monitoring_storage_gib: StrictInt = Field(
        20,
        ge=1,
        le=MAX_STORAGE_GIB,
        description="Size of Prometheus's encrypted gp3 volume in GiB (billed "
        "asleep or awake); Prometheus deletes old blocks past 80 % of it",
    )
    amp_workspace_arn: _WorkspaceArn = Field(
        None,
        description="Amazon Managed Service for Prometheus workspace to remote-write "
        "to, through an IRSA role allowed aps:RemoteWrite on it only; empty: off",
    )
    amp_workspace_url: _WorkspaceUrl = Field(
        None,
        description="That workspace's endpoint (prometheusEndpoint), given with "
        "ampWorkspaceArn; empty: off",
    )

    @field_validator("amp_workspace_arn")
    @classmethod
    def _needs_monitoring(cls, arn: str | None, info: ValidationInfo) -> str | None:
        if arn and info.data.get("monitoring") is False:
            raise bad("is set but monitoring is false: nothing would remote-write")
        return arn

    @field_validator("amp_workspace_url")
    @classmethod
    def _same_workspace(cls, url: str | None, info: ValidationInfo) -> str | None:
        if "amp_workspace_arn" not in info.data:
            return url  # the ARN failed: its own message says why
        arn = info.data["amp_workspace_arn"]
        if (arn is None) != (url is None):
            raise bad(
                "ampWorkspaceArn and ampWorkspaceUrl must be given together (or "
                "both left empty for no remote write)"
            )
        if arn is not None:
            a, u = (
                re.match(WORKSPACE_ARN_PATTERN, arn),
                re.match(WORKSPACE_URL_PATTERN, url),
            )
            if (a["region"], a["id"]) != (u["region"], u["id"]):
                raise bad(f"{url!r} is not the endpoint of {arn}")
        return url

    @property
    def amp_configured(self) -> bool:
        return self.monitoring and self.amp_workspace_arn is not None


def monitoring_keys(cfg: Any) -> MonitoringKeys:
    """`cfg`'s monitoring keys. A cloud's model without them (GCP, Azure: their
    programs install no monitoring stack yet, docs/clouds.md) gets monitoring off."""
    if isinstance(cfg, MonitoringKeys):
        return cfg
    return MonitoringKeys.model_construct(monitoring=False)
