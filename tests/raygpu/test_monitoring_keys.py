"""The monitoring keys (raygpu/config/monitoring_keys.py): defaults, each bad value
named in one line, AMP's two keys together and of one workspace; render takes the
retention and volume from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raygpu import config, render
from raygpu.config.monitoring_keys import MonitoringKeys, monitoring_keys
from tests.infra.infra_helpers import stack_config

ROOT = Path(__file__).resolve().parents[2]
ARN = "arn:aws:aps:us-east-1:123456789012:workspace/ws-0a1b2c3d-cafe"
URL = "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-0a1b2c3d-cafe/"


def _error(**overrides) -> str:
    with pytest.raises(config.ConfigError) as exc:
        stack_config(**overrides)
    return str(exc.value)


def test_defaults_install_monitoring_without_remote_write():
    cfg = stack_config()
    assert (cfg.monitoring, cfg.monitoring_retention, cfg.monitoring_storage_gib) == (
        True,
        "15d",
        20,
    )
    assert cfg.amp_workspace_arn is None and cfg.amp_workspace_url is None
    assert cfg.amp_configured is False


def test_empty_strings_are_off_and_a_workspace_is_on():
    assert stack_config(ampWorkspaceArn="", ampWorkspaceUrl="").amp_configured is False
    cfg = stack_config(ampWorkspaceArn=ARN, ampWorkspaceUrl=URL)
    assert cfg.amp_configured and cfg.amp_workspace_arn == ARN


@pytest.mark.parametrize("value", ["15 days", "15", "", "1.5d", "d", 15])
def test_retention_must_be_a_prometheus_duration(value):
    assert _error(monitoringRetention=value).startswith(
        "raygpu:monitoringRetention: must be a Prometheus duration"
    )


@pytest.mark.parametrize("value", ["12h", "30d", "1y", "2w3d", "90m"])
def test_retention_accepts_durations(value):
    assert stack_config(monitoringRetention=value).monitoring_retention == value


@pytest.mark.parametrize("value", [0, 16385, "20", 20.0])
def test_storage_is_a_whole_number_of_gib_within_gp3(value):
    assert _error(monitoringStorageGib=value).startswith(
        "raygpu:monitoringStorageGib: must be"
    )


def test_monitoring_is_a_bool():
    assert _error(monitoring="yes").startswith("raygpu:monitoring: must be true or")


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"ampWorkspaceArn": ARN}, "raygpu:ampWorkspaceUrl"),
        ({"ampWorkspaceUrl": URL}, "raygpu:ampWorkspaceUrl"),
        ({"ampWorkspaceArn": ARN, "ampWorkspaceUrl": ""}, "raygpu:ampWorkspaceUrl"),
    ],
)
def test_amp_keys_go_together(overrides, key):
    assert _error(**overrides) == (
        f"{key}: ampWorkspaceArn and ampWorkspaceUrl must be given together (or both "
        "left empty for no remote write)"
    )


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:aps:us-east-1:12345678901:workspace/ws-abc",  # 11-digit account
        "arn:aws:iam::123456789012:role/prometheus",
        "ws-0a1b2c3d-cafe",
    ],
)
def test_workspace_arn_format(arn):
    message = _error(ampWorkspaceArn=arn, ampWorkspaceUrl=URL)
    assert message.startswith("raygpu:ampWorkspaceArn: must be an AMP workspace ARN")
    assert "ampWorkspaceUrl" not in message  # the ARN's own error says it all


def test_url_must_be_the_workspaces_endpoint():
    other = URL.replace("us-east-1", "us-west-2")
    assert _error(ampWorkspaceArn=ARN, ampWorkspaceUrl=other) == (
        f"raygpu:ampWorkspaceUrl: {other!r} is not the endpoint of {ARN}"
    )
    assert _error(ampWorkspaceArn=ARN, ampWorkspaceUrl="http://x").startswith(
        "raygpu:ampWorkspaceUrl: must be an AMP endpoint"
    )


def test_amp_needs_monitoring():
    assert _error(monitoring=False, ampWorkspaceArn=ARN, ampWorkspaceUrl=URL) == (
        "raygpu:ampWorkspaceArn: is set but monitoring is false: nothing would "
        "remote-write"
    )


def test_every_bad_key_is_reported_at_once():
    message = _error(monitoringRetention="x", monitoringStorageGib=0)
    assert "raygpu:monitoringRetention" in message
    assert "raygpu:monitoringStorageGib" in message


def test_a_model_without_the_keys_has_monitoring_off():
    cfg = config.load_stack_file(ROOT / "Pulumi.gcp-dev.yaml")
    assert not isinstance(cfg, MonitoringKeys)
    keys = monitoring_keys(cfg)
    assert (keys.monitoring, keys.monitoring_retention) == (False, "15d")


MONITORING_FILES = (
    "*prometheusrule*",
    "*podmonitor*",
    "*servicemonitor*",
    "*configmap-ray-dashboard*",
    "*helm-kube-prometheus-stack*",
    "*helm-dcgm*",
    "*storageclass*",
)


def _monitoring_files(out):
    return sorted(p.name for pat in MONITORING_FILES for p in out.glob(pat))


@pytest.mark.parametrize("stack", ["gcp-dev", "azure-dev"])
def test_render_writes_no_monitoring_where_the_program_installs_none(tmp_path, stack):
    out = tmp_path / "out"
    render.render(stack, out, validate=False)
    assert _monitoring_files(out) == []
    assert list(out.glob("*-raycluster-*.yaml"))  # the rest is there


def test_render_writes_no_monitoring_when_it_is_off(tmp_path):
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"]["raygpu:monitoring"] = False
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text(yaml.safe_dump(doc))
    on, off = tmp_path / "on", tmp_path / "off"
    render.render("dev", on, validate=False)
    render.render("dev", off, stack_file=stack_file, validate=False)
    assert len(_monitoring_files(on)) > 5
    assert _monitoring_files(off) == []


def test_render_takes_retention_and_volume_from_the_stack(tmp_path):
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"].update(
        {"raygpu:monitoringRetention": "7d", "raygpu:monitoringStorageGib": 33}
    )
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    render.render("dev", out, stack_file=stack_file, validate=False)
    (values_file,) = out.glob("*-helm-kube-prometheus-stack.values.yaml")
    spec = yaml.safe_load(values_file.read_text())["prometheus"]["prometheusSpec"]
    assert spec["retention"] == "7d"
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["resources"]["requests"]["storage"] == "33Gi"
