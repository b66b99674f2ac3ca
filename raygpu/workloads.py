"""The Ray workloads a stack runs, as plain data: RayJob and RayService manifests and
the Serve config (`serveConfigV2`) both `raygpu serve` and the RayService use.

The data path on a stack: raw data under `raw/<dataset>/` of the data bucket
(`raygpu data push`), a RayJob running prepare.py into `prepared/<dataset>/` (the
only prefix of that bucket the cluster's role may write), and a RayJob training
on it with checkpoints in the artifacts bucket.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from raygpu import clouds, versions
from raygpu.config import StackConfig
from raygpu.manifests import (
    SUBMITTER_CONTAINER,
    ClusterRefs,
    ManifestError,
    common_labels,
    pod_security_context,
    pod_volumes,
    ray_container_security_context,
    raycluster_spec,
    resources,
)
from raygpu.names import PREPARED_PREFIX, RAW_PREFIX, RAY_API_VERSION

DEFAULT_JOB_TTL_SECONDS = 300
DEFAULT_JOB_DEADLINE_SECONDS = 6 * 3600
SUBMISSION_MODES = ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")
# ray_jobs/serve_app.py: a ready `app` (checkpoint from $RAYGPU_CHECKPOINT) and the
# application builder `build_app` that takes `checkpoint` as an argument.
SERVE_IMPORT_PATH = "serve_app:app"
SERVE_BUILDER_IMPORT_PATH = "serve_app:build_app"
SERVE_APP_NAME = "raygpu"


@dataclass(frozen=True)
class ServeApp:
    """One of ray_jobs/'s Serve applications, as `raygpu serve --app` names it."""

    import_path: str  # its builder, which takes the checkpoint as an argument
    name: str
    route_prefix: str
    probe: str  # a GET that answers once it serves, for the access hint


SERVE_APPS = {
    "classifier": ServeApp(SERVE_BUILDER_IMPORT_PATH, SERVE_APP_NAME, "/", "/healthz"),
    # ray_jobs/lm_serve_app.py, OpenAI's API under /lm/v1 (docs/serving-lm.md).
    "lm": ServeApp("lm_serve_app:build_app", "raygpu-lm", "/lm", "/lm/v1/models"),
}
DEFAULT_SERVE_APP = "classifier"


def _positive_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ManifestError(f"{field}: must be a positive integer, got {value!r}")
    return value


def submitter_pod_template(cfg: StackConfig) -> dict[str, Any]:
    """The pod KubeRay runs `ray job submit` in (K8sJobMode): restricted like the
    Ray pods, without an API token (it only talks to the head's job API)."""
    volumes, mounts = pod_volumes(None, None)
    return {
        "metadata": {"labels": common_labels(cfg)},
        "spec": {
            "serviceAccountName": cfg.ray_worker_service_account,
            "automountServiceAccountToken": False,
            "restartPolicy": "Never",
            "nodeSelector": dict(cfg.system_pool.node_labels),
            "securityContext": pod_security_context(),
            "containers": [
                {
                    # KubeRay fills in the `ray job submit` command and the env.
                    "name": SUBMITTER_CONTAINER,
                    "image": versions.pinned(versions.RAY_IMAGE_CPU),
                    "imagePullPolicy": "IfNotPresent",
                    "resources": resources("500m", "1Gi"),
                    "volumeMounts": mounts,
                    "securityContext": ray_container_security_context(),
                }
            ],
            "volumes": volumes,
        },
    }


def rayjob_manifest(
    cfg: StackConfig,
    refs: ClusterRefs,
    *,
    name: str,
    entrypoint: str,
    runtime_env: Mapping[str, Any] | None = None,
    ttl_seconds_after_finished: int = DEFAULT_JOB_TTL_SECONDS,
    active_deadline_seconds: int = DEFAULT_JOB_DEADLINE_SECONDS,
    submission_mode: str = "K8sJobMode",
) -> dict[str, Any]:
    """A RayJob that brings up its own cluster (the stack's cluster spec), runs
    `entrypoint`, and deletes the cluster when the job ends (after the TTL)."""
    if not isinstance(entrypoint, str) or not entrypoint.strip():
        raise ManifestError("entrypoint: must be a non-empty command")
    if submission_mode not in SUBMISSION_MODES:
        raise ManifestError(
            f"submission_mode: must be one of {', '.join(SUBMISSION_MODES)}, "
            f"got {submission_mode!r}"
        )
    if isinstance(ttl_seconds_after_finished, bool) or not (
        isinstance(ttl_seconds_after_finished, int) and ttl_seconds_after_finished >= 0
    ):
        raise ManifestError(
            "ttl_seconds_after_finished: must be an integer >= 0, "
            f"got {ttl_seconds_after_finished!r}"
        )
    spec: dict[str, Any] = {
        "entrypoint": entrypoint,
        "submissionMode": submission_mode,
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": ttl_seconds_after_finished,
        "activeDeadlineSeconds": _positive_int(
            active_deadline_seconds, "active_deadline_seconds"
        ),
        "backoffLimit": 0,
        "rayClusterSpec": raycluster_spec(cfg, refs),
    }
    if submission_mode == "K8sJobMode":
        spec["submitterPodTemplate"] = submitter_pod_template(cfg)
    if runtime_env:
        spec["runtimeEnvYAML"] = yaml.safe_dump(dict(runtime_env), sort_keys=True)
    return {
        "apiVersion": RAY_API_VERSION,
        "kind": "RayJob",
        "metadata": {
            "name": name,
            "namespace": cfg.ray_namespace,
            "labels": common_labels(cfg),
        },
        "spec": spec,
    }


def raw_data_uri(cfg: StackConfig, refs: ClusterRefs, dataset: str) -> str:
    return clouds.of(cfg).uri(refs.data_bucket, f"{RAW_PREFIX}/{dataset}")


def prepared_data_uri(cfg: StackConfig, refs: ClusterRefs, dataset: str) -> str:
    return clouds.of(cfg).uri(refs.data_bucket, f"{PREPARED_PREFIX}/{dataset}")


def runs_uri(cfg: StackConfig, refs: ClusterRefs) -> str:
    """Where jobs keep their runs: runs/ in the artifacts bucket."""
    return clouds.of(cfg).uri(refs.artifacts_bucket, "runs")


def prepare_rayjob_manifest(
    cfg: StackConfig,
    refs: ClusterRefs,
    *,
    name: str,
    dataset: str,
    data_format: str,
    prepare_args: Sequence[str] = (),
    runtime_env: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A RayJob running prepare.py: raw/<dataset> into prepared/<dataset>."""
    entrypoint = shlex.join(
        [
            "python",
            "prepare.py",
            "--format",
            data_format,
            "--source",
            raw_data_uri(cfg, refs, dataset),
            "--output",
            prepared_data_uri(cfg, refs, dataset),
            *prepare_args,
        ]
    )
    return rayjob_manifest(
        cfg, refs, name=name, entrypoint=entrypoint, runtime_env=runtime_env
    )


def train_prepared_rayjob_manifest(
    cfg: StackConfig,
    refs: ClusterRefs,
    *,
    name: str,
    dataset: str,
    train_args: Sequence[str] = (),
    runtime_env: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A RayJob running train.py on prepared/<dataset>, runs in the artifacts
    bucket."""
    entrypoint = shlex.join(
        [
            "python",
            "train.py",
            "--data",
            prepared_data_uri(cfg, refs, dataset),
            "--storage-path",
            runs_uri(cfg, refs),
            *train_args,
        ]
    )
    return rayjob_manifest(
        cfg, refs, name=name, entrypoint=entrypoint, runtime_env=runtime_env
    )


def tune_rayjob_manifest(
    cfg: StackConfig,
    refs: ClusterRefs,
    *,
    name: str,
    tune_args: Sequence[str] = (),
    runtime_env: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A RayJob running tune.py: a hyper-parameter search whose experiment (every
    trial's checkpoints, the results and plots) goes under the artifacts bucket's
    runs/; the same name resumes it."""
    entrypoint = shlex.join(
        [
            "python",
            "tune.py",
            "--storage-path",
            runs_uri(cfg, refs),
            *tune_args,
        ]
    )
    return rayjob_manifest(
        cfg, refs, name=name, entrypoint=entrypoint, runtime_env=runtime_env
    )


def lm_rayjob_manifest(
    cfg: StackConfig,
    refs: ClusterRefs,
    *,
    name: str,
    preset: str,
    pool: str | None = None,
    train_args: Sequence[str] = (),
    runtime_env: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A RayJob training the GPT with FSDP2 on a GPU pool (the first unless `pool`
    names one): one worker per GPU of the pool at full scale, sharded checkpoints
    under the artifacts bucket's runs/."""
    pools = {p.name: p for p in cfg.gpu_pools}
    chosen = pools.get(pool) if pool else cfg.gpu_pools[0]
    if chosen is None:
        raise ManifestError(f"pool: {pool!r} is not one of {', '.join(pools)}")
    workers = chosen.max_size * chosen.gpus_per_node
    entrypoint = shlex.join(
        [
            "python",
            "train.py",
            "--model",
            "gpt",
            "--strategy",
            "fsdp",
            "--preset",
            preset,
            "--num-workers",
            str(workers),
            "--use-gpu",
            "--storage-path",
            runs_uri(cfg, refs),
            *train_args,
        ]
    )
    return rayjob_manifest(
        cfg, refs, name=name, entrypoint=entrypoint, runtime_env=runtime_env
    )


def serve_config(
    *,
    working_dir: str,
    checkpoint: str | None = None,
    import_path: str | None = None,
    app_name: str = SERVE_APP_NAME,
    route_prefix: str = "/",
    extra_args: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A Serve config (the `serveConfigV2` schema) for one application.

    With `checkpoint` (or other args) the app comes from the builder
    `serve_app:build_app`, which receives them as `args`; without, from the ready
    `serve_app:app`. Serve refuses args for an already-built application."""
    if not working_dir:
        raise ManifestError("working_dir: must be a URI of the packaged ray_jobs/")
    args = dict(extra_args or {})
    if checkpoint:
        args["checkpoint"] = checkpoint
    if import_path is None:
        import_path = SERVE_BUILDER_IMPORT_PATH if args else SERVE_IMPORT_PATH
    elif args and import_path == SERVE_IMPORT_PATH:
        raise ManifestError(
            f"import_path: {SERVE_IMPORT_PATH} is an already-built application and "
            f"takes no args; use the builder {SERVE_BUILDER_IMPORT_PATH}"
        )
    app: dict[str, Any] = {
        "name": app_name,
        "route_prefix": route_prefix,
        "import_path": import_path,
        "runtime_env": {"working_dir": working_dir},
    }
    if args:
        app["args"] = args
    return {"applications": [app]}


def rayservice_manifest(
    cfg: StackConfig,
    refs: ClusterRefs,
    *,
    name: str,
    working_dir: str,
    checkpoint: str | None = None,
    import_path: str | None = None,
    app_name: str = SERVE_APP_NAME,
    extra_args: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A RayService running the serving app on the stack's cluster spec."""
    config = serve_config(
        working_dir=working_dir,
        checkpoint=checkpoint,
        import_path=import_path,
        app_name=app_name,
        extra_args=extra_args,
    )
    return {
        "apiVersion": RAY_API_VERSION,
        "kind": "RayService",
        "metadata": {
            "name": name,
            "namespace": cfg.ray_namespace,
            "labels": common_labels(cfg),
        },
        "spec": {
            "serveConfigV2": yaml.safe_dump(config, sort_keys=False),
            "rayClusterConfig": raycluster_spec(cfg, refs),
        },
    }
