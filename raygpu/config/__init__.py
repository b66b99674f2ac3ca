"""The stack's configuration: read once, validated, frozen.

- `model` and `pools`: the pydantic models (`StackConfig`; `GpuPoolConfig`,
  `SystemPoolConfig`); each key's type, default, bound and description is
  declared there once. `fields`: the value types they are built from.
- `loading`: `load_config`, `load_stack_file`, `from_pulumi` and the engine's form.
- `messages`: `ConfigError` and the wording of every error (one line per bad key).
- `table`: the config table of docs/config.md, generated from the model
  (`python -m raygpu.config --write` rewrites it).
"""

from raygpu.config.loading import (
    engine_values,
    from_pulumi,
    load_config,
    load_stack_file,
    stack_file_values,
    stack_from_path,
    values_from_engine,
)
from raygpu.config.messages import ConfigError
from raygpu.config.model import (
    BUDGET_ALERTS,
    DEFAULT_PROJECT,
    LOG_RETENTION_DAYS,
    MAX_AZ_COUNT,
    MAX_GPU_POOLS,
    MIN_CLUSTER_MINOR,
    NAMESPACE,
    REGION_KEY,
    StackConfig,
    default_subnet_cidrs,
)
from raygpu.config.placeholders import placeholders, refuse_placeholders
from raygpu.config.pools import (
    MAX_DISK_GIB,
    MAX_POOL_NODES,
    GpuPoolConfig,
    SystemPoolConfig,
)
from raygpu.config.table import config_table, key_paths

__all__ = [
    "BUDGET_ALERTS",
    "DEFAULT_PROJECT",
    "LOG_RETENTION_DAYS",
    "MAX_AZ_COUNT",
    "MAX_DISK_GIB",
    "MAX_GPU_POOLS",
    "MAX_POOL_NODES",
    "MIN_CLUSTER_MINOR",
    "NAMESPACE",
    "REGION_KEY",
    "ConfigError",
    "GpuPoolConfig",
    "StackConfig",
    "SystemPoolConfig",
    "config_table",
    "key_paths",
    "placeholders",
    "refuse_placeholders",
    "default_subnet_cidrs",
    "engine_values",
    "from_pulumi",
    "load_config",
    "load_stack_file",
    "stack_file_values",
    "stack_from_path",
    "values_from_engine",
]
