"""An offline replay of the tune section's ASHA + Optuna search, for choosing its
settings without an hour of Ray per try.

    PYTHONPATH=ray_jobs:. python -m scripts.bench.tune_replay \\
        [--seeds 90] [--setting 8,3,4 ...]

Every trial's validation curve is trained once, as tune.py's worker trains it
(mlcore's loop, the MLP, Adam, 1 worker, torch's seed TUNE_WORK["train_seed"]),
on a grid of 37 log-spaced learning rates that holds the grid search's 4 (a
proposed rate takes its nearest), and cached in --cache. A replay then runs the
search on those curves: Optuna's TPE proposes (told each trial's last result, as
Ray's OptunaSearch does), Ray's own AsyncHyperBandScheduler decides after each
epoch, 2 trials at once, each starting after --start-s and taking --epoch-s an
epoch (+-30 %, seeded). A setting is trials,random-first,reduction-factor. It
prints, per setting and timing, the mean gap to the grid's best, the epoch
shares, and in how many consecutive triples of seeds (the section's unit) both
targets were met. What it leaves out: Ray's own timing (the real run's order of
results), and curves from proposals between the 37 rates.
"""

from __future__ import annotations

import argparse
import itertools
import pickle
import random
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

RATES = 37  # 3k+1 log-spaced: every third is one of the grid search's 4


def _train_curve(lr: float, batch: int, width: int, seed: int, epochs: int) -> list:
    import torch
    from torch.utils.data import DataLoader

    from mlcore.data import load_dataset
    from mlcore.loop import split_tensors, train_epochs
    from mlcore.models import ModelSpec, build_model
    from tuning.space import defaults

    fixed = defaults()  # what the section's space leaves out: train.py's values
    ds = load_dataset("digits", None, False)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    spec = ModelSpec(
        "mlp",
        ds.image_shape,
        ds.num_classes,
        width=width,
        depth=fixed["depth"],
        dropout=fixed["dropout"],
    )
    model = build_model(spec)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=lr, weight_decay=fixed["weight_decay"]
    )
    loader = DataLoader(split_tensors(ds.train), batch_size=batch, shuffle=True)
    val_x, val_y = torch.from_numpy(ds.val.x), torch.from_numpy(ds.val.y)
    accs: list[float] = []
    train_epochs(
        model,
        optimizer,
        loader,
        val_x,
        val_y,
        range(epochs),
        world=1,
        device=torch.device("cpu"),
        use_bf16=False,
        report=lambda _e, m: accs.append(m["val_accuracy"]),
    )
    return accs


class Curves:
    """Validation accuracy per epoch for every (rate index, batch, width)."""

    def __init__(self, work: dict, cache: Path) -> None:
        space = work["space"]["parameters"]
        lr = space["lr"]
        self.rates = np.geomspace(lr["low"], lr["high"], RATES)
        self.batches = space["batch_size"]["values"]
        self.widths = space["width"]["values"]
        self.work, self.cache = work, cache
        self.table = pickle.loads(cache.read_bytes()) if cache.exists() else {}

    def fill(self) -> None:
        keys = itertools.product(range(RATES), self.batches, self.widths)
        todo = [k for k in keys if k not in self.table]
        for n, (i, b, w) in enumerate(todo, 1):
            seed, epochs = self.work["train_seed"], self.work["epochs"]
            self.table[(i, b, w)] = _train_curve(self.rates[i], b, w, seed, epochs)
            if n % 20 == 0 or n == len(todo):
                self.cache.write_bytes(pickle.dumps(self.table))
                print(f"curves {n}/{len(todo)}", file=sys.stderr, flush=True)

    def of(self, lr: float, batch: int, width: int) -> list[float]:
        i = int(np.argmin(abs(np.log(self.rates) - np.log(lr))))
        return self.table[(i, batch, width)]

    def grid(self) -> tuple[float, int]:
        """The grid search's best accuracy and its epochs."""
        step = (RATES - 1) // (self.work["grid_points"] - 1)
        found = [
            self.table[(i, b, w)]
            for i in range(0, RATES, step)
            for b in self.batches
            for w in self.widths
        ]
        return max(max(c) for c in found), sum(len(c) for c in found)


def replay(
    curves: Curves,
    seed: int,
    trials: int,
    startup: int,
    rf: float,
    start_s: float,
    epoch_s: float,
) -> tuple[float, int]:
    """One search: its best accuracy and the epochs its trials trained."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = curves.work
    lr = work["space"]["parameters"]["lr"]
    dists = {
        "lr": FloatDistribution(lr["low"], lr["high"], log=True),
        "batch_size": CategoricalDistribution(curves.batches),
        "width": CategoricalDistribution(curves.widths),
    }
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    asha = AsyncHyperBandScheduler(
        time_attr="epochs_done",
        metric="val_accuracy",
        mode="max",
        max_t=work["epochs"],
        grace_period=work["grace_period"],
        reduction_factor=rf,
    )
    jitter = random.Random(seed)
    running: list[dict] = []
    started, best, trained = 0, 0.0, 0

    def start(now: float) -> None:
        nonlocal started
        ot = study.ask(dists)
        trial = SimpleNamespace(trial_id=f"t{started}")
        asha.on_trial_add(None, trial)
        curve = curves.of(ot.params["lr"], ot.params["batch_size"], ot.params["width"])
        at = now + start_s + epoch_s * jitter.uniform(0.7, 1.3)
        running.append({"at": at, "trial": trial, "ot": ot, "curve": curve, "done": 0})
        started += 1

    for _ in range(min(work["max_concurrent"], trials)):
        start(0.0)
    while running:
        run = min(running, key=lambda r: r["at"])
        run["done"] += 1
        trained += 1
        acc = run["curve"][run["done"] - 1]
        best = max(best, acc)
        result = {"epochs_done": run["done"], "val_accuracy": acc}
        verdict = asha.on_trial_result(None, run["trial"], result)
        if verdict == TrialScheduler.STOP or run["done"] == work["epochs"]:
            study.tell(run["ot"], acc)
            running.remove(run)
            if started < trials:
                start(run["at"])
        else:
            run["at"] += epoch_s * jitter.uniform(0.7, 1.3)
    return best, trained


def main(argv: list[str] | None = None) -> int:
    from scripts.bench.settings import TUNE_WORK
    from scripts.bench.tune import EPOCH_SHARE_TARGET, GAP_TARGET_POINTS

    p = argparse.ArgumentParser(prog="tune_replay", description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=90, help="Optuna seeds (90)")
    p.add_argument("--setting", action="append", help="trials,startup,rf")
    p.add_argument("--timing", action="append", help="start_s,epoch_s (20,8)")
    p.add_argument("--cache", default="/tmp/rg-tune-replay.pkl", help="curve cache")
    args = p.parse_args(argv)
    curves = Curves(dict(TUNE_WORK), Path(args.cache))
    curves.fill()
    grid_best, grid_epochs = curves.grid()
    print(f"grid: best {grid_best:.4f}, {grid_epochs} epochs")
    w = TUNE_WORK
    own = f"{w['num_samples']},{w['startup_trials']},{w['reduction_factor']:g}"
    for setting, timing in itertools.product(
        args.setting or [own], args.timing or ["20,8"]
    ):
        trials, startup, rf = (float(v) for v in setting.split(","))
        start_s, epoch_s = (float(v) for v in timing.split(","))
        gaps, shares = [], []
        for seed in range(args.seeds):
            best, trained = replay(
                curves, seed, int(trials), int(startup), rf, start_s, epoch_s
            )
            gaps.append(100 * (best - grid_best))
            shares.append(trained / grid_epochs)
        triples = range(0, args.seeds - 2, 3)
        gap_ok = [
            statistics.mean(gaps[i : i + 3]) >= GAP_TARGET_POINTS for i in triples
        ]
        share_ok = [max(shares[i : i + 3]) <= EPOCH_SHARE_TARGET for i in triples]
        print(
            f"setting {setting} timing {timing}: gap mean {statistics.mean(gaps):.2f} "
            f"points; share mean {statistics.mean(shares):.3f}, max "
            f"{max(shares):.3f}; triples meeting the gap {sum(gap_ok)}/{len(gap_ok)}, "
            f"the share {sum(share_ok)}/{len(share_ok)}, both "
            f"{sum(g and s for g, s in zip(gap_ok, share_ok, strict=True))}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
