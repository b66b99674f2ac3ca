"""tune: ray_jobs/tune.py on the digits MLP, ASHA with Optuna against a grid.

One lean head of 2 CPUs; every search runs `python tune.py` as a driver of it,
2 trials at once, each a TorchTrainer of 1 worker at 0.5 CPU, over the same
search space (TUNE_WORK["space"]):

1. the grid: every point of the space (tune.py --search grid: each range at
   --grid-points values, log-spaced where the space is log-uniform, times every
   choice), each trained the full epochs (FIFO, no early stopping);
2. Optuna's TPE with ASHA (grace period 1 epoch, reduction factor 4, at most the
   same epochs), a fixed number of trials (the first few random), once per
   seed. The seed is Optuna's: every trial of both searches trains with torch's
   seed TUNE_WORK["train_seed"], so a configuration both try trains the same.
   Each search runs under tune.py --epoch-budget: the target's share of the
   grid's epochs, less one epoch for each other trial in flight when the budget
   is spent (it may finish the epoch it is on while torn down).

A search's figure is its best trial's best-epoch validation accuracy (the same
rule for both). The targets: the mean over the seeds of Tune's best within 0.5
point of the grid's best, and each seed's search training at most 40 % of the
grid's epochs (epochs trained: every epoch any trial ran, from its checkpoints,
those a trial ASHA stopped ran while Tune tore it down included).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

GAP_TARGET_POINTS = -0.5
EPOCH_SHARE_TARGET = 0.4


def epoch_budget(grid_epochs: int, max_concurrent: int) -> int:
    """tune.py --epoch-budget for a search held to the target's share of the
    grid's epochs: the budget counts epochs Tune took, and each other trial in
    flight when it is spent may have trained one more."""
    return max(1, int(EPOCH_SHARE_TARGET * grid_epochs) - (max_concurrent - 1))


def _search_argv(space: Path, storage: Path, name: str, search: list[str]) -> list:
    from scripts.bench.settings import PY, TUNE_WORK

    return [
        PY,
        "tune.py",
        "--space",
        str(space),
        *search,
        f"--max-concurrent={TUNE_WORK['max_concurrent']}",
        f"--cpus-per-worker={TUNE_WORK['cpus_per_worker']}",
        f"--storage-path={storage}",
        f"--name={name}",
    ]


def _run_search(bench, head, argv: list[str], name: str) -> dict[str, Any]:
    """Run one search; its tune_result.json and wall seconds."""
    from scripts.bench.proc import child_env, run_logged, tail
    from scripts.bench.settings import LEAN_ENV, RAY_JOBS, BenchError, log

    env = {**child_env(), **LEAN_ENV, "RAY_ADDRESS": head.address}
    log_path = bench.new_path(f"tune-{name}", ".log")
    log(f"tune {name}: {' '.join(argv[1:])}")
    rc, t0, t1 = run_logged(argv, log_path, env, timeout_s=3600, cwd=RAY_JOBS)
    if rc != 0:
        raise BenchError(
            f"tune {name} exited with {rc}; log {log_path}:\n{tail(log_path)}"
        )
    storage = Path(
        next(a for a in argv if a.startswith("--storage-path=")).split("=", 1)[1]
    )
    result = json.loads((storage / name / "tune_result.json").read_text())
    result["wall_s"] = round(t1 - t0, 1)
    return result


def brief(result: dict[str, Any]) -> dict[str, Any]:
    """What the section keeps of a search's tune_result.json."""
    best = result.get("best") or {}
    return {
        "best_val_accuracy": best.get("val_accuracy"),
        "best_config": best.get("config"),
        "epochs_trained": result["epochs_trained"],
        "epochs_reported": result.get("epochs_reported"),
        "trials": result["trials"],
        "wall_s": result.get("wall_s"),
    }


def summarise(grid: dict[str, Any], tuned: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The figures and targets' inputs from the grid's and each seed's brief."""
    from scripts.bench.stats import stats

    best = grid["best_val_accuracy"]
    gaps = {s: 100 * (t["best_val_accuracy"] - best) for s, t in tuned.items()}
    shares = {s: t["epochs_trained"] / grid["epochs_trained"] for s, t in tuned.items()}
    return {
        "grid": grid,
        "tune": {str(s): t for s, t in tuned.items()},
        "gap_points": {str(s): round(g, 3) for s, g in gaps.items()},
        "epoch_share": {str(s): round(v, 4) for s, v in shares.items()},
        # the targets' figures: the mean gap over the seeds, the largest share
        # rounded: float noise (0.97 - 0.98) must not decide a target
        "mean_gap_points": stats([round(statistics.mean(gaps.values()), 6)]),
        "largest_epoch_share": stats([max(shares.values())]),
        "best_val_accuracy": stats([t["best_val_accuracy"] for t in tuned.values()]),
    }


def bench_tune(bench) -> dict[str, Any]:
    """The section: the grid, then ASHA + Optuna once per seed, on one head."""
    from scripts.bench.settings import TUNE_WORK

    cfg = {**TUNE_WORK, **bench.cfg.get("tune", {})}
    storage = bench.work / "tune-runs"
    storage.mkdir(parents=True, exist_ok=True)
    space = storage / "space.json"
    space.write_text(json.dumps(cfg["space"], indent=2))
    head, head_s = bench.start_head(lean=True)
    epochs = f"--epochs={cfg['epochs']}"
    try:
        grid_argv = [
            "--search=grid",
            f"--grid-points={cfg['grid_points']}",
            "--scheduler=fifo",
            epochs,
            "--seed=0",
            f"--train-seed={cfg['train_seed']}",
        ]
        grid = brief(
            _run_search(
                bench, head, _search_argv(space, storage, "grid", grid_argv), "grid"
            )
        )
        budget = epoch_budget(grid["epochs_trained"], cfg["max_concurrent"])
        tuned = {}
        for seed in cfg["seeds"]:
            name = f"asha-optuna-{seed}"
            search = [
                "--search=optuna",
                "--scheduler=asha",
                f"--num-samples={cfg['num_samples']}",
                f"--startup-trials={cfg['startup_trials']}",
                f"--grace-period={cfg['grace_period']}",
                f"--reduction-factor={cfg['reduction_factor']}",
                epochs,
                f"--seed={seed}",
                f"--train-seed={cfg['train_seed']}",
                f"--epoch-budget={budget}",
            ]
            argv = _search_argv(space, storage, name, search)
            tuned[seed] = brief(_run_search(bench, head, argv, name))
    finally:
        bench.stop_head(head.temp_dir)
    out = summarise(grid, tuned)
    out["work"] = {k: v for k, v in cfg.items() if k != "space"} | {
        "space": cfg["space"]["parameters"]
    }
    out["work"]["epoch_budget"] = budget
    out["head_start_s"] = round(head_s, 2)
    return out


def tune_targets(tune: dict[str, Any], add) -> None:
    """The section's two targets, through report.targets' `add`."""
    seeds = len(tune.get("tune", {})) or "the"
    add(
        f"Tune (ASHA + Optuna) best val accuracy - grid's best, points (mean over "
        f"{seeds} seeds)",
        f">= {GAP_TARGET_POINTS}",
        tune.get("mean_gap_points"),
        lambda v: v >= GAP_TARGET_POINTS,
    )
    add(
        "Tune epochs trained / the grid's (largest over the seeds)",
        f"<= {EPOCH_SHARE_TARGET}",
        tune.get("largest_epoch_share"),
        lambda v: v <= EPOCH_SHARE_TARGET,
    )


def tune_markdown(tune: dict[str, Any] | None) -> list[str]:
    """Section 8 of results.md."""
    from scripts.bench.stats import fmt, fmt_stats

    if not tune or "skipped" in tune:
        return []
    w, grid = tune["work"], tune["grid"]
    points = 1
    for entry in w["space"].values():
        if isinstance(entry, dict):
            points *= len(entry["values"]) if "values" in entry else w["grid_points"]
    lines = [
        "",
        "## 8. Tune: ASHA with Optuna against a grid (digits MLP)",
        "",
        f"Space: `{json.dumps(w['space'], sort_keys=True)}`, the rest at train.py's "
        f"values. Grid: {points} points ({w['grid_points']} per range, log-spaced "
        f"for log-uniform), {w['epochs']} epochs each, FIFO. Tune: "
        f"{w['num_samples']} trials of Optuna's TPE ({w['startup_trials']} random "
        "first), ASHA (grace "
        f"{w['grace_period']}, reduction {w['reduction_factor']:g}, at most "
        f"{w['epochs']} epochs), one search per Optuna seed, each ending once "
        f"Tune has taken {w.get('epoch_budget', '-')} epochs (tune.py "
        "--epoch-budget: the target's share of the grid's, less one for the other "
        "trial in flight). Both: torch's seed "
        f"{w.get('train_seed', 'the search seed')} in every trial, "
        f"{w['max_concurrent']} trials at once, 1 "
        f"worker x {w['cpus_per_worker']:g} CPU each. A search's figure: its best "
        "trial's best-epoch validation accuracy. Epochs trained: every epoch a "
        "trial ran, from its checkpoints (the target's count); reported: those "
        "whose results Tune took, the rest were trained by stopped trials while "
        "they were torn down.",
        "",
        "| search | seed | best val acc | - grid (points) | epochs trained "
        "| / grid's | epochs reported | trials done/stopped/failed | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| grid | 0 | {fmt(grid['best_val_accuracy'], 4)} | - | "
        f"{grid['epochs_trained']} | 1 | {grid['epochs_reported']} | "
        f"{_trials(grid)} | {fmt(grid['wall_s'], 1)} |",
    ]
    for seed, t in tune["tune"].items():
        lines.append(
            f"| ASHA + Optuna | {seed} | {fmt(t['best_val_accuracy'], 4)} | "
            f"{fmt(tune['gap_points'][seed], 2)} | {t['epochs_trained']} | "
            f"{fmt(tune['epoch_share'][seed], 3)} | {t['epochs_reported']} | "
            f"{_trials(t)} | {fmt(t['wall_s'], 1)} |"
        )
    lines += [
        "",
        f"- mean gap over the seeds: {fmt_stats(tune['mean_gap_points'], 2)} points "
        f"(target >= {GAP_TARGET_POINTS}); largest epoch share: "
        f"{fmt_stats(tune['largest_epoch_share'], 3)} (target <= "
        f"{EPOCH_SHARE_TARGET})",
        "- the grid's best configuration: "
        f"`{json.dumps(grid['best_config'], sort_keys=True)}`",
    ]
    return lines


def _trials(t: dict[str, Any]) -> str:
    n = t["trials"]
    return f"{n['done']}/{n['stopped_early']}/{n['errored']}"
