"""Checks to run before `pulumi up`: one line per finding, exit 1 on a blocker.

    raygpu preflight --stack dev
    raygpu preflight --stack prod --json

- identity: whose credentials these are (STS GetCallerIdentity);
- quotas: the EC2 vCPU quotas the pools need at full scale (Service Quotas,
  through raygpu.quotas) against the account's values in the stack's region;
- cost: the full-scale monthly cost (`raygpu plan`'s estimate) against the
  budget, and the plan's warning when the budget's alerts fire at idle;
- budget: whether an alert address is set, and whether a budget of the stack's
  name already exists in the account (AWS Budgets: names are unique per account);
- placeholders: example values left in the stack file (`pulumi up` refuses them);
- data key: whether the caller may upload through the storage key;
- policy: the security rules of `raygpu plan --policy`.
A blocker is something `pulumi up` would fail on or that costs money blindly; a
warning is worth reading first. Credentials are never printed, only the ARN.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from raygpu import options, quotas
from raygpu.config import load_stack_file, placeholders, stack_file_values
from raygpu.offline import stack_path

OK, WARNING, BLOCKER = "ok", "warning", "blocker"


@dataclass(frozen=True)
class Finding:
    level: str
    check: str
    message: str

    def line(self) -> str:
        return f"preflight: {self.level} {self.check}: {self.message}"


def _aws_error(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    code = response.get("Error", {}).get("Code")
    return f"{code}: {response['Error'].get('Message', '')}" if code else str(exc)


def identity(session: Any) -> tuple[list[Finding], dict[str, str] | None]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        who = session.client("sts").get_caller_identity()
    except (BotoCoreError, ClientError) as exc:
        message = f"cannot tell whose credentials these are ({_aws_error(exc)})"
        return [Finding(BLOCKER, "identity", message)], None
    found = {"account": who["Account"], "arn": who["Arn"]}
    return [Finding(OK, "identity", f"{who['Arn']} in account {who['Account']}")], found


def quota_findings(cfg, source: quotas.QuotaSource) -> list[Finding]:
    from botocore.exceptions import BotoCoreError, ClientError

    found = []
    for quota, vcpus in sorted(quotas.needed(cfg).items(), key=lambda q: q[0].code):
        what = f"{quota.name} ({quota.code})"
        try:
            value = source.value(quota)
        except (BotoCoreError, ClientError) as exc:
            found.append(
                Finding(WARNING, "quota", f"{what}: cannot read ({_aws_error(exc)})")
            )
            continue
        if value is None:
            found.append(Finding(WARNING, "quota", f"{what}: no value known"))
        elif value < vcpus:
            found.append(
                Finding(
                    BLOCKER,
                    "quota",
                    f"{what}: full scale needs {vcpus} vCPUs in {cfg.region}, the "
                    f"account may run {value:g}; request an increase or lower "
                    "the pools' maxSize",
                )
            )
        else:
            found.append(
                Finding(
                    OK, "quota", f"{what}: {vcpus} of {value:g} vCPUs at full scale"
                )
            )
    return found


def cost_findings(cfg, plan_result: dict[str, Any]) -> list[Finding]:
    cost = plan_result["cost"]
    full, budget = cost["full_usd_month"], cfg.budget_monthly_usd
    found = []
    if full > budget:
        found.append(
            Finding(
                WARNING,
                "cost",
                f"full scale costs ~${full:,.0f}/month, over the ${budget:,.0f} "
                "budget (alerts will fire; nothing stops the spend)",
            )
        )
    else:
        found.append(
            Finding(
                OK, "cost", f"full scale ~${full:,.0f}/month, budget ${budget:,.0f}"
            )
        )
    if cost.get("budget_note"):
        found.append(Finding(WARNING, "cost", cost["budget_note"]))
    return found


def budget_findings(cfg, session: Any, account: str | None, name: str) -> list[Finding]:
    from botocore.exceptions import BotoCoreError, ClientError

    found = []
    if not cfg.budget_alert_email:
        found.append(
            Finding(
                WARNING,
                "budget",
                "raygpu:budgetAlertEmail is empty: nobody is told when spend nears "
                "the budget",
            )
        )
    if account is None:
        return found
    client = session.client("budgets", region_name="us-east-1")
    try:
        client.describe_budget(AccountId=account, BudgetName=name)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NotFoundException":
            found.append(Finding(OK, "budget", f"{name} will be created"))
            return found
        found.append(
            Finding(WARNING, "budget", f"cannot read budgets ({_aws_error(exc)})")
        )
        return found
    except BotoCoreError as exc:
        found.append(Finding(WARNING, "budget", f"cannot read budgets ({exc})"))
        return found
    notes = client.describe_notifications_for_budget(AccountId=account, BudgetName=name)
    count = len(notes.get("Notifications", []))
    message = (
        f"{name} exists already with {count} notification(s): another deployment "
        "of this stack? `pulumi up` fails to create a budget of the same name"
    )
    found.append(Finding(WARNING, "budget", message))
    return found


def data_key_findings(cfg, caller: dict[str, str] | None) -> list[Finding]:
    if caller is None:
        return []
    users = set(cfg.admin_principal_arns) | set(cfg.data_key_user_arns)
    arn = caller["arn"]
    # arn:aws:sts::<account>:assumed-role/<role>/<session> is that role's session.
    if ":assumed-role/" in arn:
        role = arn.split(":assumed-role/")[1].split("/")[0]
        mine = any(u.split(":")[4] == caller["account"] and u.endswith(f"/{role}")
                   for u in users)  # fmt: skip
    else:
        mine = arn in users
    if mine:
        return [Finding(OK, "data key", "you may upload through the storage key")]
    return [
        Finding(
            WARNING,
            "data key",
            f"{arn} is not in adminPrincipalArns or dataKeyUserArns: the storage "
            "key will refuse your uploads (datasets, `raygpu serve` packages)",
        )
    ]


def placeholder_findings(values: dict[str, Any]) -> list[Finding]:
    return [
        Finding(BLOCKER, "placeholder", f"{key}: {problem}")
        for key, problem in placeholders(values)
    ]


def image_findings() -> list[Finding]:
    """Images pinned by tag only: a tag can be moved under a running stack."""
    from raygpu import versions

    by_tag = [i for i in versions.CLUSTER_IMAGES if i not in versions.IMAGE_DIGESTS]
    found = [
        Finding(
            WARNING,
            "images",
            f"{image} has no recorded digest (pinned by tag only): read it from the "
            "registry and add it to IMAGE_DIGESTS in raygpu/versions.py "
            "(docs/security.md, Images)",
        )
        for image in by_tag
    ]
    pinned = len(versions.CLUSTER_IMAGES) - len(by_tag)
    if pinned:
        found.append(Finding(OK, "images", f"{pinned} image(s) pinned by digest"))
    return found


def budget_name(plan_result: dict[str, Any]) -> str | None:
    for r in plan_result["resources"]:
        if r["type"] == "aws:budgets/budget:Budget":
            return r["inputs"]["name"]
    return None


# The seams tests replace: the AWS session and the Service Quotas source.
def default_session(region: str) -> Any:
    import boto3

    return boto3.Session(region_name=region)


def default_quota_source(session: Any) -> quotas.QuotaSource:
    return quotas.ServiceQuotas(session.client("service-quotas"))


def preflight(
    stack: str,
    config_path: Path | None = None,
    *,
    session_factory: Callable[[str], Any] | None = None,
    quota_source: Callable[[Any], quotas.QuotaSource] | None = None,
) -> list[Finding]:
    from raygpu.plan import plan

    path = config_path or stack_path(stack)
    cfg = load_stack_file(path, stack)
    values = stack_file_values(path)
    result = plan(stack, str(path), check_policy=True)
    session = (session_factory or default_session)(cfg.region)
    found, caller = identity(session)
    if caller:
        found += quota_findings(cfg, (quota_source or default_quota_source)(session))
    found += cost_findings(cfg, result)
    name = budget_name(result)
    if name:
        found += budget_findings(cfg, session, caller and caller["account"], name)
    found += data_key_findings(cfg, caller)
    found += placeholder_findings(values)
    found += image_findings()
    for v in result["policy"]["violations"]:
        level = BLOCKER if v["level"] == "mandatory" else WARNING
        where = f"{v['rule']} {v['resource_type']} {v['resource_name']}"
        found.append(Finding(level, "policy", f"{where}: {v['message']}"))
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_stack(parser)
    options.add_config(parser)
    options.add_json(parser)


def run(args: argparse.Namespace) -> int:
    found = preflight(args.stack, args.config)
    blockers = [f for f in found if f.level == BLOCKER]
    if args.json:
        print(
            json.dumps(
                {
                    "stack": args.stack,
                    "findings": [asdict(f) for f in found],
                    "blockers": len(blockers),
                },
                indent=2,
            )
        )
    else:
        for f in found:
            print(f.line())
        print(
            f"preflight: {len(blockers)} blocker(s), "
            f"{sum(f.level == WARNING for f in found)} warning(s)"
        )
    return 1 if blockers else 0
