"""ASHA's verdicts, shared with the trials' workers.

A worker reports an epoch and trains on at once, while the result travels to Tune
(Train's controller, the trial's queue, the Tune loop) and ASHA decides. On the
digits MLP an epoch takes a fraction of a second and that trip a few, so a trial
ASHA stops used to train several more epochs before Tune's stop reached it. Here
the scheduler posts each verdict on a board (a named actor without CPUs), and a
worker that reported epoch t waits for the verdict on t: it trains on after
CONTINUE and ends its loop after STOP, so a stopped trial trains no epoch past
the rung that stopped it.

The board is found by name, created by whichever side asks first: after a
`Tuner.restore` the restored scheduler (whose pickled state is only the name)
and the restarted workers meet on a new one. A worker that hears nothing within
`WAIT_S` trains on, as without a board.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

STOP = TrialScheduler.STOP
# Tune's loop answers within a second or two; a longer silence means it is not
# deciding (a driver restarting), and training on is what Tune would have done.
WAIT_S = 60.0


def board_name(experiment: str) -> str:
    return f"raygpu-tune-verdicts-{experiment}"


@ray.remote(num_cpus=0)
class VerdictBoard:
    def __init__(self) -> None:
        self._verdicts: dict[tuple[str, int], str] = {}
        self._posted: dict[tuple[str, int], asyncio.Event] = {}

    def _event(self, key: tuple[str, int]) -> asyncio.Event:
        return self._posted.setdefault(key, asyncio.Event())

    async def post(self, trial_id: str, t: int, verdict: str) -> None:
        self._verdicts[(trial_id, t)] = verdict
        self._event((trial_id, t)).set()

    async def wait(self, trial_id: str, t: int, timeout_s: float) -> str | None:
        try:
            await asyncio.wait_for(self._event((trial_id, t)).wait(), timeout_s)
        except TimeoutError:
            return None
        return self._verdicts[(trial_id, t)]


_handles: dict[str, Any] = {}


def _board(name: str):
    if name not in _handles:
        _handles[name] = VerdictBoard.options(name=name, get_if_exists=True).remote()
    return _handles[name]


class SharedVerdictASHA(AsyncHyperBandScheduler):
    """Ray's ASHA, posting each of its verdicts on the board `name`."""

    def __init__(self, board: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.board = board

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        verdict = super().on_trial_result(tune_controller, trial, result)
        t = result.get(self._time_attr)
        if t is not None:
            _board(self.board).post.remote(trial.trial_id, int(t), verdict)
        return verdict


def wait_for_verdict(board: str, trial_id: str, t: int) -> str | None:
    """Tune's verdict on the trial's result at `t` (None: none came in time)."""
    try:
        return ray.get(_board(board).wait.remote(trial_id, t, WAIT_S))
    except ray.exceptions.RayError:
        return None  # the board is gone (its cluster shutting down): train on
