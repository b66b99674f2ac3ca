"""Deploy the benchmark's Serve apps on a running head, one model's at a time.

    PYTHONPATH=ray_jobs:. python -m scripts.bench.serve_deploy --address ADDR \\
        --port 8000 --replicas 2 --apps '{"cnn-serve_batched": [CKPT, true]}'

Deletes the apps already there, then runs `serve_app.build_app` once per app
(name -> [checkpoint, batching] or [checkpoint, batching, variant]) at route
/<name>, ray_jobs/ shipped as the job's working directory as `raygpu serve`
ships it. Prints `deployed` when done.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from raygpu.names import LOOPBACK


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--address", required=True, help="the head's GCS address")
    p.add_argument("--port", type=int, required=True, help="Serve's HTTP port")
    p.add_argument("--replicas", type=int, required=True, help="replicas per app")
    p.add_argument(
        "--apps", required=True, help="JSON: name -> [ckpt, batching(, variant)]"
    )
    p.add_argument("--access-log", action="store_true")
    args = p.parse_args(argv)

    import ray
    from ray import serve
    from ray.serve.schema import LoggingConfig

    import serve_app

    working_dir = str(Path(serve_app.__file__).resolve().parent)  # ray_jobs/
    ray.init(
        address=args.address,
        runtime_env={
            "working_dir": working_dir,
            "excludes": ["__pycache__/", "*.pyc", "data/"],
        },
        log_to_driver=False,
    )
    serve.start(http_options={"host": LOOPBACK, "port": args.port})
    for name in list(serve.status().applications):  # one model's apps at a time
        serve.delete(name)
    for name, (ckpt, batching, *variant) in json.loads(args.apps).items():
        app_args = serve_app.ServeArgs(
            checkpoint=ckpt,
            batching=batching,
            variant=variant[0] if variant else "fp32",
            num_replicas=args.replicas,
            num_cpus=0.5,
            max_ongoing_requests=64,
        )
        serve.run(
            serve_app.build_app(app_args),
            name=name,
            route_prefix="/" + name,
            blocking=False,
            logging_config=LoggingConfig(
                enable_access_log=args.access_log, log_level="WARNING"
            ),
        )
    print("deployed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
