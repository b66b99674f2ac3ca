"""The main job on the embedded default, a local Ray cluster: push, prepare,
train, serve, check.

1. Starts a local Ray head (`ray start --head`, dashboard on 127.0.0.1 only, token
   authentication on), unless RAY_ADDRESS names a running cluster's GCS.
2. Pushes the raw digits (scikit-learn's digits.csv.gz) to local storage,
   <storage>/raw/digits, as `raygpu data push --to` does.
3. Submits ray_jobs/prepare.py as a Ray job (the path `raygpu submit --address`
   takes for any cluster), streaming its logs: raw/digits -> prepared/digits.
4. Submits ray_jobs/train.py on the prepared dataset: 2 workers streaming it
   through Ray Data. Each worker takes half a CPU (--cpus-per-worker), so that
   Ray Data keeps a CPU to read with on a 2-core machine.
5. Deploys the serving app on the final checkpoint (as `raygpu serve --address`).
6. Submits ray_jobs/evaluate_served.py, which sends the prepared test split, raw,
   to the app over HTTP; the app normalises it with the checkpoint's statistics.
7. Prints `test_accuracy=` (from the training job's result file) and
   `served_accuracy=` (from the HTTP answers), then stops what it started. Exits
   non-zero, saying which step failed, when any step fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from raygpu import serve as serve_cmd
from raygpu import submit as submit_cmd
from raygpu.data.push import parse_target, push
from raygpu.errors import CommandError, UsageError
from raygpu.localray import free_port, start_head, stop_head
from raygpu.names import LOOPBACK, PREPARED_PREFIX, RAW_PREFIX
from raygpu.rayclient import client_auth_env, ray_cli, ray_client_env

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STORAGE = REPO / "demo-output"
SERVE_TIMEOUT_S = 600.0


class DemoError(CommandError):
    def __init__(self, step: str, message: str):
        super().__init__(f"step '{step}' failed: {message}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument(
        "--cpus-per-worker",
        type=float,
        default=0.5,
        help="CPUs each training worker reserves; the rest is Ray Data's (0.5)",
    )
    p.add_argument(
        "--storage-path",
        default=str(DEFAULT_STORAGE),
        help="where checkpoints and result.json go (default: ./demo-output)",
    )
    p.add_argument("--min-accuracy", type=float, default=0.95)
    p.add_argument("--batch", type=int, default=64, help="instances per request")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    # train.py and evaluate_served.py check their own flags.
    if importlib.util.find_spec("ray") is None:
        raise UsageError(
            "the demo runs Ray and torch, which an operator-only install lacks; "
            "run `make venv` (or `make demo`) first"
        )


def read_json(path: Path, step: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DemoError(step, f"no readable result at {path}: {exc}") from None


def run_job(dashboard_url: str, entrypoint: list[str], step: str) -> None:
    code = submit_cmd.submit(dashboard_url, entrypoint, env=client_auth_env())
    if code != 0:
        raise DemoError(step, f"the {step} job failed (see its log above)")


def digits_file() -> Path:
    """scikit-learn's digits.csv.gz, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    raise DemoError("push", "scikit-learn's digits.csv.gz is not installed")


def push_and_prepare(dashboard_url: str, args: argparse.Namespace) -> str:
    """Raw digits into <storage>/raw/digits, prepared into prepared/digits."""
    storage = Path(args.storage_path)
    raw = storage / RAW_PREFIX / "digits"
    prepared = storage / PREPARED_PREFIX / "digits"
    try:
        push(digits_file(), parse_target(str(raw)))
    except CommandError as exc:
        raise DemoError("push", str(exc)) from None
    run_job(
        dashboard_url,
        [
            "python",
            "prepare.py",
            "--format",
            "digits",
            "--source",
            str(raw),
            "--output",
            str(prepared),
        ],
        "prepare",
    )
    return str(prepared)


def train(
    dashboard_url: str, args: argparse.Namespace, run_name: str, data: str
) -> dict:
    run_job(
        dashboard_url,
        [
            "python",
            "train.py",
            "--num-workers",
            str(args.num_workers),
            "--cpus-per-worker",
            f"{args.cpus_per_worker:g}",
            "--data",
            data,
            "--epochs",
            str(args.epochs),
            "--storage-path",
            args.storage_path,
            "--run-name",
            run_name,
        ],
        "train",
    )
    return read_json(Path(args.storage_path) / run_name / "result.json", "train")


def serve_and_check(
    dashboard_url: str,
    checkpoint: str,
    args: argparse.Namespace,
    run_name: str,
    data: str,
) -> float:
    port = free_port()
    try:
        serve_cmd.serve_on_address(
            dashboard_url, checkpoint, {}, SERVE_TIMEOUT_S, http_port=port
        )
    except CommandError as exc:
        raise DemoError("serve", str(exc)) from None
    output = Path(args.storage_path) / run_name / "served.json"
    run_job(
        dashboard_url,
        [
            "python",
            "evaluate_served.py",
            "--url",
            f"http://{LOOPBACK}:{port}",
            "--data",
            data,
            "--batch",
            str(args.batch),
            "--output",
            str(output),
        ],
        "check",
    )
    return float(read_json(output, "check")["served_accuracy"])


def shutdown_serve(dashboard_url: str) -> None:
    """Remove what the demo deployed from a cluster it did not start."""
    subprocess.run(
        [ray_cli("serve"), "shutdown", "--yes", "--address", dashboard_url],
        env=ray_client_env(None),
        capture_output=True,
        timeout=120,
    )


def running_cluster(address: str) -> str:
    """The job API URL of the running cluster whose GCS is `address`."""
    import ray

    ctx = ray.init(address=address, logging_level="WARNING")
    try:
        return "http://" + ctx.dashboard_url
    finally:
        ray.shutdown()


def run(args: argparse.Namespace) -> int:
    os.environ.update(client_auth_env())
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    args.storage_path = str(Path(args.storage_path).expanduser().resolve())
    started = None
    t0 = time.monotonic()
    try:
        if os.environ.get("RAY_ADDRESS"):
            address = os.environ["RAY_ADDRESS"]
            dashboard_url = running_cluster(address)
            print(
                f"using the running cluster at {address} (job API {dashboard_url})",
                flush=True,
            )
        else:
            print("starting a local Ray head on 127.0.0.1 ...", flush=True)
            started = start_head()
            dashboard_url = started.dashboard_url
            print(
                f"Ray head up: GCS {started.address}, job API {dashboard_url}",
                flush=True,
            )
        run_name = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
        data = push_and_prepare(dashboard_url, args)
        result = train(dashboard_url, args, run_name, data)
        test_accuracy = float(result["metrics"]["test_accuracy"])
        checkpoint = result["checkpoint"]
        print(f"deploying the serving app on {checkpoint} ...", flush=True)
        try:
            served_accuracy = serve_and_check(
                dashboard_url, checkpoint, args, run_name, data
            )
        finally:
            if started is None:
                shutdown_serve(dashboard_url)
    finally:
        if started is not None:
            stop_head(started.temp_dir)
    print(f"test_accuracy={test_accuracy:.4f}")
    print(f"served_accuracy={served_accuracy:.4f}")
    print(f"demo finished in {time.monotonic() - t0:.0f}s")
    if min(test_accuracy, served_accuracy) < args.min_accuracy:
        raise DemoError(
            "check",
            f"accuracy below {args.min_accuracy} "
            f"(test {test_accuracy:.4f}, served {served_accuracy:.4f})",
        )
    return 0
