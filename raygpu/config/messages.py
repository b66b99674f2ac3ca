"""From pydantic's errors to ours: one line per bad key, the full key path, what
is allowed.

`describe(exc, model)` turns a ValidationError of `model` into (key, message)
pairs: `raygpu:gpuPools[0].maxSize`, `must be >= minSize (3), got 2`. Messages
written by the checks (raygpu.config.fields.bad) pass through; pydantic's own
(types, bounds, missing and unknown keys) are worded here from the field's
declaration: its bounds, its `why` note, the keys of its model.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterator, Sequence
from typing import Annotated, Any

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from raygpu.config.fields import ERROR_TYPE, Allowed, show
from raygpu.config.model import IDENTITY_FIELDS, NAMESPACE
from raygpu.errors import UsageError

CONFIG_DOC = "docs/config.md"

_TYPES = {
    "int_type": "an integer",
    "bool_type": "true or false",
    "float_type": "a number",
    "string_type": "a string",
    "tuple_type": "a list",
    "model_type": "an object (a YAML map)",
}


class ConfigError(UsageError, ValueError):
    """One or more bad config values; every entry names its key.

    `ConfigError("raygpu:azCount", "must be ...")` or `ConfigError([(key, msg), ...])`.
    """

    def __init__(
        self, key: str | Sequence[tuple[str, str]], message: str | None = None
    ):
        if isinstance(key, str):
            errors = [(key, message or "is invalid")]
        else:
            errors = list(key)
        self.errors: list[tuple[str, str]] = errors
        self.key = errors[0][0] if errors else ""
        self.keys = [k for k, _ in errors]
        super().__init__(str(self))

    def __str__(self) -> str:
        return "; ".join(f"{key}: {msg}" for key, msg in self.errors)


def key_path(loc: Sequence[int | str]) -> str:
    """("gpuPools", 0, "maxSize") -> "raygpu:gpuPools[0].maxSize"."""
    head, *rest = loc or ("",)
    text = str(head)
    if ":" not in text and text not in IDENTITY_FIELDS:  # aws:region, stack
        text = f"{NAMESPACE}:{text}"
    for part in rest:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


# ---------------------------------------------------------------- declarations


def unwrap(annotation: Any) -> Iterator[Any]:
    """`annotation` and what it wraps (Annotated, X | None), not list items."""
    yield annotation
    if typing.get_origin(annotation) is Annotated:
        yield from unwrap(typing.get_args(annotation)[0])
    elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                yield from unwrap(arg)


def metadata(info: FieldInfo) -> list[Any]:
    """Every constraint and marker of a field, its wrapped types' included."""
    found = list(info.metadata)
    for inner in unwrap(info.annotation):
        if typing.get_origin(inner) is Annotated:
            for item in typing.get_args(inner)[1:]:
                found.extend(item.metadata if isinstance(item, FieldInfo) else [item])
    return found


def nested_model(info: FieldInfo) -> type[BaseModel] | None:
    """The model a field holds, alone or as list entries."""
    for inner in unwrap(info.annotation):
        candidates = [inner, *typing.get_args(inner)]
        for c in candidates:
            if isinstance(c, type) and issubclass(c, BaseModel):
                return c
    return None


def fields_by_key(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """A model's fields by the key the stack file spells."""
    return {info.alias or name: info for name, info in model.model_fields.items()}


def _locate(
    model: type[BaseModel], loc: Sequence[int | str]
) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """The model that holds the last key of `loc`, and that key's field."""
    holder: type[BaseModel] | None = model
    info: FieldInfo | None = None
    for part in loc:
        if isinstance(part, int):
            continue
        if info is not None:
            holder = nested_model(info)
            if holder is None:
                return None, None
        info = fields_by_key(holder).get(part)
        if info is None:
            return holder, None
    return holder, info


def _spelled(model: type[BaseModel], loc: Sequence[int | str]) -> tuple:
    """`loc` with field names spelled as stack-file keys (pydantic names a
    default it validated by its field name, an input by its key)."""
    holder: type[BaseModel] | None = model
    out: list[int | str] = []
    for part in loc:
        if isinstance(part, int) or holder is None:
            out.append(part)
            continue
        info = holder.model_fields.get(part) or fields_by_key(holder).get(part)
        out.append((info.alias or part) if info is not None else part)
        holder = nested_model(info) if info is not None else None
    return tuple(out)


def note(info: FieldInfo | None, name: str) -> str | None:
    extra = info.json_schema_extra if info is not None else None
    return extra.get(name) if isinstance(extra, dict) else None


_BOUNDS = {
    "ge": annotated_types.Ge,
    "gt": annotated_types.Gt,
    "le": annotated_types.Le,
    "lt": annotated_types.Lt,
}


def bound(info: FieldInfo | None) -> dict[str, Any]:
    """The field's numeric bounds ({"ge": 2, "le": 6, ...})."""
    found: dict[str, Any] = {}
    for item in metadata(info) if info is not None else []:
        for name, kind in _BOUNDS.items():
            if isinstance(item, kind):
                found[name] = getattr(item, name)
    return found


def allowed(info: FieldInfo | None) -> str | None:
    marks = [m for m in metadata(info) if isinstance(m, Allowed)] if info else []
    return marks[0].text if marks else None


def closest(name: str, known: Sequence[str]) -> str | None:
    """The known key a typo most likely meant (case first, then spelling)."""
    for k in known:
        if k.lower() == name.lower():
            return k
    lowered = {k.lower(): k for k in known}
    found = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[found[0]] if found else None


# --------------------------------------------------------------------- wording


def _bounds_text(limits: dict[str, Any], why: str) -> str:
    low, high = limits.get("ge"), limits.get("le")
    if low is not None and high is not None:
        return f"must be between {low} and {high}{why}"
    if limits.get("gt") == 0:
        return f"must be a positive number{why}"
    if low is not None:
        return f"must be at least {low}{why}"
    if limits.get("gt") is not None:
        return f"must be above {limits['gt']}{why}"
    return f"must be at most {high}{why}"


def _wording(
    kind: str, error: dict[str, Any], loc: tuple, holder: Any, info: Any
) -> str:
    value = show(error.get("input"))
    why = note(info, "why")
    if kind == "extra_forbidden":
        known = [k for k in fields_by_key(holder) if k not in IDENTITY_FIELDS]
        near = closest(str(loc[-1]), known)
        hint = f" (did you mean {near}?)" if near else ""
        rest = f"see {CONFIG_DOC}" if len(loc) == 1 else f"allowed: {', '.join(known)}"
        return f"is not a known key{hint}; {rest}"
    if kind == "missing":
        detail = why or allowed(info)
        return "is required" + (f" ({detail})" if detail else "")
    if kind in _TYPES:
        return f"must be {_TYPES[kind]}, got {value}"
    why_text = f" ({why})" if why else ""
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return f"{_bounds_text(bound(info), why_text)}, got {value}"
    if kind == "finite_number":
        return f"must be a finite number{why_text}, got {value}"
    return f"{error['msg']}, got {value}"


def message(error: dict[str, Any], model: type[BaseModel]) -> tuple[str, str]:
    """One pydantic error of `model` as (key, message)."""
    loc, kind = tuple(error["loc"]), error["type"]
    if kind == "extra_forbidden":  # the unknown key stays as the user wrote it
        loc = _spelled(model, loc[:-1]) + loc[-1:]
    else:
        loc = _spelled(model, loc)
    if kind == ERROR_TYPE:
        return key_path(loc), error["ctx"]["message"]
    holder, info = _locate(model, loc)
    return key_path(loc), _wording(kind, error, loc, holder, info)


def describe(exc: ValidationError, model: type[BaseModel]) -> list[tuple[str, str]]:
    """Every error of `exc` as (key, message), in the order of the keys."""
    return [message(e, model) for e in exc.errors(include_url=False)]
