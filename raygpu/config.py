"""The stack's configuration: read once, validated, frozen.

`load_config(stack, values)` takes the plain mapping of a `Pulumi.<stack>.yaml`
(`raygpu:` keys without their prefix, camelCase, plus `aws:region`) and returns a
`StackConfig`, or raises `ConfigError` listing *every* bad key with what is allowed.
`from_pulumi()` is the only place that touches `pulumi.Config`; `load_stack_file()`
reads a stack file for the offline scripts. This module imports no Pulumi at module
level, so scripts can validate a stack without the engine.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raygpu import instance_types, serve_ingress, versions
from raygpu.errors import UsageError
from raygpu.names import (
    AWS_GPU_LABEL,
    GPU_MODEL_LABEL,
    GPU_NODE_ROLE,
    GPU_TAINT_EFFECT,
    GPU_TAINT_KEY,
    GPU_TAINT_VALUE,
    NODE_ROLE_LABEL,
    POOL_LABEL,
    PROJECT,
    REGION_TAG,
    SYSTEM_NODE_ROLE,
)

NAMESPACE = "raygpu"
REGION_KEY = "aws:region"
DEFAULT_PROJECT = PROJECT

# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827,
    2192, 2557, 2922, 3288, 3653,
)  # fmt: skip
MIN_CLUSTER_MINOR = 30
# The budget's notifications: (kind, percent of the monthly limit).
BUDGET_ALERTS = (("ACTUAL", 80.0), ("FORECASTED", 100.0))
MAX_AZ_COUNT = 6
MAX_POOL_NODES = 100
MAX_GPU_POOLS = 10


class ConfigError(UsageError, ValueError):
    """One or more bad config values; every entry names its key.

    `ConfigError("raygpu:azCount", "must be ...")` or `ConfigError([(key, msg), ...])`.
    """

    def __init__(
        self, key: str | Sequence[tuple[str, str]], message: str | None = None
    ):
        if isinstance(key, str):
            errors = [(key, message or "is invalid")]
        else:
            errors = list(key)
        self.errors: list[tuple[str, str]] = errors
        self.key = errors[0][0] if errors else ""
        self.keys = [k for k, _ in errors]
        super().__init__(str(self))

    def __str__(self) -> str:
        return "; ".join(f"{key}: {msg}" for key, msg in self.errors)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class GpuPoolConfig:
    name: str
    instance_types: tuple[str, ...]
    capacity_type: str = "ON_DEMAND"
    min_size: int = 0
    desired_size: int = 0
    max_size: int = 2
    disk_size_gib: int = 200

    def _specs(self) -> list[instance_types.InstanceSpec]:
        specs = [instance_types.spec(n) for n in self.instance_types]
        return [s for s in specs if s is not None]

    @property
    def gpus_per_node(self) -> int:
        return min(s.gpus for s in self._specs())

    @property
    def vcpus(self) -> int:
        return min(s.vcpus for s in self._specs())

    @property
    def memory_gib(self) -> float:
        return min(s.memory_gib for s in self._specs())

    @property
    def gpu_model(self) -> str:
        return self._specs()[0].gpu_model or ""

    @property
    def node_labels(self) -> dict[str, str]:
        return {
            NODE_ROLE_LABEL: GPU_NODE_ROLE,
            POOL_LABEL: self.name,
            GPU_MODEL_LABEL: self.gpu_model,
            AWS_GPU_LABEL: f"nvidia-{self.gpu_model.lower()}",
        }

    @property
    def taints(self) -> tuple[tuple[str, str, str], ...]:
        """(key, value, effect) in Kubernetes spelling."""
        return ((GPU_TAINT_KEY, GPU_TAINT_VALUE, GPU_TAINT_EFFECT),)

    def node_usd_hour(self) -> float:
        """Price of the dearest instance type of the pool (an upper bound)."""
        attr = "spot_usd_hour" if self.capacity_type == "SPOT" else "on_demand_usd_hour"
        return max(getattr(s, attr) for s in self._specs())


@dataclass(frozen=True)
class SystemPoolConfig:
    instance_types: tuple[str, ...] = ("m6i.xlarge",)
    min_size: int = 2
    desired_size: int = 2
    max_size: int = 3
    disk_size_gib: int = 50

    @property
    def vcpus(self) -> int:
        return min(instance_types.INSTANCE_TYPES[n].vcpus for n in self.instance_types)

    @property
    def memory_gib(self) -> float:
        return min(
            instance_types.INSTANCE_TYPES[n].memory_gib for n in self.instance_types
        )

    @property
    def node_labels(self) -> dict[str, str]:
        return {NODE_ROLE_LABEL: SYSTEM_NODE_ROLE}

    def node_usd_hour(self) -> float:
        return max(
            instance_types.INSTANCE_TYPES[n].on_demand_usd_hour
            for n in self.instance_types
        )


@dataclass(frozen=True)
class StackConfig:
    stack: str
    region: str
    gpu_pools: tuple[GpuPoolConfig, ...]
    budget_monthly_usd: float | None = None
    project: str = DEFAULT_PROJECT
    az_count: int = 3
    vpc_cidr: str = "10.0.0.0/16"
    public_subnet_cidrs: tuple[str, ...] = ()
    private_subnet_cidrs: tuple[str, ...] = ()
    nat_gateway_mode: str = "single"
    cluster_version: str = versions.KUBERNETES_VERSION
    public_endpoint_cidrs: tuple[str, ...] = ()
    admin_principal_arns: tuple[str, ...] = ()
    cluster_creator_admin: bool = True
    system_pool: SystemPoolConfig = field(default_factory=SystemPoolConfig)
    protect_data_bucket: bool = True
    artifacts_force_destroy: bool = False
    noncurrent_version_expiration_days: int = 30
    flow_log_retention_days: int = 30
    budget_alert_email: str | None = None
    budget_scope: str = "account"
    ray_namespace: str = "ray"
    ray_service_account: str = "ray-workload"
    ray_idle_timeout_seconds: int = 600
    ray_head_cpu: str = "2"
    ray_head_memory: str = "8Gi"
    serve_ingress: str = serve_ingress.DEFAULT_INGRESS

    def __post_init__(self) -> None:
        # Subnets default to a fixed carve-up of the VPC (see default_subnet_cidrs).
        if not self.private_subnet_cidrs or not self.public_subnet_cidrs:
            public, private = default_subnet_cidrs(self.vpc_cidr, self.az_count)
            if not self.public_subnet_cidrs:
                object.__setattr__(self, "public_subnet_cidrs", public)
            if not self.private_subnet_cidrs:
                object.__setattr__(self, "private_subnet_cidrs", private)

    @property
    def tags(self) -> dict[str, str]:
        return {"raygpu:stack": self.stack, "raygpu:project": self.project}

    @property
    def iam_tags(self) -> dict[str, str]:
        """Tags of the stack's IAM roles and OIDC provider. IAM is account-wide,
        so they also name the region: scripts/orphans.py deletes an IAM leftover
        only when it names the stack's region (a stack of the same name may run
        in another one)."""
        return {**self.tags, REGION_TAG: self.region}

    @property
    def name_prefix(self) -> str:
        return f"{self.project}-{self.stack}"

    @property
    def cluster_name(self) -> str:
        return self.name_prefix

    @property
    def nat_gateway_count(self) -> int:
        return self.az_count if self.nat_gateway_mode == "per_az" else 1


def default_subnet_cidrs(
    vpc_cidr: str, az_count: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(public, private) subnets for `az_count` AZs.

    The VPC splits into 8 blocks: private subnets take blocks 0..az_count-1 (large,
    because the VPC CNI gives every pod a VPC address); the last block splits into 8
    small public subnets (NAT gateways and load balancers only).
    """
    net = ipaddress.ip_network(vpc_cidr)
    blocks = list(net.subnets(prefixlen_diff=3))
    private = tuple(str(b) for b in blocks[:az_count])
    public = tuple(
        str(b) for b in list(blocks[-1].subnets(prefixlen_diff=3))[:az_count]
    )
    return public, private


# --------------------------------------------------------------------- validation

_REGION_RE = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$")
_STACK_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
_PROJECT_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
_POOL_RE = re.compile(r"^[a-z][a-z0-9-]{0,29}$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_CLUSTER_VERSION_RE = re.compile(r"^1\.(\d{1,2})$")
_ARN_RE = re.compile(r"^arn:aws(-[a-z]+)*:iam::\d{12}:(role|user)/[\w+=,.@/-]+$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_CPU_RE = re.compile(r"^(\d+(\.\d+)?)(m?)$")
_MEM_RE = re.compile(r"^(\d+(\.\d+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?$")
_MEM_FACTOR = {
    None: 1 / 2**30,
    "Ki": 1 / 2**20,
    "Mi": 1 / 2**10,
    "Gi": 1.0,
    "Ti": 2**10,
    "K": 1e3 / 2**30,
    "M": 1e6 / 2**30,
    "G": 1e9 / 2**30,
    "T": 1e12 / 2**30,
}
_PRIVATE_RANGES = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)

# Every top-level raygpu key: name -> kind ("str", "int", "number", "bool", "list",
# "object"). from_pulumi() decodes the engine's strings by this kind.
KEY_KINDS: dict[str, str] = {
    "azCount": "int",
    "vpcCidr": "str",
    "publicSubnetCidrs": "list",
    "privateSubnetCidrs": "list",
    "natGatewayMode": "str",
    "clusterVersion": "str",
    "publicEndpointCidrs": "list",
    "adminPrincipalArns": "list",
    "clusterCreatorAdmin": "bool",
    "systemPool": "object",
    "gpuPools": "list",
    "protectDataBucket": "bool",
    "artifactsForceDestroy": "bool",
    "noncurrentVersionExpirationDays": "int",
    "flowLogRetentionDays": "int",
    "budgetMonthlyUsd": "number",
    "budgetAlertEmail": "str",
    "budgetScope": "str",
    "rayNamespace": "str",
    "rayServiceAccount": "str",
    "rayIdleTimeoutSeconds": "int",
    "rayHeadCpu": "str",
    "rayHeadMemory": "str",
    "serveIngress": "str",
}
REQUIRED_KEYS = ("gpuPools", "budgetMonthlyUsd")
_POOL_KEYS = (
    "name",
    "instanceTypes",
    "capacityType",
    "minSize",
    "desiredSize",
    "maxSize",
    "diskSizeGib",
)
_SYSTEM_POOL_KEYS = (
    "instanceTypes",
    "minSize",
    "desiredSize",
    "maxSize",
    "diskSizeGib",
)
_MISSING = object()


class _Collector:
    """Accumulates (key, message) pairs while reading values."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def add(self, key: str, message: str) -> None:
        self.errors.append((key, message))

    def _typed(self, key: str, value: Any, kind: str) -> Any:
        ok = {
            "str": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, int | float) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "list": isinstance(value, list | tuple),
            "object": isinstance(value, Mapping),
        }[kind]
        if ok:
            return value
        wanted = {
            "str": "a string",
            "int": "an integer",
            "number": "a number",
            "bool": "true or false",
            "list": "a list",
            "object": "an object (a YAML map)",
        }[kind]
        self.add(key, f"must be {wanted}, got {_show(value)}")
        return _MISSING

    def int_in(self, key: str, value: Any, lo: int, hi: int) -> Any:
        value = self._typed(key, value, "int")
        if value is _MISSING:
            return _MISSING
        if not lo <= value <= hi:
            self.add(key, f"must be between {lo} and {hi}, got {value}")
            return _MISSING
        return value

    def choice(self, key: str, value: Any, allowed: Sequence[Any]) -> Any:
        if type(value) is not type(allowed[0]) or value not in allowed:
            shown = ", ".join(str(a) for a in allowed)
            self.add(key, f"must be one of {shown}, got {_show(value)}")
            return _MISSING
        return value

    def matches(self, key: str, value: Any, pattern: re.Pattern, what: str) -> Any:
        if not isinstance(value, str) or not pattern.match(value):
            self.add(key, f"must be {what}, got {_show(value)}")
            return _MISSING
        return value

    def str_list(self, key: str, value: Any, *, non_empty: bool = False) -> Any:
        value = self._typed(key, value, "list")
        if value is _MISSING:
            return _MISSING
        if non_empty and not value:
            self.add(key, "must list at least one entry")
            return _MISSING
        bad = [i for i, v in enumerate(value) if not isinstance(v, str)]
        for i in bad:
            self.add(f"{key}[{i}]", f"must be a string, got {_show(value[i])}")
        if bad:
            return _MISSING
        if len(set(value)) != len(value):
            self.add(key, "must not list the same entry twice")
            return _MISSING
        return tuple(value)


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _rkey(key: str) -> str:
    return f"{NAMESPACE}:{key}"


def _parse_cidr(c: _Collector, key: str, value: str) -> Any:
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        hint = ""
        try:
            hint = f" (did you mean {ipaddress.ip_network(value, strict=False)}?)"
        except ValueError:
            pass
        c.add(key, f"must be an IPv4 CIDR like 10.0.0.0/16, got {value!r}: {exc}{hint}")
        return _MISSING


def _cpu_cores(text: str) -> float | None:
    m = _CPU_RE.match(text)
    if not m:
        return None
    return float(m.group(1)) / (1000 if m.group(3) else 1)


def _memory_gib(text: str) -> float | None:
    m = _MEM_RE.match(text)
    if not m:
        return None
    return float(m.group(1)) * _MEM_FACTOR[m.group(3)]


def _read_sizes(
    c: _Collector, key: str, raw: Mapping[str, Any], defaults: dict[str, int]
) -> dict[str, int] | None:
    """min/desired/max sizes of a node pool, checked against each other."""
    min_lo = 1 if key.endswith("systemPool") else 0
    out: dict[str, Any] = {}
    out["min"] = c.int_in(
        f"{key}.minSize", raw.get("minSize", defaults["min"]), min_lo, MAX_POOL_NODES
    )
    out["max"] = c.int_in(
        f"{key}.maxSize", raw.get("maxSize", defaults["max"]), 1, MAX_POOL_NODES
    )
    desired_default = out["min"] if out["min"] is not _MISSING else defaults["min"]
    if key.endswith("systemPool") and _MISSING not in (out["min"], out["max"]):
        # The default desired size, moved inside the configured min..max.
        desired_default = min(max(defaults["desired"], out["min"]), out["max"])
    out["desired"] = c.int_in(
        f"{key}.desiredSize",
        raw.get("desiredSize", desired_default),
        0,
        MAX_POOL_NODES,
    )
    if _MISSING in out.values():
        return None
    if out["max"] < out["min"]:
        c.add(f"{key}.maxSize", f"must be >= minSize ({out['min']}), got {out['max']}")
        return None
    if not out["min"] <= out["desired"] <= out["max"]:
        c.add(
            f"{key}.desiredSize",
            f"must be between minSize ({out['min']}) and maxSize ({out['max']}), "
            f"got {out['desired']}",
        )
        return None
    return out


def _unknown_keys(
    c: _Collector, key: str, raw: Mapping[str, Any], known: Sequence[str]
) -> None:
    for k in raw:
        if k not in known:
            c.add(f"{key}.{k}", f"is not a known key; allowed: {', '.join(known)}")


def _read_system_pool(c: _Collector, raw: Any) -> SystemPoolConfig | None:
    key = _rkey("systemPool")
    defaults = SystemPoolConfig()
    if raw is _MISSING:
        return defaults
    if c._typed(key, raw, "object") is _MISSING:
        return None
    _unknown_keys(c, key, raw, _SYSTEM_POOL_KEYS)
    types = c.str_list(
        f"{key}.instanceTypes",
        raw.get("instanceTypes", list(defaults.instance_types)),
        non_empty=True,
    )
    if types is not _MISSING:
        for i, name in enumerate(types):
            if not instance_types.is_known(name):
                c.add(
                    f"{key}.instanceTypes[{i}]",
                    f"unknown instance type {name!r}; allowed: "
                    f"{', '.join(instance_types.cpu_instance_names())}",
                )
                types = _MISSING
            elif instance_types.is_gpu_instance(name):
                c.add(
                    f"{key}.instanceTypes[{i}]",
                    f"{name!r} is a GPU instance type; the system pool runs operators "
                    "and the Ray head on CPU instances: "
                    f"{', '.join(instance_types.cpu_instance_names())}",
                )
                types = _MISSING
    sizes = _read_sizes(
        c,
        key,
        raw,
        {"min": defaults.min_size, "desired": defaults.desired_size, "max": 3},
    )
    disk = c.int_in(
        f"{key}.diskSizeGib", raw.get("diskSizeGib", defaults.disk_size_gib), 20, 16384
    )
    if types is _MISSING or sizes is None or disk is _MISSING:
        return None
    return SystemPoolConfig(
        instance_types=types,
        min_size=sizes["min"],
        desired_size=sizes["desired"],
        max_size=sizes["max"],
        disk_size_gib=disk,
    )


def _read_gpu_pool(c: _Collector, index: int, raw: Any) -> GpuPoolConfig | None:
    key = f"{_rkey('gpuPools')}[{index}]"
    if c._typed(key, raw, "object") is _MISSING:
        return None
    _unknown_keys(c, key, raw, _POOL_KEYS)
    ok = True
    if "name" not in raw:
        c.add(f"{key}.name", "is required (lowercase letters, digits and '-')")
        ok = False
        name = _MISSING
    else:
        name = c.matches(
            f"{key}.name",
            raw["name"],
            _POOL_RE,
            "1-30 lowercase letters, digits or '-', starting with a letter",
        )
    if "instanceTypes" not in raw:
        c.add(f"{key}.instanceTypes", "is required (a list of GPU instance types)")
        types = _MISSING
    else:
        types = c.str_list(f"{key}.instanceTypes", raw["instanceTypes"], non_empty=True)
    if types is not _MISSING:
        models = set()
        for i, itype in enumerate(types):
            if not instance_types.is_gpu_instance(itype):
                what = (
                    "not a GPU instance type"
                    if instance_types.is_known(itype)
                    else ("not a known instance type")
                )
                c.add(
                    f"{key}.instanceTypes[{i}]",
                    f"{itype!r} is {what}; allowed: "
                    f"{', '.join(instance_types.gpu_instance_names())}",
                )
                types = _MISSING
            else:
                models.add(instance_types.INSTANCE_TYPES[itype].gpu_model)
        if types is not _MISSING and len(models) > 1:
            c.add(
                f"{key}.instanceTypes",
                "must all have the same GPU model (the pool's nodes carry one "
                f"GPU-model label), got {', '.join(sorted(models))}",
            )
            types = _MISSING
    capacity = c.choice(
        f"{key}.capacityType",
        raw.get("capacityType", "ON_DEMAND"),
        ("ON_DEMAND", "SPOT"),
    )
    sizes = _read_sizes(c, key, raw, {"min": 0, "desired": 0, "max": 2})
    disk = c.int_in(f"{key}.diskSizeGib", raw.get("diskSizeGib", 200), 100, 16384)
    if not ok or _MISSING in (name, types, capacity, disk) or sizes is None:
        return None
    return GpuPoolConfig(
        name=name,
        instance_types=types,
        capacity_type=capacity,
        min_size=sizes["min"],
        desired_size=sizes["desired"],
        max_size=sizes["max"],
        disk_size_gib=disk,
    )


def load_config(
    stack: str, values: Mapping[str, Any], *, project: str = DEFAULT_PROJECT
) -> StackConfig:
    """Validate `values` (YAML keys without `raygpu:`, plus `aws:region`)."""
    c = _Collector()
    get: Callable[[str], Any] = lambda k: values.get(k, _MISSING)  # noqa: E731

    if not isinstance(stack, str) or not _STACK_RE.match(stack):
        c.add(
            "stack",
            f"must be 1-20 lowercase letters, digits or '-', got {_show(stack)}",
        )
    if not _PROJECT_RE.match(project or ""):
        c.add("project", f"must be 1-20 lowercase letters/digits/'-', got {project!r}")

    for k in values:
        if k != REGION_KEY and k not in KEY_KINDS:
            close = [n for n in KEY_KINDS if n.lower() == str(k).lower()]
            hint = f" (did you mean {close[0]}?)" if close else ""
            c.add(_rkey(k), f"is not a known key{hint}; see docs/infra.md")
    for k in REQUIRED_KEYS:
        if k not in values:
            c.add(_rkey(k), "is required")
    out: dict[str, Any] = {}

    if REGION_KEY not in values:
        c.add(REGION_KEY, "is required (set it with `pulumi config set aws:region`)")
    else:
        out["region"] = c.matches(
            REGION_KEY, values[REGION_KEY], _REGION_RE, "an AWS region like us-east-1"
        )

    # ---- network
    az = get("azCount")
    out["az_count"] = 3
    if az is not _MISSING:
        out["az_count"] = c._typed(_rkey("azCount"), az, "int")
        if out["az_count"] is not _MISSING and not 2 <= az <= MAX_AZ_COUNT:
            c.add(
                _rkey("azCount"),
                f"must be between 2 and {MAX_AZ_COUNT} (EKS needs subnets in at least "
                f"two Availability Zones), got {az}",
            )
            out["az_count"] = _MISSING
    vpc = _MISSING
    raw_vpc = get("vpcCidr")
    raw_vpc = "10.0.0.0/16" if raw_vpc is _MISSING else raw_vpc
    if c._typed(_rkey("vpcCidr"), raw_vpc, "str") is not _MISSING:
        vpc = _parse_cidr(c, _rkey("vpcCidr"), raw_vpc)
    if vpc is not _MISSING:
        if vpc.version != 4 or not any(vpc.subnet_of(r) for r in _PRIVATE_RANGES):
            c.add(
                _rkey("vpcCidr"),
                "must be a private IPv4 range inside 10.0.0.0/8, 172.16.0.0/12 "
                f"or 192.168.0.0/16, got {raw_vpc!r}",
            )
            vpc = _MISSING
        elif not 16 <= vpc.prefixlen <= 20:
            c.add(
                _rkey("vpcCidr"),
                f"prefix length must be between /16 and /20, got /{vpc.prefixlen}",
            )
            vpc = _MISSING
    out["vpc_cidr"] = str(vpc) if vpc is not _MISSING else _MISSING
    subnets_ok = True
    all_subnets: list[tuple[str, Any]] = []
    for key in ("publicSubnetCidrs", "privateSubnetCidrs"):
        raw = get(key)
        field_name = (
            "public_subnet_cidrs"
            if key.startswith("public")
            else ("private_subnet_cidrs")
        )
        if raw is _MISSING:
            out[field_name] = ()
            continue
        items = c.str_list(_rkey(key), raw, non_empty=True)
        if items is _MISSING:
            subnets_ok = False
            continue
        if out["az_count"] is not _MISSING and len(items) != out["az_count"]:
            c.add(
                _rkey(key),
                f"must list one subnet per AZ (azCount={out['az_count']}), "
                f"got {len(items)}",
            )
            subnets_ok = False
        for i, text in enumerate(items):
            net = _parse_cidr(c, f"{_rkey(key)}[{i}]", text)
            if net is _MISSING:
                subnets_ok = False
                continue
            if vpc is not _MISSING and not net.subnet_of(vpc):
                c.add(f"{_rkey(key)}[{i}]", f"{text} is not inside vpcCidr {vpc}")
                subnets_ok = False
            for other_key, other in all_subnets:
                if net.overlaps(other):
                    c.add(
                        f"{_rkey(key)}[{i}]",
                        f"{text} overlaps {other} ({other_key})",
                    )
                    subnets_ok = False
            all_subnets.append((f"{_rkey(key)}[{i}]", net))
        out[field_name] = tuple(items)
    if ("publicSubnetCidrs" in values) != ("privateSubnetCidrs" in values):
        c.add(
            _rkey("publicSubnetCidrs"),
            "publicSubnetCidrs and privateSubnetCidrs must be given together "
            "(or both left out for the default layout)",
        )
        subnets_ok = False
    if not subnets_ok:
        out["public_subnet_cidrs"] = _MISSING
    nat = get("natGatewayMode")
    out["nat_gateway_mode"] = (
        "single"
        if nat is _MISSING
        else c.choice(_rkey("natGatewayMode"), nat, ("single", "per_az"))
    )

    # ---- cluster
    ver = get("clusterVersion")
    if ver is _MISSING:
        out["cluster_version"] = versions.KUBERNETES_VERSION
    else:
        out["cluster_version"] = c.matches(
            _rkey("clusterVersion"),
            ver,
            _CLUSTER_VERSION_RE,
            'a quoted Kubernetes version like "1.33"',
        )
        if out["cluster_version"] is not _MISSING:
            minor = int(_CLUSTER_VERSION_RE.match(ver).group(1))
            if minor < MIN_CLUSTER_MINOR:
                c.add(
                    _rkey("clusterVersion"),
                    f"must be 1.{MIN_CLUSTER_MINOR} or newer (AL2023 NVIDIA nodes), "
                    f"got {ver!r}",
                )
                out["cluster_version"] = _MISSING
    cidrs = get("publicEndpointCidrs")
    out["public_endpoint_cidrs"] = ()
    if cidrs is not _MISSING:
        items = c.str_list(_rkey("publicEndpointCidrs"), cidrs)
        if items is _MISSING:
            out["public_endpoint_cidrs"] = _MISSING
        else:
            for i, text in enumerate(items):
                k = f"{_rkey('publicEndpointCidrs')}[{i}]"
                net = _parse_cidr(c, k, text)
                if net is _MISSING:
                    out["public_endpoint_cidrs"] = _MISSING
                elif net.version != 4:
                    c.add(k, f"must be an IPv4 CIDR, got {text!r}")
                    out["public_endpoint_cidrs"] = _MISSING
                elif net.prefixlen < 8:
                    c.add(
                        k,
                        f"{text} opens the Kubernetes API to the internet; list only "
                        "your own networks (prefix /8 or longer), never 0.0.0.0/0, or "
                        "leave the list empty for a private-only endpoint",
                    )
                    out["public_endpoint_cidrs"] = _MISSING
            if out["public_endpoint_cidrs"] is not _MISSING:
                out["public_endpoint_cidrs"] = items
    arns = get("adminPrincipalArns")
    out["admin_principal_arns"] = ()
    if arns is not _MISSING:
        items = c.str_list(_rkey("adminPrincipalArns"), arns)
        out["admin_principal_arns"] = items
        if items is not _MISSING:
            for i, arn in enumerate(items):
                if not _ARN_RE.match(arn):
                    hint = (
                        " (an STS assumed-role ARN: use the IAM role ARN "
                        "arn:aws:iam::<account>:role/<name>)"
                        if ":sts::" in arn
                        else ""
                    )
                    c.add(
                        f"{_rkey('adminPrincipalArns')}[{i}]",
                        "must be an IAM role or user ARN like "
                        f"arn:aws:iam::123456789012:role/admin, got {arn!r}{hint}",
                    )
                    out["admin_principal_arns"] = _MISSING
    creator = get("clusterCreatorAdmin")
    out["cluster_creator_admin"] = (
        True
        if creator is _MISSING
        else c._typed(_rkey("clusterCreatorAdmin"), creator, "bool")
    )
    if out["cluster_creator_admin"] is False and out["admin_principal_arns"] == ():
        c.add(
            _rkey("clusterCreatorAdmin"),
            "is false and adminPrincipalArns is empty: nobody could administer the "
            "cluster; list at least one admin principal ARN",
        )
    out["system_pool"] = _read_system_pool(c, get("systemPool"))

    pools = get("gpuPools")
    out["gpu_pools"] = _MISSING
    if pools is not _MISSING and c._typed(_rkey("gpuPools"), pools, "list") is not (
        _MISSING
    ):
        if not 1 <= len(pools) <= MAX_GPU_POOLS:
            c.add(
                _rkey("gpuPools"),
                f"must list between 1 and {MAX_GPU_POOLS} GPU pools, got {len(pools)}",
            )
        else:
            parsed = [_read_gpu_pool(c, i, p) for i, p in enumerate(pools)]
            names = [p.name for p in parsed if p is not None]
            for i, p in enumerate(parsed):
                if p is not None and names.count(p.name) > 1:
                    c.add(
                        f"{_rkey('gpuPools')}[{i}].name",
                        f"{p.name!r} is used by more than one pool; names must be "
                        "unique",
                    )
                    parsed[i] = None
            if all(p is not None for p in parsed):
                out["gpu_pools"] = tuple(parsed)

    # ---- storage and logs
    for key, field_name, default in (
        ("protectDataBucket", "protect_data_bucket", True),
        ("artifactsForceDestroy", "artifacts_force_destroy", False),
    ):
        raw = get(key)
        out[field_name] = (
            default if raw is _MISSING else c._typed(_rkey(key), raw, "bool")
        )
    raw = get("noncurrentVersionExpirationDays")
    out["noncurrent_version_expiration_days"] = (
        30
        if raw is _MISSING
        else c.int_in(_rkey("noncurrentVersionExpirationDays"), raw, 1, 3650)
    )
    raw = get("flowLogRetentionDays")
    out["flow_log_retention_days"] = (
        30
        if raw is _MISSING
        else c.choice(_rkey("flowLogRetentionDays"), raw, LOG_RETENTION_DAYS)
    )

    # ---- cost guard
    raw = get("budgetMonthlyUsd")
    out["budget_monthly_usd"] = _MISSING
    if raw is not _MISSING:
        val = c._typed(_rkey("budgetMonthlyUsd"), raw, "number")
        if val is not _MISSING:
            if not val > 0 or val != val or val == float("inf"):
                c.add(
                    _rkey("budgetMonthlyUsd"),
                    f"must be a positive number of US dollars, got {raw}",
                )
            else:
                out["budget_monthly_usd"] = float(val)
    raw = get("budgetAlertEmail")
    out["budget_alert_email"] = (
        None
        if raw is _MISSING or raw is None or raw == ""
        else c.matches(
            _rkey("budgetAlertEmail"), raw, _EMAIL_RE, "an email address like a@b.com"
        )
    )
    raw = get("budgetScope")
    out["budget_scope"] = (
        "account"
        if raw is _MISSING
        else c.choice(_rkey("budgetScope"), raw, ("account", "stack"))
    )

    # ---- Ray on Kubernetes
    for key, field_name, default in (
        ("rayNamespace", "ray_namespace", "ray"),
        ("rayServiceAccount", "ray_service_account", "ray-workload"),
    ):
        raw = get(key)
        out[field_name] = (
            default
            if raw is _MISSING
            else c.matches(
                _rkey(key),
                raw,
                _DNS_LABEL_RE,
                "a Kubernetes name (lowercase letters, digits, '-', at most 63)",
            )
        )
    raw = get("rayIdleTimeoutSeconds")
    out["ray_idle_timeout_seconds"] = (
        600
        if raw is _MISSING
        else c.int_in(_rkey("rayIdleTimeoutSeconds"), raw, 30, 86400)
    )
    system = out["system_pool"]
    raw = get("rayHeadCpu")
    raw = "2" if raw is _MISSING else raw
    out["ray_head_cpu"] = c.matches(
        _rkey("rayHeadCpu"),
        raw,
        _CPU_RE,
        'a Kubernetes CPU quantity like "2" or "500m"',
    )
    if out["ray_head_cpu"] is not _MISSING and system is not None:
        cores = _cpu_cores(raw)
        if not 0 < cores <= system.vcpus - 0.5:
            c.add(
                _rkey("rayHeadCpu"),
                f"must be above 0 and leave 0.5 vCPU of the smallest system instance "
                f"({system.vcpus} vCPUs) for system pods, got {raw!r}",
            )
            out["ray_head_cpu"] = _MISSING
    raw = get("rayHeadMemory")
    raw = "8Gi" if raw is _MISSING else raw
    out["ray_head_memory"] = c.matches(
        _rkey("rayHeadMemory"),
        raw,
        _MEM_RE,
        'a Kubernetes memory quantity like "8Gi"',
    )
    if out["ray_head_memory"] is not _MISSING and system is not None:
        gib = _memory_gib(raw)
        if not 1 <= gib <= system.memory_gib - 2:
            c.add(
                _rkey("rayHeadMemory"),
                "must be at least 1Gi and leave 2 GiB of the smallest system instance "
                f"({system.memory_gib:g} GiB) for system pods, got {raw!r}",
            )
            out["ray_head_memory"] = _MISSING

    raw = get("serveIngress")
    out["serve_ingress"] = (
        serve_ingress.DEFAULT_INGRESS
        if raw is _MISSING
        else c.choice(_rkey("serveIngress"), raw, serve_ingress.INGRESS_MODES)
    )

    if c.errors:
        raise ConfigError(c.errors)
    if out["system_pool"] is None or _MISSING in out.values():
        # Every _MISSING above comes with an error; this is a safety net.
        missing = [k for k, v in out.items() if v is _MISSING or v is None]
        raise ConfigError([(k, "is invalid") for k in missing])
    return StackConfig(stack=stack, project=project, **out)


# ------------------------------------------------------------------ entry points


def _decode(kind: str, text: Any) -> Any:
    """The engine hands every config value over as a string; undo that by kind."""
    if kind == "str" or not isinstance(text, str):
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


def from_pulumi() -> StackConfig:
    """Read `raygpu:*` and `aws:region` from the running Pulumi program."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    all_keys = set(runtime_config.get_config_env()) | set(runtime_config.CONFIG.get())
    cfg = pulumi.Config(NAMESPACE)
    values: dict[str, Any] = {}
    prefix = f"{NAMESPACE}:"
    for full in sorted(all_keys):
        if not full.startswith(prefix):
            continue
        key = full[len(prefix) :]
        values[key] = _decode(KEY_KINDS.get(key, "str"), cfg.get(key))
    region = pulumi.Config("aws").get("region")
    if region is not None:
        values[REGION_KEY] = region
    return load_config(pulumi.get_stack(), values, project=pulumi.get_project())


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
        elif full == REGION_KEY:
            values[REGION_KEY] = value
    return values


def stack_from_path(path: str | Path) -> str:
    name = Path(path).name
    m = re.match(r"^Pulumi\.(.+)\.ya?ml$", name)
    if not m:
        raise ConfigError("stack", f"{name} is not named Pulumi.<stack>.yaml")
    return m.group(1)


def load_stack_file(
    path: str | Path, stack: str | None = None, *, project: str = DEFAULT_PROJECT
) -> StackConfig:
    """Read and validate `Pulumi.<stack>.yaml` (the stack name comes from the file
    name unless given)."""
    stack = stack if stack is not None else stack_from_path(path)
    return load_config(stack, stack_file_values(path), project=project)
