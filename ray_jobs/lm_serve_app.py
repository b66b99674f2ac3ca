"""Ray Serve app: an exported LM checkpoint behind OpenAI's API.

    POST /v1/completions        {"model", "prompt", "max_tokens", "stream", ...}
    POST /v1/chat/completions   {"model", "messages", "max_tokens", "stream", ...}
    GET  /v1/models
    GET  /healthz               200 while the model is loaded
    GET  /stats                 the engine's counters (steps, batch sizes, queue)

The checkpoint is the consolidated export (`lm.checkpoint.export_full`: a
folder with model.pt and meta.json, local or s3://). Each replica runs one
engine (lm.serving.engine): a KV cache of `max_seqs` slots, iteration-level
batching, a queue of `max_queue` beyond which requests get 503 with
Retry-After. Requests and answers are OpenAI's (lm.serving.protocol, where the
chat template is documented); the official `openai` client works unchanged.

Deploy with the application builder and typed arguments:

    serve run lm_serve_app:build_app checkpoint=<export folder>

or import `app` (the export from $RAYGPU_LM_CHECKPOINT).
"""

import logging
import os
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from mlcore.autoscaling import ServeAutoscaling, check_replicas, replica_options
from serve_app import DRAIN_LIMIT_BYTES, BadRequest, read_body

logger = logging.getLogger("ray.serve")


class LMAutoscaling(ServeAutoscaling):
    """The classifier's autoscaling model with the LM's own defaults."""

    # A replica decodes up to max_seqs (16) streams at once: scale out at half
    # of that, before its queue forms.
    target_ongoing_requests: float = Field(8.0, gt=0.0, le=100_000.0)
    # A new LM replica loads its weights before it serves: slower to replace.
    downscale_delay_s: float = Field(600.0, ge=0.0, le=86_400.0)


class LMServeArgs(BaseModel):
    """Arguments of the LM serving application (validated, field names in errors)."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field(..., min_length=1, description="export folder or s3://")
    model_name: str | None = Field(None, min_length=1, description="default: folder")
    context: int | None = Field(None, ge=2, description="default: the model's")
    max_prompt_tokens: int | None = Field(None, ge=1, description="default: context-1")
    max_tokens_cap: int | None = Field(None, ge=1, description="default: context")
    max_seqs: int = Field(16, ge=1, le=1024, description="sequences batched")
    max_queue: int = Field(64, ge=0, le=100_000, description="waiting, then 503")
    retry_after_s: int = Field(1, ge=1, le=3600)
    request_timeout_s: float = Field(120.0, gt=0.0, le=3600.0)
    max_body_bytes: int = Field(1 << 20, ge=1024, le=DRAIN_LIMIT_BYTES)
    # A fixed count, or `autoscaling` (one or the other; neither: 1 replica).
    num_replicas: int | None = Field(None, ge=1, le=1000)
    autoscaling: LMAutoscaling | None = None
    num_cpus: float = Field(1.0, ge=0.0)
    num_gpus: float = Field(0.0, ge=0.0)
    # int8: torchao's int8 dynamic-activation/int8-weight Linear layers, made
    # at load (mlcore.compression.quantize_int8); its kernels are CPU ones.
    variant: Literal["fp32", "int8"] = "fp32"

    @model_validator(mode="after")
    def _consistent(self) -> "LMServeArgs":
        if self.variant == "int8" and self.num_gpus > 0:
            raise ValueError(
                "variant: int8 runs on CPUs only (torchao's int8 kernels); "
                "use variant=fp32 with num_gpus > 0, or num_gpus=0"
            )
        check_replicas(self.num_replicas, self.autoscaling)
        if self.context is not None:
            for name in ("max_prompt_tokens", "max_tokens_cap"):
                value = getattr(self, name)
                if value is not None and value > self.context:
                    raise ValueError(
                        f"{name} ({value}) must be <= context ({self.context})"
                    )
        return self

    def replica_options(self) -> dict[str, Any]:
        return replica_options(self.num_replicas, self.autoscaling)

    def max_ongoing_requests(self) -> int:
        # Room for every running and queued sequence plus the cheap GETs, so the
        # engine's own queue (503 + Retry-After) is the limit a client meets.
        return self.max_seqs + self.max_queue + 8


def prepare_model(model, variant: str, device: str):
    """The loaded model as a replica serves it: on `device`, int8 quantised
    (on the CPU: LMServeArgs refuses int8 with GPUs) when `variant` says so.
    Defined above LMServer: Serve serialises the class where it is declared."""
    if variant == "int8":
        from mlcore.compression import quantize_int8

        return quantize_int8(model)
    return model.to(device)


api = FastAPI(title="raygpu LM", docs_url=None, redoc_url=None, openapi_url=None)


@api.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """404 and 405 in OpenAI's error shape too."""
    from lm.serving.app import error_response
    from lm.serving.protocol import ApiError

    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(
        ApiError(
            exc.status_code,
            f"{request.method} {request.url.path}: {exc.detail}",
            code=codes.get(exc.status_code),
            headers=dict(exc.headers or {}),
        )
    )


@serve.deployment(name="LMServer")
@serve.ingress(api)
class LMServer:
    def __init__(self, args: dict[str, Any]):
        import torch

        from lm.checkpoint import load_exported
        from lm.serving.app import OpenAIServer, ServingLimits
        from lm.serving.engine import Engine, EngineLimits
        from mlcore.checkpointing import local_copy

        self.args = LMServeArgs(**args)
        if self.args.checkpoint == "unset":
            raise ValueError(
                "no checkpoint: set RAYGPU_LM_CHECKPOINT, or deploy "
                "lm_serve_app:build_app with checkpoint=<export folder or s3:// URI>"
            )
        torch.set_num_threads(max(1, int(self.args.num_cpus or 1)))
        with local_copy(self.args.checkpoint, "checkpoint") as directory:
            model, self.meta = load_exported(directory)
        device = "cuda" if self.args.num_gpus and torch.cuda.is_available() else "cpu"
        self.device = device
        model = prepare_model(model, self.args.variant, device)
        args = self.args
        context = args.context or model.config.context
        if context > model.config.context:
            raise ValueError(
                f"context: {context} is more than the model's {model.config.context}"
            )
        self.engine = Engine(
            model, EngineLimits(args.max_seqs, args.max_queue, context)
        )
        name = args.model_name or os.path.basename(args.checkpoint.rstrip("/"))
        self.server = OpenAIServer(
            self.engine,
            name,
            ServingLimits(
                context=context,
                max_prompt_tokens=min(
                    args.max_prompt_tokens or context - 1, context - 1
                ),
                max_tokens_cap=min(args.max_tokens_cap or context, context),
                request_timeout_s=args.request_timeout_s,
                retry_after_s=args.retry_after_s,
            ),
        )

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        return await self._create(self.server.completions, request)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        return await self._create(self.server.chat, request)

    @api.get("/v1/models")
    async def models(self) -> JSONResponse:
        return JSONResponse(self.server.models())

    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        return JSONResponse(
            {
                "status": "ok",
                "model": self.meta["model"],
                "position": self.meta.get("position"),
                "device": self.device,
                "variant": self.args.variant,
            }
        )

    @api.get("/stats")
    async def stats(self) -> JSONResponse:
        return JSONResponse(self.engine.stats())

    async def _create(self, serving, request: Request) -> Response:
        from lm.serving.app import error_response
        from lm.serving.protocol import ApiError

        try:
            body = await read_body(request, self.args.max_body_bytes)
            return await serving.create(body)
        except ApiError as exc:
            return error_response(exc)
        except BadRequest as exc:  # the body is over max_body_bytes
            return error_response(ApiError(exc.status, exc.message, code="too_large"))
        except ValueError:  # a malformed Content-Length header
            return error_response(ApiError(400, "invalid Content-Length"))
        except ClientDisconnect:  # gone before its body arrived: nobody to answer
            return error_response(ApiError(400, "client disconnected"))
        except Exception as exc:  # nothing a client sends takes the replica down
            logger.exception("LM request failed")
            return error_response(
                ApiError(
                    500, f"internal error: {type(exc).__name__}", type="server_error"
                )
            )

    def check_health(self) -> None:
        if self.server is None:  # pragma: no cover - guarded by __init__
            raise RuntimeError("model not loaded")


def build_app(args: "LMServeArgs | dict[str, Any]"):
    """Application builder: `serve run lm_serve_app:build_app checkpoint=...`."""
    if isinstance(args, dict):
        args = LMServeArgs(**args)
    return LMServer.options(
        **args.replica_options(),
        max_ongoing_requests=args.max_ongoing_requests(),
        ray_actor_options={"num_cpus": args.num_cpus, "num_gpus": args.num_gpus},
    ).bind(args.model_dump())


# A ready application for `serve run lm_serve_app:app` (export from the environment).
app = LMServer.bind({"checkpoint": os.environ.get("RAYGPU_LM_CHECKPOINT", "unset")})
