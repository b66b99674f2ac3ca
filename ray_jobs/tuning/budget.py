"""A search-wide budget of training epochs (tune.py --epoch-budget).

Tune's own budgets count trials or seconds; a search that must cost at most a
share of a grid's training needs one in epochs. EpochBudget is both a Stopper
and a Callback, passed to the RunConfig as both: as the Stopper it ends the
search once the epochs Tune took from every trial reach the budget (the trial
that spent it and those running stop, no new one starts); as the Callback it
recounts those epochs from Tune's own trials whenever one starts, so a search
restored after its driver died goes on counting the epochs it had spent.
"""

from __future__ import annotations

from ray.tune import Callback, Stopper

from tuning.trial import TIME_ATTR


class EpochBudget(Stopper, Callback):
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.spent: dict[str, int] = {}  # trial id -> epochs Tune took from it
        self.announced = False

    def total(self) -> int:
        return sum(self.spent.values())

    def _take(self, trial_id: str, result: dict) -> None:
        t = result.get(TIME_ATTR)
        if t is not None:
            self.spent[trial_id] = max(self.spent.get(trial_id, 0), int(t))

    # Stopper: asked of every result, then once a step for the whole search
    def __call__(self, trial_id: str, result: dict) -> bool:
        self._take(trial_id, result)
        return self.stop_all()

    def stop_all(self) -> bool:
        out = self.total() >= self.epochs
        if out and not self.announced:
            self.announced = True
            print(
                f"[raygpu] the epoch budget is spent ({self.total()} of "
                f"{self.epochs}): the search stops",
                flush=True,
            )
        return out

    # Callback: Tune's trials (a restored search's included) hold the count
    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        for t in trials:
            self._take(t.trial_id, t.last_result or {})
