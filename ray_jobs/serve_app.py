"""Ray Serve app: serve a checkpoint written by train.py over HTTP.

    POST /predict  {"instances": [[...], ...]}
                -> {"predictions": [...], "probabilities": [[...], ...]}
    POST /predict  Content-Type: application/octet-stream, X-Instances: N
                   body: N x features float32, little-endian, row-major
                -> the same JSON answer (no JSON parsing of the input)
    GET  /healthz  200 while the model is loaded

A checkpoint trained on a prepared dataset (train.py --data) carries the
normalisation statistics of its train split: instances arrive raw, in the
units of the source data, and the app normalises them with those statistics
(mlcore.prepared.Normalisation, the transform training applied) before the
forward pass.

Requests are batched dynamically (`@serve.batch`; `batching=false` runs each
request's forward pass on its own). Bad input gets 400 with a message
that names the problem, an oversized body 413, a request that outlasts
`request_timeout_s` 408; nothing a client sends makes a replica crash.

Deploy with the application builder and typed arguments:

    serve run serve_app:build_app checkpoint=<run folder>/checkpoint_epoch0009_attempt01

or import `app` (the checkpoint from $RAYGPU_CHECKPOINT).

`variant=int8|onnx|onnx-int8` serves a variant compress.py made of the
checkpoint (found in <checkpoint>/variants/<variant>/, or `checkpoint` names the
variant's folder): torch with torchao's int8 weights, or ONNX Runtime with as
many intra-op threads as the replica has CPUs. Its digests are checked when the
replica loads it; a variant that fails them is refused (mlcore.variants).
"""

import asyncio
import json
import math
import os
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from ray import serve
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from mlcore.autoscaling import ServeAutoscaling, check_replicas, replica_options

DEFAULT_MAX_INSTANCES = 256
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_BATCH_SIZE = 32
# How long a batch waits for more requests after its first. Short on purpose:
# the forward pass holds the replica's event loop, so on a busy replica the
# requests that arrived meanwhile are already queued when the next batch
# starts, and every further millisecond of waiting leaves the replica's core
# idle (measured in docs/performance.md).
DEFAULT_BATCH_WAIT_S = 0.001
# A body over max_body_bytes is still read (and dropped) up to this size before
# the 413 goes out, so the client, still sending, reads the answer instead of
# a reset; beyond it the connection is closed on it.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024
BINARY_TYPE = "application/octet-stream"
INSTANCES_HEADER = "x-instances"


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        super().__init__(message)


class ServeArgs(BaseModel):
    """Arguments of the serving application (validated, field names in errors)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt argument is an error

    checkpoint: str = Field(
        ..., min_length=1, description="local folder or s3://, gs://, abfs:// URI"
    )
    max_instances: int = Field(DEFAULT_MAX_INSTANCES, ge=1, le=100_000)
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024)
    max_batch_size: int = Field(DEFAULT_MAX_BATCH_SIZE, ge=1, le=4096)
    batch_wait_timeout_s: float = Field(DEFAULT_BATCH_WAIT_S, ge=0.0, le=5.0)
    request_timeout_s: float = Field(10.0, gt=0.0, le=600.0)
    # A fixed count, or `autoscaling` (one or the other; neither: 1 replica).
    num_replicas: int | None = Field(None, ge=1, le=1000)
    autoscaling: ServeAutoscaling | None = None
    max_ongoing_requests: int = Field(64, ge=1)
    max_queued_requests: int = Field(256, ge=-1)
    num_cpus: float = Field(1.0, ge=0.0)
    num_gpus: float = Field(0.0, ge=0.0)
    batching: bool = Field(True, description="dynamic batching (@serve.batch)")
    # mlcore.variants.VARIANTS (this module imports no mlcore at import time)
    variant: Literal["fp32", "int8", "onnx", "onnx-int8"] = Field(
        "fp32", description="the checkpoint as trained, or a compress.py variant"
    )

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_uri(cls, value: str) -> str:
        """A local folder or a well-formed storage URI (touches no storage)."""
        from mlcore.errors import JobInputError
        from mlcore.storage import parse_storage

        try:
            parse_storage(value, "checkpoint")
        except JobInputError as exc:
            raise ValueError(str(exc).removeprefix("checkpoint: ")) from None
        return value

    @model_validator(mode="after")
    def _variant_device(self) -> "ServeArgs":
        if self.variant != "fp32" and self.num_gpus > 0:
            raise ValueError(
                f"variant {self.variant} runs on the CPU (torchao int8 / ONNX "
                "Runtime's CPU build): set num_gpus to 0 or serve variant fp32"
            )
        return self

    @model_validator(mode="after")
    def _replicas(self) -> "ServeArgs":
        check_replicas(self.num_replicas, self.autoscaling)
        return self

    def replica_options(self) -> dict[str, Any]:
        """Serve's deployment options for the replica count."""
        return replica_options(self.num_replicas, self.autoscaling)

    @field_validator("max_queued_requests")
    @classmethod
    def _queue_limit(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError(
                f"must be -1 (no limit) or a positive integer (got {value})"
            )
        return value


def parse_instances(
    body: bytes,
    num_features: int,
    max_instances: int,
    max_body_bytes: int,
    image_shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Validate a JSON body; return float32 instances of shape (n, num_features).

    An instance is a flat list of num_features numbers or, given `image_shape`,
    nested exactly as that shape (C x H x W); no other nesting."""
    if len(body) > max_body_bytes:
        raise BadRequest(413, f"request body is larger than {max_body_bytes} bytes")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(400, "body is not valid JSON") from None
    except RecursionError:
        raise BadRequest(400, "body is nested too deeply") from None
    if not isinstance(payload, dict) or "instances" not in payload:
        raise BadRequest(400, "'instances' is missing: send {\"instances\": [[...]]}")
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise BadRequest(400, "'instances' must be a list of instances")
    if not instances:
        raise BadRequest(400, "'instances' is empty")
    if len(instances) > max_instances:
        raise BadRequest(
            400,
            f"'instances' has {len(instances)} items, more than the maximum "
            f"of {max_instances}",
        )
    try:
        arr = np.asarray(instances)
    except (ValueError, TypeError):
        raise BadRequest(
            400, f"each instance must be a list of {num_features} numbers"
        ) from None
    if arr.dtype.kind not in "iuf":
        raise BadRequest(
            400, f"instances must hold only numbers (each a list of {num_features})"
        )
    if arr.ndim < 2 or math.prod(arr.shape[1:]) != num_features:
        got = math.prod(arr.shape[1:]) if arr.ndim >= 2 else 1
        raise BadRequest(
            400, f"each instance must have {num_features} features (got {got})"
        )
    allowed = [(num_features,)] + ([tuple(image_shape)] if image_shape else [])
    if arr.shape[1:] not in allowed:
        nested = f" or nested as {_dims(image_shape)}" if image_shape else ""
        raise BadRequest(
            400,
            f"each instance must be a flat list of {num_features} numbers{nested} "
            f"(got {_dims(arr.shape[1:])})",
        )
    with np.errstate(over="ignore"):  # beyond float32's range -> inf, refused below
        out = arr.reshape(len(arr), num_features).astype(np.float32)
    if not np.isfinite(out).all():
        raise BadRequest(400, "instances must hold only finite numbers (no NaN/inf)")
    return out


def _dims(shape) -> str:
    return "x".join(str(int(v)) for v in shape)


def parse_binary(
    body: bytes,
    instances_header: str | None,
    num_features: int,
    max_instances: int,
    max_body_bytes: int,
) -> np.ndarray:
    """Validate a binary body (float32 little-endian); return (n, num_features)."""
    if len(body) > max_body_bytes:
        raise BadRequest(413, f"request body is larger than {max_body_bytes} bytes")
    if instances_header is None:
        raise BadRequest(
            400, "X-Instances header is missing: give the number of instances"
        )
    try:
        n = int(instances_header)
    except ValueError:
        raise BadRequest(400, "X-Instances must be a whole number") from None
    if not 1 <= n <= max_instances:
        raise BadRequest(
            400, f"X-Instances must be between 1 and {max_instances} (got {n})"
        )
    expected = n * num_features * 4
    if len(body) != expected:
        raise BadRequest(
            400,
            f"body has {len(body)} bytes; X-Instances: {n} needs {expected} "
            f"({n} x {num_features} float32 little-endian)",
        )
    # A writable native-order copy: torch.from_numpy refuses read-only buffers.
    out = np.frombuffer(body, dtype="<f4").astype(np.float32).reshape(n, num_features)
    if not np.isfinite(out).all():
        raise BadRequest(400, "instances must hold only finite numbers (no NaN/inf)")
    return out


def parse_request(
    body: bytes,
    content_type: str | None,
    instances_header: str | None,
    num_features: int,
    max_instances: int,
    max_body_bytes: int,
    image_shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """JSON or binary instances, chosen by Content-Type."""
    if (content_type or "").split(";")[0].strip().lower() == BINARY_TYPE:
        return parse_binary(
            body, instances_header, num_features, max_instances, max_body_bytes
        )
    return parse_instances(
        body, num_features, max_instances, max_body_bytes, image_shape
    )


async def read_body(request: Request, max_body_bytes: int) -> bytes:
    """The request's body, at most max_body_bytes (413 beyond). What comes past
    the limit is read and dropped, up to DRAIN_LIMIT_BYTES: see there."""
    declared = int(request.headers.get("content-length") or 0)  # ValueError: 400
    too_large = BadRequest(413, f"request body is larger than {max_body_bytes} bytes")
    if declared > DRAIN_LIMIT_BYTES:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= max_body_bytes:
            chunks.append(chunk)
        elif size > DRAIN_LIMIT_BYTES:
            break
    if size > max_body_bytes:
        raise too_large
    return b"".join(chunks)


# The app's two routes, matched by hand in ModelServer.__call__. No FastAPI
# ingress: its routing and middleware stack were a large share of a small
# model's request path (docs/performance.md).
ROUTES = {"/predict": "POST", "/healthz": "GET"}


def route_of(path: str, root_path: str) -> str:
    """The request's path below the app's route prefix (Serve sets the ASGI
    root_path to it; the path still starts with it)."""
    root_path = root_path.rstrip("/")
    if root_path and (path == root_path or path.startswith(root_path + "/")):
        path = path[len(root_path) :]
    return path.rstrip("/") or "/"


@serve.deployment(name="ModelServer")
class ModelServer:
    def __init__(self, args: dict[str, Any]):
        import torch

        from mlcore.allocator import keep_freed_memory
        from mlcore.variants import load_uri

        # Serve runs the handlers in a thread of their own (its default), where
        # glibc's arena gives each batch's freed buffers back to the kernel.
        # The settings are process-wide, so one call here is enough.
        keep_freed_memory()
        self.args = ServeArgs(**args)
        if self.args.checkpoint == "unset":
            raise ValueError(
                "no checkpoint: set RAYGPU_CHECKPOINT, or deploy "
                "serve_app:build_app with checkpoint=<folder or storage URI>"
            )
        # One math thread per CPU of the replica, for torch and ONNX Runtime.
        threads = max(1, int(self.args.num_cpus or 1))
        torch.set_num_threads(threads)
        self.device = (
            "cuda" if self.args.num_gpus and torch.cuda.is_available() else "cpu"
        )
        self.predictor, meta = load_uri(
            self.args.checkpoint, self.args.variant, threads, self.device
        )
        self.meta = meta
        self.normalisation = None
        if "normalisation" in meta:  # trained on a prepared dataset
            from mlcore.prepared import Normalisation

            self.normalisation = Normalisation.from_dict(meta["normalisation"])
        shape = meta["model"]["image_shape"]
        self.image_shape = tuple(int(v) for v in shape)
        self.num_features = math.prod(self.image_shape)
        self.reconfigure({})

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Tunables that can change without restarting replicas."""
        for key in ("max_batch_size", "batch_wait_timeout_s", "max_instances"):
            if key in user_config:
                self.args = self.args.model_copy(update={key: user_config[key]})
        self.predict_batch.set_max_batch_size(self.args.max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(self.args.batch_wait_timeout_s)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for instances of shape (n, num_features)."""
        if self.normalisation is not None:
            x = self.normalisation.apply(x)
        logits = self.predictor.logits(x.reshape(len(x), *self.image_shape))
        logits = logits.astype(np.float32, copy=False)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    @serve.batch(
        max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_S
    )
    async def predict_batch(self, requests: list[np.ndarray]) -> list[np.ndarray]:
        sizes = [len(r) for r in requests]
        probs = self.forward(np.concatenate(requests))
        return np.split(probs, np.cumsum(sizes)[:-1])

    async def __call__(self, request: Request) -> JSONResponse:
        route = route_of(request.scope["path"], request.scope.get("root_path", ""))
        method = ROUTES.get(route)
        if method is None:
            routes = ", ".join(f"{m} {r}" for r, m in ROUTES.items())
            return JSONResponse(
                {"error": f"no route {route}; this app serves {routes}"},
                status_code=404,
            )
        if request.method != method:
            return JSONResponse(
                {"error": f"{route} takes {method}, not {request.method}"},
                status_code=405,
                headers={"Allow": method},
            )
        if route == "/predict":
            return await self.predict(request)
        return await self.healthz()

    async def predict(self, request: Request) -> JSONResponse:
        try:
            body = await read_body(request, self.args.max_body_bytes)
            x = parse_request(
                body,
                request.headers.get("content-type"),
                request.headers.get(INSTANCES_HEADER),
                self.num_features,
                self.args.max_instances,
                self.args.max_body_bytes,
                self.image_shape,
            )
            if self.args.batching:
                probs = await asyncio.wait_for(
                    self.predict_batch(x), timeout=self.args.request_timeout_s
                )
            else:
                probs = self.forward(x)
        except BadRequest as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except ValueError:  # a malformed Content-Length header
            return JSONResponse({"error": "invalid Content-Length"}, status_code=400)
        except ClientDisconnect:  # gone before its body arrived: nobody to answer
            return JSONResponse({"error": "client disconnected"}, status_code=400)
        except TimeoutError:
            return JSONResponse(
                {"error": f"no answer within {self.args.request_timeout_s}s"},
                status_code=408,
            )
        return JSONResponse(
            {
                "predictions": probs.argmax(axis=1).tolist(),
                "probabilities": np.round(probs, 6).tolist(),
            }
        )

    async def healthz(self) -> JSONResponse:
        return JSONResponse(
            {
                "status": "ok",
                "model": self.meta["model"],
                "epoch": self.meta["epoch"],
                "variant": self.predictor.variant,
                "backend": self.predictor.backend,
                "device": self.device,
                "data": self.meta.get("data"),
            }
        )

    def check_health(self) -> None:
        if self.predictor is None:  # pragma: no cover - guarded by __init__
            raise RuntimeError("model not loaded")


def build_app(args: ServeArgs):
    """Application builder: `serve run serve_app:build_app checkpoint=...`."""
    if isinstance(args, dict):
        args = ServeArgs(**args)
    return ModelServer.options(
        **args.replica_options(),
        max_ongoing_requests=args.max_ongoing_requests,
        max_queued_requests=args.max_queued_requests,
        ray_actor_options={"num_cpus": args.num_cpus, "num_gpus": args.num_gpus},
    ).bind(args.model_dump())


# A ready application for `serve run serve_app:app` (checkpoint from the environment).
app = ModelServer.bind({"checkpoint": os.environ.get("RAYGPU_CHECKPOINT", "unset")})
