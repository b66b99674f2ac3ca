"""The monitoring stack of a stack, as plain data: what `raygpu render` writes and
the Pulumi program hands to Helm and Kubernetes.

- kube-prometheus-stack (raygpu/versions.py) in `cfg.monitoring_namespace`:
  prometheus-operator, Prometheus (retention, and a PersistentVolumeClaim of an
  encrypted gp3 StorageClass), Alertmanager (one `null` receiver: nothing is
  sent until a receiver is configured), Grafana (Ray's dashboards from labelled
  ConfigMaps, raygpu.monitoring.dashboards), kube-state-metrics and
  node-exporter. All but node-exporter run on the system nodes; node-exporter
  runs on every node, GPU nodes included (the disk alert needs it there), in the
  host agents' namespace (pod_security.py). Every
  Service is ClusterIP: reach Grafana and Prometheus with `kubectl port-forward`.
- PodMonitors for the Ray head and workers, as KubeRay's prometheus-grafana guide
  writes them (ray.io/node-type, port `metrics`, `ray_io_cluster` relabelled);
- the DCGM exporter on GPU nodes only, with its ServiceMonitor (dcgm.py);
- monitors of the KubeRay operator and the Cluster Autoscaler, whose metrics two
  alerts read (operators.py);
- optional remote write to Amazon Managed Service for Prometheus (remote_write.py).

Prometheus selects rules, PodMonitors and ServiceMonitors by the label
`release: kube-prometheus-stack` in its own namespace only (`selector_labels`),
ServiceMonitors also in the host agents' namespace (node-exporter's is there).
The namespaces and Pod Security: pod_security.py (the monitoring namespace is
`restricted`; node-exporter and the DCGM exporter run in a `privileged` one).
What it all requests on the system node, and what its volume costs: footprint.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from raygpu import (
    crd_schema,
    manifests,
    network_policies,
    versions,
)
from raygpu.config import StackConfig
from raygpu.helm_values import HelmRelease
from raygpu.kuberay_rules import label_problems, metadata_problems
from raygpu.monitoring import dashboards, dcgm, operators, pod_security, remote_write
from raygpu.names import GPU_TAINT_EFFECT, GPU_TAINT_KEY, STACK_LABEL

RELEASE = "kube-prometheus-stack"
CHART = "kube-prometheus-stack"
RELEASE_LABEL = "release"
MONITORING_API_VERSION = crd_schema.MONITORING_API_VERSION
# gp3 volumes, encrypted with the account's EBS key, through the EBS CSI driver.
STORAGE_CLASS = "raygpu-gp3-encrypted"
EBS_CSI_PROVISIONER = "ebs.csi.aws.com"
DEFAULT_RETENTION = "15d"
DEFAULT_STORAGE_GIB = 20
# Prometheus deletes old blocks past this share of the volume, before it fills.
RETENTION_SIZE_FRACTION = 0.8
# The users the chart's images run as (the chart's defaults, stated with the
# rest of the restricted profile's contexts).
PROMETHEUS_UID, PROMETHEUS_GID = 1000, 2000
NOBODY = 65534
GRAFANA_UID = 472
# Services the chart names after the release (port-forward targets, docs).
PROMETHEUS_SERVICE = f"{RELEASE}-prometheus"
GRAFANA_SERVICE = f"{RELEASE}-grafana"
ALERTMANAGER_SERVICE = f"{RELEASE}-alertmanager"


def selector_labels() -> dict[str, str]:
    """The label Prometheus selects its rules and monitors by."""
    return {RELEASE_LABEL: RELEASE}


def monitor_labels(cfg: StackConfig) -> dict[str, str]:
    """Labels of every PrometheusRule, PodMonitor and ServiceMonitor of the stack."""
    return {**manifests.common_labels(cfg), **selector_labels()}


def _resources(cpu: str, memory: str, memory_limit: str) -> dict[str, Any]:
    # No CPU limit: these are bursty and CFS throttling would only delay scrapes.
    return {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"memory": memory_limit},
    }


# Sized for a small cluster's series (one Ray cluster, a few nodes); each is
# counted on the system node by `system_node_requests`.
RESOURCES = {
    "prometheus-operator": _resources("50m", "128Mi", "256Mi"),
    "config-reloader": _resources("10m", "32Mi", "64Mi"),
    "prometheus": _resources("150m", "1Gi", "2Gi"),
    "alertmanager": _resources("10m", "64Mi", "128Mi"),
    "grafana": _resources("50m", "256Mi", "512Mi"),
    "grafana-sidecar": _resources("10m", "96Mi", "192Mi"),
    "kube-state-metrics": _resources("20m", "64Mi", "128Mi"),
    "node-exporter": _resources("20m", "32Mi", "64Mi"),
}


def _image(repository: str, tag: str) -> dict[str, str]:
    """The chart's image fields (registry apart) for a pinned repository:tag."""
    registry, _, path = repository.partition("/")
    return {
        "registry": registry,
        "repository": path,
        "tag": versions.pinned_tag(repository, tag),
    }


def _on_system_nodes(cfg: StackConfig) -> dict[str, Any]:
    return {"nodeSelector": dict(cfg.system_pool.node_labels)}


def _in_namespace(cfg: StackConfig) -> dict[str, Any]:
    return {
        "matchLabels": {network_policies.NAMESPACE_NAME_LABEL: cfg.monitoring_namespace}
    }


def _with_agents(cfg: StackConfig) -> dict[str, Any]:
    """The monitoring namespace and its host agents' (node-exporter's chart puts its
    ServiceMonitor beside it), by name: no other namespace's monitors count."""
    served = cfg.monitoring_namespace
    return {
        "matchExpressions": [
            {
                "key": network_policies.NAMESPACE_NAME_LABEL,
                "operator": "In",
                "values": [served, pod_security.agents_namespace(served)],
            }
        ]
    }


def _restricted(uid: int, gid: int | None = None) -> dict[str, Any]:
    """A chart's pod and container securityContexts under the restricted profile."""
    return {
        "securityContext": pod_security.pod_context(uid, gid),
        "containerSecurityContext": pod_security.container_context(),
    }


def _cluster_ip() -> dict[str, str]:
    return {"type": "ClusterIP"}


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def retention_size(storage_gib: int) -> str:
    return f"{int(storage_gib * RETENTION_SIZE_FRACTION)}GB"


def _prometheus(
    cfg: StackConfig,
    retention: str,
    storage_gib: int,
    amp: remote_write.AmpTarget | None,
) -> dict[str, Any]:
    selector = {"matchLabels": selector_labels()}
    spec = {
        "image": _image(
            versions.PROMETHEUS_IMAGE_REPOSITORY, versions.PROMETHEUS_IMAGE_TAG
        ),
        "retention": retention,
        "retentionSize": retention_size(storage_gib),
        "storageSpec": {
            "volumeClaimTemplate": {
                "spec": {
                    "storageClassName": STORAGE_CLASS,
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": f"{storage_gib}Gi"}},
                }
            }
        },
        "resources": RESOURCES["prometheus"],
        **_on_system_nodes(cfg),
        # The operator gives its containers (Prometheus, the config reloader)
        # the restricted container context itself; the CRD takes the pod's.
        "securityContext": pod_security.pod_context(PROMETHEUS_UID, PROMETHEUS_GID),
        "scrapeInterval": "15s",
        "ruleSelector": selector,
        "ruleNamespaceSelector": _in_namespace(cfg),
        "podMonitorSelector": selector,
        "podMonitorNamespaceSelector": _in_namespace(cfg),
        "serviceMonitorSelector": selector,
        "serviceMonitorNamespaceSelector": _with_agents(cfg),
        "probeSelector": selector,
        "probeNamespaceSelector": _in_namespace(cfg),
        "scrapeConfigSelector": selector,
        "scrapeConfigNamespaceSelector": _in_namespace(cfg),
    }
    values = {"service": _cluster_ip(), "prometheusSpec": spec}
    return _merge(values, remote_write.prometheus_values(amp))


def _alertmanager(cfg: StackConfig) -> dict[str, Any]:
    return {
        "service": _cluster_ip(),
        # One receiver that sends nothing: alerts show in Alertmanager's UI only
        # until a stack adds a route (docs/operations.md, Metrics and alerts).
        "config": {
            "route": {
                "receiver": "null",
                "group_by": ["alertname", "namespace"],
                "group_wait": "30s",
                "group_interval": "5m",
                "repeat_interval": "12h",
            },
            "receivers": [{"name": "null"}],
        },
        "alertmanagerSpec": {
            "image": _image(
                versions.ALERTMANAGER_IMAGE_REPOSITORY, versions.ALERTMANAGER_IMAGE_TAG
            ),
            "resources": RESOURCES["alertmanager"],
            **_on_system_nodes(cfg),
            "securityContext": pod_security.pod_context(PROMETHEUS_UID, PROMETHEUS_GID),
        },
    }


def _grafana(cfg: StackConfig) -> dict[str, Any]:
    return {
        "image": _image(versions.GRAFANA_IMAGE_REPOSITORY, versions.GRAFANA_IMAGE_TAG),
        "resources": RESOURCES["grafana"],
        **_on_system_nodes(cfg),
        **_restricted(GRAFANA_UID),
        # Its init container runs as root to chown a volume Grafana has not got.
        "initChownData": {"enabled": False},
        "service": _cluster_ip(),
        "ingress": {"enabled": False},
        "testFramework": {"enabled": False},
        # The admin password is the chart's random one, kept in its Secret.
        "sidecar": {
            "image": _image(
                versions.GRAFANA_SIDECAR_IMAGE_REPOSITORY,
                versions.GRAFANA_SIDECAR_IMAGE_TAG,
            ),
            "resources": RESOURCES["grafana-sidecar"],
            "securityContext": pod_security.container_context(),
            "dashboards": {
                "enabled": True,
                "label": dashboards.SIDECAR_LABEL,
                "labelValue": dashboards.SIDECAR_LABEL_VALUE,
                "searchNamespace": cfg.monitoring_namespace,
            },
        },
    }


def kube_prometheus_stack_values(
    cfg: StackConfig,
    *,
    retention: str = DEFAULT_RETENTION,
    storage_gib: int = DEFAULT_STORAGE_GIB,
    amp: remote_write.AmpTarget | None = None,
) -> dict[str, Any]:
    """The chart's values; `retention`, `storage_gib` and `amp` are the config
    keys this stack would take (defaults here until the config model has them)."""
    if storage_gib < 1:
        raise ValueError(f"storage_gib: must be at least 1, got {storage_gib}")
    operator_image = versions.PROMETHEUS_OPERATOR_IMAGE_TAG
    return {
        "crds": {"enabled": True},
        # EKS runs the control plane: its etcd, scheduler, controller manager and
        # kube-proxy metrics are not reachable, so neither scraped nor alerted on.
        "kubeEtcd": {"enabled": False},
        "kubeControllerManager": {"enabled": False},
        "kubeScheduler": {"enabled": False},
        "kubeProxy": {"enabled": False},
        "defaultRules": {
            "rules": {
                "etcd": False,
                "kubeControllerManager": False,
                "kubeSchedulerAlerting": False,
                "kubeSchedulerRecording": False,
                "kubeProxy": False,
                "windows": False,
            }
        },
        "windowsMonitoring": {"enabled": False},
        "prometheusOperator": {
            "image": _image(
                versions.PROMETHEUS_OPERATOR_IMAGE_REPOSITORY, operator_image
            ),
            "prometheusConfigReloader": {
                "image": _image(
                    versions.PROMETHEUS_CONFIG_RELOADER_IMAGE_REPOSITORY, operator_image
                ),
                "resources": RESOURCES["config-reloader"],
            },
            # The webhook (and its certificate job and TLS) only re-checks rules;
            # `raygpu render` checks them with promtool before anything applies.
            "admissionWebhooks": {"enabled": False},
            "tls": {"enabled": False},
            "resources": RESOURCES["prometheus-operator"],
            **_on_system_nodes(cfg),
            **_restricted(NOBODY),
            "service": _cluster_ip(),
        },
        "prometheus": _prometheus(cfg, retention, storage_gib, amp),
        "alertmanager": _alertmanager(cfg),
        "grafana": _grafana(cfg),
        "kube-state-metrics": {
            "image": _image(
                versions.KUBE_STATE_METRICS_IMAGE_REPOSITORY,
                versions.KUBE_STATE_METRICS_IMAGE_TAG,
            ),
            "resources": RESOURCES["kube-state-metrics"],
            **_on_system_nodes(cfg),
            **_restricted(NOBODY),
            "service": _cluster_ip(),
        },
        pod_security.NODE_EXPORTER_SUBCHART: {
            # A host agent: its DaemonSet, Service and ServiceMonitor go to the
            # privileged namespace (pod_security.py), not the restricted one.
            pod_security.NAMESPACE_OVERRIDE: pod_security.agents_namespace(
                cfg.monitoring_namespace
            ),
            # The pinned tag is the distroless one already.
            "image": {
                **_image(
                    versions.NODE_EXPORTER_IMAGE_REPOSITORY,
                    versions.NODE_EXPORTER_IMAGE_TAG,
                ),
                "distroless": False,
            },
            "resources": RESOURCES["node-exporter"],
            "tolerations": [
                {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": GPU_TAINT_EFFECT}
            ],
            "service": _cluster_ip(),
        },
    }


def prometheus_volume_gib(release_inputs: Mapping[str, Any]) -> int | None:
    """The Prometheus volume's GiB a Helm release's inputs ask for (None: the
    release is not this chart's, or asks for no volume): what the plan prices."""
    if release_inputs.get("chart") != CHART:
        return None
    spec = ((release_inputs.get("values") or {}).get("prometheus") or {}).get(
        "prometheusSpec"
    ) or {}
    claim = (spec.get("storageSpec") or {}).get("volumeClaimTemplate") or {}
    size = ((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}
    text = str(size.get("storage") or "")
    return int(text.removesuffix("Gi")) if text.endswith("Gi") else None


def kube_prometheus_stack_release(cfg: StackConfig, **options: Any) -> HelmRelease:
    return HelmRelease(
        name=RELEASE,
        namespace=cfg.monitoring_namespace,
        chart=CHART,
        version=versions.KUBE_PROMETHEUS_STACK_CHART_VERSION,
        repo=versions.KUBE_PROMETHEUS_STACK_HELM_REPO,
        values=kube_prometheus_stack_values(cfg, **options),
    )


def helm_releases(cfg: StackConfig, **options: Any) -> list[HelmRelease]:
    """kube-prometheus-stack (its CRDs first), then the DCGM exporter."""
    return [kube_prometheus_stack_release(cfg, **options), dcgm.dcgm_release(cfg)]


# ----------------------------------------------------------------- objects


def storage_class_manifest(cfg: StackConfig) -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS, "labels": manifests.common_labels(cfg)},
        "provisioner": EBS_CSI_PROVISIONER,
        "parameters": {"type": "gp3", "encrypted": "true"},
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": True,
    }


def core_objects(cfg: StackConfig) -> list[dict[str, Any]]:
    """What must exist before the charts install: the monitoring namespace, its
    host agents' namespace, the volume class."""
    return [*pod_security.namespace_manifests(cfg), storage_class_manifest(cfg)]


def head_metrics_ports(cfg: StackConfig) -> list[str]:
    """The head's metrics ports to scrape: `metrics` (KubeRay adds it to every Ray
    container), and the autoscaler's and dashboard's where the head declares them."""
    spec = manifests.head_group_spec(cfg, manifests.ClusterRefs("", "", ""))
    declared = {
        p.get("name")
        for c in spec["template"]["spec"]["containers"]
        for p in c["ports"]
    }
    return ["metrics"] + [
        name
        for name in network_policies.RAY_METRICS_PORTS
        if name != "metrics" and name in declared
    ]


def _pod_monitor(
    cfg: StackConfig, name: str, node_type: str, ports: Sequence[str]
) -> dict[str, Any]:
    relabel = {
        "action": "replace",
        "sourceLabels": ["__meta_kubernetes_pod_label_ray_io_cluster"],
        "targetLabel": "ray_io_cluster",
    }
    return {
        "apiVersion": MONITORING_API_VERSION,
        "kind": "PodMonitor",
        "metadata": {
            "name": name,
            "namespace": cfg.monitoring_namespace,
            "labels": monitor_labels(cfg),
        },
        "spec": {
            "namespaceSelector": {"matchNames": [cfg.ray_namespace]},
            "selector": {
                "matchLabels": {
                    network_policies.RAY_NODE_TYPE_LABEL: node_type,
                    STACK_LABEL: cfg.stack,
                }
            },
            "podMetricsEndpoints": [
                {"port": port, "relabelings": [dict(relabel)]} for port in ports
            ],
        },
    }


def pod_monitors(cfg: StackConfig) -> list[dict[str, Any]]:
    return [
        _pod_monitor(cfg, "ray-head", "head", head_metrics_ports(cfg)),
        _pod_monitor(cfg, "ray-workers", "worker", ["metrics"]),
    ]


def monitoring_objects(cfg: StackConfig) -> list[dict[str, Any]]:
    """The objects beside the charts, after their CRDs: monitors and dashboards."""
    return [
        *pod_monitors(cfg),
        dcgm.dcgm_service_monitor(cfg, monitor_labels(cfg)),
        *operators.operator_monitors(cfg, monitor_labels(cfg)),
        *dashboards.dashboard_configmaps(cfg),
    ]


def file_names(
    objects: Sequence[dict[str, Any]], first: int = 41
) -> list[tuple[str, dict[str, Any]]]:
    """Render's file names: the monitors numbered from `first`, the dashboards'
    ConfigMaps all under the next number."""
    named, n = [], first
    for obj in objects:
        kind, name = obj["kind"].lower(), obj["metadata"]["name"]
        if obj["kind"] == "ConfigMap":
            named.append((f"{n:02d}-configmap-{name}.yaml", obj))
        else:
            named.append((f"{n:02d}-{kind}-{name}.yaml", obj))
            n += 1
    return named


def problems(objects: Sequence[dict[str, Any]]) -> list[str]:
    """What the API server would refuse: the prometheus-operator CRDs' schemas for
    its kinds, metadata and labels for the rest, dashboards that are not JSON."""
    found = []
    for obj in objects:
        where = f"{obj.get('kind')} {(obj.get('metadata') or {}).get('name')}"
        if obj.get("kind") in crd_schema.MONITORING_CRD_FILES:
            issues = crd_schema.schema_problems(obj)
            selector = (obj.get("spec") or {}).get("selector") or {}
            issues += label_problems(selector.get("matchLabels") or {}, "spec.selector")
        else:
            issues = metadata_problems(obj.get("metadata"))
        if obj.get("kind") == "ConfigMap":
            issues += dashboards.configmap_problems(obj)
        found += [f"{where}: {p}" for p in issues]
    return found
