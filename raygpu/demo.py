"""The main job on the embedded default, a local Ray cluster: train, serve, check.

1. Starts a local Ray head (`ray start --head`, dashboard on 127.0.0.1 only, token
   authentication on), unless RAY_ADDRESS names a running cluster's GCS.
2. Submits ray_jobs/train.py with `ray job submit --working-dir ray_jobs` (through
   scripts/submit.py --address, the same path used for any cluster), streaming its
   logs: 2 workers on digits, storage under a local folder.
3. Deploys the serving app on the final checkpoint, sends the test split over HTTP
   and checks the answers.
4. Prints `test_accuracy=` (from the job's result file) and `served_accuracy=`
   (from the HTTP answers), then stops what it started. Exits non-zero, saying
   which step failed, when any step fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from raygpu.errors import CommandError
from raygpu.localray import LocalRayError, free_port, start_head, stop_head
from raygpu.rayclient import client_auth_env

REPO = Path(__file__).resolve().parents[1]
RAY_JOBS = REPO / "ray_jobs"


class DemoError(CommandError):
    def __init__(self, step: str, message: str):
        super().__init__(f"step '{step}' failed: {message}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument(
        "--storage-path",
        default=str(REPO / "demo-output"),
        help="where checkpoints and result.json go (default: ./demo-output)",
    )
    p.add_argument("--min-accuracy", type=float, default=0.95)
    p.add_argument("--batch", type=int, default=64, help="instances per request")


def train(dashboard_url: str, args: argparse.Namespace, run_name: str) -> dict:
    entrypoint = [
        "python",
        "train.py",
        "--num-workers",
        str(args.num_workers),
        "--dataset",
        "digits",
        "--epochs",
        str(args.epochs),
        "--storage-path",
        args.storage_path,
        "--run-name",
        run_name,
    ]
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "submit.py"),
        "--address",
        dashboard_url,
        "--",
        *entrypoint,
    ]
    code = subprocess.call(cmd, env={**os.environ, **client_auth_env()})
    if code != 0:
        raise DemoError("train", f"the training job exited with status {code}")
    result_file = Path(args.storage_path) / run_name / "result.json"
    try:
        return json.loads(result_file.read_text())
    except (OSError, ValueError) as exc:
        raise DemoError(
            "train", f"no readable result at {result_file}: {exc}"
        ) from None


def post_json(url: str, payload: dict, timeout: float = 30) -> dict:
    req = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def serve_and_check(address: str, checkpoint: str, batch: int) -> float:
    import ray
    from ray import serve

    import serve_app
    from mlcore.data import load_dataset

    ray.init(
        address=address,
        runtime_env={"working_dir": str(RAY_JOBS)},
        log_to_driver=False,
        logging_level="WARNING",
    )
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(
            serve_app.build_app(serve_app.ServeArgs(checkpoint=checkpoint)),
            name="digits",
            route_prefix="/",
        )
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as resp:
            if resp.status != 200:
                raise DemoError("serve", f"/healthz answered {resp.status}")
        test = load_dataset("digits").test
        x = test.x.reshape(len(test.x), -1)
        correct = 0
        for i in range(0, len(x), batch):
            answer = post_json(
                f"{base}/predict", {"instances": x[i : i + batch].tolist()}
            )
            preds = answer["predictions"]
            if len(preds) != len(x[i : i + batch]):
                raise DemoError("serve", "wrong number of predictions")
            correct += sum(
                int(p == t) for p, t in zip(preds, test.y[i : i + batch], strict=True)
            )
        return correct / len(x)
    except urllib.error.URLError as exc:
        raise DemoError("serve", f"HTTP request failed: {exc}") from None
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def run(args: argparse.Namespace) -> int:
    os.environ.update(client_auth_env())
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = None
    t0 = time.monotonic()
    try:
        if os.environ.get("RAY_ADDRESS"):
            import ray

            address = os.environ["RAY_ADDRESS"]
            ctx = ray.init(address=address, logging_level="WARNING")
            dashboard_url = "http://" + ctx.dashboard_url
            ray.shutdown()
            print(f"using the running cluster at {address}", flush=True)
        else:
            print("starting a local Ray head on 127.0.0.1 ...", flush=True)
            started = start_head()
            address, dashboard_url = started.address, started.dashboard_url
            print(f"Ray head up: GCS {address}, job API {dashboard_url}", flush=True)
        run_name = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
        result = train(dashboard_url, args, run_name)
        test_accuracy = float(result["metrics"]["test_accuracy"])
        checkpoint = result["checkpoint"]
        print(f"deploying the serving app on {checkpoint} ...", flush=True)
        served_accuracy = serve_and_check(address, checkpoint, args.batch)
    except (DemoError, LocalRayError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo interrupted", file=sys.stderr)
        return 130
    finally:
        if started is not None:
            stop_head(started.temp_dir)
    print(f"test_accuracy={test_accuracy:.4f}")
    print(f"served_accuracy={served_accuracy:.4f}")
    print(f"demo finished in {time.monotonic() - t0:.0f}s")
    if min(test_accuracy, served_accuracy) < args.min_accuracy:
        print(
            f"demo failed: accuracy below {args.min_accuracy} "
            f"(test {test_accuracy:.4f}, served {served_accuracy:.4f})",
            file=sys.stderr,
        )
        return 1
    return 0
