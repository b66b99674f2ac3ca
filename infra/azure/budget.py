"""AzureBudget: a monthly consumption budget on the stack's spend, alerting at
the same thresholds as on AWS (actual spend at 80 %, forecast at 100 %): to
`budgetAlertEmail` when given, and always to the Owners.

The stack's spend is two resource groups: its own and AKS's node resource group,
where the nodes' VMs, disks and the NAT's traffic bill. So the budget sits on the
subscription, filtered to exactly those two groups.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import pulumi
from pulumi_azure_native import consumption

from raygpu.config import BUDGET_ALERTS

TYPE_TOKEN = "raygpu:azure:Budget"
THRESHOLD_TYPES = {"ACTUAL": "Actual", "FORECASTED": "Forecasted"}


@dataclass(frozen=True)
class AzureBudgetArgs:
    subscription_id: str
    resource_groups: tuple[str, ...]  # the stack's and AKS's node group
    budget_name: str
    monthly_usd: float
    alert_email: str | None

    @classmethod
    def from_config(cls, cfg, *, node_resource_group: str) -> AzureBudgetArgs:
        return cls(
            subscription_id=cfg.subscription_id,
            resource_groups=(cfg.resource_group, node_resource_group),
            budget_name=cfg.name_prefix,
            monthly_usd=cfg.budget_monthly_usd,
            alert_email=cfg.budget_alert_email,
        )


def month_start(today: datetime.date) -> str:
    """Azure wants a monthly budget to start on the first of the current month."""
    return f"{today.replace(day=1).isoformat()}T00:00:00Z"


class AzureBudget(pulumi.ComponentResource):
    budget_id: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: AzureBudgetArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TYPE_TOKEN, name, {}, opts)
        emails = [args.alert_email] if args.alert_email else []
        budget = consumption.Budget(
            f"{name}-budget",
            scope=f"/subscriptions/{args.subscription_id}",
            budget_name=args.budget_name,
            amount=args.monthly_usd,
            category="Cost",
            time_grain="Monthly",
            filter=consumption.BudgetFilterArgs(
                dimensions=consumption.BudgetComparisonExpressionArgs(
                    name="ResourceGroupName",
                    operator="In",
                    values=list(args.resource_groups),
                )
            ),
            time_period=consumption.BudgetTimePeriodArgs(
                start_date=month_start(datetime.datetime.now(datetime.UTC).date())
            ),
            notifications={
                f"{kind.lower()}-{int(percent)}": consumption.NotificationArgs(
                    enabled=True,
                    operator="GreaterThanOrEqualTo",
                    threshold=percent,
                    threshold_type=THRESHOLD_TYPES[kind],
                    contact_emails=emails,
                    contact_roles=["Owner"],
                )
                for kind, percent in BUDGET_ALERTS
            },
            # The start date is fixed at creation; a later month's run keeps it.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["timePeriod"]),
        )
        self.budget_id = budget.id
        self.register_outputs({"budget_id": self.budget_id})
