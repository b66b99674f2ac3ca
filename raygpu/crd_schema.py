"""Check KubeRay and prometheus-operator objects offline, as the API server would.

Two layers, both needed because neither catches everything:

1. The `openAPIV3Schema` of KubeRay's CRDs (the version pinned in `raygpu/versions.py`),
   applied with a JSON Schema Draft 7 validator. Kubernetes extensions are mapped:
   `x-kubernetes-int-or-string` becomes "integer or string", `nullable` allows null,
   and objects with declared properties reject unknown fields (what `kubectl apply`
   does with its default `--validate=strict`), so a misspelt field fails here instead
   of being pruned silently by the server.
2. The rules the operator enforces in code (ray-operator/controllers/ray/utils/
   validation.go) that no schema holds: name lengths, minReplicas <= maxReplicas,
   token auth needs rayVersion >= 2.52.0, restartPolicy with autoscaler v2, and more.

PodMonitor, ServiceMonitor and PrometheusRule (the monitoring stack) get the first
layer, against the CRDs the pinned kube-prometheus-stack chart ships
(`raygpu/crds/prometheus-operator/`); the operator's own checks of rules are
`raygpu.monitoring.rulecheck`'s.

The CRD YAML takes seconds to parse, so the extracted spec schema is cached twice:
in memory for the process, and as JSON on disk keyed by the CRD file's SHA-256 (under
`$XDG_CACHE_HOME/raygpu` or the temp dir), so later runs load it in milliseconds.

This module imports nothing from Pulumi; tests and `raygpu render` use it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

from raygpu import versions
from raygpu.kuberay_rules import KINDS, metadata_problems, operator_problems
from raygpu.names import RAY_API_VERSION

MONITORING_API_VERSION = "monitoring.coreos.com/v1"

CRD_VERSION = f"v{versions.KUBERAY_CHART_VERSION}"
CRD_FILES = {kind: f"ray.io_{kind.lower()}s.yaml" for kind in KINDS}
CRD_DIR_ENV = "RAYGPU_KUBERAY_CRDS"
# Bump when the schema transformation below changes, to invalidate disk caches.
_CACHE_FORMAT = 2
# KubeRay's CRD files of the pinned version, with its LICENSE (see README there).
VENDORED_CRDS = Path(__file__).resolve().parent / "crds" / "kuberay"
# prometheus-operator's, as the pinned kube-prometheus-stack chart ships them.
MONITORING_CRD_VERSION = f"v{versions.PROMETHEUS_OPERATOR_VERSION}"
MONITORING_CRD_FILES = {
    kind: f"monitoring.coreos.com_{kind.lower()}s.yaml"
    for kind in ("PodMonitor", "ServiceMonitor", "PrometheusRule")
}
VENDORED_MONITORING_CRDS = (
    Path(__file__).resolve().parent / "crds" / "prometheus-operator"
)


class CrdNotFoundError(FileNotFoundError):
    """The KubeRay CRD files are not where they were looked for."""


class ManifestValidationError(ValueError):
    """A manifest that the API server or the KubeRay operator would refuse."""

    def __init__(self, kind: str, name: str, problems: list[str]):
        self.kind = kind
        self.name = name
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{kind} {name!r} is invalid:\n{lines}")


# --------------------------------------------------------------------------- schema


def default_crd_dir() -> Path:
    """`$RAYGPU_KUBERAY_CRDS`, else the copy vendored in this package."""
    env = os.environ.get(CRD_DIR_ENV)
    if env:
        return Path(env)
    return VENDORED_CRDS / CRD_VERSION


def crd_dir_problem(crd_dir: Path | None = None) -> str | None:
    """None when every CRD file is present, else a sentence saying what is missing."""
    crd_dir = Path(crd_dir) if crd_dir is not None else default_crd_dir()
    missing = [f for f in CRD_FILES.values() if not (crd_dir / f).is_file()]
    if not missing:
        return None
    return (
        f"KubeRay {CRD_VERSION} CRDs not found in {crd_dir} (missing "
        f"{', '.join(missing)}); set {CRD_DIR_ENV} to the folder that holds them"
    )


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or tempfile.gettempdir()
    return Path(base) / "raygpu" / "crd-schema"


def _to_draft7(node: Any) -> Any:
    """A copy of an OpenAPI v3 (Kubernetes structural) schema as Draft 7 JSON Schema."""
    if isinstance(node, list):
        return [_to_draft7(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("description", "x-kubernetes-validations"):
            continue  # prose, and CEL rules that a JSON Schema validator cannot run
        if key == "properties":
            out[key] = {k: _to_draft7(v) for k, v in value.items()}
        else:
            out[key] = _to_draft7(value)
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
        and not out.get("x-kubernetes-embedded-resource")
    ):
        out["additionalProperties"] = False
    return out


def _extract_spec_schema(crd_file: Path) -> dict[str, Any]:
    with crd_file.open("rb") as fh:
        crd = yaml.load(fh, Loader=yaml.CSafeLoader)
    for ver in crd["spec"]["versions"]:
        if ver["name"] == "v1":
            return _to_draft7(ver["schema"]["openAPIV3Schema"]["properties"]["spec"])
    raise CrdNotFoundError(f"{crd_file} has no v1 version")


def _api_version(kind: str) -> str:
    return MONITORING_API_VERSION if kind in MONITORING_CRD_FILES else RAY_API_VERSION


def _crd_file(kind: str, crd_dir: str | None) -> tuple[Path, str]:
    """(CRD file, version) of `kind`; `crd_dir` overrides KubeRay's folder only."""
    if kind in MONITORING_CRD_FILES:
        folder = VENDORED_MONITORING_CRDS / MONITORING_CRD_VERSION
        crd_file = folder / MONITORING_CRD_FILES[kind]
        if not crd_file.is_file():
            raise CrdNotFoundError(
                f"prometheus-operator {MONITORING_CRD_VERSION} CRD {crd_file} not "
                "found (raygpu/crds/prometheus-operator/README.md)"
            )
        return crd_file, MONITORING_CRD_VERSION
    if kind not in CRD_FILES:
        known = sorted([*CRD_FILES, *MONITORING_CRD_FILES])
        raise ValueError(f"kind: {kind!r} is not one of {known}")
    folder = Path(crd_dir) if crd_dir is not None else default_crd_dir()
    crd_file = folder / CRD_FILES[kind]
    if not crd_file.is_file():
        raise CrdNotFoundError(crd_dir_problem(folder) or str(crd_file))
    return crd_file, CRD_VERSION


@functools.cache
def spec_schema(kind: str, crd_dir: str | None = None) -> dict[str, Any]:
    """The Draft 7 schema for `<kind>.spec`, from the disk cache or the CRD YAML."""
    crd_file, version = _crd_file(kind, crd_dir)
    digest = hashlib.sha256(crd_file.read_bytes()).hexdigest()[:24]
    cached = _cache_dir() / f"{kind}-{version}-{digest}-f{_CACHE_FORMAT}.json"
    try:
        with cached.open(encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        pass
    schema = _extract_spec_schema(crd_file)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(schema), encoding="utf-8")
        os.replace(tmp, cached)  # atomic: parallel writers never see half a file
    except OSError:
        pass  # a read-only cache dir only costs speed
    return schema


@functools.cache
def _validator(kind: str, crd_dir: str | None) -> Draft7Validator:
    return Draft7Validator(spec_schema(kind, crd_dir))


def _path(parts: Iterable[Any], prefix: str = "spec") -> str:
    out = prefix
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def schema_problems(
    manifest: Mapping[str, Any], crd_dir: str | Path | None = None
) -> list[str]:
    """Every way `manifest` breaks the API server's checks (schema and metadata)."""
    problems: list[str] = []
    kind = manifest.get("kind")
    if kind not in CRD_FILES and kind not in MONITORING_CRD_FILES:
        known = sorted([*CRD_FILES, *MONITORING_CRD_FILES])
        return [f"kind: {kind!r} is not one of {known}"]
    api_version = _api_version(kind)
    if manifest.get("apiVersion") != api_version:
        problems.append(
            f"apiVersion: {manifest.get('apiVersion')!r} must be {api_version!r}"
        )
    unknown = sorted(set(manifest) - {"apiVersion", "kind", "metadata", "spec"})
    if unknown:
        problems.append(f"unknown top-level fields {unknown}")
    problems += metadata_problems(manifest.get("metadata"))
    spec = manifest.get("spec")
    if not isinstance(spec, Mapping):
        return [*problems, "spec: must be an object"]
    folder = str(crd_dir) if crd_dir is not None else None
    validator = _validator(kind, folder)
    for err in sorted(validator.iter_errors(spec), key=lambda e: list(e.path)):
        problems.append(f"{_path(err.absolute_path)}: {err.message}")
    return problems


def manifest_problems(
    manifest: Mapping[str, Any], crd_dir: str | Path | None = None
) -> list[str]:
    """Schema problems followed by KubeRay operator-rule problems (KubeRay's kinds
    only); empty when valid."""
    problems = schema_problems(manifest, crd_dir)
    if manifest.get("kind") in KINDS:
        problems += operator_problems(manifest)
    return problems


def validate_manifest(
    manifest: Mapping[str, Any], crd_dir: str | Path | None = None
) -> None:
    """Raise ManifestValidationError listing every problem, or return None."""
    problems = manifest_problems(manifest, crd_dir)
    if problems:
        metadata = manifest.get("metadata")
        name = metadata.get("name", "?") if isinstance(metadata, Mapping) else "?"
        raise ManifestValidationError(str(manifest.get("kind")), str(name), problems)
