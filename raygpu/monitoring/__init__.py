"""Metrics and alerts: a local Prometheus for the local Ray cluster, and the alert
rules a stack's Prometheus and the local one both load.

- `alerts.py`: the alert rules, written once in Python, with their thresholds;
  they become a PrometheusRule object (`raygpu render`) and a plain rules file.
- `rulecheck.py`: the structural check of a rules file, and `promtool` when
  installed (`check rules`, `test rules`).
- `local.py`: the local Prometheus config (scraping Ray through the service
  discovery file Ray writes), starting Prometheus on 127.0.0.1, querying it.
- `command.py`: `raygpu monitor --local`.
- On a stack (`raygpu render` writes them; docs/operations.md, "Monitoring on a
  stack"): `stack.py` (kube-prometheus-stack values, PodMonitors,
  ServiceMonitors, storage class), `pod_security.py` (its two namespaces: the
  monitoring one `restricted`, the host agents' `privileged`, and the restricted
  securityContexts), `dcgm.py` (the DCGM exporter on GPU nodes), `operators.py`
  (monitors of the KubeRay operator and the Cluster Autoscaler), `dashboards.py`
  (Ray's Grafana dashboards as ConfigMaps, vendored under `dashboards/`),
  `remote_write.py` (optional Amazon Managed Prometheus), `footprint.py` (what it
  takes on the system node and costs).
"""
