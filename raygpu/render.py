"""Write every Kubernetes object a stack applies, Helm values included, as YAML.

    raygpu render --stack dev --out rendered/dev
    raygpu render --stack dev --out DIR --outputs outputs.json

Offline: reads `Pulumi.<stack>.yaml`, builds the objects with the same functions the
Pulumi program uses (raygpu/manifests.py) and needs no credentials, no cluster and no
Pulumi CLI. Values that exist only after `pulumi up` (bucket names, the IRSA role
ARN) are written as `${data_bucket}`-style placeholders, or taken from a
`pulumi stack output --json` file given with `--outputs`.

Then it checks what it wrote: every RayCluster/RayJob/RayService against KubeRay's
CRD schema (when the CRD files are there) and the operator's own rules, and every
object and values file for public exposure (LoadBalancer/NodePort Services,
Ingress), and every NetworkPolicy for what the API server would refuse. Any
problem: exit status 1, each problem on its own line.

Files (numbered in apply order):
  00-namespace-<name>.yaml, 01-..., 02-serviceaccount-<name>.yaml, 03-...
  10-helm-<release>.values.yaml        values for `helm install -f`
  helm-releases.yaml                   chart, version, repo, namespace per release
  20-raycluster-<name>.yaml
  30-networkpolicy-<namespace>-<name>.yaml, 31-...
  templates/rayjob.yaml, templates/rayservice.yaml   what scripts/ fill in
  templates/rayjob-prepare.yaml, templates/rayjob-train-prepared.yaml
                                       the data path: prepare, then train on it
  templates/rayjob-tune.yaml           a hyper-parameter search (tune.py)
  40-prometheusrule-raygpu-alerts.yaml the alert rules (raygpu/monitoring/alerts.py),
                                       checked by structure and promtool if present
  41-podmonitor-ray-head.yaml, 42-...  the PodMonitors and ServiceMonitors (Ray head
                                       and workers, DCGM, the KubeRay operator, the
                                       Cluster Autoscaler)
  46-configmap-ray-dashboard-<name>.yaml   Ray's Grafana dashboards
The monitoring stack (raygpu/monitoring/stack.py) adds its namespaces (the
monitoring one, `restricted`, and `<it>-agents`, `privileged`, for node-exporter
and the DCGM exporter only) and StorageClass to the 0x files and
kube-prometheus-stack and the DCGM exporter to the Helm releases; its monitors are
checked against prometheus-operator's CRDs. A stack with `raygpu:monitoring: false`,
or on a cloud whose program installs no monitoring stack, gets none of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from raygpu import (
    autoscaler_values,
    clouds,
    crd_schema,
    helm_values,
    manifests,
    network_policies,
    options,
    workloads,
)
from raygpu.config import load_stack_file
from raygpu.config.monitoring_keys import monitoring_keys
from raygpu.errors import UsageError
from raygpu.monitoring import alerts, rulecheck
from raygpu.monitoring import stack as monitoring
from raygpu.stack import IDENTITY_OUTPUTS

REPO_ROOT = Path(__file__).resolve().parents[1]

PLACEHOLDER_REFS = manifests.ClusterRefs(
    data_bucket="${data_bucket}",
    artifacts_bucket="${artifacts_bucket}",
    irsa_role_arn="${irsa_role_arn}",
)
AUTOSCALER_ROLE_PLACEHOLDER = "${cluster_autoscaler_role_arn}"


def example_templates(cfg, refs: manifests.ClusterRefs) -> dict[str, dict[str, Any]]:
    """The RayJob and RayService templates by file name, filled in as the
    commands would."""
    package = clouds.of(cfg).uri(refs.artifacts_bucket, "jobs/ray_jobs.zip")
    env = {"working_dir": package}
    return {
        "rayjob.yaml": workloads.rayjob_manifest(
            cfg,
            refs,
            name="train-example",
            entrypoint="python train.py --epochs 2",
            runtime_env=env,
        ),
        "rayjob-prepare.yaml": workloads.prepare_rayjob_manifest(
            cfg,
            refs,
            name="prepare-example",
            dataset="example",
            data_format="csv",
            prepare_args=["--label-column", "label"],
            runtime_env=env,
        ),
        "rayjob-train-prepared.yaml": workloads.train_prepared_rayjob_manifest(
            cfg,
            refs,
            name="train-prepared-example",
            dataset="example",
            train_args=["--num-workers", "2", "--use-gpu", "--epochs", "10"],
            runtime_env=env,
        ),
        "rayjob-tune.yaml": workloads.tune_rayjob_manifest(
            cfg,
            refs,
            name="tune-example",
            tune_args=["--use-gpu", "--num-samples", "16", "--max-concurrent", "2"],
            runtime_env=env,
        ),
        "rayjob-lm.yaml": workloads.lm_rayjob_manifest(
            cfg,
            refs,
            name="lm-example",
            preset="base",
            train_args=["--epochs", "1", "--activation-checkpointing"],
            runtime_env=env,
        ),
        "rayservice.yaml": workloads.rayservice_manifest(
            cfg, refs, name="serve", working_dir=package
        ),
    }


MARKER = ".raygpu-render"


class RenderError(UsageError):
    """A problem the user can fix, printed on one line."""


@dataclass
class Rendered:
    written: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _dump(path: Path, obj: Any, header: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.dump(obj, Dumper=yaml.CSafeDumper, sort_keys=False, width=100)
    path.write_text(header + text, encoding="utf-8")
    return path


def _prepare(out: Path) -> None:
    """An empty or earlier-rendered directory; stale files of an earlier render
    (a pool since removed) are deleted, anything else is refused."""
    if out.exists() and not out.is_dir():
        raise RenderError(f"--out: {out} is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise RenderError(
                f"--out: {out} is not empty and was not written by render.py; "
                "choose an empty or new directory"
            )
        for old in sorted(out.rglob("*.yaml"), reverse=True):
            old.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by raygpu render\n", encoding="utf-8")


def refs_from_outputs(path: Path) -> manifests.ClusterRefs:
    """ClusterRefs from `pulumi stack output --json` (secrets may be absent)."""
    try:
        outputs = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RenderError(f"--outputs: no such file {path}") from None
    except ValueError as exc:
        raise RenderError(f"--outputs: {path} is not JSON ({exc})") from None
    if not isinstance(outputs, dict):
        raise RenderError(f"--outputs: {path} must hold a JSON object")
    identity = IDENTITY_OUTPUTS.get(str(outputs.get("cloud", "aws")), "irsa_role_arn")
    missing = [
        k for k in ("data_bucket", "artifacts_bucket", identity) if k not in outputs
    ]
    if missing:
        raise RenderError(f"--outputs: {path} lacks {', '.join(missing)}")
    return manifests.ClusterRefs(
        data_bucket=str(outputs["data_bucket"]),
        artifacts_bucket=str(outputs["artifacts_bucket"]),
        irsa_role_arn=str(outputs[identity]),
    )


def render(
    stack: str,
    out: Path,
    *,
    stack_file: Path | None = None,
    refs: manifests.ClusterRefs = PLACEHOLDER_REFS,
    autoscaler_role_arn: str = AUTOSCALER_ROLE_PLACEHOLDER,
    crd_dir: Path | None = None,
    validate: bool = True,
) -> Rendered:
    """Write the stack's objects under `out` and check them."""
    stack_file = stack_file or REPO_ROOT / f"Pulumi.{stack}.yaml"
    cfg = load_stack_file(stack_file, stack)
    if validate:
        missing = crd_schema.crd_dir_problem(crd_dir)
        if missing:
            raise RenderError(
                f"cannot validate: {missing}; --no-validate writes without checks"
            )
    result = Rendered()
    _prepare(out)

    cloud = clouds.of(cfg)
    if refs is PLACEHOLDER_REFS:  # the placeholder names the cloud's own output
        refs = replace(refs, irsa_role_arn=f"${{{IDENTITY_OUTPUTS[cloud.name]}}}")
    objects = manifests.cluster_objects(cfg, refs)
    core = [o for o in objects if o["kind"] in ("Namespace", "ServiceAccount")]
    keys = monitoring_keys(cfg)
    # Only what `pulumi up` installs: no monitoring objects where it installs none.
    monitoring_core = monitoring.core_objects(cfg) if keys.monitoring else []
    core += monitoring_core
    ray = [o for o in objects if o["apiVersion"] == manifests.RAY_API_VERSION]
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    for i, obj in enumerate(core):
        name = f"{i:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        result.written.append(_dump(out / name, obj))

    releases = [
        *(
            r
            for r in helm_values.helm_releases(cfg)
            if cloud.installs_device_plugin
            or r.name != helm_values.DEVICE_PLUGIN_RELEASE
        ),
        # GKE and AKS grow their node pools themselves (raygpu/clouds.py).
        *(
            [
                autoscaler_values.cluster_autoscaler_release(
                    cfg, role_arn=autoscaler_role_arn
                )
            ]
            if cloud.installs_cluster_autoscaler
            else []
        ),
        # AMP's remote write needs the role the stack creates: `pulumi up` adds it.
        *(
            monitoring.helm_releases(
                cfg,
                retention=keys.monitoring_retention,
                storage_gib=keys.monitoring_storage_gib,
            )
            if keys.monitoring
            else []
        ),
    ]
    index = []
    for i, release in enumerate(releases):
        name = f"{10 + i:02d}-helm-{release.name}.values.yaml"
        header = (
            f"# helm upgrade --install {release.name} {release.chart} "
            f"--repo {release.repo} --version {release.version} "
            f"--namespace {release.namespace} -f {name}\n"
        )
        result.written.append(_dump(out / name, release.values, header))
        index.append(
            {
                "name": release.name,
                "namespace": release.namespace,
                "chart": release.chart,
                "version": release.version,
                "repo": release.repo,
                "installCRDs": not release.skip_crds,
                "valuesFile": name,
            }
        )
    result.written.append(_dump(out / "helm-releases.yaml", {"releases": index}))

    for i, obj in enumerate(ray):
        name = f"{20 + i:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        result.written.append(_dump(out / name, obj))

    for i, obj in enumerate(policies):
        meta = obj["metadata"]
        name = f"{30 + i:02d}-networkpolicy-{meta['namespace']}-{meta['name']}.yaml"
        result.written.append(_dump(out / name, obj))

    named = example_templates(cfg, refs)
    templates = list(named.values())
    for file_name, obj in named.items():
        path = out / "templates" / file_name
        result.written.append(_dump(path, obj))

    rules, monitors = [], []
    if keys.monitoring:
        rules = [alerts.prometheus_rule_manifest(cfg)]
        name = f"40-prometheusrule-{rules[0]['metadata']['name']}.yaml"
        result.written.append(_dump(out / name, rules[0]))
        monitors = monitoring.monitoring_objects(cfg)
        for name, obj in monitoring.file_names(monitors):
            result.written.append(_dump(out / name, obj))

    if validate:
        extra = [*monitoring_core, *rules, *monitors]
        result.problems += check(
            ray + templates,
            objects + templates + extra,
            [r.values for r in releases],
            crd_dir,
        )
        result.problems += monitoring.problems(extra)
        for rule in rules:
            found = rulecheck.rule_problems(rule["spec"]["groups"])
            where = f"PrometheusRule {alerts.RULE_NAME}"
            result.problems += [f"{where}: {p}" for p in found]
    return result


def check(
    ray_objects: Sequence[dict],
    all_objects: Sequence[dict],
    helm_values: Sequence[dict],
    crd_dir: Path | None,
) -> list[str]:
    problems = []
    for obj in ray_objects:
        where = f"{obj['kind']} {obj['metadata']['name']}"
        found = crd_schema.schema_problems(obj, crd_dir)
        found += crd_schema.operator_problems(obj)
        problems += [f"{where}: {p}" for p in found]
    for obj in all_objects:
        if obj.get("kind") == "NetworkPolicy":
            where = f"NetworkPolicy {obj['metadata'].get('name')}"
            found = network_policies.network_policy_problems(obj)
            problems += [f"{where}: {p}" for p in found]
    for p in manifests.public_exposure(list(all_objects) + list(helm_values)):
        problems.append(f"public exposure: {p}")
    return problems


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_stack(parser)
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="output directory"
    )
    parser.add_argument(
        "--stack-file",
        type=Path,
        metavar="FILE",
        help="stack file (default: Pulumi.<stack>.yaml)",
    )
    options.add_outputs(parser)
    parser.add_argument(
        "--crds",
        type=Path,
        metavar="DIR",
        help="KubeRay CRD folder (default: the copy vendored in raygpu/crds)",
    )
    parser.add_argument(
        "--no-validate", action="store_true", help="write only, skip the checks"
    )


def run(args: argparse.Namespace) -> int:
    refs = refs_from_outputs(args.outputs) if args.outputs else PLACEHOLDER_REFS
    autoscaler_role = AUTOSCALER_ROLE_PLACEHOLDER
    if args.outputs:
        outputs = json.loads(args.outputs.read_text(encoding="utf-8"))
        autoscaler_role = str(
            outputs.get("cluster_autoscaler_role_arn", autoscaler_role)
        )
    try:
        result = render(
            args.stack,
            args.out,
            stack_file=args.stack_file,
            refs=refs,
            autoscaler_role_arn=autoscaler_role,
            crd_dir=args.crds,
            validate=not args.no_validate,
        )
    except OSError as exc:
        raise UsageError(f"cannot write {args.out}: {exc.strerror}") from None
    print(f"wrote {len(result.written)} files to {args.out}")
    for path in result.written:
        print(f"  {path.relative_to(args.out)}")
    if result.problems:
        for problem in result.problems:
            print(f"render: {problem}", file=sys.stderr)
        print(f"render: {len(result.problems)} problem(s)", file=sys.stderr)
        return 1
    return 0
