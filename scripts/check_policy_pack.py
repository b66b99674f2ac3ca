"""Run the CrossGuard pack (infra/policy) through pulumi_policy's own analyzer on a
stack's offline plan, without the Pulumi CLI or a cloud account.

    cd infra/policy && python3 -m venv venv && venv/bin/pip install -r requirements.txt
    infra/policy/venv/bin/python scripts/check_policy_pack.py --stack dev [--preview]
    infra/policy/venv/bin/python scripts/check_policy_pack.py --stack dev --break

It builds the AnalyzeStack request the engine would send (every resource's
properties as a protobuf Struct, its parent and property dependencies), hands it
to the analyzer servicer of the pack's PolicyPack, and prints each diagnostic.
`--preview` replaces every ARN-derived policy document with pulumi_policy's
"unknown" sentinel, as a first preview sees them; `--break` opens the EKS API to
0.0.0.0/0 to show a mandatory violation. Exit status 1 when a mandatory
diagnostic comes back.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

from google.protobuf import json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2
from pulumi_policy import EnforcementLevel
from pulumi_policy.policy import _PolicyAnalyzerServicer
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from raygpu.offline import run_offline

PACK = Path(__file__).resolve().parents[1] / "infra" / "policy" / "__main__.py"
JSON_DOCUMENTS = ("policy", "assumeRolePolicy")


def request(
    stack: str, preview: bool, broken: bool
) -> analyzer_pb2.AnalyzeStackRequest:
    resources = []
    for r in run_offline(stack).resources:
        props = dict(r["inputs"])
        if preview:
            props.update(
                {k: UNKNOWN_STRING_VALUE for k in JSON_DOCUMENTS if k in props}
            )
        if broken and r["type"] == "aws:eks/cluster:Cluster":
            props["vpcConfig"] = {
                **props["vpcConfig"],
                "publicAccessCidrs": ["0.0.0.0/0"],
            }
        struct = json_format.ParseDict(props, struct_pb2.Struct())
        deps = {
            k: analyzer_pb2.AnalyzerPropertyDependencies(urns=v)
            for k, v in r.get("property_dependencies", {}).items()
        }
        resources.append(
            analyzer_pb2.AnalyzerResource(
                type=r["type"],
                properties=struct,
                urn=r["urn"],
                name=r["name"],
                parent=r["parent_urn"] or "",
                propertyDependencies=deps,
            )
        )
    return analyzer_pb2.AnalyzeStackRequest(resources=resources)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--preview", action="store_true")
    parser.add_argument("--break", dest="broken", action="store_true")
    args = parser.parse_args()
    pack = runpy.run_path(str(PACK), run_name="raygpu_policy_pack")
    policies = pack["policies"]()
    servicer = _PolicyAnalyzerServicer(
        "raygpu-security", "0.1.0", policies, EnforcementLevel.MANDATORY, None
    )
    info = servicer.GetAnalyzerInfo(None, None)
    print(f"pack {info.name}: {len(info.policies)} policies")
    response = servicer.AnalyzeStack(
        request(args.stack, args.preview, args.broken), None
    )
    mandatory = 0
    for d in response.diagnostics:
        level = analyzer_pb2.EnforcementLevel.Name(d.enforcementLevel)
        mandatory += level == "MANDATORY"
        print(f"{level} {d.policyName} {d.urn.rsplit('::', 1)[-1]}: {d.message}")
    print(f"{len(response.diagnostics)} diagnostic(s), {mandatory} mandatory")
    return 1 if mandatory else 0


if __name__ == "__main__":
    sys.exit(main())
