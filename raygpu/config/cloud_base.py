"""What the Google Cloud and Azure stack models share.

Each cloud declares its own keys on a subclass of `CloudKeys`; `with_shared_fields`
then adds the keys that mean the same on every cloud (`SHARED_FIELDS`: the Ray
layer, the storage lifecycle, the budget) as the AWS model's own fields and
validators, so each is still declared once.
"""

from __future__ import annotations

import copy
import inspect
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic.alias_generators import to_camel

from raygpu.config.fields import ConfigModel, Ipv4Cidr, bad, is_private, network
from raygpu.config.model import (
    DEFAULT_PROJECT,
    MIN_CLUSTER_MINOR,
    StackConfig,
    _Name20,
)

# Keys whose meaning does not depend on the cloud, in the order the table shows.
SHARED_FIELDS = (
    "protect_data_bucket",
    "artifacts_force_destroy",
    "noncurrent_version_expiration_days",
    "budget_monthly_usd",
    "budget_alert_email",
    "ray_namespace",
    "ray_service_account",
    "ray_worker_service_account",
    "ray_idle_timeout_seconds",
    "ray_head_cpu",
    "ray_head_memory",
    "serve_ingress",
    "serve_allowed_cidrs",
    "serve_allowed_namespaces",
    "monitoring_namespace",
    "asleep",
)


def private_range(prefixes: tuple[int, int]) -> Any:
    low, high = prefixes

    def check(text: str) -> str:
        if not is_private(text):
            raise bad(
                f"must be a private range inside 10.0.0.0/8, 172.16.0.0/12 or "
                f"192.168.0.0/16, got {text!r}"
            )
        got = network(text).prefixlen
        if not low <= got <= high:
            want = f"/{low}" if low == high else f"between /{low} and /{high}"
            raise bad(f"prefix length must be {want}, got /{got}")
        return text

    return Annotated[Ipv4Cidr, AfterValidator(check)]


def ranges_apart(ranges: tuple[str, ...], *fields: str) -> Any:
    """A validator of `fields`: each overlaps none of the `ranges` before it."""

    def check(text: str, info: ValidationInfo) -> str:
        mine = network(text)
        for earlier in ranges[: ranges.index(info.field_name)]:
            other = info.data.get(earlier)
            if other and mine.overlaps(network(other)):
                raise bad(f"{text} overlaps {other} ({to_camel(earlier)})")
        return text

    return field_validator(*fields)(check)


class CloudKeys(ConfigModel):
    """The first keys of a Google Cloud or Azure stack, and the checks and
    properties of its `clusterVersion` and `gpuPools` that are the same on both."""

    stack: _Name20 = Field(description="Stack name")
    project: _Name20 = Field(DEFAULT_PROJECT, description="Pulumi project name")

    # Each cloud declares these keys itself, with its own description.
    @field_validator("cluster_version", check_fields=False)
    @classmethod
    def _new_enough(cls, version: str) -> str:
        if int(version.split(".")[1]) < MIN_CLUSTER_MINOR:
            raise bad(f"must be 1.{MIN_CLUSTER_MINOR} or newer, got {version!r}")
        return version

    @field_validator("gpu_pools", check_fields=False)
    @classmethod
    def _unique_names(cls, pools: tuple[Any, ...]) -> Any:
        return StackConfig._unique_names(pools)

    # The same definitions as on AWS.
    name_prefix = StackConfig.name_prefix
    cluster_name = StackConfig.cluster_name
    system_sizes = StackConfig.system_sizes


def _carried(decorator: Any) -> Any:
    """One of StackConfig's field validators, declared again on another model."""
    func = decorator.func
    func = classmethod(func.__func__) if inspect.ismethod(func) else func
    return field_validator(*decorator.info.fields, mode=decorator.info.mode)(func)


def with_shared_fields(keys: type[CloudKeys], name: str, doc: str) -> Any:
    """The model `name`: the fields of `keys`, then `SHARED_FIELDS` with the AWS
    model's validators of them."""
    fields = StackConfig.model_fields
    validators = {
        key: _carried(d)
        for key, d in StackConfig.__pydantic_decorators__.field_validators.items()
        if set(d.info.fields) <= set(SHARED_FIELDS)
    }
    return create_model(
        name,
        __base__=keys,
        __module__=keys.__module__,
        __doc__=doc,
        __validators__=validators,
        **{n: (fields[n].annotation, copy.copy(fields[n])) for n in SHARED_FIELDS},
    )
