"""A hand-written single-process FastAPI/uvicorn server: the benchmark's baseline.

    PYTHONPATH=ray_jobs:. python -m scripts.bench.fastapi_server \\
        --checkpoint DIR --port 8011

What a user would write instead of Ray Serve: one uvicorn process, the model
loaded once, one torch thread (like a Serve replica with num_cpus=1), each
request's forward pass run on its own (no batching). It accepts the same request
formats as serve_app (JSON, or float32 with X-Instances) through the same
parsing functions, and answers the same JSON.
"""

import argparse
import math
import sys

from raygpu.names import LOOPBACK


def build(checkpoint: str, threads: int):
    import numpy as np
    import torch
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from mlcore.allocator import keep_freed_memory
    from mlcore.checkpointing import load_model
    from serve_app import (
        DEFAULT_MAX_BODY_BYTES,
        DEFAULT_MAX_INSTANCES,
        INSTANCES_HEADER,
        BadRequest,
        parse_request,
    )

    keep_freed_memory()  # as ModelServer does, so both sides share the allocator
    torch.set_num_threads(threads)
    model, meta = load_model(checkpoint)
    shape = tuple(int(v) for v in meta["model"]["image_shape"])
    features = math.prod(shape)
    app = FastAPI(docs_url=None, redoc_url=None)

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        try:
            x = parse_request(
                await request.body(),
                request.headers.get("content-type"),
                request.headers.get(INSTANCES_HEADER),
                features,
                DEFAULT_MAX_INSTANCES,
                DEFAULT_MAX_BODY_BYTES,
            )
        except BadRequest as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        with torch.inference_mode():
            t = torch.from_numpy(x).view(len(x), *shape)
            probs = torch.softmax(model(t).float(), dim=1).numpy()
        return JSONResponse(
            {
                "predictions": probs.argmax(axis=1).tolist(),
                "probabilities": np.round(probs, 6).tolist(),
            }
        )

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return app


def main() -> int:
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    app = build(args.checkpoint, args.threads)
    uvicorn.run(app, host=LOOPBACK, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
