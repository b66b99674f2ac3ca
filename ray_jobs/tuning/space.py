"""The search space of tune.py: a YAML or JSON file and flags, checked strictly.

    parameters:                      # any of the six below; the rest stay fixed
      lr: {distribution: loguniform, low: 1.0e-4, high: 3.0e-2}
      batch_size: {distribution: choice, values: [32, 64, 128]}
      depth: {distribution: randint, low: 1, high: 3}     # both ends included
      dropout: {distribution: uniform, low: 0.0, high: 0.3}
      weight_decay: 1.0e-5           # a plain value: fixed
    points_to_evaluate:              # optional, tried first (Optuna enqueues them)
      - {lr: 1.0e-3, batch_size: 64, depth: 2, dropout: 0.0}

A parameter the file leaves out keeps train.py's value (lr 1e-3, batch 64, the
MLP's width and depth, no weight decay, no dropout). Flags (--lr, --batch-size,
...) replace the file's entry: `LOW:HIGH` (the parameter's range distribution),
`DIST:LOW:HIGH`, `A,B,C` (a choice), `choice:A,B,C`, or one value. Every problem
(an unknown key, a bad distribution, an empty range, a value out of bounds) is a
JobInputError naming the file and entry or the flag, raised before any trial.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlcore.errors import JobInputError
from mlcore.models import MLP_DEPTH, MLP_WIDTH

DISTRIBUTIONS = ("loguniform", "uniform", "choice", "randint")
TOP_KEYS = ("parameters", "points_to_evaluate")


@dataclass(frozen=True)
class Param:
    kind: type  # int or float
    minimum: float  # allowed values: >= minimum (> minimum when open_min)
    open_min: bool = False
    below: float | None = None  # allowed values: < below
    range_distribution: str = "uniform"  # what `LOW:HIGH` on a flag means

    def check(self, value: Any, where: str) -> int | float:
        """`value` as this parameter's type, or JobInputError naming `where`."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise JobInputError(where, f"must be a number, got {value!r}")
        if self.kind is int and float(value) != int(value):
            raise JobInputError(where, f"must be an integer, got {value!r}")
        value = self.kind(value)
        if not math.isfinite(value):
            raise JobInputError(where, f"must be finite, got {value!r}")
        low_ok = value > self.minimum if self.open_min else value >= self.minimum
        if not low_ok or (self.below is not None and value >= self.below):
            raise JobInputError(where, f"{value!r} is outside {self.bounds()}")
        return value

    def bounds(self) -> str:
        low = f"{'(' if self.open_min else '['}{self.minimum:g}"
        high = f"{self.below:g})" if self.below is not None else "inf)"
        return f"{low}, {high}"


PARAMS: dict[str, Param] = {
    "lr": Param(float, 0.0, open_min=True, range_distribution="loguniform"),
    "batch_size": Param(int, 1, range_distribution="randint"),
    "width": Param(int, 1, range_distribution="randint"),
    "depth": Param(int, 1, range_distribution="randint"),
    "weight_decay": Param(float, 0.0, range_distribution="loguniform"),
    "dropout": Param(float, 0.0, below=1.0),
}
FLAGS = {name: "--" + name.replace("_", "-") for name in PARAMS}


def defaults() -> dict[str, int | float]:
    """Each parameter's value when the space leaves it out: train.py's."""
    import train

    base = train.parse_args([])
    return {
        "lr": base.lr,
        "batch_size": base.batch_size,
        "width": MLP_WIDTH,
        "depth": MLP_DEPTH,
        "weight_decay": 0.0,
        "dropout": 0.0,
    }


@dataclass(frozen=True)
class Dist:
    """One parameter: fixed (`value`), a range (`low`, `high`) or a choice."""

    distribution: str  # "fixed" or one of DISTRIBUTIONS
    low: int | float | None = None
    high: int | float | None = None
    values: tuple = ()

    def contains(self, value: Any) -> bool:
        if self.distribution in ("choice", "fixed"):
            return value in self.values
        return self.low <= value <= self.high

    def tune(self):
        """The Ray Tune domain (or the value) this stands for."""
        from ray import tune

        if self.distribution == "fixed":
            return self.values[0]
        if self.distribution == "choice":
            return tune.choice(list(self.values))
        if self.distribution == "randint":
            return tune.randint(self.low, self.high + 1)  # Tune's high is excluded
        sampler = tune.loguniform if self.distribution == "loguniform" else tune.uniform
        return sampler(self.low, self.high)

    def grid(self, points: int) -> list:
        """Grid values: `points` of a range (log-spaced for loguniform), every
        choice, or the fixed value."""
        if self.distribution in ("choice", "fixed"):
            return list(self.values)
        if self.distribution == "randint":
            ints = np.unique(np.round(np.linspace(self.low, self.high, points)))
            return [int(v) for v in ints]
        space = np.geomspace if self.distribution == "loguniform" else np.linspace
        return [float(v) for v in space(self.low, self.high, points)]

    def to_dict(self) -> dict:
        if self.distribution == "fixed":
            return {"distribution": "fixed", "value": self.values[0]}
        if self.distribution == "choice":
            return {"distribution": "choice", "values": list(self.values)}
        return {"distribution": self.distribution, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Space:
    params: dict[str, Dist]  # every name of PARAMS
    points: list[dict] = field(default_factory=list)
    source: str = "defaults"

    @property
    def searched(self) -> list[str]:
        return [n for n, d in self.params.items() if d.distribution != "fixed"]

    def tune_space(self) -> dict:
        return {name: dist.tune() for name, dist in self.params.items()}

    def grid_space(self, points: int) -> dict:
        from ray import tune

        return {
            name: tune.grid_search(d.grid(points))
            if d.distribution != "fixed"
            else d.values[0]
            for name, d in self.params.items()
        }

    def grid_size(self, points: int) -> int:
        return math.prod(len(d.grid(points)) for d in self.params.values())

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "parameters": {n: d.to_dict() for n, d in self.params.items()},
            "points_to_evaluate": self.points,
        }


# ------------------------------------------------------------------- parsing


def parse_dist(name: str, entry: Any, where: str) -> Dist:
    """One parameter's entry (a mapping or a plain value), checked."""
    param = PARAMS[name]
    if not isinstance(entry, dict):
        if isinstance(entry, list):
            raise JobInputError(
                where,
                "a list is not a distribution; use {distribution: choice, "
                "values: [...]}",
            )
        return Dist("fixed", values=(param.check(entry, where),))
    dist = entry.get("distribution")
    if dist not in DISTRIBUTIONS:
        shown = "missing" if dist is None else f"unknown {dist!r}"
        raise JobInputError(
            f"{where}.distribution",
            f"{shown}; choose one of {', '.join(DISTRIBUTIONS)}",
        )
    keys = (
        ("distribution", "values")
        if dist == "choice"
        else ("distribution", "low", "high")
    )
    for key in entry:
        if key not in keys:
            raise JobInputError(
                f"{where}.{key}",
                f"unknown key for a {dist} distribution; allowed: {', '.join(keys)}",
            )
    for key in keys[1:]:
        if key not in entry:
            raise JobInputError(where, f"a {dist} distribution needs {key!r}")
    if dist == "choice":
        values = entry["values"]
        if not isinstance(values, list) or not values:
            raise JobInputError(f"{where}.values", "must be a non-empty list")
        checked = [param.check(v, f"{where}.values[{i}]") for i, v in enumerate(values)]
        if len(set(checked)) != len(checked):
            raise JobInputError(f"{where}.values", f"has repeated values: {values}")
        return Dist("choice", values=tuple(checked))
    if dist in ("loguniform", "uniform") and param.kind is int:
        raise JobInputError(
            f"{where}.distribution",
            f"{dist} gives fractions and {name} is an integer; use randint or choice",
        )
    if dist == "randint" and param.kind is float:
        raise JobInputError(
            f"{where}.distribution",
            f"randint gives integers and {name} is a number; use uniform or loguniform",
        )
    low = param.check(entry["low"], f"{where}.low")
    high = param.check(entry["high"], f"{where}.high")
    if low >= high:
        raise JobInputError(
            where,
            f"empty range: low {low!r} >= high {high!r} (a plain value fixes the "
            "parameter)",
        )
    if dist == "loguniform" and low <= 0:
        raise JobInputError(f"{where}.low", f"loguniform needs low > 0, got {low!r}")
    return Dist(dist, low=low, high=high)


def parse_flag(name: str, text: str) -> Dist:
    """A flag's value (`LOW:HIGH`, `DIST:LOW:HIGH`, `A,B,C`, `choice:A,B`, `V`)."""
    flag, param = FLAGS[name], PARAMS[name]
    head, _, rest = text.partition(":")
    if head in DISTRIBUTIONS:
        dist, body = head, rest
    elif ":" in text:
        dist, body = param.range_distribution, text
    else:
        dist, body = ("choice" if "," in text else "fixed"), text

    def number(word: str):
        word = word.strip()
        try:
            return int(word) if param.kind is int else float(word)
        except ValueError:
            raise JobInputError(
                flag,
                f"{word!r} is not {'an integer' if param.kind is int else 'a number'}",
            ) from None

    if dist == "fixed":
        return parse_dist(name, number(body), flag)
    if dist == "choice":
        return parse_dist(
            name,
            {"distribution": "choice", "values": [number(w) for w in body.split(",")]},
            flag,
        )
    bounds = body.split(":")
    if len(bounds) != 2:
        raise JobInputError(
            flag, f"{text!r}: give a range as LOW:HIGH or {dist}:LOW:HIGH"
        )
    low, high = (number(w) for w in bounds)
    return parse_dist(name, {"distribution": dist, "low": low, "high": high}, flag)


def _yaml_loader():
    """PyYAML's safe loader, reading 1e-4 and 1.0e12 as numbers (YAML 1.1, which
    PyYAML follows, wants a dot and a signed exponent; YAML 1.2 does not)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    exponent = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$")
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float", exponent, list("-+0123456789.")
    )
    return Loader


def read_file(path: str) -> dict:
    """The file's mapping (YAML, or JSON by its .json suffix)."""
    import yaml

    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise JobInputError("--space", f"cannot read {path}: {exc.strerror}") from None
    try:
        data = (
            json.loads(text)
            if path.endswith(".json")
            else yaml.load(text, Loader=_yaml_loader())
        )
    except (ValueError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise JobInputError("--space", f"{path} is not valid: {reason}") from None
    if not isinstance(data, dict):
        raise JobInputError("--space", f"{path} must hold a mapping with 'parameters'")
    return data


def load_space(path: str | None, flags: dict[str, str | None]) -> Space:
    """The space of `path` (None: train.py's values, all fixed) with `flags`
    ({name: flag text or None}) replacing its entries; checked."""
    params = {n: Dist("fixed", values=(v,)) for n, v in defaults().items()}
    points: list = []
    if path is not None:
        data = read_file(path)
        for key in data:
            if key not in TOP_KEYS:
                raise JobInputError(
                    f"{path}: {key}", f"unknown key; allowed: {', '.join(TOP_KEYS)}"
                )
        entries = data.get("parameters")
        if not isinstance(entries, dict) or not entries:
            raise JobInputError(
                f"{path}: parameters", "must map parameter names to entries"
            )
        for name, entry in entries.items():
            where = f"{path}: parameters.{name}"
            if name not in PARAMS:
                raise JobInputError(
                    where, f"unknown parameter; choose from {', '.join(PARAMS)}"
                )
            params[name] = parse_dist(name, entry, where)
        points = data.get("points_to_evaluate") or []
        if not isinstance(points, list):
            raise JobInputError(f"{path}: points_to_evaluate", "must be a list")
    for name, text in flags.items():
        if text is not None:
            params[name] = parse_flag(name, text)
    space = Space(params=params, source=path or "flags")
    given = {n for n, text in flags.items() if text is not None}
    checked = [check_point(space, p, i, path, given) for i, p in enumerate(points)]
    return Space(params, checked, space.source)


def check_point(
    space: Space, point: Any, index: int, path: str | None, flagged: set[str]
) -> dict:
    """A point to evaluate: every searched parameter, each inside its entry."""
    where = f"{path}: points_to_evaluate[{index}]"
    if not isinstance(point, dict):
        raise JobInputError(where, "must map parameter names to values")
    searched = space.searched
    checked = {}
    for name, value in point.items():
        if name not in searched:
            what = "a fixed parameter" if name in PARAMS else "an unknown parameter"
            if name in flagged:
                what = f"fixed by {FLAGS[name]}"
            raise JobInputError(
                f"{where}.{name}",
                f"{what}; give only the searched ones: {', '.join(searched)}",
            )
        value = PARAMS[name].check(value, f"{where}.{name}")
        if not space.params[name].contains(value):
            whose = f"{FLAGS[name]}'s" if name in flagged else "the space's"
            raise JobInputError(
                f"{where}.{name}",
                f"{value!r} is outside {whose} {space.params[name].to_dict()}",
            )
        checked[name] = value
    missing = [n for n in searched if n not in checked]
    if missing:
        raise JobInputError(
            where, f"misses {', '.join(missing)} (give every searched parameter)"
        )
    return checked
