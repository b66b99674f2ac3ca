"""Security guardrails as code: the stack's policy rules, free of `pulumi_policy`.

- `model`: `Resource` (one planned resource), `Rule`, `Violation`, `Stack`.
- `aws_rules`, `iam_rules`, `k8s_rules`: the rules, each with an ID, a
  description and the control it implements (AWS FSBP, CIS).
- `runner`: `evaluate` (rules over resources), the offline adapter used by
  `raygpu plan --policy`, and the CrossGuard adapter used by infra/policy.

docs/security.md lists the rules and what they protect.
"""

from raygpu.policy import aws_rules, iam_rules, k8s_rules
from raygpu.policy.model import ADVISORY, MANDATORY, Resource, Rule, Stack, Violation
from raygpu.policy.runner import (
    Report,
    evaluate,
    report_lines,
    resources_from_run,
    stack_validation,
)

RULES: tuple[Rule, ...] = aws_rules.RULES + iam_rules.RULES + k8s_rules.RULES
RULES_BY_ID = {r.id: r for r in RULES}


def check(resources, rules=RULES, **kwargs) -> Report:
    """Every rule over `resources` (see runner.evaluate)."""
    return evaluate(resources, rules, **kwargs)


__all__ = [
    "ADVISORY",
    "MANDATORY",
    "RULES",
    "RULES_BY_ID",
    "Report",
    "Resource",
    "Rule",
    "Stack",
    "Violation",
    "check",
    "evaluate",
    "report_lines",
    "resources_from_run",
    "stack_validation",
]
