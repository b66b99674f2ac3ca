"""How often Ray Train's controller polls the workers, for every trainer here.

The controller polls every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default),
and a worker's `ray.train.report` waits until the controller has taken its
previous report, so with short epochs or checkpoint intervals each report
stalled and the end of `fit()` waited for polls. Set in the driver around
fit(), Train passes it on to its controller; a value in the environment wins.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator

from mlcore.errors import JobInputError

POLL_INTERVAL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
POLL_INTERVAL_DEFAULT_S = 0.5


def controller_poll_interval() -> float:
    """Seconds between the Train controller's polls: $RAY_TRAIN_HEALTH_CHECK_INTERVAL_S
    when set (validated), else POLL_INTERVAL_DEFAULT_S."""
    raw = os.environ.get(POLL_INTERVAL_ENV, "").strip()
    if not raw:
        return POLL_INTERVAL_DEFAULT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise JobInputError(
            POLL_INTERVAL_ENV, f"must be a positive number of seconds (got {raw!r})"
        )
    return value


@contextlib.contextmanager
def controller_env(poll_interval_s: float) -> Iterator[None]:
    """$RAY_TRAIN_HEALTH_CHECK_INTERVAL_S for the fit() inside (Train copies it
    to its controller when fit() starts); the caller's environment afterwards."""
    before = os.environ.get(POLL_INTERVAL_ENV)
    os.environ[POLL_INTERVAL_ENV] = f"{poll_interval_s:g}"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(POLL_INTERVAL_ENV, None)
        else:
            os.environ[POLL_INTERVAL_ENV] = before
