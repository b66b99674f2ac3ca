"""Ray's own Grafana dashboards, of the pinned Ray version, as ConfigMaps that
Grafana's sidecar provisions.

Ray generates its dashboards in code (ray.dashboard.modules.metrics.
grafana_dashboard_factory, one `generate_*_grafana_dashboard()` per dashboard; the
head's MetricsHead writes them under session_latest/metrics/grafana/dashboards/).
The operator's side installs without Ray, so the generated JSON is vendored under
`dashboards/ray-<version>/` and `raygpu render` reads it from there:

    python -m raygpu.monitoring.dashboards --write    regenerate from the installed Ray

tests/raygpu/test_monitoring_stack.py regenerates them and fails while the
vendored files differ or their Ray version is not the pinned one.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from raygpu import manifests, versions
from raygpu.config import StackConfig

# Grafana's sidecar loads every ConfigMap carrying this label (kube-prometheus-stack's
# default label and value, set explicitly in the values of raygpu.monitoring.stack).
SIDECAR_LABEL = "grafana_dashboard"
SIDECAR_LABEL_VALUE = "1"
# Each dashboard by the file name MetricsHead writes it under, without the
# `_grafana_dashboard.json` suffix; the value names the generator function.
GENERATORS = {
    "default": "generate_default_grafana_dashboard",
    "serve": "generate_serve_grafana_dashboard",
    "serve_deployment": "generate_serve_deployment_grafana_dashboard",
    "serve_llm": "generate_serve_llm_grafana_dashboard",
    "serve_llm_sglang": "generate_serve_llm_sglang_grafana_dashboard",
    "data": "generate_data_grafana_dashboard",
    "data_llm": "generate_data_llm_grafana_dashboard",
    "train": "generate_train_grafana_dashboard",
}
# Environment variables that change what Ray generates (uids, filters, log links).
OVERRIDE_ENV_PREFIX = "RAY_GRAFANA_"
VENDORED = (
    Path(__file__).resolve().parent / "dashboards" / f"ray-{versions.RAY_VERSION}"
)
# `kubectl apply` (client side) keeps the whole object in an annotation of at most
# 256 KiB; a dashboard above that would apply only server side.
MAX_CONFIGMAP_BYTES = 256 * 1024 - 4096


def file_name(key: str) -> str:
    return f"{key}_grafana_dashboard.json"


def generate() -> dict[str, str]:
    """Every dashboard as compact JSON, from the installed Ray, by key. Ray's
    override variables are ignored: the vendored files are Ray's defaults."""
    import ray
    from ray.dashboard.modules.metrics import grafana_dashboard_factory as factory

    if ray.__version__ != versions.RAY_VERSION:
        raise RuntimeError(
            f"installed Ray is {ray.__version__}; the dashboards must come from "
            f"the pinned {versions.RAY_VERSION}"
        )
    saved = {k: v for k, v in os.environ.items() if k.startswith(OVERRIDE_ENV_PREFIX)}
    for key in saved:
        del os.environ[key]
    try:
        out = {}
        for key, function in GENERATORS.items():
            content, _uid = getattr(factory, function)()
            out[key] = json.dumps(
                json.loads(content), separators=(",", ":"), sort_keys=True
            )
        return out
    finally:
        os.environ.update(saved)


def write(folder: Path = VENDORED) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key, text in generate().items():
        path = folder / file_name(key)
        path.write_text(text + "\n", encoding="utf-8")
        written.append(path)
    return written


def vendored(folder: Path = VENDORED) -> dict[str, str]:
    """The vendored dashboards by key; a missing file is an error naming it."""
    out = {}
    for key in GENERATORS:
        path = folder / file_name(key)
        if not path.is_file():
            raise FileNotFoundError(
                f"Ray dashboard {path} is missing; run "
                "`python -m raygpu.monitoring.dashboards --write`"
            )
        out[key] = path.read_text(encoding="utf-8").strip()
    return out


def configmap_name(key: str) -> str:
    return f"ray-dashboard-{key.replace('_', '-')}"


def dashboard_configmaps(cfg: StackConfig) -> list[dict[str, Any]]:
    """One ConfigMap per Ray dashboard in the monitoring namespace."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": configmap_name(key),
                "namespace": cfg.monitoring_namespace,
                "labels": {
                    **manifests.common_labels(cfg),
                    SIDECAR_LABEL: SIDECAR_LABEL_VALUE,
                },
            },
            "data": {file_name(key): text},
        }
        for key, text in vendored().items()
    ]


def configmap_problems(obj: dict[str, Any]) -> list[str]:
    """A dashboard ConfigMap's data: JSON dashboards, small enough to apply."""
    problems = []
    size = sum(len(v.encode()) for v in obj.get("data", {}).values())
    if size > MAX_CONFIGMAP_BYTES:
        problems.append(f"data: {size} bytes, over {MAX_CONFIGMAP_BYTES}")
    for name, text in obj.get("data", {}).items():
        try:
            board = json.loads(text)
        except ValueError as exc:
            problems.append(f"data.{name}: not JSON ({exc})")
            continue
        if not isinstance(board, dict) or not board.get("uid"):
            problems.append(f"data.{name}: a dashboard needs a uid")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raygpu.monitoring.dashboards")
    parser.add_argument(
        "--write", action="store_true", help=f"regenerate the files in {VENDORED}"
    )
    args = parser.parse_args(argv)
    if args.write:
        for path in write():
            print(path)
    else:
        for key, text in generate().items():
            print(f"{file_name(key)}: {len(text)} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
