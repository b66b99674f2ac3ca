"""The monitoring stack on a stack (raygpu/monitoring/stack.py): the objects and
Helm values `raygpu render` writes, checked offline without Ray or a network."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml

from raygpu import (
    autoscaler_values,
    crd_schema,
    manifests,
    names,
    network_policies,
    render,
    sizing,
    versions,
)
from raygpu.monitoring import (
    alerts,
    dashboards,
    dcgm,
    footprint,
    operators,
    pod_security,
    remote_write,
    stack,
)
from tests.raygpu.test_manifests import STACKS, stack_config

REFS = manifests.ClusterRefs("data", "artifacts", "arn:aws:iam::123456789012:role/r")
WORKSPACE_ARN = "arn:aws:aps:us-east-1:123456789012:workspace/ws-1a2b3c4d-5e6f"
WORKSPACE_URL = (
    "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1a2b3c4d-5e6f/"
)
ROLE_ARN = "arn:aws:iam::123456789012:role/raygpu-dev-amp"
# Labels the KubeRay operator adds to every Ray pod it creates besides the
# template's (ray-operator/controllers/ray/common/pod.go, labelPod).
KUBERAY_LABELS = {"ray.io/is-ray-node": "yes", "ray.io/cluster": None}
# The port KubeRay adds to the Ray container of every head and worker pod
# (utils.MetricsPortName, DefaultMetricsPort) unless the template declares it.
KUBERAY_METRICS_PORT = "metrics"


@pytest.fixture(scope="module", params=STACKS)
def cfg(request):
    return stack_config(request.param)


@pytest.fixture(scope="module")
def dev():
    return stack_config("dev")


def everything(cfg) -> list[dict[str, Any]]:
    return [
        *stack.core_objects(cfg),
        alerts.prometheus_rule_manifest(cfg),
        *stack.monitoring_objects(cfg),
    ]


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    want = selector.get("matchLabels") or {}
    assert set(selector) <= {"matchLabels", "matchExpressions"}
    expressions = selector.get("matchExpressions") or []
    assert {e["operator"] for e in expressions} <= {"In"}, "only In is modelled"
    return all(labels.get(k) == v for k, v in want.items()) and all(
        labels.get(e["key"]) in e["values"] for e in expressions
    )


def pod_labels(cfg, spec: Mapping[str, Any], node_type: str) -> dict[str, str]:
    """What the pod of a group spec carries once KubeRay created it."""
    labels = dict(spec["template"]["metadata"]["labels"])
    labels[network_policies.RAY_NODE_TYPE_LABEL] = node_type
    labels.update(
        {k: v or manifests.ray_cluster_name(cfg) for k, v in KUBERAY_LABELS.items()}
    )
    return labels


# ------------------------------------------------------------- validation


def test_every_object_validates_against_the_vendored_crds(cfg):
    objects = everything(cfg)
    kinds = {o["kind"] for o in objects}
    assert {"PodMonitor", "ServiceMonitor", "PrometheusRule"} <= kinds
    for obj in objects:
        if obj["kind"] in crd_schema.MONITORING_CRD_FILES:
            assert crd_schema.manifest_problems(obj) == [], obj["metadata"]["name"]
    assert stack.problems(objects) == []


def test_a_misspelt_field_or_a_bad_label_is_refused(dev):
    head, _workers = stack.pod_monitors(dev)
    head["spec"]["podMetricsEndpoints"][0]["prot"] = "metrics"
    head["spec"]["selector"]["matchLabels"]["ray.io/node-type"] = "head!"
    found = stack.problems([head])
    assert any("'prot' was unexpected" in p for p in found), found
    assert any("spec.selector" in p and "head!" in p for p in found), found
    rule = alerts.prometheus_rule_manifest(dev)
    rule["apiVersion"] = "monitoring.coreos.com/v1beta1"
    assert crd_schema.schema_problems(rule) == [
        "apiVersion: 'monitoring.coreos.com/v1beta1' must be 'monitoring.coreos.com/v1'"
    ]


def test_render_writes_the_monitoring_objects_and_fails_on_a_broken_one(
    tmp_path, monkeypatch
):
    result = render.render("dev", tmp_path / "ok")
    assert result.problems == []
    written = {p.name for p in result.written}
    assert {
        "04-namespace-monitoring.yaml",
        "13-helm-kube-prometheus-stack.values.yaml",
        "14-helm-dcgm-exporter.values.yaml",
        "41-podmonitor-ray-head.yaml",
        "43-servicemonitor-dcgm-exporter.yaml",
        "44-podmonitor-kuberay-operator.yaml",
        "45-servicemonitor-cluster-autoscaler.yaml",
        "46-configmap-ray-dashboard-train.yaml",
    } <= written
    built = stack.monitoring_objects

    def broken(cfg):
        objects = built(cfg)
        objects[0]["spec"]["podMetricsEndpoints"][0]["interval"] = 15
        return objects

    monkeypatch.setattr(stack, "monitoring_objects", broken)
    result = render.render("dev", tmp_path / "broken")
    assert result.problems == [
        "PodMonitor ray-head: spec.podMetricsEndpoints[0].interval: "
        "15 is not of type 'string'"
    ]


def test_the_vendored_crds_are_the_pinned_operators():
    folder = crd_schema.VENDORED_MONITORING_CRDS / crd_schema.MONITORING_CRD_VERSION
    for kind, file_name in crd_schema.MONITORING_CRD_FILES.items():
        crd = yaml.safe_load((folder / file_name).read_text())
        assert crd["spec"]["names"]["kind"] == kind
        annotations = crd["metadata"]["annotations"]
        assert annotations["operator.prometheus.io/version"] == (
            versions.PROMETHEUS_OPERATOR_VERSION
        )
    assert (crd_schema.VENDORED_MONITORING_CRDS / "LICENSE").is_file()


def _ns(name: str) -> dict[str, str]:
    return {network_policies.NAMESPACE_NAME_LABEL: name}


def test_prometheus_selects_the_rule_and_every_monitor(cfg):
    spec = stack.kube_prometheus_stack_values(cfg)["prometheus"]["prometheusSpec"]
    ns_labels = _ns(cfg.monitoring_namespace)
    selectors = {
        "PrometheusRule": ("ruleSelector", "ruleNamespaceSelector"),
        "PodMonitor": ("podMonitorSelector", "podMonitorNamespaceSelector"),
        "ServiceMonitor": ("serviceMonitorSelector", "serviceMonitorNamespaceSelector"),
    }
    objects = [o for o in everything(cfg) if o["kind"] in selectors]
    assert len(objects) == 6
    for obj in objects:
        by_label, by_namespace = selectors[obj["kind"]]
        assert matches(spec[by_label], obj["metadata"]["labels"]), obj["kind"]
        assert obj["metadata"]["namespace"] == cfg.monitoring_namespace
        assert matches(spec[by_namespace], ns_labels)
    rule = alerts.prometheus_rule_manifest(cfg)
    assert rule["metadata"]["labels"][stack.RELEASE_LABEL] == stack.RELEASE
    # node-exporter's chart puts its ServiceMonitor beside it, in the host agents'
    # namespace: ServiceMonitors are selected there too, and nowhere else.
    agents = _ns(pod_security.agents_namespace(cfg.monitoring_namespace))
    assert matches(spec["serviceMonitorNamespaceSelector"], agents)
    for key in ("rule", "podMonitor", "probe", "scrapeConfig"):
        assert not matches(spec[f"{key}NamespaceSelector"], agents), key
    for other in (cfg.ray_namespace, "kube-system", "default"):
        for key in ("rule", "podMonitor", "serviceMonitor", "probe", "scrapeConfig"):
            assert not matches(spec[f"{key}NamespaceSelector"], _ns(other)), key


# ------------------------------------------------------------- pod security


def test_the_monitoring_namespace_is_restricted_and_the_agents_privileged(cfg):
    namespace, agents = stack.core_objects(cfg)[:2]
    enforce = pod_security.PSA_ENFORCE
    assert namespace["metadata"]["name"] == cfg.monitoring_namespace
    assert namespace["metadata"]["labels"][enforce] == "restricted"
    assert pod_security.HOST_AGENTS_LABEL not in namespace["metadata"]["labels"]
    name = f"{cfg.monitoring_namespace}-agents"
    assert agents["metadata"]["name"] == name
    assert agents["metadata"]["labels"][enforce] == "privileged"
    assert agents["metadata"]["labels"][pod_security.HOST_AGENTS_LABEL] == (
        cfg.monitoring_namespace
    )
    # The two host agents, and only they, go there.
    values = stack.kube_prometheus_stack_values(cfg)
    assert values["prometheus-node-exporter"]["namespaceOverride"] == name
    releases = {r.name: r.namespace for r in stack.helm_releases(cfg)}
    assert releases == {stack.RELEASE: cfg.monitoring_namespace, dcgm.RELEASE: name}
    monitor = dcgm.dcgm_service_monitor(cfg, stack.monitor_labels(cfg))
    assert monitor["metadata"]["namespace"] == cfg.monitoring_namespace
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [name]}
    for obj in stack.monitoring_objects(cfg):
        assert obj["metadata"]["namespace"] != name, obj["metadata"]["name"]


def test_a_monitoring_namespace_too_long_for_its_agents_is_refused():
    assert pod_security.agents_namespace("m" * 56) == "m" * 56 + "-agents"
    with pytest.raises(ValueError, match=r"^monitoringNamespace: at most 56 "):
        pod_security.agents_namespace("m" * 57)


# The chart's pods in the restricted namespace: (where the pod's securityContext
# is set, where each container's is, None where prometheus-operator sets it).
RESTRICTED_PODS = {
    "prometheus-operator": (
        ("prometheusOperator", "securityContext"),
        [("prometheusOperator", "containerSecurityContext")],
    ),
    "prometheus": (("prometheus", "prometheusSpec", "securityContext"), None),
    "alertmanager": (("alertmanager", "alertmanagerSpec", "securityContext"), None),
    "grafana": (
        ("grafana", "securityContext"),
        [
            ("grafana", "containerSecurityContext"),
            ("grafana", "sidecar", "securityContext"),
        ],
    ),
    "kube-state-metrics": (
        ("kube-state-metrics", "securityContext"),
        [("kube-state-metrics", "containerSecurityContext")],
    ),
}


def _at(values: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        values = values[key]
    return values


@pytest.mark.parametrize("pod", sorted(RESTRICTED_PODS))
def test_the_restricted_namespace_pods_meet_the_restricted_profile(cfg, pod):
    values = stack.kube_prometheus_stack_values(cfg)
    pod_path, container_paths = RESTRICTED_PODS[pod]
    ctx = _at(values, pod_path)
    assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] != 0
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    for path in container_paths or []:
        container = _at(values, path)
        assert container["allowPrivilegeEscalation"] is False, path
        assert container["capabilities"] == {"drop": ["ALL"]}, path
        assert container.get("privileged") is not True, path
    # Nothing in the restricted namespace asks for the host.
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert key not in _at(values, pod_path[:-1]), (pod, key)


def test_grafana_runs_no_root_init_container(cfg):
    grafana = stack.kube_prometheus_stack_values(cfg)["grafana"]
    assert grafana["initChownData"] == {"enabled": False}
    assert not grafana.get("persistence", {}).get("enabled")


# --------------------------------------------------------------- the Ray pods


def test_pod_monitors_select_the_rendered_ray_head_and_workers(cfg):
    head_monitor, worker_monitor = stack.pod_monitors(cfg)
    rc = manifests.raycluster_manifest(cfg, REFS)
    head = rc["spec"]["headGroupSpec"]
    workers = rc["spec"]["workerGroupSpecs"]
    assert workers, "a stack has GPU pools"
    for monitor in (head_monitor, worker_monitor):
        assert monitor["spec"]["namespaceSelector"] == {
            "matchNames": [rc["metadata"]["namespace"]]
        }
    head_pod = pod_labels(cfg, head, "head")
    worker_pods = [pod_labels(cfg, w, "worker") for w in workers]
    assert matches(head_monitor["spec"]["selector"], head_pod)
    assert not any(matches(head_monitor["spec"]["selector"], w) for w in worker_pods)
    assert all(matches(worker_monitor["spec"]["selector"], w) for w in worker_pods)
    assert not matches(worker_monitor["spec"]["selector"], head_pod)
    # Another stack's Ray pods in the same namespace are not scraped as this one's.
    other = {**head_pod, names.STACK_LABEL: cfg.stack + "x"}
    assert not matches(head_monitor["spec"]["selector"], other)


def test_pod_monitors_scrape_ports_the_ray_containers_have(cfg):
    rc = manifests.raycluster_manifest(cfg, REFS)
    head_monitor, worker_monitor = stack.pod_monitors(cfg)
    groups = [(head_monitor, rc["spec"]["headGroupSpec"])] + [
        (worker_monitor, w) for w in rc["spec"]["workerGroupSpecs"]
    ]
    for monitor, group in groups:
        container = group["template"]["spec"]["containers"][0]
        declared = {p["name"] for p in container.get("ports", [])}
        declared.add(KUBERAY_METRICS_PORT)
        endpoints = monitor["spec"]["podMetricsEndpoints"]
        assert {e["port"] for e in endpoints} <= declared
        assert endpoints[0]["port"] == KUBERAY_METRICS_PORT
        for endpoint in endpoints:
            assert endpoint["relabelings"][0]["targetLabel"] == "ray_io_cluster"
        # The NetworkPolicy lets the monitoring namespace reach exactly these.
        allowed = set(network_policies.RAY_METRICS_PORTS)
        assert {e["port"] for e in endpoints} <= allowed
    # RayHeadDown reads `up` of the head container's target.
    assert alerts.HEAD_TARGET == f'container="{manifests.HEAD_CONTAINER}"'


def test_the_operators_whose_metrics_alerts_read_are_scraped(cfg):
    kuberay, autoscaler = operators.operator_monitors(cfg, stack.monitor_labels(cfg))
    # The KubeRay operator's pods, on the port its NetworkPolicy opens to us.
    assert kuberay["spec"]["namespaceSelector"] == {
        "matchNames": [names.KUBERAY_NAMESPACE]
    }
    operator_pod = {
        **network_policies.OPERATOR_POD_LABELS,
        "app.kubernetes.io/instance": "x",
    }
    assert matches(kuberay["spec"]["selector"], operator_pod)
    policy = next(
        p
        for p in network_policies.network_policies(cfg)
        if p["metadata"]["name"] == "operator-metrics"
    )
    assert policy["spec"]["ingress"][0]["ports"] == [
        {"protocol": "TCP", "port": network_policies.OPERATOR_METRICS_PORT}
    ]
    # The Cluster Autoscaler's Service, which its values ask the chart for.
    release = autoscaler_values.cluster_autoscaler_release(cfg, role_arn="")
    assert release.values["service"] == {"create": True, "type": "ClusterIP"}
    assert autoscaler["spec"]["namespaceSelector"] == {
        "matchNames": [release.namespace]
    }
    assert autoscaler["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/instance": release.name,
        "app.kubernetes.io/name": f"{release.values['cloudProvider']}-{release.chart}",
    }
    assert release.values["extraArgs"]["emit-per-nodegroup-metrics"] is True
    alert_metrics = " ".join(a.expr for a in alerts.alerts())
    assert "kuberay_job_deployment_status" in alert_metrics
    assert "cluster_autoscaler_node_group_max_count" in alert_metrics


# ---------------------------------------------------------------- dashboards


def test_dashboard_configmaps_carry_the_sidecar_label_and_json(cfg):
    values = stack.kube_prometheus_stack_values(cfg)
    sidecar = values["grafana"]["sidecar"]["dashboards"]
    maps = dashboards.dashboard_configmaps(cfg)
    assert len(maps) == len(dashboards.GENERATORS)
    uids = set()
    for cm in maps:
        labels = cm["metadata"]["labels"]
        assert labels[sidecar["label"]] == sidecar["labelValue"]
        assert cm["metadata"]["namespace"] == sidecar["searchNamespace"]
        ((file_name, text),) = cm["data"].items()
        board = json.loads(text)
        assert file_name.endswith(".json")
        assert f"rayVersion:{versions.RAY_VERSION}" in board["tags"]
        assert board["panels"], file_name
        uids.add(board["uid"])
        assert dashboards.configmap_problems(cm) == []
    assert len(uids) == len(maps)
    broken = {**maps[0], "data": {"x.json": "{not json"}}
    assert dashboards.configmap_problems(broken)[0].startswith("data.x.json: not JSON")


def test_vendored_dashboards_are_what_the_installed_ray_generates():
    from ray.dashboard.modules.metrics import grafana_dashboard_factory as factory

    generators = {n for n in dir(factory) if re.fullmatch(r"generate_\w+_dashboard", n)}
    assert generators == set(dashboards.GENERATORS.values())
    assert dashboards.generate() == dashboards.vendored(), (
        "run `python -m raygpu.monitoring.dashboards --write`"
    )


# ---------------------------------------------------------------------- DCGM


def tolerates(tolerations: list[dict[str, Any]], taint: tuple[str, str, str]) -> bool:
    key, value, effect = taint
    return any(
        t["key"] == key
        and t.get("effect") in (None, effect)
        and (t["operator"] == "Exists" or t.get("value") == value)
        for t in tolerations
    )


def test_dcgm_runs_on_gpu_nodes_only(cfg):
    values = dcgm.dcgm_values(cfg)
    selector = {"matchLabels": values["nodeSelector"]}
    assert values["nodeSelector"]
    for pool in cfg.gpu_pools:
        assert matches(selector, pool.node_labels), pool.name
        for taint in pool.taints:
            assert tolerates(values["tolerations"], taint)
    assert not matches(selector, cfg.system_pool.node_labels)
    assert values["serviceMonitor"] == {"enabled": False}
    monitor = dcgm.dcgm_service_monitor(cfg, stack.monitor_labels(cfg))
    assert monitor["spec"]["selector"]["matchLabels"] == dcgm.SERVICE_LABELS
    assert monitor["spec"]["endpoints"][0]["port"] == dcgm.METRICS_PORT_NAME
    # node-exporter instead runs on every node, GPU nodes too (the disk alert).
    exporter = stack.kube_prometheus_stack_values(cfg)["prometheus-node-exporter"]
    assert "nodeSelector" not in exporter
    assert all(
        tolerates(exporter["tolerations"], t) for p in cfg.gpu_pools for t in p.taints
    )


def test_the_chart_pods_run_on_system_nodes(cfg):
    values = stack.kube_prometheus_stack_values(cfg)
    system = cfg.system_pool.node_labels
    for path in (
        ("prometheusOperator",),
        ("prometheus", "prometheusSpec"),
        ("alertmanager", "alertmanagerSpec"),
        ("grafana",),
        ("kube-state-metrics",),
    ):
        part = values
        for key in path:
            part = part[key]
        assert part["nodeSelector"] == system, path


# ------------------------------------------------------- sizing, exposure, cost


def test_everything_fits_beside_the_ray_head_on_the_dev_system_node(dev):
    assert dev.system_pool.instance_types == ("m6a.xlarge",)
    rows = footprint.system_node_requests(dev)
    cpu, mib = sum(r[1] for r in rows), sum(r[2] for r in rows)
    left_cpu, left_mib = sizing.allocatable(
        dev.system_pool.vcpus, dev.system_pool.memory_gib
    )
    assert cpu <= left_cpu and mib <= left_mib
    assert footprint.system_node_problem(dev) is None
    # The module's docstring states the sum; it must be this one.
    assert f"{cpu}m and {mib}Mi in all" in footprint.__doc__
    assert f"{left_cpu}m, {left_mib}Mi" in footprint.__doc__
    bigger = dev.model_copy(update={"ray_head_cpu": "2500m"})
    assert "request 3860m" in footprint.system_node_problem(bigger)


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            yield here, value
            yield from walk(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def test_nothing_is_public(cfg):
    amp = remote_write.AmpTarget(WORKSPACE_ARN, WORKSPACE_URL, ROLE_ARN)
    values = [
        stack.kube_prometheus_stack_values(cfg, amp=amp),
        dcgm.dcgm_values(cfg),
    ]
    assert manifests.public_exposure([*everything(cfg), *values]) == []
    services = [
        v for p, v in walk(values) if p.endswith("service") and isinstance(v, Mapping)
    ]
    assert len(services) == 7
    for service in services:
        assert service["type"] == "ClusterIP"
    assert values[0]["grafana"]["ingress"] == {"enabled": False}
    for part in ("prometheus", "alertmanager"):
        assert not values[0][part].get("ingress", {}).get("enabled")


def test_every_chart_image_is_a_pinned_one(cfg):
    pinned = {f"{r}:{t}" for r, t in versions.MONITORING_IMAGES}
    used = set()
    for values in (stack.kube_prometheus_stack_values(cfg), dcgm.dcgm_values(cfg)):
        for _path, image in walk(values):
            if isinstance(image, Mapping) and "repository" in image and "tag" in image:
                registry = image.get("registry")
                repo = (
                    f"{registry}/{image['repository']}"
                    if registry
                    else image["repository"]
                )
                used.add(f"{repo}:{image['tag']}")
    assert used == pinned
    assert set(pinned) <= set(versions.CLUSTER_IMAGES)


def test_prometheus_keeps_its_data_on_an_encrypted_gp3_volume(cfg):
    spec = stack.kube_prometheus_stack_values(cfg, retention="7d", storage_gib=50)[
        "prometheus"
    ]["prometheusSpec"]
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    storage_class = stack.storage_class_manifest(cfg)
    assert claim["storageClassName"] == storage_class["metadata"]["name"]
    assert storage_class["parameters"] == {"type": "gp3", "encrypted": "true"}
    assert claim["resources"]["requests"]["storage"] == "50Gi"
    assert spec["retention"] == "7d"
    assert spec["retentionSize"] == "40GB"  # deletes before the volume fills
    cost = footprint.storage_cost(50)
    assert cost.usd_month == pytest.approx(50 * 0.08)
    assert cost.usd_hour == pytest.approx(4.0 / 730, abs=1e-6)
    with pytest.raises(ValueError, match="storage_gib"):
        stack.kube_prometheus_stack_values(cfg, storage_gib=0)


def test_alertmanager_sends_nothing_by_default(cfg):
    config = stack.kube_prometheus_stack_values(cfg)["alertmanager"]["config"]
    assert config["receivers"] == [{"name": "null"}]
    assert config["route"]["receiver"] == "null"
    assert "routes" not in config["route"]


# ------------------------------------------------------------- remote write


def test_remote_write_is_off_unless_a_workspace_is_given(dev):
    prometheus = stack.kube_prometheus_stack_values(dev)["prometheus"]
    assert "remoteWrite" not in prometheus["prometheusSpec"]
    assert "annotations" not in prometheus["serviceAccount"]


def test_remote_write_signs_for_the_one_workspace(dev):
    amp = remote_write.AmpTarget(WORKSPACE_ARN, WORKSPACE_URL, ROLE_ARN)
    prometheus = stack.kube_prometheus_stack_values(dev, amp=amp)["prometheus"]
    (entry,) = prometheus["prometheusSpec"]["remoteWrite"]
    assert entry["url"] == WORKSPACE_URL + "api/v1/remote_write"
    assert entry["sigv4"] == {"region": "us-east-1"}
    account = prometheus["serviceAccount"]
    assert account["name"] == remote_write.PROMETHEUS_SERVICE_ACCOUNT
    assert remote_write.service_account_subject(dev.monitoring_namespace) == (
        f"system:serviceaccount:{dev.monitoring_namespace}:{account['name']}"
    )
    assert account["annotations"] == {manifests.IRSA_ANNOTATION: ROLE_ARN}
    # Still the stack's own selectors and volume beside the remote write.
    assert prometheus["prometheusSpec"]["ruleSelector"]["matchLabels"]
    assert prometheus["prometheusSpec"]["storageSpec"]


def test_the_remote_write_policy_allows_one_action_on_one_workspace():
    policy = remote_write.remote_write_policy(WORKSPACE_ARN)
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == ["aps:RemoteWrite"]
    assert statement["Resource"] == WORKSPACE_ARN
    assert "*" not in json.dumps(policy)
    assert set(statement) == {"Sid", "Effect", "Action", "Resource"}


@pytest.mark.parametrize(
    ("arn", "url", "role", "field"),
    [
        (
            "arn:aws:aps:us-east-1:123456789012:workspace/*",
            WORKSPACE_URL,
            ROLE_ARN,
            "workspace_arn",
        ),
        (WORKSPACE_ARN, "http://example.com/", ROLE_ARN, "workspace_url"),
        (
            WORKSPACE_ARN,
            WORKSPACE_URL.replace("us-east-1", "eu-west-1"),
            ROLE_ARN,
            "workspace_url",
        ),
        (WORKSPACE_ARN, WORKSPACE_URL, "arn:aws:iam::123456789012:user/u", "role_arn"),
    ],
)
def test_bad_remote_write_targets_are_refused_naming_the_field(arn, url, role, field):
    with pytest.raises(remote_write.RemoteWriteError, match=f"^{field}: "):
        remote_write.AmpTarget(arn, url, role)
    with pytest.raises(remote_write.RemoteWriteError, match="^workspace_arn: "):
        remote_write.remote_write_policy(
            "arn:aws:aps:us-east-1:123456789012:workspace/*"
        )
