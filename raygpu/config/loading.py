"""Reading a stack's config: from a mapping, a stack file, or the Pulumi engine.

`load_config(stack, values)` takes the plain mapping of a `Pulumi.<stack>.yaml`
(`raygpu:` keys without their prefix, camelCase, plus the provider keys such as
`aws:region`) and returns a `StackConfig` (`raygpu:cloud` picks the model: AWS's,
`GcpStackConfig` of raygpu.config.gcp or `AzureStackConfig` of
raygpu.config.azure), or raises `ConfigError` listing *every* bad key with what is
allowed. `from_pulumi()` is the only place that touches `pulumi.Config`;
`load_stack_file()` reads a stack file for the offline commands. Nothing here
imports Pulumi at module level.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from raygpu import clouds
from raygpu.config import azure, gcp
from raygpu.config.messages import (
    CONFIG_DOC,
    ConfigError,
    describe,
    fields_by_key,
    unwrap,
)
from raygpu.config.model import (
    DEFAULT_PROJECT,
    IDENTITY_FIELDS,
    NAMESPACE,
    REGION_KEY,
    StackConfig,
)
from raygpu.config.placeholders import refuse_placeholders

CLOUD_KEY = "cloud"
MODELS: dict[str, type[Any]] = {
    clouds.AWS.name: StackConfig,
    gcp.CLOUD: gcp.GcpStackConfig,
    azure.CLOUD: azure.AzureStackConfig,
}
# Keys of the cloud providers' own namespaces that the models read.
PROVIDER_KEYS = (REGION_KEY, *gcp.PROVIDER_KEYS, *azure.PROVIDER_KEYS)


def _rkey(key: str) -> str:
    return f"{NAMESPACE}:{key}"


def model_for(values: Mapping[str, Any]) -> type[Any]:
    """The config model of the cloud `values` name (`cloud`; AWS by default)."""
    cloud = values.get(CLOUD_KEY, clouds.AWS.name)
    if cloud in MODELS:
        return MODELS[cloud]
    known = ", ".join(MODELS)
    if cloud in clouds.PLANNED:
        raise ConfigError(
            _rkey(CLOUD_KEY), f"{cloud!r} is not yet supported; allowed: {known}"
        )
    raise ConfigError(_rkey(CLOUD_KEY), f"must be one of {known}, got {cloud!r}")


def load_config(
    stack: str, values: Mapping[str, Any], *, project: str = DEFAULT_PROJECT
) -> Any:
    """Validate `values` (YAML keys without `raygpu:`, plus the provider keys
    such as `aws:region`): a `StackConfig`, or the model `raygpu:cloud` names."""
    model = model_for(values)
    if model is StackConfig:  # the AWS model has no `cloud` key: it is the default
        values = {k: v for k, v in values.items() if k != CLOUD_KEY}
    errors = [
        (_rkey(name), f"is not a known key; see {CONFIG_DOC}")
        for name in IDENTITY_FIELDS
        if name in values
    ]
    data = {k: v for k, v in values.items() if k not in IDENTITY_FIELDS}
    try:
        cfg = model.model_validate(
            {**data, "stack": stack, "project": project}, by_alias=True, by_name=False
        )
    except ValidationError as exc:
        raise ConfigError(errors + describe(exc, model)) from None
    if errors:
        raise ConfigError(errors)
    return cfg


# ---------------------------------------------------------------------- engine


def _is_text(key: str, model: type[Any]) -> bool:
    """Whether the key holds text (the engine's string is then the value)."""
    info = fields_by_key(model).get(key)
    if info is None:
        return True  # unknown: validation names it
    for inner in unwrap(info.annotation):
        if inner is str:
            return True
        if typing.get_origin(inner) is Literal:
            return all(isinstance(a, str) for a in typing.get_args(inner))
    return False


def _decode(key: str, text: Any, model: type[Any]) -> Any:
    if _is_text(key, model) or not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text  # validation then says what type was expected


def engine_values(values: Mapping[str, Any]) -> dict[str, str]:
    """`values` (as load_config takes them) in the engine's form: full keys, and
    non-string values JSON-encoded, as `pulumi up` passes them to the program."""
    out: dict[str, str] = {}
    for key, value in values.items():
        full = key if ":" in key else _rkey(key)
        out[full] = value if isinstance(value, str) else json.dumps(value)
    return out


def values_from_engine(engine: Mapping[str, Any]) -> dict[str, Any]:
    """The engine's `raygpu:*` strings and `aws:region` as load_config takes them:
    the engine hands every value over as a string, so each key's declared type
    says whether to decode it ("1.33" stays text; numbers, lists, maps are JSON)."""
    cloud = engine.get(_rkey(CLOUD_KEY))
    model = MODELS.get(cloud, StackConfig) if cloud is not None else StackConfig
    values: dict[str, Any] = {}
    for full, text in engine.items():
        if full in PROVIDER_KEYS:
            values[full] = text
        elif full.startswith(f"{NAMESPACE}:"):
            key = full[len(NAMESPACE) + 1 :]
            values[key] = _decode(key, text, model)
    return values


def from_pulumi() -> Any:
    """Read `raygpu:*` and the provider keys from the running Pulumi program."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    all_keys = set(runtime_config.get_config_env()) | set(runtime_config.CONFIG.get())
    cfg = pulumi.Config(NAMESPACE)
    prefix = f"{NAMESPACE}:"
    engine: dict[str, Any] = {
        full: cfg.get(full[len(prefix) :])
        for full in sorted(all_keys)
        if full.startswith(prefix)
    }
    for full in PROVIDER_KEYS:
        namespace, _, name = full.partition(":")
        value = pulumi.Config(namespace).get(name)
        if value is not None:
            engine[full] = value
    values = values_from_engine(engine)
    cfg = load_config(pulumi.get_stack(), values, project=pulumi.get_project())
    if not _under_mocks():
        refuse_placeholders(values)
    return cfg


def _under_mocks() -> bool:
    """Whether the program runs under Pulumi's mock runtime (raygpu plan, the
    tests), where no resource is created and example values are harmless."""
    from pulumi.runtime import mocks, settings

    return isinstance(settings.SETTINGS.monitor, mocks.MockMonitor)


# ------------------------------------------------------------------ stack files


def stack_file_values(path: str | Path) -> dict[str, Any]:
    """The `config:` map of a Pulumi stack file as load_config takes it."""
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError("stack", f"no stack file {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("stack", f"{path} is not valid YAML: {exc}") from None
    config = doc.get("config", {}) if isinstance(doc, Mapping) else None
    if not isinstance(config, Mapping):
        raise ConfigError("config", f"{path} must have a `config:` map")
    values: dict[str, Any] = {}
    for full, value in config.items():
        ns, _, key = str(full).rpartition(":")
        if ns in ("", NAMESPACE):
            if isinstance(value, Mapping) and set(value) == {"secure"}:
                raise ConfigError(
                    _rkey(key),
                    "is an encrypted (secure) value; offline tools cannot read "
                    "secrets, keep this key in plain text",
                )
            values[key] = value
        elif full in PROVIDER_KEYS:
            values[full] = value
    return values


def stack_from_path(path: str | Path) -> str:
    name = Path(path).name
    m = re.match(r"^Pulumi\.(.+)\.ya?ml$", name)
    if not m:
        raise ConfigError("stack", f"{name} is not named Pulumi.<stack>.yaml")
    return m.group(1)


def load_stack_file(
    path: str | Path, stack: str | None = None, *, project: str = DEFAULT_PROJECT
) -> Any:
    """Read and validate `Pulumi.<stack>.yaml` (the stack name comes from the file
    name unless given)."""
    stack = stack if stack is not None else stack_from_path(path)
    return load_config(stack, stack_file_values(path), project=project)
