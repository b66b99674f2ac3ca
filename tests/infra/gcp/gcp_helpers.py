"""Running the real Pulumi program on a Google Cloud stack under Pulumi's mocks.

raygpu.offline's mocks compute what AWS would return; `GcpMocks` adds what Google
Cloud computes from a resource's inputs (a service account's email, a cluster's
endpoint, resource IDs) and answers the program's two invokes (the GCS service
agent, the project number). `run_gcp` swaps them in for one run.
"""

from __future__ import annotations

import copy
import runpy
from typing import Any

import pytest

from raygpu import config, offline

MOCK_PROJECT_NUMBER = "123456789012"
GCS_AGENT_DOMAIN = "gs-project-accounts.iam.gserviceaccount.com"
STACK_FILE = offline.ROOT / "Pulumi.gcp-dev.yaml"


def gcp_values(**changes: Any) -> dict[str, Any]:
    """The committed example stack's values with `changes`."""
    values = copy.deepcopy(config.stack_file_values(STACK_FILE))
    values.update(changes)
    return values


class GcpMocks(offline.RaygpuMocks):
    def __init__(self, region: str, project: str) -> None:
        super().__init__(region)
        self.project = project

    def new_resource(self, args):
        if not args.typ.startswith("gcp:"):
            return super().new_resource(args)
        state = dict(args.inputs)
        name = state.get("name") or args.name
        project, region = self.project, self.region
        rid = f"projects/{project}/{args.typ.split('/')[-1].split(':')[0]}/{name}"
        if args.typ == "gcp:serviceaccount/account:Account":
            email = f"{state['accountId']}@{project}.iam.gserviceaccount.com"
            rid = f"projects/{project}/serviceAccounts/{email}"
            state.update(email=email, name=rid, member=f"serviceAccount:{email}")
        elif args.typ == "gcp:container/cluster:Cluster":
            rid = f"projects/{project}/locations/{region}/clusters/{name}"
            state.update(
                endpoint="10.0.0.2", masterAuth={"clusterCaCertificate": "Q0E="}
            )
        elif args.typ == "gcp:kms/keyRing:KeyRing":
            rid = f"projects/{project}/locations/{region}/keyRings/{name}"
        elif args.typ == "gcp:kms/cryptoKey:CryptoKey":
            rid = f"{state['keyRing']}/cryptoKeys/{name}"
        elif args.typ == "gcp:storage/bucket:Bucket":
            rid = name
        state.setdefault("name", name)
        return rid, state

    def call(self, args):
        if (
            args.token
            == "gcp:storage/getProjectServiceAccount:getProjectServiceAccount"
        ):
            email = f"service-{MOCK_PROJECT_NUMBER}@{GCS_AGENT_DOMAIN}"
            return {
                "emailAddress": email,
                "member": f"serviceAccount:{email}",
                "id": email,
            }
        if args.token == "gcp:organizations/getProject:getProject":
            return {
                "number": MOCK_PROJECT_NUMBER,
                "projectId": self.project,
                "id": self.project,
            }
        return super().call(args)


def run_gcp(values: dict[str, Any], stack: str = "gcp-dev") -> offline.OfflineRun:
    """Validate `values` and run infra/__main__.py on them, as `pulumi up` would."""
    cfg = config.load_config(stack, values)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            offline, "RaygpuMocks", lambda region: GcpMocks(region, cfg.gcp_project)
        )
        return offline.run_under_mocks(
            lambda: runpy.run_path(str(offline.PROGRAM), run_name="__main__") and None,
            stack=cfg.stack,
            region=cfg.region,
            project=cfg.project,
            engine_config=config.engine_values(values),
        )
