"""raygpu preflight: STS and Budgets on the loopback moto_server; GPU quotas through
the QuotaSource seam (moto's Service Quotas serves only `vpc`)."""

from __future__ import annotations

import json
import uuid

import boto3
import pytest
import yaml

from raygpu import cli, preflight, quotas
from raygpu.offline import ROOT


class Quotas:
    """The account's quota values, as Service Quotas would return them."""

    def __init__(self, values):
        self.values = values
        self.asked: list[str] = []

    def value(self, quota):
        self.asked.append(quota.code)
        return self.values.get(quota.code)


PLENTY = {q.code: 1000.0 for q in quotas.QUOTAS.values()}


def clean_stack(tmp_path, **changes) -> tuple[str, object]:
    """prod's stack file with real-looking values instead of its placeholders,
    under a fresh stack name (budget names must not collide between tests)."""
    doc = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())
    config = doc["config"]
    config["raygpu:adminPrincipalArns"] = ["arn:aws:iam::210987654321:role/admins"]
    config["raygpu:dataKeyUserArns"] = []
    config["raygpu:budgetAlertEmail"] = "gpu-alerts@acme-ml.io"
    config.update({f"raygpu:{k}": v for k, v in changes.items()})
    stack = f"pf{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return stack, path


def lines(found):
    return [f.line() for f in found]


def test_dev_example_is_blocked_by_its_placeholders(moto_server):
    source = Quotas(PLENTY)
    found = preflight.preflight("dev", quota_source=lambda _s: source)
    by_check = {f.check: f for f in found if f.level != preflight.OK}
    ok = [f for f in found if f.level == preflight.OK]
    assert found[0].check == "identity" and found[0].level == preflight.OK
    assert ":123456789012:" in found[0].message  # moto's account
    # dev at full scale: 2 m6a.xlarge (4 vCPUs) and 2 g6.2xlarge spot (8 vCPUs).
    assert sorted(source.asked) == ["L-1216C47A", "L-3819A6DF"]
    assert any("8 of 1000 vCPUs" in f.message for f in ok)
    assert any("16 of 1000 vCPUs" in f.message for f in ok)
    assert "over the $800 budget" in by_check["cost"].message
    assert "budgetAlertEmail is empty" in by_check["budget"].message
    assert "storage key will refuse your uploads" in by_check["data key"].message
    placeholder = [f for f in found if f.check == "placeholder"]
    assert [f.level for f in placeholder] == [preflight.BLOCKER]
    assert "raygpu:publicEndpointCidrs[0]: 203.0.113.0/24" in placeholder[0].message


def test_a_clean_stack_passes_and_a_short_quota_blocks(moto_server, tmp_path):
    stack, path = clean_stack(tmp_path)
    found = preflight.preflight(stack, path, quota_source=lambda _s: Quotas(PLENTY))
    assert [f for f in found if f.level == preflight.BLOCKER] == [], lines(found)
    # prod at full scale: 8 g5.2xlarge (8 vCPUs) + 8 g6.12xlarge (48 vCPUs).
    short = {**PLENTY, "L-DB2E81BA": 64.0}
    found = preflight.preflight(stack, path, quota_source=lambda _s: Quotas(short))
    (blocker,) = [f for f in found if f.level == preflight.BLOCKER]
    assert blocker.line() == (
        "preflight: blocker quota: Running On-Demand G and VT instances (L-DB2E81BA): "
        "full scale needs 448 vCPUs in us-east-1, the account may run 64; request "
        "an increase or lower the pools' maxSize"
    )


def test_an_existing_budget_of_the_stacks_name_is_reported(moto_server, tmp_path):
    stack, path = clean_stack(tmp_path)
    budgets = boto3.client("budgets", region_name="us-east-1")
    name = f"raygpu-{stack}-cost-us-east-1-monthly"
    budgets.create_budget(
        AccountId="123456789012",
        Budget={
            "BudgetName": name,
            "BudgetLimit": {"Amount": "10", "Unit": "USD"},
            "TimeUnit": "MONTHLY",
            "BudgetType": "COST",
        },
    )
    found = preflight.preflight(stack, path, quota_source=lambda _s: Quotas(PLENTY))
    (budget,) = [f for f in found if f.check == "budget"]
    assert budget.level == preflight.WARNING
    assert budget.message.startswith(f"{name} exists already with 0 notification(s)")


def test_unreachable_sts_blocks_in_one_line_and_skips_quotas(
    moto_server, monkeypatch, tmp_path, capsys
):
    from raygpu.localray import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    source = Quotas(PLENTY)
    monkeypatch.setattr(preflight, "default_quota_source", lambda _s: source)
    stack, path = clean_stack(tmp_path)
    assert cli.main(["preflight", "--stack", stack, "--config", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(
        "preflight: blocker identity: cannot tell whose credentials these are"
    )
    assert source.asked == []
    assert out[-1].startswith("preflight: 1 blocker(s)")


def test_json_output_counts_blockers_and_holds_no_secret(
    moto_server, monkeypatch, capsys
):
    monkeypatch.setattr(preflight, "default_quota_source", lambda _s: Quotas(PLENTY))
    assert cli.main(["preflight", "--stack", "prod", "--json"]) == 1
    printed = capsys.readouterr().out
    result = json.loads(printed)
    blockers = [f for f in result["findings"] if f["level"] == "blocker"]
    assert result["blockers"] == len(blockers) == 3  # prod's three placeholders
    assert {f["check"] for f in blockers} == {"placeholder"}
    assert moto_server.env["AWS_SECRET_ACCESS_KEY"] not in printed


@pytest.mark.parametrize(
    "instance, cls",
    [("g6.xlarge", "G"), ("g5.2xlarge", "G"), ("vt1.3xlarge", "G"),
     ("p5.48xlarge", "P"), ("m6i.xlarge", "standard")],
)  # fmt: skip
def test_instance_families_map_to_their_vcpu_quota(instance, cls):
    assert quotas.family_class(instance) == cls


def test_images_without_a_recorded_digest_are_warned_about(monkeypatch):
    from raygpu import versions

    by_tag = [i for i in versions.CLUSTER_IMAGES if i not in versions.IMAGE_DIGESTS]
    found = preflight.image_findings()
    warned = [f.message.split()[0] for f in found if f.level == preflight.WARNING]
    assert warned == by_tag and versions.RAY_IMAGE_CPU in warned
    ray_gpu = versions.ImageDigest("sha256:" + "0" * 64, "a test", "2026-12-02")
    monkeypatch.setitem(versions.IMAGE_DIGESTS, versions.RAY_IMAGE_GPU, ray_gpu)
    found = preflight.image_findings()
    warned_now = [f.message.split()[0] for f in found if f.level == preflight.WARNING]
    assert warned_now == [i for i in by_tag if i != versions.RAY_IMAGE_GPU]
    pinned = len(versions.CLUSTER_IMAGES) - len(warned_now)
    assert found[-1].line().endswith(f"{pinned} image(s) pinned by digest")
