"""Optional remote-write of the stack's Prometheus to Amazon Managed Service for
Prometheus (AMP), signed with SigV4 through an IRSA role.

Given the workspace's ARN and its endpoint URL (`aws amp describe-workspace`:
`arn`, `prometheusEndpoint`) and the role's ARN, this module produces the values
that kube-prometheus-stack's Prometheus needs (its remoteWrite entry and the
role annotation on its service account) and the one IAM policy that role gets:
aps:RemoteWrite on that one workspace. Creating the role (trusting
PROMETHEUS_SERVICE_ACCOUNT through the cluster's OIDC provider) is the Pulumi
program's part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from raygpu.errors import UsageError
from raygpu.manifests import IRSA_ANNOTATION

# The service account the chart creates for Prometheus (set by name in the values),
# the subject the IRSA role trusts.
PROMETHEUS_SERVICE_ACCOUNT = "prometheus"
_WORKSPACE_ARN = re.compile(
    r"^arn:aws(-[a-z]+)*:aps:(?P<region>[a-z0-9-]+):\d{12}:workspace/(?P<id>ws-[\w-]+)$"
)
_WORKSPACE_URL = re.compile(
    r"^https://aps-workspaces\.(?P<region>[a-z0-9-]+)\.amazonaws\.com"
    r"/workspaces/(?P<id>ws-[\w-]+)/?$"
)
_ROLE_ARN = re.compile(r"^arn:aws(-[a-z]+)*:iam::\d{12}:role/[\w+=,.@/-]+$")
# AMP's recommended queue settings for remote write (its user guide, "Set up
# ingestion from a new Prometheus server using Helm").
QUEUE_CONFIG = {"maxSamplesPerSend": 1000, "maxShards": 200, "capacity": 2500}


class RemoteWriteError(UsageError, ValueError):
    """A workspace or role that cannot be written to as given."""


@dataclass(frozen=True)
class AmpTarget:
    workspace_arn: str
    workspace_url: str  # prometheusEndpoint: https://aps-workspaces.<r>.../ws-.../
    role_arn: str

    def __post_init__(self) -> None:
        arn = _WORKSPACE_ARN.match(self.workspace_arn)
        if not arn:
            raise RemoteWriteError(
                f"workspace_arn: {self.workspace_arn!r} is not an AMP workspace ARN "
                "like arn:aws:aps:us-east-1:123456789012:workspace/ws-..."
            )
        url = _WORKSPACE_URL.match(self.workspace_url)
        if not url:
            raise RemoteWriteError(
                f"workspace_url: {self.workspace_url!r} is not an AMP endpoint like "
                "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-.../"
            )
        if (url["region"], url["id"]) != (arn["region"], arn["id"]):
            raise RemoteWriteError(
                f"workspace_url: {self.workspace_url!r} is not the endpoint of "
                f"{self.workspace_arn}"
            )
        if not _ROLE_ARN.match(self.role_arn):
            raise RemoteWriteError(
                f"role_arn: {self.role_arn!r} is not an IAM role ARN like "
                "arn:aws:iam::123456789012:role/name"
            )

    @property
    def region(self) -> str:
        return _WORKSPACE_ARN.match(self.workspace_arn)["region"]

    @property
    def remote_write_url(self) -> str:
        return f"{self.workspace_url.rstrip('/')}/api/v1/remote_write"


def service_account_subject(monitoring_namespace: str) -> str:
    """The `sub` claim the IRSA role's trust policy must require."""
    return f"system:serviceaccount:{monitoring_namespace}:{PROMETHEUS_SERVICE_ACCOUNT}"


def remote_write_policy(workspace_arn: str) -> dict[str, Any]:
    """The IRSA role's only policy: remote write into this one workspace."""
    if not _WORKSPACE_ARN.match(workspace_arn):
        raise RemoteWriteError(
            f"workspace_arn: {workspace_arn!r} is not an AMP workspace ARN"
        )
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "RemoteWriteOneWorkspace",
                "Effect": "Allow",
                "Action": ["aps:RemoteWrite"],
                "Resource": workspace_arn,
            }
        ],
    }


def prometheus_values(target: AmpTarget | None) -> dict[str, Any]:
    """kube-prometheus-stack's `prometheus` values for remote write (none: {})."""
    account: dict[str, Any] = {"create": True, "name": PROMETHEUS_SERVICE_ACCOUNT}
    if target is None:
        return {"serviceAccount": account}
    return {
        "serviceAccount": {
            **account,
            "annotations": {IRSA_ANNOTATION: target.role_arn},
        },
        "prometheusSpec": {
            "remoteWrite": [
                {
                    "url": target.remote_write_url,
                    "sigv4": {"region": target.region},
                    "queueConfig": dict(QUEUE_CONFIG),
                }
            ]
        },
    }
