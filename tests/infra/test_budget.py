"""CostGuard component under the mock runtime."""

from __future__ import annotations

import pytest

from infra.budget import CostGuard, CostGuardArgs
from raygpu.config import load_config
from tests.infra.infra_helpers import run_component, stack_config

BUDGET = "aws:budgets/budget:Budget"


def budget_run(**overrides):
    cfg = stack_config(**overrides)
    run = run_component(lambda: CostGuard("cost", CostGuardArgs.from_config(cfg)), cfg)
    return run.one(BUDGET)["inputs"]


def test_monthly_cost_budget_without_alerts_when_no_email():
    budget = budget_run(budgetMonthlyUsd=250)
    assert budget["budgetType"] == "COST"
    assert budget["timeUnit"] == "MONTHLY"
    assert budget["limitUnit"] == "USD"
    assert float(budget["limitAmount"]) == 250.0
    assert not budget.get("notifications")
    assert not budget.get("costFilters")  # account scope
    assert budget["tags"]["raygpu:stack"] == "dev"


def test_email_alerts_when_configured():
    budget = budget_run(budgetAlertEmail="team@example.com")
    notes = budget["notifications"]
    assert {(n["notificationType"], n["threshold"]) for n in notes} == {
        ("ACTUAL", 80.0),
        ("FORECASTED", 100.0),
    }
    for n in notes:
        assert n["subscriberEmailAddresses"] == ["team@example.com"]
        assert n["thresholdType"] == "PERCENTAGE"
        assert n["comparisonOperator"] == "GREATER_THAN"


def test_stack_scope_filters_on_the_stack_tag():
    budget = budget_run(budgetScope="stack")
    assert budget["costFilters"] == [
        {"name": "TagKeyValue", "values": ["user:raygpu:stack$dev"]}
    ]


def test_budget_is_required_for_a_cost_guard():
    # Every stack gets a CostGuard: its config cannot leave the budget out.
    values = {"aws:region": "us-east-1", "gpuPools": [
        {"name": "a10g", "instanceTypes": ["g5.xlarge"]}]}  # fmt: skip
    with pytest.raises(ValueError, match="budgetMonthlyUsd") as info:
        load_config("dev", values)
    assert info.value.keys == ["raygpu:budgetMonthlyUsd"]


def test_budget_name_names_the_region():
    # Budget names are unique per account: same-named stacks in two regions must
    # not ask for the same budget.
    east = budget_run()
    west = budget_run(**{"aws:region": "us-west-2"})
    assert east["name"] == "cost-us-east-1-monthly"
    assert west["name"] == "cost-us-west-2-monthly"
    assert east["tags"]["Name"] == east["name"]
