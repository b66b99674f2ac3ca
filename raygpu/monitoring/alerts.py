"""The alert rules, declared once: a PrometheusRule for a stack, a rules file locally.

    python -m raygpu.monitoring.alerts            print the rules file
    python -m raygpu.monitoring.alerts --table    print the docs' alerts table
    python -m raygpu.monitoring.alerts --write    rewrite it in docs/operations.md

Each rule names the exporter its metric comes from (docs/operations.md cites where
each name is defined). Thresholds are the fields of `Thresholds`, with their
defaults declared there only; they are constants of the product, not stack
config keys: one rules file serves every stack and the local cluster. To change
one, change its default (then `--write` the docs' table); tests pass their own.

`raygpu render` writes `prometheus_rule_manifest(cfg)` and fails when the rules do
not pass `rulecheck.rule_problems` (structure always, `promtool check rules` when
promtool is installed).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from raygpu import manifests
from raygpu.config import StackConfig
from raygpu.monitoring import stack
from raygpu.monitoring.rulecheck import dump

PROMETHEUS_RULE_API_VERSION = "monitoring.coreos.com/v1"
RULE_NAME = "raygpu-alerts"
GROUP_NAME = "raygpu"

# The Cluster Autoscaler names a node group after its Auto Scaling group, which EKS
# names after the managed node group: `<cluster>-gpu-<pool>-...` for GPU pools
# (infra/cluster.py). It manages only those today; the match keeps it so.
GPU_NODE_GROUP_RE = ".*-gpu-.*"
# The head's metrics target: prometheus-operator labels a PodMonitor's targets with
# their container's name; the local config adds the same label (local.py).
HEAD_TARGET = f'container="{manifests.HEAD_CONTAINER}"'
# Filesystems that can fill up (not memory-backed, not image layers).
DISK_FILESYSTEMS = 'fstype!~"tmpfs|ramfs|overlay|squashfs|nsfs"'


@dataclass(frozen=True)
class Thresholds:
    """Every threshold of the rules, each with its default."""

    gpu_idle_percent: float = 5.0  # a GPU busier than this is in use
    gpu_idle_minutes: int = 30
    pool_at_max_minutes: int = 30
    head_down_minutes: int = 2
    failed_run_window_minutes: int = 15  # how long a failed Train run alerts
    serve_5xx_percent: float = 5.0
    serve_p99_ms: float = 1000.0
    serve_window_minutes: int = 5  # rate window and `for` of both Serve rules
    replica_failures: int = 1  # health-check failures that alert
    replica_window_minutes: int = 15
    node_not_ready_minutes: int = 5
    disk_free_percent: float = 10.0
    disk_minutes: int = 10


DEFAULTS = Thresholds()


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_minutes: int
    severity: str
    summary: str  # one line; may use {{ $labels.x }} and {{ $value }}
    threshold: str  # the threshold in words (docs' table)
    source: str  # the metric and its exporter (docs' table)


def _label(name: str) -> str:
    return "{{ $labels." + name + " }}"


def _num(value: float) -> str:
    """5.0 -> "5", 0.5 -> "0.5": thresholds read as written."""
    return f"{value:g}"


def alerts(t: Thresholds = DEFAULTS) -> list[Alert]:
    serve_w = f"{t.serve_window_minutes}m"
    replica_w = f"{t.replica_window_minutes}m"
    failures = (
        "sum by (application, deployment) (ray_serve_health_check_failures_total%s)"
    )
    return [
        Alert(
            "GpuNodeIdle",
            f"max by (Hostname) (DCGM_FI_DEV_GPU_UTIL) < {_num(t.gpu_idle_percent)}",
            t.gpu_idle_minutes,
            "warning",
            f"GPU node {_label('Hostname')}: every GPU under "
            f"{_num(t.gpu_idle_percent)}% busy for {t.gpu_idle_minutes} min; it "
            "bills while idle",
            f"all GPUs < {_num(t.gpu_idle_percent)} % for {t.gpu_idle_minutes} min",
            "DCGM exporter `DCGM_FI_DEV_GPU_UTIL`",
        ),
        Alert(
            "GpuPoolAtMaximum",
            "max by (node_group) (cluster_autoscaler_node_group_target_count"
            f'{{node_group=~"{GPU_NODE_GROUP_RE}"}})\n'
            ">= max by (node_group) (cluster_autoscaler_node_group_max_count"
            f'{{node_group=~"{GPU_NODE_GROUP_RE}"}})',
            t.pool_at_max_minutes,
            "warning",
            f"GPU node group {_label('node_group')} at its maxSize for "
            f"{t.pool_at_max_minutes} min: more work waits for capacity",
            f"target size = maxSize for {t.pool_at_max_minutes} min",
            "Cluster Autoscaler `cluster_autoscaler_node_group_target_count`, "
            "`_max_count` (`--emit-per-nodegroup-metrics`)",
        ),
        Alert(
            "RayHeadDown",
            f"up{{{HEAD_TARGET}}} == 0 or absent(up{{{HEAD_TARGET}}})",
            t.head_down_minutes,
            "critical",
            "Ray head (GCS, job API, Serve controller) unreachable for "
            f"{t.head_down_minutes} min",
            f"no head target up for {t.head_down_minutes} min",
            "Prometheus `up` of the head's metrics target",
        ),
        Alert(
            "RayJobFailed",
            "max by (namespace, name) "
            '(kuberay_job_deployment_status{deployment_status="Failed"}) == 1',
            0,
            "warning",
            f"RayJob {_label('namespace')}/{_label('name')} failed",
            "any RayJob in `Failed`",
            "KubeRay operator `kuberay_job_deployment_status`",
        ),
        Alert(
            "RayTrainRunErrored",
            "max by (ray_train_run_name) (max_over_time(ray_train_controller_state"
            f'{{ray_train_controller_state="ERRORED"}}[{t.failed_run_window_minutes}m]'
            ")) == 1",
            0,
            "warning",
            f"Ray Train run {_label('ray_train_run_name')} ended in ERRORED",
            f"a run `ERRORED` in the last {t.failed_run_window_minutes} min",
            "Ray Train `ray_train_controller_state`",
        ),
        Alert(
            "ServeHigh5xxRatio",
            "100 * sum by (application) (rate(ray_serve_num_http_requests_total"
            f'{{status_code=~"5.."}}[{serve_w}]))\n'
            "/ sum by (application) (rate(ray_serve_num_http_requests_total"
            f"[{serve_w}]))\n> {_num(t.serve_5xx_percent)}",
            t.serve_window_minutes,
            "critical",
            f'Serve app {_label("application")}: {{{{ $value | printf "%.1f" }}}}% '
            f"of requests answered 5xx over {t.serve_window_minutes} min",
            f"> {_num(t.serve_5xx_percent)} % 5xx for {t.serve_window_minutes} min",
            "Ray Serve `ray_serve_num_http_requests_total`",
        ),
        Alert(
            "ServeHighP99Latency",
            "histogram_quantile(0.99, sum by (application, le) "
            f"(rate(ray_serve_http_request_latency_ms_bucket[{serve_w}])))\n"
            f"> {_num(t.serve_p99_ms)}",
            t.serve_window_minutes,
            "warning",
            f"Serve app {_label('application')}: p99 latency "
            f'{{{{ $value | printf "%.0f" }}}} ms over {t.serve_window_minutes} min',
            f"p99 > {_num(t.serve_p99_ms)} ms for {t.serve_window_minutes} min",
            "Ray Serve `ray_serve_http_request_latency_ms_bucket`",
        ),
        Alert(
            # A counter series appears at its first increment, which increase()
            # cannot see; the difference with `offset` (or the whole value of a
            # series younger than the window) can.
            "ServeReplicaRestarts",
            f"(\n  {failures % ''}\n  - {failures % f' offset {replica_w}'}\n"
            f"  or {failures % ''}\n) >= {t.replica_failures}",
            0,
            "warning",
            f"Serve deployment {_label('application')}/{_label('deployment')}: "
            f"{{{{ $value }}}} failed health checks in {t.replica_window_minutes} "
            "min; Serve replaces such replicas",
            f">= {t.replica_failures} failed health check(s) in "
            f"{t.replica_window_minutes} min",
            "Ray Serve `ray_serve_health_check_failures_total`",
        ),
        Alert(
            "NodeNotReady",
            'kube_node_status_condition{condition="Ready",status="true"} == 0',
            t.node_not_ready_minutes,
            "critical",
            f"Node {_label('node')} not Ready for {t.node_not_ready_minutes} min",
            f"not Ready for {t.node_not_ready_minutes} min",
            "kube-state-metrics `kube_node_status_condition`",
        ),
        Alert(
            "NodeDiskNearlyFull",
            f"100 * node_filesystem_avail_bytes{{{DISK_FILESYSTEMS}}}\n"
            f"/ node_filesystem_size_bytes{{{DISK_FILESYSTEMS}}}\n"
            f"< {_num(t.disk_free_percent)}\n"
            f"and node_filesystem_readonly{{{DISK_FILESYSTEMS}}} == 0",
            t.disk_minutes,
            "warning",
            f"{_label('instance')} {_label('mountpoint')}: "
            f'{{{{ $value | printf "%.1f" }}}}% free',
            f"< {_num(t.disk_free_percent)} % free for {t.disk_minutes} min",
            "node-exporter `node_filesystem_avail_bytes`, `_size_bytes`",
        ),
    ]


def rule(alert: Alert) -> dict[str, Any]:
    """One alerting rule as Prometheus's rules files and PrometheusRule hold it."""
    out: dict[str, Any] = {"alert": alert.name, "expr": alert.expr}
    if alert.for_minutes:
        out["for"] = f"{alert.for_minutes}m"
    out["labels"] = {"severity": alert.severity}
    out["annotations"] = {"summary": alert.summary}
    return out


def rule_groups(
    t: Thresholds = DEFAULTS, leave_out: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    rules = [rule(a) for a in alerts(t) if a.name not in leave_out]
    return [{"name": GROUP_NAME, "rules": rules}]


def rules_file(t: Thresholds = DEFAULTS) -> str:
    """The rules file of the local Prometheus (`rule_files:`)."""
    return dump({"groups": rule_groups(t)})


def prometheus_rule_manifest(
    cfg: StackConfig, t: Thresholds = DEFAULTS
) -> dict[str, Any]:
    """The same rules as a prometheus-operator PrometheusRule in the monitoring
    namespace, labelled for the stack Prometheus's ruleSelector. A stack asleep
    (`raygpu sleep`) has no Ray head on purpose: no RayHeadDown then."""
    leave_out = frozenset({"RayHeadDown"}) if cfg.asleep else frozenset()
    return {
        "apiVersion": PROMETHEUS_RULE_API_VERSION,
        "kind": "PrometheusRule",
        "metadata": {
            "name": RULE_NAME,
            "namespace": cfg.monitoring_namespace,
            "labels": stack.monitor_labels(cfg),
        },
        "spec": {"groups": rule_groups(t, leave_out)},
    }


# ------------------------------------------------------------------ the docs' table

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
TABLE_BEGIN = "<!-- alerts table: python -m raygpu.monitoring.alerts --write -->"
TABLE_END = "<!-- end of alerts table -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def docs_table(t: Thresholds = DEFAULTS) -> str:
    lines = [
        "| Alert | Severity | Fires when | Expression | Metric source |",
        "|---|---|---|---|---|",
    ]
    for a in alerts(t):
        expr = re.sub(r"\s+", " ", a.expr)
        lines.append(
            f"| `{a.name}` | {a.severity} | {_cell(a.threshold)} | "
            f"`{_cell(expr)}` | {_cell(a.source)} |"
        )
    defaults = ", ".join(f"`{k}={_num(v)}`" for k, v in asdict(t).items())
    return "\n".join(lines) + f"\n\nThresholds (`Thresholds`): {defaults}.\n"


def with_table(doc_text: str, t: Thresholds = DEFAULTS) -> str:
    """`doc_text` with the generated table between the two markers."""
    if TABLE_BEGIN not in doc_text or TABLE_END not in doc_text:
        raise ValueError(f"{DOC.name} lacks the alerts table markers")
    head, rest = doc_text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_BEGIN}\n{docs_table(t)}{TABLE_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raygpu.monitoring.alerts")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--table", action="store_true", help="print the docs' table")
    what.add_argument("--write", action="store_true", help=f"rewrite it in {DOC}")
    args = parser.parse_args(argv)
    if args.write:
        DOC.write_text(with_table(DOC.read_text(encoding="utf-8")), encoding="utf-8")
    elif args.table:
        print(docs_table(), end="")
    else:
        print(rules_file(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
