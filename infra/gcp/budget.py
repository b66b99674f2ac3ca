"""GcpBudget: a monthly Cloud Billing budget on the stack's project, alerting at
the same thresholds as on AWS (actual spend at 80 %, forecast at 100 %), by email
when the stack's config gives an address.

A budget belongs to a billing account (`raygpu:billingAccount`); it watches the
project's spend, so a project that holds only this stack counts exactly its cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from raygpu.config import BUDGET_ALERTS

TYPE_TOKEN = "raygpu:gcp:Budget"
SPEND_BASIS = {"ACTUAL": "CURRENT_SPEND", "FORECASTED": "FORECASTED_SPEND"}


@dataclass(frozen=True)
class GcpBudgetArgs:
    project: str
    billing_account: str
    monthly_usd: float
    alert_email: str | None
    display_name: str

    @classmethod
    def from_config(cls, cfg) -> GcpBudgetArgs:
        return cls(
            project=cfg.gcp_project,
            billing_account=cfg.billing_account,
            monthly_usd=cfg.budget_monthly_usd,
            alert_email=cfg.budget_alert_email,
            display_name=cfg.name_prefix,
        )


class GcpBudget(pulumi.ComponentResource):
    budget_id: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: GcpBudgetArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TYPE_TOKEN, name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        channels = []
        if args.alert_email:
            channel = gcp.monitoring.NotificationChannel(
                f"{name}-email",
                display_name=f"{args.display_name} budget",
                type="email",
                labels={"email_address": args.alert_email},
                opts=child,
            )
            channels = [channel.id]
        project = gcp.organizations.get_project_output(
            project_id=args.project, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        units, cents = divmod(round(args.monthly_usd * 100), 100)
        budget = gcp.billing.Budget(
            f"{name}-budget",
            billing_account=args.billing_account,
            display_name=args.display_name,
            budget_filter=gcp.billing.BudgetBudgetFilterArgs(
                projects=[project.number.apply(lambda n: f"projects/{n}")],
                calendar_period="MONTH",
            ),
            amount=gcp.billing.BudgetAmountArgs(
                specified_amount=gcp.billing.BudgetAmountSpecifiedAmountArgs(
                    currency_code="USD", units=str(units), nanos=cents * 10**7
                )
            ),
            threshold_rules=[
                gcp.billing.BudgetThresholdRuleArgs(
                    threshold_percent=percent / 100, spend_basis=SPEND_BASIS[kind]
                )
                for kind, percent in BUDGET_ALERTS
            ],
            all_updates_rule=gcp.billing.BudgetAllUpdatesRuleArgs(
                monitoring_notification_channels=channels,
                # Without an address the billing account's admins still get mail.
                disable_default_iam_recipients=False,
            ),
            opts=child,
        )
        self.budget_id = budget.id
        self.register_outputs({"budget_id": self.budget_id})
