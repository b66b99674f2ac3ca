"""The CrossGuard pack: raygpu's security rules under `pulumi preview`/`pulumi up`.

    pulumi preview --policy-pack infra/policy

Each rule of raygpu/policy becomes one stack validation policy named by the
rule's ID, mandatory or advisory as the rule says; `raygpu plan --policy` runs the
same functions offline. A check whose inputs are unknown until `pulumi up` (an ARN
in a policy document during a preview) is skipped for that resource; the update
runs it again once the values exist.
"""

from pulumi_policy import EnforcementLevel, PolicyPack, StackValidationPolicy
from pulumi_policy.proxy import UnknownValueError

from raygpu import policy

LEVELS = {
    policy.MANDATORY: EnforcementLevel.MANDATORY,
    policy.ADVISORY: EnforcementLevel.ADVISORY,
}


def policies() -> list[StackValidationPolicy]:
    return [
        StackValidationPolicy(
            name=rule.id,
            description=rule.summary,
            validate=policy.stack_validation(rule, (UnknownValueError,)),
            enforcement_level=LEVELS[rule.level],
        )
        for rule in policy.RULES
    ]


if __name__ == "__main__":
    PolicyPack(
        name="raygpu-security",
        policies=policies(),
        enforcement_level=EnforcementLevel.MANDATORY,
    )
