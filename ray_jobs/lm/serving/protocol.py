"""OpenAI's request and response shapes for the LM app, as pydantic models.

Requests are strict (`extra="forbid"`: a misspelt or unsupported field is a 400
naming it). Only what the engine does is accepted: one choice (`n` 1), text
prompts or byte-level token ids, `max_tokens`, `temperature`, `top_p`, `stop`,
`seed`, `stream`, `stream_options.include_usage`, and vLLM's `ignore_eos`.

The chat template (the model is a byte-level base model, trained on plain text):
each message becomes a line `Role: content` (System, User, Assistant), then
`Assistant:` opens the answer; the answer stops at a new `\\nUser:` line (a stop
string the chat endpoint always adds) or EOT.

    [{"role": "system", "content": "Be brief."},
     {"role": "user", "content": "Hi"}]
    ->  "System: Be brief.\\nUser: Hi\\nAssistant:"
"""

from __future__ import annotations

import json
import re
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_STOP = 4  # OpenAI's own limit on stop strings
CHAT_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
CHAT_STOP = "\nUser:"


class ApiError(Exception):
    """An answer in OpenAI's error shape: status, message, type, param, code."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        type: str = "invalid_request_error",  # noqa: A002 - OpenAI's name
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.type, self.code, self.headers = type, code, headers or {}

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # vLLM's extension (send it in the client's extra_body): EOT does not end
    # the answer, so it runs to max_tokens (fixed lengths for benchmarks).
    ignore_eos: bool = False

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"only n=1 is supported (got {value})")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings (got {len(stops)})")
        if any(not s for s in stops):
            raise ValueError("a stop string must not be empty")
        return value

    def stop_strings(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Sampling):
    # text, or byte-level token ids (0-255 bytes, 256 EOT)
    prompt: str | list[int]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for completions


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # newer max_tokens

    def requested_max_tokens(self) -> tuple[int | None, str]:
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return self.max_tokens, "max_tokens"


def chat_prompt(messages: list[ChatMessage]) -> str:
    """The documented template (module docstring)."""
    lines = [f"{CHAT_ROLES[m.role]}: {m.text()}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


def _surrogate_field(value, path: str = "") -> str | None:
    """The first field whose text is not valid Unicode (bytes that were not
    UTF-8, or a lone surrogate escape): its dotted path."""
    if isinstance(value, str):
        return path if any("\ud800" <= ch <= "\udfff" for ch in value) else None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        if isinstance(key, str) and _surrogate_field(key) is not None:
            return f"{path}.{key}".lstrip(".") if path else key
        found = _surrogate_field(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def parse_request(body: bytes, model_type: type[_Sampling]) -> _Sampling:
    """The request in `body`, or ApiError(400) naming the field."""
    text = body.decode("utf-8", errors="surrogateescape")
    try:
        payload = json.loads(text)
    except RecursionError:
        raise ApiError(400, "the body is nested too deeply") from None
    except ValueError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "the body must be a JSON object")
    bad = _surrogate_field(payload)
    if bad is not None:
        raise ApiError(
            400, f"{bad}: text is not valid UTF-8 (or holds a lone surrogate)", bad
        )
    try:
        return model_type.model_validate(payload)
    except ValidationError as exc:
        raise _validation_error(exc, model_type) from None


# How pydantic names a union's branch in an error's location: not a field.
_BRANCH = re.compile(r"^(str|int|float|bool|none|list\[.*\]|dict\[.*\]|function-.*)$")


def _fields(loc) -> list[str]:
    return [str(p) for p in loc if not _BRANCH.match(str(p))]


def _validation_error(exc: ValidationError, model_type: type[BaseModel]) -> ApiError:
    errors = exc.errors()
    err = errors[0]
    fields = _fields(err["loc"])
    param = ".".join(fields) or None
    if err["type"] == "extra_forbidden":
        known = ", ".join(model_type.model_fields)
        where = ".".join(fields[:-1])
        scope = f" in {where}" if where else f"; {model_type.__name__} takes {known}"
        return ApiError(400, f"unknown field {fields[-1]!r}{scope}", param)
    if err["type"] == "missing":
        return ApiError(400, f"{param}: is required", param)
    branches = [
        str(e["loc"][-1])
        for e in errors
        if _fields(e["loc"]) == fields and _BRANCH.match(str(e["loc"][-1]))
    ]
    if len(branches) > 1:  # no branch of a union took the value
        got = type(err["input"]).__name__
        return ApiError(
            400, f"{param}: must be {' or '.join(branches)} (got {got})", param
        )
    message = err["msg"].removeprefix("Value error, ")
    return ApiError(400, f"{param}: {message}", param)


# ------------------------------------------------------------------ responses


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt: int, completion: int) -> Usage:
        return cls(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
        )


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None = None
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: str = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ChatMessageOut(BaseModel):
    role: str = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatMessageOut
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: str = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Delta(BaseModel):
    role: str | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: str = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "raygpu"
    max_model_len: int


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


def sse(obj: BaseModel | dict) -> bytes:
    """One server-sent event: `data: <json>` and a blank line."""
    data = obj.model_dump_json() if isinstance(obj, BaseModel) else json.dumps(obj)
    return f"data: {data}\n\n".encode()


SSE_DONE = b"data: [DONE]\n\n"
