"""Hyper-parameter search with Ray Tune over the project's TorchTrainer.

The entry point for `ray job submit --working-dir ray_jobs -- python tune.py ...`
(or `raygpu submit`), and runnable as is on a laptop. Each trial is a driver
function that fits a TorchTrainer (tuning.trial; Ray 2.60's pattern: the Tuner
gets the function, not a Trainer) with TuneReportCallback passing its epochs'
metrics to Tune. Optuna's TPE proposes the configurations and ASHA stops the
weak ones early. The search space comes from a YAML or JSON file and flags
(tuning.space), checked before any trial starts.

Every trial checkpoints each epoch under `<storage>/<name>/runs/<trial id>/`. The
same --name and --storage-path resume a search whose driver died
(Tuner.restore): finished trials are kept, interrupted ones resume from their
checkpoints. A trial that fails (a non-finite loss, a configuration that cannot
build) is recorded and the search goes on. The results (tuning.results) go to
the experiment folder: results.csv/.md, tune_result.json, val_curves.png and
best_so_far.png.

    python tune.py --num-samples 8 --epochs 10 --storage-path /tmp/tune --name t1
    python tune.py --space search_spaces/digits_mlp.yaml --lr 1e-4:1e-1 --seed 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import asdict

import numpy as np

from mlcore.data import DATASETS, load_dataset
from mlcore.errors import DatasetUnavailable, JobInputError, StorageError
from mlcore.storage import (
    StoragePath,
    check_storage,
    parse_storage,
    read_text,
    write_text,
)
from tuning import results
from tuning.space import FLAGS, PARAMS, Space, load_space
from tuning.trial import METRIC, MODE, RUNS_FOLDER, TIME_ATTR, TrialSettings, run_trial

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SPACE = os.path.join(HERE, "search_spaces", "digits_mlp.yaml")
SEARCHES = ("optuna", "random", "grid")
SCHEDULERS = ("asha", "fifo")
REQUEST_FILE = "tune_request.json"
DEFAULT_SAMPLES = 8
# A trial's driver only waits on its TorchTrainer, whose workers reserve the
# CPUs (or GPUs) that train; Tune refuses a trial that reserves nothing.
TRIAL_DRIVER_CPUS = 0.1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tune.py", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--space",
        default=DEFAULT_SPACE,
        help="search space, YAML or JSON (the digits MLP's)",
    )
    for name, flag in FLAGS.items():
        p.add_argument(
            flag,
            dest=f"space_{name}",
            metavar="SPEC",
            help=f"{name}: LOW:HIGH, A,B,C or a value",
        )
    p.add_argument(
        "--search", default="optuna", help=f"one of {SEARCHES} (optuna: TPE)"
    )
    p.add_argument("--scheduler", default="asha", help=f"one of {SCHEDULERS}")
    p.add_argument(
        "--num-samples", type=int, help=f"trials ({DEFAULT_SAMPLES}; not with grid)"
    )
    p.add_argument(
        "--grid-points", type=int, default=3, help="grid: points per range (3)"
    )
    p.add_argument(
        "--startup-trials", type=int, help="optuna: random trials first (its 10)"
    )
    p.add_argument("--max-concurrent", type=int, default=2, help="trials at once (2)")
    p.add_argument(
        "--time-budget-s", type=float, help="stop starting trials after this"
    )
    p.add_argument(
        "--epoch-budget",
        type=int,
        help="end the search once its trials have reported this many epochs",
    )
    p.add_argument(
        "--epochs", type=int, default=10, help="epochs per trial at most (10)"
    )
    p.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs first (1)")
    p.add_argument(
        "--reduction-factor", type=float, default=3, help="ASHA: keep 1/N (3)"
    )
    p.add_argument("--seed", type=int, default=0, help="Optuna's and torch's seed (0)")
    p.add_argument(
        "--train-seed",
        type=int,
        help="torch's seed in every trial (--seed): held fixed, two searches "
        "differ only in the configurations they try",
    )
    p.add_argument("--dataset", default="digits", help=f"one of {DATASETS}")
    p.add_argument("--data-dir", default=None, help="where mnist's files are")
    p.add_argument("--download", action="store_true", help="allow mnist download")
    p.add_argument(
        "--num-workers", type=int, default=1, help="Train workers a trial (1)"
    )
    p.add_argument(
        "--cpus-per-worker", type=float, default=0.5, help="CPUs a worker (0.5)"
    )
    p.add_argument("--use-gpu", action="store_true", help="one GPU per worker")
    p.add_argument(
        "--storage-path",
        default=os.environ.get("RAYGPU_STORAGE_PATH", "~/raygpu-runs"),
        help="local folder or s3://, gs://, abfs:// URI ($RAYGPU_STORAGE_PATH)",
    )
    p.add_argument(
        "--name", default=None, help="experiment folder; the same name resumes"
    )
    p.add_argument(
        "--max-failures", type=int, default=0, help="retries of a failed trial (0)"
    )
    p.add_argument(
        "--keep-checkpoints",
        type=int,
        default=1,
        help="a trial's best kept, besides its latest (1)",
    )
    args = p.parse_args(argv)
    try:
        validate(args)
    except JobInputError as exc:
        p.error(str(exc))
    return args


def validate(args: argparse.Namespace) -> None:
    def at_least(flag: str, value, low) -> None:
        if value is None or not np.isfinite(value) or value < low:
            raise JobInputError(flag, f"must be a number >= {low:g} (got {value})")

    if args.search not in SEARCHES:
        raise JobInputError(
            "--search", f"unknown {args.search!r}; choose one of {', '.join(SEARCHES)}"
        )
    if args.scheduler not in SCHEDULERS:
        raise JobInputError(
            "--scheduler",
            f"unknown {args.scheduler!r}; choose one of {', '.join(SCHEDULERS)}",
        )
    if args.search == "grid" and args.num_samples is not None:
        raise JobInputError(
            "--num-samples", "a grid runs each of its points once; set --grid-points"
        )
    if args.num_samples is None and args.search != "grid":
        args.num_samples = DEFAULT_SAMPLES
    if args.num_samples is not None:
        at_least("--num-samples", args.num_samples, 1)
    at_least("--grid-points", args.grid_points, 2)
    at_least("--seed", args.seed, 0)
    if args.train_seed is not None:
        at_least("--train-seed", args.train_seed, 0)
    at_least("--max-concurrent", args.max_concurrent, 1)
    if args.startup_trials is not None:
        if args.search != "optuna":
            raise JobInputError("--startup-trials", "goes with --search optuna")
        at_least("--startup-trials", args.startup_trials, 1)
    if args.time_budget_s is not None and not args.time_budget_s > 0:
        raise JobInputError(
            "--time-budget-s", f"must be positive (got {args.time_budget_s})"
        )
    at_least("--epochs", args.epochs, 1)
    if args.epoch_budget is not None:
        at_least("--epoch-budget", args.epoch_budget, 1)
    at_least("--grace-period", args.grace_period, 1)
    if args.grace_period > args.epochs:
        raise JobInputError(
            "--grace-period", f"must be at most --epochs ({args.epochs})"
        )
    if not args.reduction_factor > 1:
        raise JobInputError(
            "--reduction-factor", f"must be more than 1 (got {args.reduction_factor})"
        )
    at_least("--num-workers", args.num_workers, 1)
    if not args.cpus_per_worker > 0:
        raise JobInputError(
            "--cpus-per-worker", f"must be positive (got {args.cpus_per_worker})"
        )
    at_least("--max-failures", args.max_failures, 0)
    at_least("--keep-checkpoints", args.keep_checkpoints, 1)
    if args.dataset not in DATASETS:
        raise JobInputError(
            "--dataset",
            f"unknown {args.dataset!r}; choose one of {', '.join(DATASETS)}",
        )
    if args.name is None:
        args.name = f"tune-{args.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", args.name):
        raise JobInputError(
            "--name",
            "use 1-100 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit",
        )
    parse_storage(args.storage_path)
    flags = {name: getattr(args, f"space_{name}") for name in PARAMS}
    args.space_obj = load_space(args.space, flags)
    if not args.space_obj.searched:
        raise JobInputError("--space", "nothing to search: every parameter is fixed")


# ---------------------------------------------------------------------- the search


def request(args: argparse.Namespace, space: Space) -> dict:
    """What defines the search: a rerun resumes it only when this is the same."""
    keys = (
        "search scheduler num_samples grid_points startup_trials epochs "
        "epoch_budget grace_period reduction_factor "
        "seed train_seed dataset num_workers cpus_per_worker use_gpu keep_checkpoints"
    ).split()
    return {"space": space.to_dict()["parameters"], "points": space.points} | {
        k: getattr(args, k) for k in keys
    }


def check_same_request(experiment: StoragePath, wanted: dict) -> None:
    """Refuse to resume an experiment started with another search."""
    try:
        saved = json.loads(read_text(experiment.join(REQUEST_FILE)))
    except (OSError, ValueError):
        return  # started before it wrote one (killed at once): Tune's state rules
    changed = sorted(
        k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k)
    )
    if changed:
        raise JobInputError(
            "--name",
            f"{experiment.uri} holds a search started with other settings "
            f"({', '.join(changed)} differ); rerun with the same flags to resume it, "
            "or choose another --name",
        )


def build_tune_config(args: argparse.Namespace, space: Space):
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from tuning.verdicts import SharedVerdictASHA, board_name

    search_alg = None
    if args.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        seeding: dict = {"seed": args.seed}
        if args.startup_trials is not None:
            from optuna.samplers import TPESampler

            seeding = {
                "sampler": TPESampler(
                    seed=args.seed, n_startup_trials=args.startup_trials
                )
            }
        search_alg = OptunaSearch(
            points_to_evaluate=[dict(p) for p in space.points] or None, **seeding
        )
    elif space.points:  # random or grid: Tune's own generator tries them first
        from ray.tune.search import BasicVariantGenerator

        search_alg = BasicVariantGenerator(
            points_to_evaluate=[dict(p) for p in space.points]
        )
    if args.scheduler == "asha":
        scheduler = SharedVerdictASHA(
            board=board_name(args.name),
            time_attr=TIME_ATTR,
            max_t=args.epochs,
            grace_period=args.grace_period,
            reduction_factor=args.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    return tune.TuneConfig(
        metric=METRIC,
        mode=MODE,
        search_alg=search_alg,
        scheduler=scheduler,
        num_samples=1 if args.search == "grid" else args.num_samples,
        max_concurrent_trials=args.max_concurrent,
        time_budget_s=args.time_budget_s,
        trial_dirname_creator=results.trial_dirname,
    )


def trainable(settings: TrialSettings):
    from ray import tune

    return tune.with_resources(
        tune.with_parameters(run_trial, settings=settings),
        {"CPU": TRIAL_DRIVER_CPUS},
    )


def connect_ray() -> None:
    """ray.init (unless done), telling every actor where its cluster is.

    When Tune stops a trial (ASHA's early stops, and a trial at its last epoch)
    its TorchTrainer's controller dies with it, and Train's placement-group
    cleaner frees the trial's workers. The cleaner finds the cluster by
    RAY_ADDRESS (or RAY_API_SERVER_ADDRESS) and, on a machine running several
    Ray clusters, cannot without: the stopped trials' CPUs stay reserved and the
    next trials wait for them forever."""
    import socket

    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        env = {"RAY_ADDRESS": address}
        job_env = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}"))
        if "RAY_ADDRESS" in ((job_env.get("runtime_env") or {}).get("env_vars") or {}):
            env = {}  # the job gives its actors one already
        ray.init(logging_level="WARNING", runtime_env={"env_vars": env})
        return
    with socket.socket() as sock:  # a new local cluster: its dashboard's port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ray.init(
        logging_level="WARNING",
        include_dashboard=True,
        dashboard_port=port,
        runtime_env={
            "env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}
        },
    )


def check_room(args: argparse.Namespace) -> None:
    import ray

    cpus = ray.cluster_resources().get("CPU", 0.0)
    each = TRIAL_DRIVER_CPUS + args.num_workers * args.cpus_per_worker
    need = args.max_concurrent * each
    if need > cpus:
        print(
            f"[raygpu] warning: {args.max_concurrent} trials at {each:g} CPU each "
            f"(driver {TRIAL_DRIVER_CPUS:g}, {args.num_workers} worker(s) x "
            f"{args.cpus_per_worker:g}) need {need:g} CPUs and the cluster has "
            f"{cpus:g}: fewer run at once",
            flush=True,
        )


def run(args: argparse.Namespace) -> dict:
    """Search (or resume the search), write the results; return the summary."""
    from ray import tune

    from train import controller_poll_interval
    from tuning import verdicts
    from tuning.budget import EpochBudget

    poll_interval_s = controller_poll_interval()
    started = time.time()
    storage = parse_storage(args.storage_path)
    check_storage(storage)
    experiment = storage.join(args.name)
    ds = load_dataset(args.dataset, args.data_dir, args.download)  # fails before trials
    space = args.space_obj
    settings = TrialSettings(
        dataset=args.dataset,
        data_dir=args.data_dir,
        image_shape=tuple(ds.image_shape),
        num_classes=ds.num_classes,
        epochs=args.epochs,
        seed=args.seed if args.train_seed is None else args.train_seed,
        num_workers=args.num_workers,
        cpus_per_worker=args.cpus_per_worker,
        use_gpu=args.use_gpu,
        keep_checkpoints=args.keep_checkpoints,
        runs_uri=experiment.join(RUNS_FOLDER).uri,
        poll_interval_s=poll_interval_s,
        verdicts=verdicts.board_name(args.name) if args.scheduler == "asha" else None,
    )
    wanted = request(args, space)
    connect_ray()
    check_room(args)
    fs = storage.filesystem if storage.is_remote else None
    restore_path = experiment.uri if not storage.is_remote else experiment.path
    if tune.Tuner.can_restore(restore_path, storage_filesystem=fs):
        check_same_request(experiment, wanted)
        print(f"[raygpu] resuming the search in {experiment.uri}", flush=True)
        tuner = tune.Tuner.restore(
            restore_path,
            trainable=trainable(settings),
            resume_unfinished=True,
            resume_errored=False,
            restart_errored=False,
            storage_filesystem=fs,
        )
    else:
        write_text(experiment.join(REQUEST_FILE), json.dumps(wanted, indent=2))
        planned = (
            space.grid_size(args.grid_points)
            if args.search == "grid"
            else args.num_samples
        )
        print(
            f"[raygpu] searching {', '.join(space.searched)} with {args.search} and "
            f"{args.scheduler}: {planned} trial(s) of up to {args.epochs} epoch(s), "
            f"{args.max_concurrent} at once"
            + (f", {args.epoch_budget} epoch(s) in all" if args.epoch_budget else "")
            + f", in {experiment.uri}",
            flush=True,
        )
        budget = EpochBudget(args.epoch_budget) if args.epoch_budget else None
        tuner = tune.Tuner(
            trainable(settings),
            param_space=space.grid_space(args.grid_points)
            if args.search == "grid"
            else space.tune_space(),
            tune_config=build_tune_config(args, space),
            run_config=tune.RunConfig(
                name=args.name,
                storage_path=storage.path,
                storage_filesystem=fs,
                failure_config=tune.FailureConfig(max_failures=args.max_failures),
                callbacks=[results.Progress(args.epochs, planned)]
                + ([budget] if budget else []),
                stop=budget,
                verbose=0,
            ),
        )
    grid = tuner.fit()
    rows = results.collect(grid, experiment.join(RUNS_FOLDER), args.epochs)
    extra = {
        "settings": asdict(settings),
        "wall_seconds": round(time.time() - started, 2),
    }
    if args.epoch_budget:
        took = sum(r.reported for r in rows)
        extra["epoch_budget"] = {
            "epochs": args.epoch_budget,
            "spent": took >= args.epoch_budget,
        }
    return results.write_all(rows, experiment, wanted, extra)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = run(args)
    except (StorageError, DatasetUnavailable, JobInputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # Tune's own errors: one line
        reason = " ".join(str(exc).split())[:2000]
        print(
            f"error: the search failed: {type(exc).__name__}: {reason}", file=sys.stderr
        )
        return 1
    best, trials = summary["best"], summary["trials"]
    print(
        f"trials={trials['total']} done={trials['done']} stopped_early="
        f"{trials['stopped_early']} errored={trials['errored']} "
        f"epochs_trained={summary['epochs_trained']} "
        f"epochs_reported={summary['epochs_reported']}"
    )
    print(f"result={summary['files']['json']}")
    if best is None:
        print("error: no trial finished an epoch", file=sys.stderr)
        return 1
    print(f"best_config={json.dumps(best['config'], sort_keys=True)}")
    print(f"checkpoint={best['checkpoint']}")
    print(f"best_{METRIC}={best[METRIC]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
