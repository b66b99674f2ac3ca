"""Deploy the LM app (lm_serve_app.build_app) on a running head at /lm.

    PYTHONPATH=ray_jobs:. python -m scripts.bench.lmserve_deploy --address ADDR \\
        --port 8000 --export DIR --model-name micro [--variant fp32]

One replica of 1 CPU (one torch thread), the app's default 16 sequences and
queue of 64; ray_jobs/ shipped as the job's working directory, as `raygpu
serve` ships it. Prints `deployed` when done.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raygpu.names import LOOPBACK

ROUTE = "/lm"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--address", required=True, help="the head's GCS address")
    p.add_argument("--port", type=int, required=True, help="Serve's HTTP port")
    p.add_argument("--export", required=True)
    p.add_argument("--model-name", required=True)
    p.add_argument("--variant", default="fp32")
    args = p.parse_args(argv)

    import lm_serve_app
    import ray
    from ray import serve
    from ray.serve.schema import LoggingConfig

    working_dir = str(Path(lm_serve_app.__file__).resolve().parent)  # ray_jobs/
    ray.init(
        address=args.address,
        runtime_env={
            "working_dir": working_dir,
            "excludes": ["__pycache__/", "*.pyc", "data/"],
        },
        log_to_driver=False,
    )
    serve.start(http_options={"host": LOOPBACK, "port": args.port})
    app_args = lm_serve_app.LMServeArgs(
        checkpoint=args.export,
        model_name=args.model_name,
        variant=args.variant,
        num_cpus=1.0,
    )
    serve.run(
        lm_serve_app.build_app(app_args),
        name="lm",
        route_prefix=ROUTE,
        blocking=False,
        logging_config=LoggingConfig(enable_access_log=False, log_level="WARNING"),
    )
    print("deployed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
