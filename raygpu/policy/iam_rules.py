"""The AWS identity rules: IAM policies, IRSA trust, KMS keys and their policies.

Controls cite AWS Foundational Security Best Practices (FSBP), the CIS AWS
Foundations Benchmark and the CIS Amazon EKS Benchmark v1.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from raygpu import autoscaler_values
from raygpu.names import STS_AUDIENCE
from raygpu.policy.model import (
    Resource,
    Rule,
    Stack,
    as_list,
    policy_document,
    statements,
    truthy,
)

IAM_ROLE = ("aws:iam/role:Role",)
IAM_POLICIES = (
    "aws:iam/rolePolicy:RolePolicy",
    "aws:iam/policy:Policy",
    "aws:iam/userPolicy:UserPolicy",
    "aws:iam/groupPolicy:GroupPolicy",
)
KMS_KEY = ("aws:kms/key:Key",)
KMS_KEY_POLICY = ("aws:kms/keyPolicy:KeyPolicy",)
# Read-only actions AWS cannot scope to a resource: "Resource": "*" is their only
# form (the Cluster Autoscaler's discovery calls, see infra/autoscaler.py).
UNSCOPED_READ_ACTIONS = frozenset(autoscaler_values.UNSCOPED_READ_ACTIONS)
# What a KMS key policy may give anyone but named roles: managing the key (so that
# IAM administrators can repair its policy) but never using it on data.
KMS_DATA_ACTIONS = (
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:ReEncrypt",
)


def _wildcard_problems(statement: Mapping[str, Any]) -> list[str]:
    if statement.get("Effect") != "Allow":
        return []
    if "NotAction" in statement or "NotResource" in statement:
        return ["an Allow with NotAction/NotResource grants everything it omits"]
    actions = [str(a) for a in as_list(statement.get("Action"))]
    resources = [str(r) for r in as_list(statement.get("Resource"))]
    problems = [f"action {a!r} is a wildcard" for a in actions if a.endswith("*")]
    if "*" in resources:
        extra = sorted(set(actions) - UNSCOPED_READ_ACTIONS)
        if extra:
            problems.append(
                "Resource '*' with actions that can be scoped: " + ", ".join(extra)
            )
    return problems


def iam_no_wildcards(policy: Resource, _stack: Stack) -> Iterator[str]:
    doc = policy_document(policy.get("policy"))
    if doc is None:
        yield "the policy document is not JSON"
        return
    for i, statement in enumerate(statements(doc)):
        for problem in _wildcard_problems(statement):
            yield f"Statement[{i}] ({statement.get('Sid', 'no Sid')}): {problem}"


def irsa_trust(role: Resource, _stack: Stack) -> Iterator[str]:
    doc = policy_document(role.get("assumeRolePolicy"))
    for i, statement in enumerate(statements(doc)):
        actions = as_list(statement.get("Action"))
        if "sts:AssumeRoleWithWebIdentity" not in actions:
            continue
        equals = (statement.get("Condition") or {}).get("StringEquals") or {}
        subs = [v for k, v in equals.items() if k.endswith(":sub")]
        auds = [v for k, v in equals.items() if k.endswith(":aud")]
        where = f"Statement[{i}]"
        if not subs:
            yield f"{where}: no StringEquals on the token's sub (any service account)"
        for sub in (s for v in subs for s in as_list(v)):
            if not str(sub).startswith("system:serviceaccount:") or "*" in str(sub):
                yield f"{where}: sub {sub!r} is not one exact service account"
        if not auds or any(a != STS_AUDIENCE for v in auds for a in as_list(v)):
            yield f"{where}: aud must be exactly {STS_AUDIENCE}"
        if "StringLike" in (statement.get("Condition") or {}):
            yield f"{where}: StringLike conditions allow wildcards"


def kms_rotation(key: Resource, _stack: Stack) -> Iterator[str]:
    if not truthy(key.get("enableKeyRotation")):
        yield "enableKeyRotation is not true"


def _uses_data(statement: Mapping[str, Any]) -> bool:
    actions = [str(a) for a in as_list(statement.get("Action"))]
    return any(a in ("*", "kms:*") or a.startswith(KMS_DATA_ACTIONS) for a in actions)


def _grant_problem(statement: Mapping[str, Any]) -> str | None:
    actions = [str(a) for a in as_list(statement.get("Action"))]
    if not any(a in ("kms:CreateGrant", "kms:*", "*") for a in actions):
        return None
    condition = (statement.get("Condition") or {}).get("Bool") or {}
    if str(condition.get("kms:GrantIsForAWSResource")).lower() == "true":
        return None
    return "may create grants (handing out use) outside AWS services"


def kms_key_policy(key: Resource, stack: Stack) -> Iterator[str]:
    docs = [policy_document(key.get("policy"))] if key.get("policy") else []
    docs += [
        policy_document(p.get("policy"))
        for p in stack.referring(key, KMS_KEY_POLICY, "keyId")
    ]
    if not docs:
        yield (
            "has no key policy: the default one lets every IAM principal of the "
            "account that IAM allows use the key"
        )
        return
    for doc in docs:
        for i, statement in enumerate(statements(doc)):
            if statement.get("Effect") != "Allow":
                continue
            principal = statement.get("Principal")
            named = (
                as_list(principal.get("AWS")) if isinstance(principal, Mapping) else []
            )
            where = f"Statement[{i}] ({statement.get('Sid', 'no Sid')})"
            anyone = principal == "*" or "*" in named
            roots = [a for a in named if str(a).endswith(":root")]
            if _uses_data(statement):
                if anyone:
                    yield f"{where}: any principal may use the key on data"
                for arn in roots:
                    yield f"{where}: the account root ({arn}) may use the key on data"
            problem = _grant_problem(statement)
            if problem and (anyone or roots):
                yield f"{where}: the account {problem}"


RULES = (
    Rule("RG-IAM-01", "IAM without wildcards",
         "no Allow grants a wildcard action, and Resource '*' only for read-only "
         f"actions AWS cannot scope ({', '.join(sorted(UNSCOPED_READ_ACTIONS))})",
         "AWS FSBP IAM.1, IAM.21; CIS AWS Foundations 1.16", IAM_POLICIES,
         iam_no_wildcards),
    Rule("RG-IAM-02", "IRSA trust scoped",
         "web-identity trust names exact service accounts (sub) and the STS "
         "audience (aud)", "CIS Amazon EKS 5.2.1; EKS Best Practices (IRSA)",
         IAM_ROLE, irsa_trust),
    Rule("RG-KMS-01", "KMS rotation", "customer managed keys rotate yearly",
         "AWS FSBP KMS.4; CIS AWS Foundations 3.6", KMS_KEY, kms_rotation),
    Rule("RG-KMS-02", "KMS key policy least privilege",
         "every key has its own policy; only named roles may use it on data (not "
         "'*', not the account root)", "AWS FSBP KMS.1, KMS.2", KMS_KEY,
         kms_key_policy),
)  # fmt: skip
