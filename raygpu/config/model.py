"""The stack config model: every key's type, default, bound and description, once.

Field names are snake_case; the stack file spells them camelCase (the alias).
A rule that relates two keys is a validator of the later key that reads the
earlier one from `info.data` (where pydantic leaves out a key that failed), so
every bad key is reported at once. An "after" model validator would run only
when every key is valid, so one typo elsewhere would hide its error; the two
model validators here either need a valid model (the derived subnet layout) or
read the input itself and add to the keys' errors (which keys were given).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar

from pydantic import (
    BeforeValidator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from raygpu import serve_ingress, sizing, versions
from raygpu.config.fields import (
    PRIVATE_RANGES,
    EndpointCidr,
    Entries,
    Ipv4Cidr,
    PrivateCidr,
    adding,
    bad,
    listing,
    matching,
    network,
    one_of,
    parsed_as,
    several,
    subnet_problems,
)
from raygpu.config.monitoring_keys import MonitoringKeys
from raygpu.config.pools import GpuPoolConfig, SystemPoolConfig
from raygpu.names import PROJECT, PROJECT_TAG, REGION_TAG, STACK_TAG

NAMESPACE = "raygpu"
REGION_KEY = "aws:region"
DEFAULT_PROJECT = PROJECT
# Fields that name the stack rather than configure it: not stack-file keys.
IDENTITY_FIELDS = ("stack", "project")

# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827,
    2192, 2557, 2922, 3288, 3653,
)  # fmt: skip
MIN_CLUSTER_MINOR = 30
# The budget's notifications: (kind, percent of the monthly limit).
BUDGET_ALERTS = (("ACTUAL", 80.0), ("FORECASTED", 100.0))
MAX_AZ_COUNT = 6
MAX_GPU_POOLS = 10


def default_subnet_cidrs(
    vpc_cidr: str, az_count: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(public, private) subnets for `az_count` AZs.

    The VPC splits into 8 blocks: private subnets take blocks 0..az_count-1 (large,
    because the VPC CNI gives every pod a VPC address); the last block splits into 8
    small public subnets (NAT gateways and load balancers only).
    """
    blocks = list(network(vpc_cidr).subnets(prefixlen_diff=3))
    private = tuple(str(b) for b in blocks[:az_count])
    public = tuple(
        str(b) for b in list(blocks[-1].subnets(prefixlen_diff=3))[:az_count]
    )
    return public, private


# ------------------------------------------------------------------ key types

_Name20 = matching(r"^[a-z][a-z0-9-]{0,19}$", "1-20 lowercase letters, digits or '-'")
_Region = matching(
    r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$", "an AWS region like us-east-1"
)
_Subnets = listing(Ipv4Cidr, Entries(1)) | None
_K8sVersion = matching(r"^1\.(\d{1,2})$", 'a quoted Kubernetes version like "1.33"')
_DnsLabel = matching(
    r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
    "a Kubernetes name (lowercase letters, digits, '-', at most 63)",
)


_ARN_EXAMPLE = "an IAM role or user ARN like arn:aws:iam::123456789012:role/admin"


def _not_assumed_role(value: Any) -> Any:
    if isinstance(value, str) and ":sts::" in value:
        raise bad(
            f"must be {_ARN_EXAMPLE}, got {value!r} (an STS assumed-role ARN: use "
            "the IAM role ARN arn:aws:iam::<account>:role/<name>)"
        )
    return value


# The outer validator (the STS hint) runs before the pattern.
_PrincipalArn = Annotated[
    matching(r"^arn:aws(-[a-z]+)*:iam::\d{12}:(role|user)/[\w+=,.@/-]+$", _ARN_EXAMPLE),
    BeforeValidator(_not_assumed_role),
]
_Email = Annotated[
    matching(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$", "an email address like a@b.com")
    | None,
    BeforeValidator(lambda v: None if v in (None, "") else v),
]
_CpuQuantity = parsed_as(
    sizing.cpu_milli, 'a Kubernetes CPU quantity like "2" or "500m"'
)
_MemoryQuantity = parsed_as(
    sizing.memory_bytes, 'a Kubernetes memory quantity like "8Gi"'
)


_GpuPools = Annotated[tuple[GpuPoolConfig, ...], Entries(1, MAX_GPU_POOLS)]
_NatMode = one_of("single", "per_az")
_EndpointCidrs = listing(EndpointCidr)
_PrivateCidrs = listing(PrivateCidr)
_DnsLabels = listing(_DnsLabel)
_PrincipalArns = listing(_PrincipalArn)
_LogRetention = one_of(*LOG_RETENTION_DAYS)
_BudgetScope = one_of("account", "stack")
_ServeIngress = one_of(*serve_ingress.INGRESS_MODES)


def _fits_system_node(problem: Callable[[str, int, float], str | None]) -> Any:
    """A check of the head's request against the system pool (raygpu.sizing)."""

    def check(value: str, info: ValidationInfo) -> str:
        pool = info.data.get("system_pool")
        found = pool and problem(value, pool.vcpus, pool.memory_gib)
        if found:
            raise bad(found)
        return value

    return check


# ----------------------------------------------------------------------- stack


class StackConfig(MonitoringKeys):
    """One stack: the `raygpu:*` keys and `aws:region` of `Pulumi.<stack>.yaml`."""

    cloud: ClassVar[str] = "aws"  # `raygpu:cloud` (raygpu.config.loading)
    stack: _Name20 = Field(description="Stack name")
    project: _Name20 = Field(DEFAULT_PROJECT, description="Pulumi project name")
    region: _Region = Field(
        alias=REGION_KEY,
        description="AWS region of every resource",
        json_schema_extra={"why": "set it with `pulumi config set aws:region`"},
    )

    # ---- network
    az_count: StrictInt = Field(
        3,
        ge=2,
        le=MAX_AZ_COUNT,
        description="Availability Zones to span",
        json_schema_extra={
            "why": "EKS needs subnets in at least two Availability Zones"
        },
    )
    vpc_cidr: Ipv4Cidr = Field(
        "10.0.0.0/16",
        description="VPC range: private IPv4 (10/8, 172.16/12, 192.168/16), "
        "prefix /16../20",
    )
    public_subnet_cidrs: _Subnets = Field(
        None,
        description="One CIDR per AZ inside the VPC, given together with "
        "privateSubnetCidrs; by default the last eighth of the VPC split in 8 (/22 "
        "each in a /16)",
        json_schema_extra={"shown_default": "carved from vpcCidr"},
    )
    private_subnet_cidrs: _Subnets = Field(
        None,
        description="One CIDR per AZ inside the VPC, no overlaps; by default the "
        "first azCount eighths of the VPC (/19 each in a /16: every pod gets a VPC "
        "address)",
        json_schema_extra={"shown_default": "carved from vpcCidr"},
    )
    nat_gateway_mode: _NatMode = Field(
        "single",
        description="One NAT gateway (cheaper; one AZ's failure cuts egress) or one "
        "per AZ",
    )

    # ---- cluster
    cluster_version: _K8sVersion = Field(
        versions.KUBERNETES_VERSION,
        description="EKS Kubernetes version, the pinned Cluster Autoscaler's minor "
        "(raygpu/versions.py)",
    )
    public_endpoint_cidrs: _EndpointCidrs = Field(
        (),
        description="Networks that may reach the public API endpoint: public ones "
        "/24 or longer (a bare address is a /32), private ones /8 or longer; empty: "
        "private endpoint only",
    )
    admin_principal_arns: _PrincipalArns = Field(
        (),
        description="IAM roles/users that get cluster-admin access entries (not "
        "the principal that runs `pulumi up` when clusterCreatorAdmin is true)",
    )
    cluster_creator_admin: StrictBool = Field(
        True,
        description="Give the principal that creates the cluster admin access (the "
        "Kubernetes layer needs it); false requires adminPrincipalArns",
    )
    system_pool: SystemPoolConfig = Field(
        default_factory=SystemPoolConfig,
        description="CPU node group of the operators and the Ray head (on-demand, "
        "no taint)",
    )
    gpu_pools: _GpuPools = Field(description="GPU node groups, one per entry")

    # ---- storage and logs
    protect_data_bucket: StrictBool = Field(
        True,
        description="Keep the data bucket (its key and settings too) on "
        "`pulumi destroy`",
    )
    artifacts_force_destroy: StrictBool = Field(
        False,
        description="Let `pulumi destroy` delete the artifacts bucket with its objects",
    )
    noncurrent_version_expiration_days: StrictInt = Field(
        30, ge=1, le=3650, description="Days before noncurrent artifact versions expire"
    )
    data_bucket_access_logging: StrictBool = Field(
        False,
        description="Log every request to the data bucket (S3 server access logs) "
        "into a private log bucket of the stack",
    )
    data_key_user_arns: _PrincipalArns = Field(
        (),
        description="IAM roles/users besides the Ray role that may use the storage "
        "KMS key through S3 (upload datasets, `raygpu serve` packages); "
        "adminPrincipalArns may too",
    )
    flow_log_retention_days: _LogRetention = Field(
        30,
        description="Days to keep flow logs and control-plane logs (a CloudWatch "
        "Logs retention) and the data bucket's access logs",
    )

    # ---- cost guard
    budget_monthly_usd: StrictFloat = Field(
        gt=0,
        allow_inf_nan=False,
        description="Monthly cost budget in USD; `raygpu plan` warns when its 80 % "
        "alert would fire on the idle cost alone",
        json_schema_extra={"why": "US dollars a month"},
    )
    budget_alert_email: _Email = Field(
        None, description="Address for budget alerts; none when unset or empty"
    )
    budget_scope: _BudgetScope = Field(
        "account",
        description="All spend in the account, or spend tagged "
        "`raygpu:stack=<stack>` (a cost allocation tag to activate once)",
    )

    # ---- Ray on Kubernetes
    ray_namespace: _DnsLabel = Field(
        "ray",
        description="Kubernetes namespace of the Ray cluster (trusted by the IRSA "
        "role)",
    )
    ray_service_account: _DnsLabel = Field(
        "ray-workload",
        description="Service account of the Ray head and its autoscaler (trusted by "
        "the IRSA role; KubeRay binds its Kubernetes API Role to it)",
    )
    ray_worker_service_account: _DnsLabel = Field(
        "ray-worker",
        description="Service account of Ray workers: no Kubernetes API token "
        "mounted, trusted by the IRSA role (its web-identity token still mounted)",
    )
    ray_idle_timeout_seconds: StrictInt = Field(
        600,
        ge=30,
        le=86400,
        description="Ray autoscaler idle timeout before a worker is removed",
    )
    ray_head_cpu: _CpuQuantity = Field(
        "2",
        description="Ray head CPU request; must fit what the smallest system "
        "instance leaves after the kubelet's reservations and DaemonSets",
    )
    ray_head_memory: _MemoryQuantity = Field(
        "8Gi",
        description=f"Ray head memory, at least {sizing.MIN_HEAD_MEMORY_GIB}Gi; must "
        "fit what the smallest system instance leaves",
    )
    serve_ingress: _ServeIngress = Field(
        serve_ingress.DEFAULT_INGRESS,
        description="How HTTP reaches Serve replicas: Ray's Python proxy or Ray's "
        "HAProxy ingress (see docs/performance.md)",
    )

    serve_allowed_cidrs: _PrivateCidrs = Field(
        (),
        description="Private networks (e.g. an internal load balancer's subnets) "
        "that may reach Serve's HTTP port; pods of the Ray namespace always may",
    )
    serve_allowed_namespaces: _DnsLabels = Field(
        (),
        description="Namespaces whose pods may reach Serve's HTTP port (e.g. an "
        "ingress controller's)",
    )
    monitoring_namespace: _DnsLabel = Field(
        "monitoring",
        description="Namespace whose pods may scrape Ray's and the operator's "
        "metrics ports",
    )

    # ---- sleep
    asleep: StrictBool = Field(
        False,
        description="The system pool and the Ray head at zero (the control plane "
        "and the NAT stay); set by `raygpu sleep`, cleared by `raygpu wake`",
    )

    @field_validator("ray_worker_service_account")
    @classmethod
    def _own_worker_account(cls, name: str, info: ValidationInfo) -> str:
        if name == info.data.get("ray_service_account"):
            raise bad(
                f"{name!r} is rayServiceAccount too; workers need their own account "
                "(it carries no Kubernetes API token)"
            )
        return name

    @field_validator("vpc_cidr")
    @classmethod
    def _private_and_sized(cls, text: str) -> str:
        net = network(text)
        if not any(net.subnet_of(network(r)) for r in PRIVATE_RANGES):
            raise bad(
                "must be a private IPv4 range inside 10.0.0.0/8, 172.16.0.0/12 or "
                f"192.168.0.0/16, got {text!r}"
            )
        if not 16 <= net.prefixlen <= 20:
            raise bad(
                f"prefix length must be between /16 and /20, got /{net.prefixlen}"
            )
        return text

    @field_validator("public_subnet_cidrs", "private_subnet_cidrs")
    @classmethod
    def _subnets_fit(
        cls, items: tuple[str, ...] | None, info: ValidationInfo
    ) -> tuple[str, ...] | None:
        if items is None:
            return None  # the default layout (given together: see below)
        problems: list[Any] = []
        azs = info.data.get("az_count")
        if azs is not None and len(items) != azs:
            problems.append(
                ((), f"must list one subnet per AZ (azCount={azs}), got {len(items)}")
            )
        vpc = info.data.get("vpc_cidr")
        public = info.data.get("public_subnet_cidrs")
        others = []
        if info.field_name == "private_subnet_cidrs" and public is not None:
            prefix = f"{NAMESPACE}:publicSubnetCidrs"
            others = [(f"{prefix}[{i}]", t) for i, t in enumerate(public)]
        problems += subnet_problems(
            f"{NAMESPACE}:{to_camel(info.field_name)}",
            items,
            inside=("vpcCidr", vpc) if vpc else None,
            others=others,
        )
        if problems:
            raise several(problems)
        return items

    @field_validator("cluster_version")
    @classmethod
    def _new_enough(cls, version: str) -> str:
        if int(version.split(".")[1]) < MIN_CLUSTER_MINOR:
            raise bad(
                f"must be 1.{MIN_CLUSTER_MINOR} or newer (AL2023 NVIDIA nodes), "
                f"got {version!r}"
            )
        return version

    @field_validator("cluster_creator_admin")
    @classmethod
    def _someone_administers(cls, creator: bool, info: ValidationInfo) -> bool:
        if creator is False and info.data.get("admin_principal_arns") == ():
            raise bad(
                "is false and adminPrincipalArns is empty: nobody could administer "
                "the cluster; list at least one admin principal ARN"
            )
        return creator

    @field_validator("gpu_pools")
    @classmethod
    def _unique_names(
        cls, pools: tuple[GpuPoolConfig, ...]
    ) -> tuple[GpuPoolConfig, ...]:
        names = [p.name for p in pools]
        unique = "is used by more than one pool; names must be unique"
        problems = [
            ((i, "name"), f"{p.name!r} {unique}")
            for i, p in enumerate(pools)
            if names.count(p.name) > 1
        ]
        if problems:
            raise several(problems)
        return pools

    _head_cpu_fits = field_validator("ray_head_cpu")(
        _fits_system_node(sizing.head_cpu_problem)
    )
    _head_memory_fits = field_validator("ray_head_memory")(
        _fits_system_node(sizing.head_memory_problem)
    )

    @model_validator(mode="wrap")
    @classmethod
    def _subnets_given_together(cls, data: Any, handler: Any) -> StackConfig:
        # About which keys are present, so it reads the input itself, and adds to
        # whatever else is wrong (a key that failed is not in `info.data`).
        given = [
            any(k in data for k in (key, to_camel(key)))
            for key in ("public_subnet_cidrs", "private_subnet_cidrs")
        ] if isinstance(data, dict) else [False, False]  # fmt: skip
        if given[0] == given[1]:
            return handler(data)
        problem = (
            ("publicSubnetCidrs",),
            "publicSubnetCidrs and privateSubnetCidrs must be given together (or "
            "both left out for the default layout)",
        )
        try:
            handler(data)
        except ValidationError as exc:
            raise adding(exc, [problem]) from None
        raise adding(None, [problem])

    @model_validator(mode="after")
    def _default_subnet_layout(self) -> StackConfig:
        if self.public_subnet_cidrs is None:  # and private too (see above)
            public, private = default_subnet_cidrs(self.vpc_cidr, self.az_count)
            # Frozen: set once, while the model is being built.
            object.__setattr__(self, "public_subnet_cidrs", public)
            object.__setattr__(self, "private_subnet_cidrs", private)
        return self

    @property
    def tags(self) -> dict[str, str]:
        return {STACK_TAG: self.stack, PROJECT_TAG: self.project}

    @property
    def iam_tags(self) -> dict[str, str]:
        """Tags of the stack's IAM roles and OIDC provider. IAM is account-wide,
        so they also name the region: `raygpu orphans` deletes an IAM leftover
        only when it names the stack's region (a stack of the same name may run
        in another one)."""
        return {**self.tags, REGION_TAG: self.region}

    @property
    def system_sizes(self) -> tuple[int, int, int]:
        """(min, desired, max) nodes of the system pool: none while asleep."""
        pool = self.system_pool
        if self.asleep:
            return 0, 0, pool.max_size
        return pool.min_size, pool.desired_size, pool.max_size

    @property
    def name_prefix(self) -> str:
        return f"{self.project}-{self.stack}"

    @property
    def cluster_name(self) -> str:
        return self.name_prefix

    @property
    def nat_gateway_count(self) -> int:
        return self.az_count if self.nat_gateway_mode == "per_az" else 1
