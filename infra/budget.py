"""CostGuard: a monthly AWS Budgets cost budget, with email alerts when the stack's
config gives an address (actual spend at 80 % and forecast at 100 %).

Scope "account" watches the whole account (right for an account that holds only
this toolkit); scope "stack" filters on the `raygpu:stack` cost allocation tag,
which must be activated once in the Billing console before it counts anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from raygpu.config import BUDGET_ALERTS, StackConfig


@dataclass(frozen=True)
class CostGuardArgs:
    """What the budget takes from the stack config (defaults live there only)."""

    monthly_usd: float
    stack: str
    region: str
    alert_email: str | None
    scope: str  # "account" or "stack"
    tags: Mapping[str, str]

    @classmethod
    def from_config(cls, cfg: StackConfig) -> CostGuardArgs:
        return cls(
            monthly_usd=cfg.budget_monthly_usd,
            stack=cfg.stack,
            region=cfg.region,
            alert_email=cfg.budget_alert_email,
            scope=cfg.budget_scope,
            tags=cfg.tags,
        )


class CostGuard(pulumi.ComponentResource):
    budget_name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: CostGuardArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("raygpu:budget:CostGuard", name, {}, opts)
        notifications = []
        if args.alert_email:
            notifications = [
                aws.budgets.BudgetNotificationArgs(
                    comparison_operator="GREATER_THAN",
                    notification_type=kind,
                    threshold=threshold,
                    threshold_type="PERCENTAGE",
                    subscriber_email_addresses=[args.alert_email],
                )
                for kind, threshold in BUDGET_ALERTS
            ]
        cost_filters = []
        if args.scope == "stack":
            cost_filters = [
                aws.budgets.BudgetCostFilterArgs(
                    name="TagKeyValue", values=[f"user:raygpu:stack${args.stack}"]
                )
            ]
        # Budget names are unique per account, not per region: a stack of the same
        # name in another region must not collide with this one.
        budget_name = f"{name}-{args.region}-monthly"
        budget = aws.budgets.Budget(
            f"{name}-budget",
            name=budget_name,
            budget_type="COST",
            limit_amount=f"{args.monthly_usd:.2f}",
            limit_unit="USD",
            time_unit="MONTHLY",
            cost_filters=cost_filters or None,
            notifications=notifications or None,
            tags={**args.tags, "Name": budget_name},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.budget_name = budget.name
        self.register_outputs({"budget_name": self.budget_name})
