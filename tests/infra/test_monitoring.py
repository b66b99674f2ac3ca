"""Monitoring (infra/monitoring.py) and EbsCsiDriver (infra/ebs_csi.py): the real
program under Pulumi's mocks on the dev and prod stacks (monitoring on, as
committed), on dev with an AMP workspace, and on dev with `raygpu:monitoring:
false`; the policy pack over both stacks and over edits of them; the EBS CSI
component with a StorageClass key."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from infra import ebs_csi
from infra import monitoring as infra_monitoring
from raygpu import config, network_policies, policy, versions
from raygpu.monitoring import (
    alerts,
    dcgm,
    footprint,
    network,
    pod_security,
    remote_write,
)
from raygpu.monitoring import stack as monitoring
from raygpu.offline import MOCK_ACCOUNT, OfflineRun, run_offline
from tests.infra.infra_helpers import as_list, run_component, stack_config, statements

ROOT = Path(__file__).resolve().parents[2]
RELEASE = "kubernetes:helm.sh/v3:Release"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
ADDON = "aws:eks/addon:Addon"
K8S_PROVIDER = "pulumi:providers:kubernetes"
WORKSPACE_ARN = f"arn:aws:aps:us-east-1:{MOCK_ACCOUNT}:workspace/ws-0a1b2c3d-cafe"
WORKSPACE_URL = (
    "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-0a1b2c3d-cafe/"
)
OUTPUTS = ("monitoring_namespace", "prometheus_service", "grafana_service")


def _run_with(
    tmp_path: Path, stack: str = "dev", **overrides
) -> tuple[config.StackConfig, OfflineRun]:
    """The real program on a copy of `Pulumi.<stack>.yaml` with `overrides`."""
    doc = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    doc["config"].update({f"raygpu:{k}": v for k, v in overrides.items()})
    path = tmp_path / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return config.load_stack_file(path, stack), run_offline(stack, path)


# The committed stack files, which turn monitoring on.
@pytest.fixture(scope="module", params=["dev", "prod"])
def program(request) -> tuple[config.StackConfig, OfflineRun]:
    stack = request.param
    return config.load_stack_file(ROOT / f"Pulumi.{stack}.yaml"), run_offline(stack)


@pytest.fixture(scope="module")
def with_amp(tmp_path_factory) -> tuple[config.StackConfig, OfflineRun]:
    return _run_with(
        tmp_path_factory.mktemp("amp"),
        monitoring=True,
        ampWorkspaceArn=WORKSPACE_ARN,
        ampWorkspaceUrl=WORKSPACE_URL,
    )


def _mine(run: OfflineRun, typ: str, token: str) -> list[dict]:
    return [r for r in run.of_type(typ) if r["parent_type"] == token]


def _release(run: OfflineRun, chart: str) -> dict:
    (release,) = [
        r
        for r in _mine(run, RELEASE, infra_monitoring.TYPE_TOKEN)
        if r["inputs"]["chart"] == chart
    ]
    return release


def _needs(res: dict, other: dict) -> bool:
    return other["urn"] in res["options"]["depends_on"]


def _trust(role: dict) -> dict:
    (stmt,) = statements(role["inputs"]["assumeRolePolicy"])
    return stmt


# ------------------------------------------------------------------ releases


def test_releases_are_pinned_and_dcgm_runs_with_the_host_agents(program):
    cfg, run = program
    agents = pod_security.agents_namespace(cfg.monitoring_namespace)
    assert cfg.monitoring is True and agents == "monitoring-agents"
    (provider,) = run.of_type(K8S_PROVIDER)
    assert provider["parent_type"] == "raygpu:kuberay:RayOnKubernetes"
    pins = {
        monitoring.CHART: (
            versions.KUBE_PROMETHEUS_STACK_CHART_VERSION,
            versions.KUBE_PROMETHEUS_STACK_HELM_REPO,
        ),
        dcgm.CHART: (
            versions.DCGM_EXPORTER_CHART_VERSION,
            versions.DCGM_EXPORTER_HELM_REPO,
        ),
    }
    namespaces = {monitoring.CHART: cfg.monitoring_namespace, dcgm.CHART: agents}
    for chart, (version, repo) in pins.items():
        inputs = _release(run, chart)["inputs"]
        assert inputs["version"] == version
        assert inputs["repositoryOpts"]["repo"] == repo
        assert inputs["namespace"] == namespaces[chart]
        assert _release(run, chart)["options"]["provider"].startswith(
            provider["urn"] + "::"
        )


def test_the_chart_takes_retention_and_volume_from_the_config(program):
    cfg, run = program
    spec = _release(run, monitoring.CHART)["inputs"]["values"]["prometheus"]
    prometheus = spec["prometheusSpec"]
    assert prometheus["retention"] == cfg.monitoring_retention
    claim = prometheus["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["resources"]["requests"]["storage"] == (
        f"{cfg.monitoring_storage_gib}Gi"
    )
    assert claim["storageClassName"] == monitoring.STORAGE_CLASS
    assert "remoteWrite" not in prometheus  # AMP is off in both stack files
    assert "annotations" not in spec["serviceAccount"]
    assert (cfg.monitoring_retention, cfg.monitoring_storage_gib) == (
        {"dev": ("15d", 20), "prod": ("30d", 50)}[cfg.stack]
    )


def _namespaces(cfg, run) -> tuple[dict, dict]:
    """The Monitoring component's namespaces: monitoring's, the host agents'."""
    found = {
        n["inputs"]["metadata"]["name"]: n
        for n in _mine(run, "kubernetes:core/v1:Namespace", infra_monitoring.TYPE_TOKEN)
    }
    agents = pod_security.agents_namespace(cfg.monitoring_namespace)
    assert set(found) == {cfg.monitoring_namespace, agents}
    return found[cfg.monitoring_namespace], found[agents]


def test_apply_order_core_then_chart_then_dcgm_then_objects(program):
    cfg, run = program
    token = infra_monitoring.TYPE_TOKEN
    namespace, agents = _namespaces(cfg, run)
    (storage_class,) = _mine(run, "kubernetes:storage.k8s.io/v1:StorageClass", token)
    assert storage_class["inputs"]["provisioner"] == monitoring.EBS_CSI_PROVISIONER
    assert storage_class["inputs"]["parameters"] == {
        "type": "gp3",
        "encrypted": "true",
    }
    (addon,) = _mine(run, ADDON, ebs_csi.TYPE_TOKEN)
    assert _needs(storage_class, addon)
    chart, exporter = _release(run, monitoring.CHART), _release(run, dcgm.CHART)
    assert _needs(chart, namespace) and _needs(chart, storage_class)
    assert _needs(chart, agents)  # node-exporter goes there
    assert _needs(exporter, chart) and _needs(exporter, agents)
    expected = {
        (o["kind"], o["metadata"]["name"])
        for o in [alerts.prometheus_rule_manifest(cfg)]
        + monitoring.monitoring_objects(cfg)
    }
    objects = [
        r
        for r in run.resources
        if r["parent_type"] == token
        and (
            r["type"].startswith("kubernetes:monitoring.coreos.com/")
            or r["type"] == "kubernetes:core/v1:ConfigMap"
        )
    ]
    found = {
        (r["type"].rsplit(":", 1)[1], r["inputs"]["metadata"]["name"]) for r in objects
    }
    assert found == expected
    assert ("PrometheusRule", alerts.RULE_NAME) in found
    for obj in objects:
        assert _needs(obj, chart) and _needs(obj, exporter), obj["name"]
        assert obj["inputs"]["metadata"]["namespace"] == cfg.monitoring_namespace


def test_the_system_node_still_holds_everything(program):
    # monitoring defaults to on: the smallest system instance must hold it.
    cfg, _ = program
    assert footprint.system_node_problem(cfg) is None


def test_outputs_name_the_namespace_and_services(program):
    _, run = program
    assert {k: run.outputs[k] for k in OUTPUTS} == {
        "monitoring_namespace": "monitoring",
        "prometheus_service": monitoring.PROMETHEUS_SERVICE,
        "grafana_service": monitoring.GRAFANA_SERVICE,
    }
    assert "amp_remote_write_role_arn" not in run.outputs


def test_namespaces_deny_ingress_but_what_monitoring_sends(program):
    cfg, run = program
    token = infra_monitoring.TYPE_TOKEN
    found = _mine(run, "kubernetes:networking.k8s.io/v1:NetworkPolicy", token)
    expected = network.monitoring_network_policies(
        cfg
    ) + network.agents_network_policies(cfg)

    def key(meta: dict) -> tuple[str, str]:
        return meta["namespace"], meta["name"]

    assert {key(p["inputs"]["metadata"]): p["inputs"]["spec"] for p in found} == {
        key(o["metadata"]): o["spec"] for o in expected
    }
    for obj in expected:
        assert network_policies.network_policy_problems(obj) == []
    by_name = {n["inputs"]["metadata"]["name"]: n for n in _namespaces(cfg, run)}
    chart, exporter = _release(run, monitoring.CHART), _release(run, dcgm.CHART)
    for netpol in found:
        ns = netpol["inputs"]["metadata"]["namespace"]
        assert _needs(netpol, by_name[ns]) and _needs(chart, netpol)
        if ns != cfg.monitoring_namespace:
            assert _needs(exporter, netpol)
    # In the agents' namespace only Prometheus's pods reach the DCGM port.
    (scrape,) = [
        o["spec"] for o in network.agents_network_policies(cfg) if o["spec"]["ingress"]
    ]
    (rule,) = scrape["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": dcgm.METRICS_PORT}]
    (peer,) = rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {
        network_policies.NAMESPACE_NAME_LABEL: cfg.monitoring_namespace
    }
    assert peer["podSelector"]["matchLabels"] == network.PROMETHEUS_POD_LABELS
    assert scrape["podSelector"]["matchLabels"] == dcgm.SERVICE_LABELS


def _blocking(records: list[dict]) -> list[tuple[str, str, str]]:
    report = policy.check(policy.resources_from_run(SimpleNamespace(resources=records)))
    return [(v.rule, v.resource_name, v.message) for v in report.blocking]


def test_policy_pack_passes_both_stacks_with_monitoring_on(program):
    cfg, run = program
    assert cfg.monitoring is True
    report = policy.check(policy.resources_from_run(run))
    assert report.blocking == [], policy.report_lines(report)
    levels = {
        n["inputs"]["metadata"]["name"]: n["inputs"]["metadata"]["labels"][
            pod_security.PSA_ENFORCE
        ]
        for n in run.of_type("kubernetes:core/v1:Namespace")
    }
    # Every namespace restricted, but the host agents' one.
    agents = pod_security.agents_namespace(cfg.monitoring_namespace)
    assert levels.pop(agents) == "privileged"
    assert set(levels.values()) == {"restricted"}
    assert cfg.monitoring_namespace in levels


class _AsRun(SimpleNamespace):
    """Records as `_mine` reads them from a run."""

    def __init__(self, resources: list[dict]) -> None:
        super().__init__(resources=resources)

    def of_type(self, typ: str) -> list[dict]:
        return [r for r in self.resources if r["type"] == typ]


def _edited(run: OfflineRun, cfg, edit) -> list[dict]:
    records = copy.deepcopy(run.resources)
    namespace, agents = _namespaces(cfg, _AsRun(records))
    edit(records, namespace["inputs"]["metadata"], agents["inputs"]["metadata"])
    return records


def _privileged(meta: dict) -> None:
    meta["labels"][pod_security.PSA_ENFORCE] = "privileged"


def test_the_exception_covers_no_other_privileged_namespace(program):
    cfg, run = program
    prefix = cfg.name_prefix
    label = pod_security.HOST_AGENTS_LABEL

    # The monitoring namespace itself privileged.
    found = _blocking(_edited(run, cfg, lambda r, m, a: _privileged(m)))
    assert [(r, n) for r, n, _ in found] == [("RG-K8S-08", f"{prefix}-monitoring-ns")]

    # ... and labelled as host agents' namespace: not under the derived name.
    def relabel(records, meta, agents):
        _privileged(meta)
        meta["labels"][label] = cfg.monitoring_namespace

    found = _blocking(_edited(run, cfg, relabel))
    assert [(r, n) for r, n, _ in found] == [("RG-K8S-08", f"{prefix}-monitoring-ns")]
    assert "admits only the namespace monitoring-agents" in found[0][2]

    # The Ray namespace claiming to be some namespace's host agents'.
    records = copy.deepcopy(run.resources)
    (ray_ns,) = [
        r
        for r in records
        if r["type"] == "kubernetes:core/v1:Namespace"
        and r["inputs"]["metadata"]["name"] == cfg.ray_namespace
    ]
    _privileged(ray_ns["inputs"]["metadata"])
    ray_ns["inputs"]["metadata"]["labels"][label] = cfg.ray_namespace[:-1]
    found = _blocking(records)
    assert [r for r, _, _ in found] == ["RG-K8S-08"], found


def test_the_exception_ends_when_another_workload_joins_the_agents(program):
    cfg, run = program
    agents = pod_security.agents_namespace(cfg.monitoring_namespace)
    subject = f"{cfg.name_prefix}-monitoring-agents-ns"

    def move(records, typ, suffix, fn):
        (record,) = [
            r for r in records if r["type"] == typ and r["name"].endswith(suffix)
        ]
        fn(record["inputs"])
        return records

    cases = {
        "the chart itself": lambda i: i.update(namespace=agents),
        "Grafana by override": lambda i: i["values"]["grafana"].update(
            namespaceOverride=agents
        ),
    }
    for what, fn in cases.items():
        records = move(
            copy.deepcopy(run.resources), RELEASE, "kube-prometheus-stack", fn
        )
        found = _blocking(records)
        assert [(r, n) for r, n, _ in found] == [("RG-K8S-08", subject)], what
    # The Ray cluster placed there, and another chart released there.
    records = move(
        copy.deepcopy(run.resources),
        "kubernetes:ray.io/v1:RayCluster",
        "raycluster",
        lambda i: i["metadata"].update(namespace=agents),
    )
    assert ("RG-K8S-08", subject) in {(r, n) for r, n, _ in _blocking(records)}
    records = move(
        copy.deepcopy(run.resources),
        RELEASE,
        "kuberay-operator",
        lambda i: i.update(namespace=agents),
    )
    found = [m for r, n, m in _blocking(records) if (r, n) == ("RG-K8S-08", subject)]
    assert found and "kuberay-operator" in found[0]
    # A namespace labelled so, but with no monitoring namespace beside it.
    records = [
        r
        for r in copy.deepcopy(run.resources)
        if not (
            r["type"] == "kubernetes:core/v1:Namespace"
            and r["inputs"]["metadata"]["name"] == cfg.monitoring_namespace
        )
    ]
    found = _blocking(records)
    assert ("RG-K8S-08", subject) in {(r, n) for r, n, _ in found}


# ------------------------------------------------------------------ EBS CSI


def test_ebs_csi_addon_is_pinned_with_its_own_irsa_role(program):
    cfg, run = program
    (addon,) = _mine(run, ADDON, ebs_csi.TYPE_TOKEN)
    inputs = addon["inputs"]
    assert inputs["addonName"] == "aws-ebs-csi-driver"
    assert inputs["addonVersion"] == versions.EBS_CSI_ADDON_VERSION
    assert inputs["clusterName"] == run.outputs["cluster_name"]
    (role,) = _mine(run, ROLE, ebs_csi.TYPE_TOKEN)
    assert inputs["serviceAccountRoleArn"] == (
        f"arn:aws:iam::{MOCK_ACCOUNT}:role/{role['id']}"
    )
    assert run.outputs["ebs_csi_role_arn"] == inputs["serviceAccountRoleArn"]
    condition = _trust(role)["Condition"]["StringEquals"]
    issuer = run.outputs["oidc_provider_arn"].split("oidc-provider/")[1]
    assert condition == {
        f"{issuer}:sub": "system:serviceaccount:kube-system:ebs-csi-controller-sa",
        f"{issuer}:aud": "sts.amazonaws.com",
    }
    (attachment,) = _mine(run, ATTACHMENT, ebs_csi.TYPE_TOKEN)
    assert attachment["inputs"]["policyArn"] == (
        "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
    )
    # The StorageClass names no key (aws/ebs): no KMS policy.
    assert _mine(run, ROLE_POLICY, ebs_csi.TYPE_TOKEN) == []
    assert _needs(addon, attachment)
    (system,) = [
        g for g in run.of_type("aws:eks/nodeGroup:NodeGroup") if "system" in g["name"]
    ]
    assert _needs(addon, system)
    assert role["inputs"]["tags"]["raygpu:stack"] == cfg.stack


def test_a_named_storage_key_gets_a_kms_policy_on_that_key_only():
    cfg = stack_config()
    key = f"arn:aws:kms:us-east-1:{MOCK_ACCOUNT}:key/1234abcd"

    def build():
        ebs_csi.EbsCsiDriver(
            "ebs",
            ebs_csi.EbsCsiDriverArgs(
                config=cfg,
                cluster_name="raygpu-dev",
                oidc_provider_arn=f"arn:aws:iam::{MOCK_ACCOUNT}:oidc-provider/x",
                oidc_issuer_url="https://x",
                kms_key_arn=key,
            ),
        )

    run = run_component(build, cfg)
    (policy,) = run.of_type(ROLE_POLICY)
    stmts = statements(policy["inputs"]["policy"])
    assert {r for s in stmts for r in as_list(s["Resource"])} == {key}
    grants = next(s for s in stmts if "kms:CreateGrant" in s["Action"])
    assert grants["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}
    assert "kms:CreateGrant" not in next(s for s in stmts if s is not grants)["Action"]


# ------------------------------------------------------------------ AMP


def test_amp_role_trusts_prometheus_only_and_writes_one_workspace(with_amp):
    cfg, run = with_amp
    (role,) = _mine(run, ROLE, infra_monitoring.TYPE_TOKEN)
    condition = _trust(role)["Condition"]["StringEquals"]
    issuer = run.outputs["oidc_provider_arn"].split("oidc-provider/")[1]
    assert condition == {
        f"{issuer}:sub": remote_write.service_account_subject(cfg.monitoring_namespace),
        f"{issuer}:aud": "sts.amazonaws.com",
    }
    assert _trust(role)["Principal"] == {"Federated": run.outputs["oidc_provider_arn"]}
    (policy,) = _mine(run, ROLE_POLICY, infra_monitoring.TYPE_TOKEN)
    assert json.loads(policy["inputs"]["policy"]) == (
        remote_write.remote_write_policy(WORKSPACE_ARN)
    )
    (stmt,) = statements(policy["inputs"]["policy"])
    assert as_list(stmt["Action"]) == ["aps:RemoteWrite"]
    assert as_list(stmt["Resource"]) == [WORKSPACE_ARN]
    role_arn = f"arn:aws:iam::{MOCK_ACCOUNT}:role/{role['id']}"
    assert run.outputs["amp_remote_write_role_arn"] == role_arn
    values = _release(run, monitoring.CHART)["inputs"]["values"]["prometheus"]
    account = values["serviceAccount"]
    assert account["name"] == remote_write.PROMETHEUS_SERVICE_ACCOUNT
    assert account["annotations"] == {"eks.amazonaws.com/role-arn": role_arn}
    (write,) = values["prometheusSpec"]["remoteWrite"]
    assert write["url"] == WORKSPACE_URL.rstrip("/") + "/api/v1/remote_write"
    assert write["sigv4"] == {"region": "us-east-1"}


def test_no_amp_role_without_a_workspace(program):
    _, run = program
    assert _mine(run, ROLE, infra_monitoring.TYPE_TOKEN) == []
    assert _mine(run, ROLE_POLICY, infra_monitoring.TYPE_TOKEN) == []


# ------------------------------------------------------------------ off


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_monitoring_false_installs_none_of_it(stack, tmp_path):
    cfg, run = _run_with(tmp_path, stack, monitoring=False)
    assert cfg.monitoring is False
    tokens = {r["type"] for r in run.resources} | {
        r["parent_type"] for r in run.resources
    }
    assert infra_monitoring.TYPE_TOKEN not in tokens
    assert ebs_csi.TYPE_TOKEN not in tokens
    charts = {r["inputs"]["chart"] for r in run.of_type(RELEASE)}
    assert charts and not charts & {monitoring.CHART, dcgm.CHART}
    assert ebs_csi.ADDON_NAME not in {
        a["inputs"]["addonName"] for a in run.of_type(ADDON)
    }
    assert not any(
        r["type"].startswith("kubernetes:monitoring.coreos.com/") for r in run.resources
    )
    assert not set(OUTPUTS) & set(run.outputs)
    assert "ebs_csi_role_arn" not in run.outputs
    # The rest of the stack is unchanged.
    assert "ray_cluster_name" in run.outputs and "irsa_role_arn" in run.outputs
