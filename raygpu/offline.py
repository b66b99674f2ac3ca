"""Run the real Pulumi program under Pulumi's mock runtime, offline.

`run_offline(stack)` reads `Pulumi.<stack>.yaml`, validates it, hands its values to
the program exactly as `pulumi up` would (JSON strings under `raygpu:`, `aws:` or
`gcp:` keys),
runs `infra/__main__.py` with `pulumi.runtime.set_mocks`, and returns every
resource the engine was asked to register (type, name, parent, inputs, options)
and the stack outputs. No credentials, no Pulumi CLI, no network.

The mocks stand in for a cloud only where the program reads a value that the cloud
computes (AWS: ARNs, bucket names, the cluster's endpoint and OIDC issuer,
Availability Zones; Google Cloud: service-account emails, the cluster's endpoint,
the project number and the GCS service agent; Azure: ARM IDs, identities' client
IDs, the OIDC issuer, the user kubeconfig), one row per cloud in CLOUD_MOCKS;
every input the program passes is recorded as the engine received it.
"""

from __future__ import annotations

import asyncio
import hashlib
import runpy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.sync_await import _sync_await

from raygpu import config as config_mod
from raygpu import offline_azure

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = ROOT / "infra" / "__main__.py"
MOCK_ACCOUNT = "123456789012"
# Google Cloud's computed values: the project's number (in the GCS service
# agent's email) and a project for a config that names none.
MOCK_PROJECT_NUMBER = "123456789012"
MOCK_GCP_PROJECT = "offline-project"
GCS_AGENT_DOMAIN = "gs-project-accounts.iam.gserviceaccount.com"
SECRET_MASK = "[secret]"


@dataclass
class OfflineRun:
    resources: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)

    # ---- helpers for tests and scripts
    def of_type(self, typ: str) -> list[dict[str, Any]]:
        return [r for r in self.resources if r["type"] == typ]

    def one(self, typ: str, name: str | None = None) -> dict[str, Any]:
        found = [r for r in self.of_type(typ) if name is None or r["name"] == name]
        if len(found) != 1:
            raise LookupError(f"{len(found)} resources of type {typ} named {name}")
        return found[0]

    def by_urn(self, urn: str) -> dict[str, Any] | None:
        return next((r for r in self.resources if r["urn"] == urn), None)

    def public_outputs(self) -> dict[str, Any]:
        """Outputs with every secret replaced by a mask (safe to print)."""
        return {
            k: SECRET_MASK if k in self.secret_outputs else v
            for k, v in self.outputs.items()
        }


def _short(typ: str) -> str:
    return typ.split(":")[-1].lower()


def _aws_state(mocks: RaygpuMocks, typ: str, name: str, state: dict, digest: str):
    """(id, state) of an AWS resource: what AWS computes from its inputs."""
    rid = f"{_short(typ)}-{digest}"
    region, account = mocks.region, mocks.account
    if typ == "aws:s3/bucket:Bucket":
        bucket = state.get("bucket") or f"{name}-{digest[:7]}"
        state.update(bucket=bucket, arn=f"arn:aws:s3:::{bucket}")
        rid = bucket
    elif typ == "aws:kms/key:Key":
        state.update(
            keyId=digest,
            arn=f"arn:aws:kms:{region}:{account}:key/{digest}",
        )
        rid = digest
    elif typ == "aws:iam/role:Role":
        role = state.get("name") or f"{name}-{digest[:7]}"
        state.update(name=role, arn=f"arn:aws:iam::{account}:role/{role}")
        rid = role
    elif typ == "aws:eks/cluster:Cluster":
        cluster = state.get("name") or name
        host = f"{digest.upper()}.gr7.{region}.eks.amazonaws.com"
        state.update(
            name=cluster,
            arn=f"arn:aws:eks:{region}:{account}:cluster/{cluster}",
            endpoint=f"https://{host}",
            certificateAuthority={"data": "TU9DSy1DQQ=="},
            identities=[
                {
                    "oidcs": [
                        {
                            "issuer": f"https://oidc.eks.{region}.amazonaws.com"
                            f"/id/{digest.upper()}"
                        }
                    ]
                }
            ],
            vpcConfig={
                **state.get("vpcConfig", {}),
                "clusterSecurityGroupId": f"sg-{digest}",
                "vpcId": "vpc-mock",
            },
        )
        rid = cluster
    elif typ == "aws:eks/nodeGroup:NodeGroup":
        group = state.get("nodeGroupName") or (
            f"{state.get('nodeGroupNamePrefix', name)}{digest}"
        )
        state.update(
            nodeGroupName=group,
            arn=f"arn:aws:eks:{region}:{account}:nodegroup/"
            f"{state.get('clusterName')}/{group}/{digest}",
            resources=[{"autoscalingGroups": [{"name": f"eks-{group}-{digest}"}]}],
            status="ACTIVE",
        )
        rid = f"{state.get('clusterName')}:{group}"
    elif typ == "aws:ec2/launchTemplate:LaunchTemplate":
        state.update(latestVersion=1, defaultVersion=1)
        rid = f"lt-{digest}"
    elif typ == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
        url = str(state.get("url", "")).removeprefix("https://")
        state.update(arn=f"arn:aws:iam::{account}:oidc-provider/{url}")
    elif typ == "aws:budgets/budget:Budget":
        state.setdefault("name", name)
    elif typ == "aws:ec2/vpc:Vpc":
        rid = f"vpc-{digest}"
    elif typ == "aws:ec2/subnet:Subnet":
        rid = f"subnet-{digest}"
    if "arn" not in state:
        service = typ.split(":")[1].split("/")[0]
        state["arn"] = f"arn:aws:{service}:{region}:{account}:{_short(typ)}/{rid}"
    return rid, state


def _gcp_state(mocks: RaygpuMocks, typ: str, name: str, state: dict, digest: str):
    """(id, state) of a Google Cloud resource: a service account's email, a
    cluster's endpoint, IDs in Google's `projects/...` form."""
    name = state.get("name") or name
    project, region = mocks.project, mocks.region
    rid = f"projects/{project}/{typ.split('/')[-1].split(':')[0]}/{name}"
    if typ == "gcp:serviceaccount/account:Account":
        email = f"{state['accountId']}@{project}.iam.gserviceaccount.com"
        rid = f"projects/{project}/serviceAccounts/{email}"
        state.update(email=email, name=rid, member=f"serviceAccount:{email}")
    elif typ == "gcp:container/cluster:Cluster":
        rid = f"projects/{project}/locations/{region}/clusters/{name}"
        state.update(endpoint="10.0.0.2", masterAuth={"clusterCaCertificate": "Q0E="})
    elif typ == "gcp:kms/keyRing:KeyRing":
        rid = f"projects/{project}/locations/{region}/keyRings/{name}"
    elif typ == "gcp:kms/cryptoKey:CryptoKey":
        rid = f"{state['keyRing']}/cryptoKeys/{name}"
    elif typ == "gcp:storage/bucket:Bucket":
        rid = name
    state.setdefault("name", name)
    return rid, state


def _aws_zones(mocks: RaygpuMocks, args: Any) -> dict[str, Any]:
    names = [f"{mocks.region}{s}" for s in "abcdef"]
    return {
        "names": names,
        "zoneIds": [f"use1-az{i}" for i in range(1, 7)],
        "id": mocks.region,
    }


def _aws_partition(mocks: RaygpuMocks, args: Any) -> dict[str, Any]:
    gov = "-gov-" in mocks.region
    return {
        "partition": "aws-us-gov" if gov else "aws",
        "dnsSuffix": "amazonaws.com",
        "id": "aws",
    }


def _aws_caller(mocks: RaygpuMocks, args: Any) -> dict[str, Any]:
    return {
        "accountId": mocks.account,
        "arn": f"arn:aws:iam::{mocks.account}:user/offline",
        "userId": "OFFLINE",
        "id": mocks.account,
    }


def _gcs_agent(mocks: RaygpuMocks, args: Any) -> dict[str, Any]:
    email = f"service-{MOCK_PROJECT_NUMBER}@{GCS_AGENT_DOMAIN}"
    return {"emailAddress": email, "member": f"serviceAccount:{email}", "id": email}


def _gcp_project(mocks: RaygpuMocks, args: Any) -> dict[str, Any]:
    return {
        "number": MOCK_PROJECT_NUMBER,
        "projectId": mocks.project,
        "id": mocks.project,
    }


@dataclass(frozen=True)
class CloudMocks:
    """What one cloud's provider computes offline: resource state by type (for
    the types whose provider token starts with `prefix`) and invokes by token."""

    prefix: str
    new_resource: Callable[..., tuple[str, dict[str, Any]]]
    invokes: Mapping[str, Callable[[Any, Any], dict[str, Any]]]


# One row per cloud; a new cloud adds its row.
CLOUD_MOCKS = (
    CloudMocks(
        "aws",
        _aws_state,
        {
            "aws:index/getAvailabilityZones:getAvailabilityZones": _aws_zones,
            "aws:index/getPartition:getPartition": _aws_partition,
            "aws:index/getCallerIdentity:getCallerIdentity": _aws_caller,
        },
    ),
    CloudMocks(
        "gcp",
        _gcp_state,
        {
            "gcp:storage/getProjectServiceAccount:getProjectServiceAccount": (
                _gcs_agent
            ),
            "gcp:organizations/getProject:getProject": _gcp_project,
        },
    ),
    # Azure's row lives in raygpu/offline_azure.py (this file's size).
    CloudMocks(offline_azure.PREFIX, offline_azure.azure_state, offline_azure.INVOKES),
)


class RaygpuMocks(pulumi.runtime.Mocks):
    """Computed values the clouds would return, derived from the inputs (per
    cloud, from CLOUD_MOCKS); any other resource keeps its inputs as its state."""

    def __init__(
        self,
        region: str,
        account: str = MOCK_ACCOUNT,
        project: str = MOCK_GCP_PROJECT,
        subscription: str = offline_azure.MOCK_SUBSCRIPTION,
    ) -> None:
        self.region = region
        self.account = account
        self.project = project  # the Google Cloud project (gcp:project)
        self.subscription = subscription  # azure-native:subscriptionId

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        typ, name = args.typ, args.name
        state = dict(args.inputs)
        digest = hashlib.sha1(f"{typ}/{name}".encode()).hexdigest()[:8]
        for cloud in CLOUD_MOCKS:
            if typ.startswith(f"{cloud.prefix}:"):
                return cloud.new_resource(self, typ, name, state, digest)
        return f"{_short(typ)}-{digest}", state

    def call(self, args: pulumi.runtime.MockCallArgs):
        for cloud in CLOUD_MOCKS:
            if args.token in cloud.invokes:
                return cloud.invokes[args.token](self, args)
        raise NotImplementedError(f"no offline mock for invoke {args.token}")


def mocks_for(cfg: Any) -> RaygpuMocks:
    """The mocks for a validated stack config of any cloud."""
    return RaygpuMocks(
        cfg.region,
        project=getattr(cfg, "gcp_project", None) or MOCK_GCP_PROJECT,
        subscription=getattr(cfg, "subscription_id", None)
        or offline_azure.MOCK_SUBSCRIPTION,
    )


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """A MockMonitor that also keeps what only the engine sees: parent, options."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.records: list[dict[str, Any]] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            inputs = rpc.deserialize_properties(request.object)
            self.records.append(
                {
                    "type": request.type,
                    "name": request.name,
                    "urn": response.urn,
                    "id": response.id,
                    "parent_urn": request.parent,
                    "custom": bool(request.custom),
                    "inputs": _plain(inputs),
                    # Which resources each input came from (the policy rules
                    # link a bucket's settings to the bucket through these).
                    "property_dependencies": {
                        k: list(v.urns) for k, v in request.propertyDependencies.items()
                    },
                    "options": {
                        "protect": bool(request.protect),
                        "retain_on_delete": bool(request.retainOnDelete),
                        "depends_on": list(request.dependencies),
                        "ignore_changes": list(request.ignoreChanges),
                        "provider": request.provider,
                    },
                }
            )
        return response


def mask_secrets(value: Any) -> Any:
    """`value` with every secret the engine marked replaced by SECRET_MASK."""
    if isinstance(value, Mapping):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            return SECRET_MASK
        return {k: mask_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """Inputs as plain JSON-able data (unknowns and resource refs as strings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _ensure_event_loop() -> None:
    """Pulumi's runtime asks for the thread's event loop; after an `asyncio.run`
    in the same thread (which leaves none set) that raises, so set a fresh one."""
    try:
        asyncio.get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())


def run_under_mocks(
    program: Callable[[], Mapping[str, Any] | None],
    *,
    stack: str,
    region: str,
    project: str = config_mod.DEFAULT_PROJECT,
    engine_config: Mapping[str, str] | None = None,
    mocks: RaygpuMocks | None = None,
) -> OfflineRun:
    """Run `program` (which registers resources and may return outputs to resolve)
    under the mock runtime (`mocks`, default: RaygpuMocks(region)); return what
    the engine received."""
    mocks = mocks or RaygpuMocks(region)
    monitor = RecordingMonitor(mocks)
    _ensure_event_loop()
    settings.ROOT.set(None)
    pulumi.runtime.set_all_config(dict(engine_config or {}), [])
    pulumi.runtime.set_mocks(
        mocks, project=project, stack=stack, preview=False, monitor=monitor
    )
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()
    returned: dict[str, Any] = {}

    def body() -> pulumi.Output:
        result = program()
        if result:
            returned.update(result)
        root = settings.get_root_resource()
        exported = dict(getattr(root, "outputs", {}) or {})
        returned.update({k: v for k, v in exported.items() if k not in returned})
        return pulumi.Output.all(
            *[pulumi.Output.from_input(v) for v in returned.values()]
        )

    _sync_await(
        pulumi_mocks.run_pulumi_func(
            lambda: _sync_await(pulumi.Output.from_input(body()).future())
        )
    )
    run = OfflineRun()
    for name, value in returned.items():
        out = pulumi.Output.from_input(value)
        run.outputs[name] = _plain(_sync_await(out.future()))
        if _sync_await(out.is_secret()):
            run.secret_outputs.add(name)
    by_urn = {r["urn"]: r for r in monitor.records}
    for rec in monitor.records:
        parent = by_urn.get(rec["parent_urn"])
        rec["parent"] = parent["name"] if parent else None
        rec["parent_type"] = parent["type"] if parent else None
        run.resources.append(rec)
    return run


def stack_path(stack: str) -> Path:
    return ROOT / f"Pulumi.{stack}.yaml"


def run_offline(stack: str, config_path: str | Path | None = None) -> OfflineRun:
    """Validate `Pulumi.<stack>.yaml` (or `config_path`) and run the real program
    on it under mocks. Raises config.ConfigError for a bad stack file."""
    path = Path(config_path) if config_path is not None else stack_path(stack)
    values = config_mod.stack_file_values(path)
    cfg = config_mod.load_config(stack, values)  # reject before any resource
    return run_under_mocks(
        lambda: runpy.run_path(str(PROGRAM), run_name="__main__") and None,
        stack=cfg.stack,
        region=cfg.region,
        project=cfg.project,
        engine_config=config_mod.engine_values(values),
        mocks=mocks_for(cfg),
    )
