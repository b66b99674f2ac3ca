"""The OpenAI endpoints over the engine: one serving class per endpoint.

`OpenAIServing` turns a request body into a prompt and `SamplingParams`, checks
them against `ServingLimits`, submits the sequence and answers: one JSON object,
or server-sent events (`data: {chunk}` per piece of text, `data: [DONE]` last).
Text is released token by token as whole UTF-8 characters, held back only while
it could still be the start of a stop string. Errors are `ApiError`s in
OpenAI's shape; the HTTP layer (lm_serve_app) renders them.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from starlette.responses import JSONResponse, Response, StreamingResponse

from lm.serving.engine import Engine, EngineError, QueueFull, SamplingParams, Stream
from lm.serving.protocol import (
    CHAT_STOP,
    SSE_DONE,
    ApiError,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessageOut,
    Completion,
    CompletionChoice,
    CompletionRequest,
    Delta,
    ModelCard,
    ModelList,
    Usage,
    chat_prompt,
    parse_request,
    sse,
)
from lm.tokenizer import EOT, decode, encode

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class ServingLimits:
    context: int  # prompt + completion tokens
    max_prompt_tokens: int
    max_tokens_cap: int
    request_timeout_s: float
    retry_after_s: int


class TextAssembler:
    """Byte tokens in, text out: whole characters only, and nothing past the
    first stop string (`stopped` once one matched)."""

    def __init__(self, stops: list[str]):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = stops
        self._pending = ""
        self.stopped = False

    def feed(self, token: int) -> str:
        if self.stopped:
            return ""
        # a byte id is its byte; EOT (kept under ignore_eos) is the tokenizer's
        data = bytes([token]) if token < 256 else decode([token]).encode()
        self._pending += self._decoder.decode(data)
        return self._release()

    def flush(self) -> str:
        if self.stopped:
            return ""
        self._pending += self._decoder.decode(b"", final=True)
        out, self._pending = self._pending, ""
        return out

    def _release(self) -> str:
        text = self._pending
        hits = [i for i in (text.find(s) for s in self._stops) if i >= 0]
        if hits:
            self.stopped = True
            self._pending = ""
            return text[: min(hits)]
        # hold back the longest tail that could begin a stop string
        hold = max(
            (k for s in self._stops for k in range(1, len(s)) if text.endswith(s[:k])),
            default=0,
        )
        self._pending = text[len(text) - hold :]
        return text[: len(text) - hold]


class EngineStreamResponse(StreamingResponse):
    """A streaming response that ends its sequence however the response ends:
    done, the client gone (Starlette cancels the body), or the task cancelled."""

    def __init__(self, content, on_close: Callable[[], None], **kwargs):
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


class OpenAIServing:
    """What completions and chat share; subclasses say how a request becomes a
    prompt and how answers and chunks look."""

    request_type: type = CompletionRequest
    id_prefix = "cmpl"
    prompt_param = "prompt"

    def __init__(self, engine: Engine, model_name: str, limits: ServingLimits):
        self.engine = engine
        self.model_name = model_name
        self.limits = limits

    # -------------------------------------------------------------- subclass API
    def prompt_ids(self, req) -> list[int]:
        raise NotImplementedError

    def stops(self, req) -> list[str]:
        return req.stop_strings()

    def max_tokens(self, req) -> tuple[int | None, str]:
        return req.max_tokens, "max_tokens"

    def answer(self, rid: str, text: str, finish: str, usage: Usage) -> dict:
        raise NotImplementedError

    def chunk(self, rid: str, text: str | None, finish: str | None, first: bool):
        raise NotImplementedError

    def usage_chunk(self, rid: str, usage: Usage):
        raise NotImplementedError

    # -------------------------------------------------------------- the request
    async def create(self, body: bytes) -> Response:
        deadline = asyncio.get_running_loop().time() + self.limits.request_timeout_s
        req = parse_request(body, self.request_type)
        if req.model != self.model_name:
            raise ApiError(
                404,
                f"model {req.model!r} is not served here; this app serves "
                f"{self.model_name!r}",
                "model",
                code="model_not_found",
            )
        prompt = self.prompt_ids(req)
        params = self.sampling(req, len(prompt))
        rid = f"{self.id_prefix}-{uuid.uuid4().hex}"
        try:
            stream = self.engine.submit(prompt, params, rid)
        except QueueFull as exc:
            raise ApiError(
                503,
                f"the server is at capacity ({exc}); retry after "
                f"{self.limits.retry_after_s}s",
                type="server_error",
                code="queue_full",
                headers={"Retry-After": str(self.limits.retry_after_s)},
            ) from None
        stops = self.stops(req)
        if req.stream:
            events = self._events(stream, rid, stops, req.include_usage(), deadline)
            return EngineStreamResponse(
                events,
                on_close=stream.cancel,
                media_type="text/event-stream",
                # no proxy in between may hold tokens back or cache the stream
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            text, finish = await self._collect(stream, stops, deadline)
        finally:
            stream.cancel()
        usage = Usage.of(stream.prompt_tokens, stream.completion_tokens)
        return JSONResponse(self.answer(rid, text, finish, usage))

    def sampling(self, req, prompt_tokens: int) -> SamplingParams:
        limits = self.limits
        param = self.prompt_param
        if prompt_tokens == 0:
            raise ApiError(400, f"{param}: must not be empty", param)
        if prompt_tokens > limits.max_prompt_tokens:
            raise ApiError(
                400,
                f"{param}: {prompt_tokens} tokens, more than the limit of "
                f"{limits.max_prompt_tokens} (context {limits.context})",
                param,
                code="context_length_exceeded",
            )
        requested, name = self.max_tokens(req)
        room = limits.context - prompt_tokens
        if requested is None:
            requested = min(limits.max_tokens_cap, room)
        if requested > limits.max_tokens_cap:
            raise ApiError(
                400,
                f"{name}: {requested} is more than the limit of "
                f"{limits.max_tokens_cap}",
                name,
            )
        if requested > room:
            raise ApiError(
                400,
                f"{name}: the prompt's {prompt_tokens} tokens and {requested} "
                f"new ones exceed the context of {limits.context} tokens; ask "
                f"for at most {room}",
                name,
                code="context_length_exceeded",
            )
        return SamplingParams(
            max_tokens=requested,
            temperature=req.temperature,
            top_p=req.top_p,
            seed=req.seed,
            stop_at_eot=not req.ignore_eos,
        )

    async def _collect(
        self, stream: Stream, stops: list[str], deadline: float
    ) -> tuple[str, str]:
        parts, assembler = [], TextAssembler(stops)
        try:
            async with asyncio.timeout_at(deadline):
                async for token in stream:
                    parts.append(assembler.feed(token))
                    if assembler.stopped:
                        break
        except TimeoutError:
            raise self._timeout() from None
        except EngineError as exc:
            raise ApiError(500, str(exc), type="server_error") from None
        parts.append(assembler.flush())
        return "".join(parts), self._finish(stream, assembler)

    async def _events(
        self,
        stream: Stream,
        rid: str,
        stops: list[str],
        include_usage: bool,
        deadline: float,
    ) -> AsyncIterator[bytes]:
        assembler = TextAssembler(stops)
        try:
            opening = self.chunk(rid, None, None, first=True)
            if opening is not None:
                yield sse(opening)
            async with asyncio.timeout_at(deadline):
                async for token in stream:
                    text = assembler.feed(token)
                    if text:
                        yield sse(self.chunk(rid, text, None, first=False))
                    if assembler.stopped:
                        break
            stream.cancel()
            tail = assembler.flush()
            if tail:
                yield sse(self.chunk(rid, tail, None, first=False))
            finish = self._finish(stream, assembler)
            yield sse(self.chunk(rid, None, finish, first=False))
            if include_usage:
                usage = Usage.of(stream.prompt_tokens, stream.completion_tokens)
                yield sse(self.usage_chunk(rid, usage))
        except TimeoutError:
            stream.cancel()
            yield sse(self._timeout().body())
        except EngineError as exc:
            yield sse(ApiError(500, str(exc), type="server_error").body())
        except Exception as exc:  # once streaming, an error event is all there is
            logger.exception("LM stream failed")
            message = f"internal error: {type(exc).__name__}"
            yield sse(ApiError(500, message, type="server_error").body())
        yield SSE_DONE

    def _finish(self, stream: Stream, assembler: TextAssembler) -> str:
        if assembler.stopped or stream.finish_reason == "stop":
            return "stop"
        return "length"

    def _timeout(self) -> ApiError:
        return ApiError(
            408,
            f"no answer within request_timeout_s={self.limits.request_timeout_s}s",
            type="timeout_error",
            code="timeout",
        )


class OpenAIServingCompletion(OpenAIServing):
    request_type = CompletionRequest
    id_prefix = "cmpl"
    prompt_param = "prompt"

    def prompt_ids(self, req: CompletionRequest) -> list[int]:
        if isinstance(req.prompt, str):
            return encode(req.prompt)
        if bad := [t for t in req.prompt if not 0 <= t <= EOT]:
            raise ApiError(
                400, f"prompt: token id {bad[0]} is not in 0..{EOT}", "prompt"
            )
        return list(req.prompt)

    def answer(self, rid, text, finish, usage) -> dict:
        return Completion(
            id=rid,
            model=self.model_name,
            choices=[CompletionChoice(text=text, finish_reason=finish)],
            usage=usage,
        ).model_dump()

    def chunk(self, rid, text, finish, first):
        if first:  # completions open with no role chunk
            return None
        return Completion(
            id=rid,
            model=self.model_name,
            choices=[CompletionChoice(text=text or "", finish_reason=finish)],
        )

    def usage_chunk(self, rid, usage):
        return Completion(id=rid, model=self.model_name, choices=[], usage=usage)


class OpenAIServingChat(OpenAIServing):
    request_type = ChatCompletionRequest
    id_prefix = "chatcmpl"
    prompt_param = "messages"

    def prompt_ids(self, req: ChatCompletionRequest) -> list[int]:
        return encode(chat_prompt(req.messages))

    def stops(self, req: ChatCompletionRequest) -> list[str]:
        return [*req.stop_strings(), CHAT_STOP]

    def max_tokens(self, req: ChatCompletionRequest) -> tuple[int | None, str]:
        return req.requested_max_tokens()

    def answer(self, rid, text, finish, usage) -> dict:
        return ChatCompletion(
            id=rid,
            model=self.model_name,
            choices=[
                ChatChoice(message=ChatMessageOut(content=text), finish_reason=finish)
            ],
            usage=usage,
        ).model_dump()

    def chunk(self, rid, text, finish, first):
        delta = Delta(role="assistant", content="") if first else Delta(content=text)
        return ChatCompletionChunk(
            id=rid,
            model=self.model_name,
            choices=[ChatChunkChoice(delta=delta, finish_reason=finish)],
        )

    def usage_chunk(self, rid, usage):
        return ChatCompletionChunk(
            id=rid, model=self.model_name, choices=[], usage=usage
        )


class OpenAIServer:
    """The three endpoints of one replica, over one engine."""

    def __init__(self, engine: Engine, model_name: str, limits: ServingLimits):
        self.engine = engine
        self.model_name = model_name
        self.created = int(time.time())
        self.completions = OpenAIServingCompletion(engine, model_name, limits)
        self.chat = OpenAIServingChat(engine, model_name, limits)
        self.limits = limits

    def models(self) -> dict:
        card = ModelCard(
            id=self.model_name, created=self.created, max_model_len=self.limits.context
        )
        return ModelList(data=[card]).model_dump()


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
