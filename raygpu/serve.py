"""Deploy the serving app (ray_jobs/serve_app.py) for a checkpoint, privately.

    raygpu serve --stack dev --checkpoint s3://<artifacts>/runs/<run>/checkpoint_...
    raygpu serve --address http://127.0.0.1:8265 --checkpoint /path/to/checkpoint
    raygpu serve --stack dev --checkpoint s3://... --variant onnx-int8

1. Packages ray_jobs/ as a zip, byte for byte the same for the same files (sorted
   entries, fixed timestamps and modes), named by its SHA-256: `packages/<sha>.zip`
   in the stack's artifacts bucket (uploaded only when absent), or a local file for
   a local cluster (--address).
2. Writes a Serve config (raygpu.workloads.serve_config, the same one the stack's
   RayService template uses) whose runtime_env.working_dir is that package.
3. Applies it with `serve deploy` through a port-forward to the Ray head (the token
   from the cluster's Secret goes through the environment only).
4. Waits, bounded, until the application is RUNNING, or fails with Serve's reason.
5. Prints how to reach the app privately (kubectl port-forward to 127.0.0.1).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shlex
import stat
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from raygpu import llm, manifests, options, workloads
from raygpu.errors import CommandError
from raygpu.names import SERVE_PORT
from raygpu.rayclient import check_address, dashboard_get, ray_cli, ray_client_env
from raygpu.stack import (
    RAY_JOBS_DIR,
    REPO_ROOT,
    Clock,
    StackOutputs,
    load_outputs,
    stack_access,
    wait_until,
)
from raygpu.submit import read_requirements

PACKAGE_PREFIX = "packages/"
LOCAL_PACKAGES = REPO_ROOT / "out" / "packages"
# Never packaged: caches, byte code, data a local run downloaded.
EXCLUDED_DIRS = {"__pycache__", ".pytest_cache", "data", ".ipynb_checkpoints"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold
FAILED_STATES = {"DEPLOY_FAILED", "UNHEALTHY"}
# The serving variants (ray_jobs/mlcore/variants.py's VARIANTS, which this
# package cannot import; tests check the two agree): fp32 is the checkpoint.
VARIANTS = ("fp32", "int8", "onnx", "onnx-int8")


# ------------------------------------------------------------------------ package


def package_files(src: Path) -> Iterator[tuple[str, Path]]:
    """(path inside the package, file) for every file to ship, sorted."""
    files = []
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        if any(part in EXCLUDED_DIRS or part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and not path.name.endswith(EXCLUDED_SUFFIXES):
            files.append((rel.as_posix(), path))
    yield from sorted(files)


def package_dir(src: Path = RAY_JOBS_DIR, top: str | None = None) -> tuple[bytes, str]:
    """Zip `src` deterministically under one top-level folder; (bytes, sha256).

    Ray unpacks a remote working_dir zip and drops its single top-level folder, so
    the files land at the top of the job's working directory.
    """
    src = Path(src)
    if not src.is_dir():
        raise CommandError(f"cannot package {src}: not a directory")
    top = top or src.name
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, path in package_files(src):
            info = zipfile.ZipInfo(f"{top}/{name}", date_time=ZIP_EPOCH)
            executable = path.stat().st_mode & stat.S_IXUSR
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, whatever machine builds it
            archive.writestr(info, path.read_bytes(), compresslevel=9)
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def package_key(sha256: str) -> str:
    return f"{PACKAGE_PREFIX}{sha256}.zip"


def upload_package(s3: Any, bucket: str, data: bytes, sha256: str) -> str:
    """Put the package at its content address unless it is there; its s3:// URI."""
    key = package_key(sha256)
    try:
        s3.head_object(Bucket=bucket, Key=key)
        print(f"package s3://{bucket}/{key} already there")
    except Exception as exc:  # botocore ClientError
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code not in ("404", "NoSuchKey", "NotFound"):
            raise CommandError(
                f"cannot read s3://{bucket}/{key}: {code or exc}"
            ) from None
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=data,
            ContentType="application/zip",
            Metadata={"sha256": sha256},
        )
        print(f"uploaded package s3://{bucket}/{key} ({len(data)} bytes)")
    return f"s3://{bucket}/{key}"


def write_local_package(
    data: bytes, sha256: str, directory: Path = LOCAL_PACKAGES
) -> str:
    """Write the package for a cluster on this machine; its file:// URI."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{sha256}.zip"
    if not path.exists():
        tmp = path.with_suffix(".zip.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path.resolve().as_uri()


def check_checkpoint_in_s3(s3: Any, uri: str) -> None:
    """--checkpoint on a stack: an s3:// URI under which something exists."""
    if not uri.startswith("s3://") or len(uri) <= len("s3://"):
        raise CommandError(
            f"--checkpoint: {uri!r} is not allowed on a stack; give the s3:// URI "
            "of a checkpoint folder (see the training job's output)"
        )
    bucket, _, key = uri[len("s3://") :].partition("/")
    prefix = key.rstrip("/") + "/" if key else ""
    try:
        found = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        raise CommandError(f"--checkpoint: cannot list {uri}: {code or exc}") from None
    if not found.get("KeyCount"):
        raise CommandError(f"--checkpoint: nothing exists under {uri}")


# ------------------------------------------------------------------------- config


def build_config(
    working_dir: str,
    checkpoint: str,
    pip: Sequence[str] | None = None,
    args: Mapping[str, Any] | None = None,
    app: str = workloads.DEFAULT_SERVE_APP,
) -> dict[str, Any]:
    """The Serve config: the builder with the checkpoint, the package as working dir."""
    spec = workloads.SERVE_APPS[app]
    try:
        config = workloads.serve_config(
            working_dir=working_dir,
            checkpoint=checkpoint,
            extra_args=args,
            import_path=spec.import_path,
            app_name=spec.name,
            route_prefix=spec.route_prefix,
        )
    except manifests.ManifestError as exc:
        raise CommandError(str(exc)) from None
    if pip:
        for app in config["applications"]:
            app["runtime_env"]["pip"] = {"packages": list(pip), "pip_check": False}
    return config


def app_name(config: Mapping[str, Any]) -> str:
    return config["applications"][0]["name"]


# ------------------------------------------------------------------------- deploy


def serve_deploy(address: str, config: Mapping[str, Any], token: str | None) -> None:
    """`serve deploy` the config to the cluster whose dashboard is `address`."""
    with tempfile.NamedTemporaryFile(
        "w", prefix="raygpu-serve-", suffix=".yaml", delete=False
    ) as handle:
        yaml.safe_dump(dict(config), handle, sort_keys=False)
        path = handle.name
    try:
        argv = [ray_cli("serve"), "deploy", path, "--address", address]
        proc = subprocess.run(
            argv, env=ray_client_env(token), capture_output=True, text=True
        )
    finally:
        os.unlink(path)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        raise CommandError(
            "`serve deploy` failed: " + (lines[-1].strip() if lines else "no output")
        )


def with_other_apps(
    address: str, config: Mapping[str, Any], token: str | None
) -> dict[str, Any]:
    """`config` plus the cluster's other deployed applications, as they run.

    A Serve config is declarative: `serve deploy` of one application would
    delete the others (serving the LM would stop the classifier)."""
    ours = {app["name"] for app in config["applications"]}
    details = dashboard_get(address, "/api/serve/applications/", token) or {}
    others = [
        dict(status["deployed_app_config"])
        for name, status in sorted((details.get("applications") or {}).items())
        if name not in ours and status.get("deployed_app_config")
    ]
    return {**config, "applications": [*others, *config["applications"]]}


def app_status(address: str, name: str, token: str | None) -> dict[str, Any] | None:
    """The application's entry from Serve's REST API (what `serve status` shows)."""
    details = dashboard_get(address, "/api/serve/applications/", token) or {}
    return (details.get("applications") or {}).get(name)


def failure_reason(status: Mapping[str, Any]) -> str:
    """Why Serve says the app failed: a deployment's message, else the app's."""
    messages = [
        f"{name}: {deployment['message']}"
        for name, deployment in sorted((status.get("deployments") or {}).items())
        if (deployment.get("message") or "").strip()
    ]
    messages.append(status.get("message") or "")
    text = next((m for m in messages if m.strip()), "no message from Serve")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    # Serve's messages end with the exception: its last line says what happened.
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def wait_running(
    address: str,
    name: str,
    token: str | None,
    timeout_s: float = 900.0,
    interval_s: float = 5.0,
    clock: Clock | None = None,
) -> dict[str, Any]:
    """Wait until app `name` is RUNNING; CommandError with Serve's reason if not."""
    last: dict[str, Any] = {}

    def running() -> dict[str, Any] | None:
        status = app_status(address, name, token)
        if status is None:
            return None
        last.clear()
        last.update(status)
        state = status.get("status")
        if state in FAILED_STATES:
            raise CommandError(
                f"application {name!r} is {state}: {failure_reason(status)}"
            )
        return status if state == "RUNNING" else None

    def still() -> str:
        state = last.get("status", "not deployed yet")
        return f"application {name!r} to be RUNNING (still {state})"

    return wait_until(running, timeout_s, still, interval_s, clock)


def deploy(
    address: str,
    config: Mapping[str, Any],
    token: str | None = None,
    timeout_s: float = 900.0,
) -> dict[str, Any]:
    """Deploy and wait; returns the application's status when RUNNING."""
    address = check_address(address)
    serve_deploy(address, with_other_apps(address, config, token), token)
    name = app_name(config)
    print(f"deployed application {name!r}; waiting until it is RUNNING", flush=True)
    return wait_running(address, name, token, timeout_s=timeout_s)


def private_access_hint(
    outputs: StackOutputs, name: str, probe: str = "/healthz"
) -> str:
    """How to reach the app from this laptop: port-forward, nothing exposed."""
    kubeconfig = f"~/.kube/raygpu-{outputs.stack}"
    stack = shlex.quote(outputs.stack)
    return "\n".join(
        [
            f"application {name!r} is RUNNING on stack {outputs.stack!r}. It is not "
            "exposed outside the cluster; reach it through a port-forward:",
            f"  (umask 077; pulumi stack output kubeconfig --show-secrets --stack "
            f"{stack} > {kubeconfig})",
            f"  kubectl --kubeconfig {kubeconfig} -n {outputs.ray_namespace} "
            f"port-forward --address 127.0.0.1 svc/{outputs.ray_head_service} "
            f"{SERVE_PORT}:{SERVE_PORT}",
            f"  curl http://127.0.0.1:{SERVE_PORT}{probe}",
        ]
    )


def serve_on_stack(
    outputs: StackOutputs,
    checkpoint: str,
    args: Mapping[str, Any],
    pip: Sequence[str] | None,
    timeout_s: float,
    app: str = workloads.DEFAULT_SERVE_APP,
) -> int:
    if outputs.cloud != "aws":
        # The package goes to S3 (boto3) only, so far: say so rather than fail there.
        raise CommandError(
            f"--stack: {outputs.stack} is a {outputs.cloud} stack, and serve uploads "
            "its package to S3 only so far (docs/clouds.md); on this stack, serve a "
            "RayService from `raygpu render`'s template"
        )
    import boto3

    s3 = boto3.Session(region_name=outputs.region).client("s3")
    check_checkpoint_in_s3(s3, checkpoint)
    data, sha = package_dir()
    uri = upload_package(s3, outputs.artifacts_bucket, data, sha)
    config = build_config(uri, checkpoint, pip=pip, args=args, app=app)
    with stack_access(outputs) as (url, token, _kubectl):
        deploy(url, config, token, timeout_s=timeout_s)
    probe = workloads.SERVE_APPS[app].probe
    print(private_access_hint(outputs, app_name(config), probe))
    return 0


def serve_on_address(
    address: str,
    checkpoint: str,
    args: Mapping[str, Any],
    timeout_s: float,
    package_dir_out: Path = LOCAL_PACKAGES,
    http_port: int = SERVE_PORT,
    app: str = workloads.DEFAULT_SERVE_APP,
) -> int:
    if not checkpoint.startswith("s3://"):
        path = Path(checkpoint).expanduser()
        if not path.exists():
            raise CommandError(f"--checkpoint: {checkpoint} does not exist")
        checkpoint = str(path.resolve())
    data, sha = package_dir()
    uri = write_local_package(data, sha, package_dir_out)
    config = build_config(uri, checkpoint, args=args, app=app)
    # A Serve instance this deploy starts listens on this machine's loopback only.
    config["http_options"] = {"host": "127.0.0.1", "port": http_port}
    deploy(address, config, timeout_s=timeout_s)
    print(
        f"application {app_name(config)!r} is RUNNING on {address}; if this deploy "
        f"started Serve, it answers on http://127.0.0.1:{http_port}"
        f"{workloads.SERVE_APPS[app].probe}"
    )
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_cluster_target(
        parser, "dashboard URL of a Ray cluster on this machine (package as file://)"
    )
    parser.add_argument("--checkpoint", help="checkpoint folder (s3:// on a stack)")
    parser.add_argument(
        "--app",
        default=workloads.DEFAULT_SERVE_APP,
        choices=sorted(workloads.SERVE_APPS),
        help="classifier (train.py's checkpoints) or lm (an LM export behind "
        "OpenAI's API at /lm/v1)",
    )
    parser.add_argument(
        "--variant",
        default="fp32",
        choices=VARIANTS,
        help="fp32 (as trained) or a variant compress.py made of the checkpoint",
    )
    parser.add_argument(
        "--num-replicas",
        type=options.positive_int("--num-replicas"),
        metavar="N",
        help="a fixed number of replicas (default 1), instead of autoscaling",
    )
    parser.add_argument(
        "--num-gpus", type=float, default=None, help="GPUs per replica (default 0)"
    )
    parser.add_argument(
        "--timeout",
        type=options.positive("--timeout"),
        default=900.0,
        help="seconds to wait (900)",
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=SERVE_PORT,
        help=f"with --address: port of a Serve instance this deploy starts "
        f"({SERVE_PORT})",
    )
    parser.add_argument(
        "--no-requirements",
        action="store_true",
        help="with --stack: do not pip-install ray_jobs/requirements.txt",
    )
    options.add_autoscaling(parser)
    llm.add_arguments(parser)  # --llm MODEL: Ray Serve LLM instead of the app


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    options.check_cluster_target(parser, args)
    llm.check_arguments(parser, args)
    if args.llm:
        return
    if args.checkpoint is None:
        parser.error("give --checkpoint URI (the app) or --llm MODEL (Serve LLM)")
    if args.num_replicas is not None and options.autoscaling_given(args):
        parser.error(
            "--num-replicas: a fixed count, or autoscaling (--min-replicas, "
            "--max-replicas, ...), not both"
        )
    if args.num_gpus is not None and args.num_gpus < 0:
        parser.error("--num-gpus: must be >= 0")
    if args.app == "lm" and args.variant != "fp32":
        parser.error("--variant: the lm app serves its export as it is (fp32)")
    if args.variant != "fp32" and args.num_gpus:
        parser.error(
            f"--num-gpus: the {args.variant} variant runs on the CPU; leave "
            "--num-gpus out or serve --variant fp32"
        )
    if not args.checkpoint.strip():
        parser.error("--checkpoint: must not be empty")


def run(args: argparse.Namespace) -> int:
    if args.llm:
        return llm.run(args)
    app_args: dict[str, Any] = {}
    if args.num_replicas is not None:
        app_args["num_replicas"] = args.num_replicas
    if autoscaling := options.autoscaling_given(args):
        app_args["autoscaling"] = autoscaling
    if args.num_gpus is not None:
        app_args["num_gpus"] = args.num_gpus
    if args.variant != "fp32":
        app_args["variant"] = args.variant
    if args.address:
        return serve_on_address(
            args.address,
            args.checkpoint,
            app_args,
            args.timeout,
            http_port=args.http_port,
            app=args.app,
        )
    outputs = load_outputs(args.stack, args.outputs)
    pip = None if args.no_requirements else read_requirements()
    return serve_on_stack(
        outputs, args.checkpoint, app_args, pip, args.timeout, app=args.app
    )
