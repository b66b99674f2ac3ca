"""`raygpu orphans`: list, and with --delete remove, what a stack left in its
cloud (AWS through boto3, Google Cloud through raygpu.orphans.gcp_scan, Azure
through raygpu.orphans.azure_scan).

raygpu orphans --stack dev              # list; exit 1 when something is left
raygpu orphans --stack dev --delete     # delete in dependency order
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from raygpu import options
from raygpu.errors import CommandError, UsageError
from raygpu.names import STACK_TAG
from raygpu.orphans.aws import aws_errors, session_for
from raygpu.orphans.model import Orphan
from raygpu.orphans.scan import OrphanScanner
from raygpu.stack import REPO_ROOT, load_outputs


def stack_file_config(stack: str) -> Any | None:
    """The validated config of Pulumi.<stack>.yaml, which outlives a destroy, or
    None when there is no valid one."""
    path = REPO_ROOT / f"Pulumi.{stack}.yaml"
    if not path.exists():
        return None
    from raygpu.config import load_stack_file

    try:
        return load_stack_file(path, stack)
    except (UsageError, OSError, ValueError):  # ConfigError is a UsageError
        return None


def from_stack_file(stack: str) -> tuple[str | None, str | None]:
    """(region, cluster name) from Pulumi.<stack>.yaml, which outlives a destroy.

    The cluster's name derives from the stack's config (raygpu.config), so the
    leftovers of a destroyed stack can still be found by its cluster's tags.
    """
    cfg = stack_file_config(stack)
    return (cfg.region, cfg.cluster_name) if cfg is not None else (None, None)


# Where a stack's region is set, per cloud (named when it comes from the file).
REGION_KEYS = {
    "aws": "aws:region",
    "gcp": "gcp:region",
    "azure": "azure-native:location",
}


@dataclass(frozen=True)
class Target:
    """Where to look: from the stack's outputs, overridable by flags."""

    stack: str
    region: str
    cluster_name: str | None
    data_bucket: str | None
    region_source: str = "--region"  # named when the region is not AWS's
    cloud: str = "aws"
    project: str | None = None  # the Google Cloud project (gcp:project)
    subscription: str | None = None  # azure-native:subscriptionId


def target_for(
    stack: str,
    outputs: Mapping[str, Any],
    region: str | None = None,
    cluster_name: str | None = None,
    data_bucket: str | None = None,
) -> Target:
    """The flags first, then the stack's outputs, then Pulumi.<stack>.yaml."""
    cfg = stack_file_config(stack)
    file_region, file_cluster = (
        (cfg.region, cfg.cluster_name) if cfg is not None else (None, None)
    )
    cloud = str(outputs.get("cloud") or getattr(cfg, "cloud", None) or "aws")
    source = "--region"
    if not region and outputs.get("region"):
        region, source = str(outputs["region"]), "stack output 'region'"
    elif not region and file_region:
        region = file_region
        source = f"{REGION_KEYS.get(cloud, 'region')} in Pulumi.{stack}.yaml"
    if not region:
        raise UsageError(
            f"--region: no region for stack {stack!r} (no stack output 'region', "
            f"no valid Pulumi.{stack}.yaml); pass --region"
        )
    return Target(
        stack=stack,
        region=region,
        cluster_name=cluster_name or outputs.get("cluster_name") or file_cluster,
        data_bucket=data_bucket or outputs.get("data_bucket"),
        region_source=source,
        cloud=cloud,
        project=outputs.get("gcp_project") or getattr(cfg, "gcp_project", None),
        subscription=outputs.get("subscription_id")
        or getattr(cfg, "subscription_id", None),
    )


def resolve_target(args: argparse.Namespace) -> Target:
    outputs: Mapping[str, Any] = {}
    if args.outputs or not (args.region and args.cluster_name):
        try:
            outputs = load_outputs(args.stack, args.outputs).values
        except CommandError as exc:
            if args.outputs:
                raise
            print(
                f"note: {exc}; using flags and Pulumi.{args.stack}.yaml",
                file=sys.stderr,
            )
    return target_for(
        args.stack, outputs, args.region, args.cluster_name, args.data_bucket
    )


def scanner_for(target: Target, **kwargs: Any) -> Any:
    """A scanner of the target's cloud (OrphanScanner on AWS, GcpOrphanScanner on
    Google Cloud), its credentials and endpoint proven by one call: what cannot
    work ends here in one line."""
    if target.cloud == "gcp":
        return _gcp_scanner(target, **kwargs)
    if target.cloud == "azure":
        return _azure_scanner(target, **kwargs)
    if target.cloud != "aws":
        raise UsageError(
            f"stack {target.stack!r} runs on {target.cloud!r}: the leftover scan "
            "knows aws, gcp and azure"
        )
    scanner = OrphanScanner(
        session_for(target.region, target.region_source),
        target.stack,
        cluster_name=target.cluster_name,
        data_bucket=target.data_bucket,
        **kwargs,
    )
    scanner.check_access()
    return scanner


def _gcp_scanner(target: Target, **kwargs: Any) -> Any:
    from raygpu.orphans import gcp_scan

    if not target.project:
        raise UsageError(
            f"gcp:project: no Google Cloud project for stack {target.stack!r} (no "
            f"stack output 'gcp_project', no valid Pulumi.{target.stack}.yaml)"
        )
    names = gcp_scan.program_names(target.stack)
    if target.cluster_name:
        names = replace(names, cluster=target.cluster_name)
    return gcp_scan.scanner_for(
        target.stack,
        target.project,
        target.region,
        names,
        data_bucket=target.data_bucket,
        **kwargs,
    )


def _azure_scanner(target: Target, **kwargs: Any) -> Any:
    from raygpu.orphans import azure_scan

    if not target.subscription:
        raise UsageError(
            f"azure-native:subscriptionId: no subscription for stack "
            f"{target.stack!r} (no stack output 'subscription_id', no valid "
            f"Pulumi.{target.stack}.yaml)"
        )
    names = azure_scan.program_names(target.stack)
    if target.cluster_name:
        names = replace(names, cluster=target.cluster_name)
    return azure_scan.scanner_for(
        target.stack, target.subscription, target.region, names, **kwargs
    )


def cloud_errors(target: Target) -> Any:
    """The context that turns a cloud's unusable connection into one line (gcloud
    and az errors already are one line)."""
    return aws_errors() if target.cloud == "aws" else contextlib.nullcontext()


def report(orphans: Sequence[Orphan], out: Any = None) -> None:
    out = out or sys.stdout
    for orphan in orphans:
        mark = "kept (protected)" if orphan.protected else "left"
        print(f"{mark:<16} {orphan.describe()}", file=out)


def add_target_args(parser: argparse.ArgumentParser) -> None:
    options.add_stack(parser)
    options.add_outputs(parser)
    parser.add_argument(
        "--region", help="AWS, Google Cloud or Azure region (default: the stack's)"
    )
    parser.add_argument(
        "--cluster-name",
        help="EKS, GKE or AKS cluster name (default: the stack output "
        "cluster_name); needed after a destroy, when the stack has no outputs any more",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_args(parser)
    parser.add_argument("--data-bucket", help="the stack's data bucket (protected)")
    parser.add_argument(
        "--delete", action="store_true", help="delete what is found, in order"
    )
    parser.add_argument(
        "--delete-data-bucket",
        action="store_true",
        help="with --delete: delete the protected data bucket and every object "
        "version in it too",
    )
    options.add_json(parser)


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.delete_data_bucket and not args.delete:
        parser.error("--delete-data-bucket needs --delete")


def run(args: argparse.Namespace) -> int:
    target = resolve_target(args)
    with cloud_errors(target):
        return _run(args, target)


def _run(args: argparse.Namespace, target: Target) -> int:
    scanner = scanner_for(target, log=(lambda line: None) if args.json else print)
    where = f"stack {target.stack!r} in {target.region}"
    if target.cluster_name:
        where += f", cluster {target.cluster_name!r}"
    else:
        print(
            "note: no cluster name: only resources tagged "
            f"{STACK_TAG}={target.stack} are searched",
            file=sys.stderr,
        )
    orphans = scanner.scan()
    if not args.delete:
        if args.json:
            print(json.dumps([asdict(o) for o in orphans], indent=2))
        elif not orphans:
            print(f"nothing left of {where}")
        else:
            print(f"{len(orphans)} resource(s) left of {where}:")
            report(orphans)
        return 1 if any(not o.protected for o in orphans) else 0
    if not orphans:
        print(f"nothing left of {where}")
        return 0
    outcomes = scanner.delete(orphans, delete_data_bucket=args.delete_data_bucket)
    failed = [o for o in outcomes if not o.ok]
    if args.json:
        print(
            json.dumps(
                [
                    {**asdict(o.orphan), "action": o.action, "message": o.message}
                    for o in outcomes
                ],
                indent=2,
            )
        )
    else:
        print(
            f"{sum(o.action == 'deleted' for o in outcomes)} deleted, "
            f"{sum(o.action == 'kept' for o in outcomes)} kept, {len(failed)} left"
        )
    return 1 if failed else 0
