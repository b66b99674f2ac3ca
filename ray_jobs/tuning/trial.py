"""One trial of tune.py: a driver function that runs the project's TorchTrainer.

Ray Tune calls `run_trial` with a configuration (Ray 2.60's pattern for Train V2:
the Tuner gets a function, not a Trainer). It checks that the configuration
builds, then fits a TorchTrainer whose workers run `train_worker`: train.py's
loop (mlcore.loop.train_epochs) on the configured MLP, with Adam's weight decay.
`TuneReportCallback` passes each epoch's metrics (and its checkpoint's path) on
to Tune, where ASHA may stop the trial.

Each trial is a Train run named by its trial id under `<experiment>/runs/`, with
a checkpoint per epoch in the project's format (mlcore.checkpointing: digests,
meta.json last, here with every epoch's metrics so far). A trial restarted
after its driver was killed resumes from its newest good checkpoint, as
train.py does. A non-finite loss ends the trial with
NonFiniteLoss; Tune records it and the search goes on.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from mlcore import checkpointing
from mlcore.checkpointing import checkpoint_name
from mlcore.data import load_dataset
from mlcore.errors import JobInputError
from mlcore.loop import split_tensors, train_epochs
from mlcore.models import ModelSpec, build_model
from mlcore.resume import restore
from mlcore.storage import parse_storage

METRIC = "val_accuracy"
MODE = "max"
# What ASHA counts: epochs done, also right after a resumed trial's restart.
TIME_ATTR = "epochs_done"
RUNS_FOLDER = "runs"
CONTROLLER_RETRIES = 2
# Each checkpoint's meta.json holds the metrics of every epoch so far: the
# trial's curve survives in storage whatever Tune's own state missed.
HISTORY = "history"


class _StoppedByTune(Exception):
    """Tune's verdict on the epoch just reported was STOP: end the loop."""


class NonFiniteLoss(RuntimeError):
    """The train loss became NaN or infinite: the configuration diverges."""


class ConfigCannotBuild(ValueError):
    """The trial's configuration names a model that cannot be built. (Raised in
    place of JobInputError, whose two-argument constructor Ray cannot unpickle.)"""


@dataclass(frozen=True)
class TrialSettings:
    """What every trial shares (tune.py's flags); the searched values come
    from Tune's config."""

    dataset: str
    data_dir: str | None
    image_shape: tuple[int, int, int]
    num_classes: int
    epochs: int
    seed: int
    num_workers: int
    cpus_per_worker: float
    use_gpu: bool
    keep_checkpoints: int
    runs_uri: str  # <storage>/<experiment>/runs
    poll_interval_s: float
    # ASHA's verdict board (tuning.verdicts); None: trials train without waiting.
    verdicts: str | None = None


def model_spec(settings: TrialSettings, config: dict[str, Any]) -> ModelSpec:
    return ModelSpec(
        "mlp",
        settings.image_shape,
        settings.num_classes,
        width=int(config["width"]),
        depth=int(config["depth"]),
        dropout=float(config["dropout"]),
    )


# ------------------------------------------------------------------ the worker


def train_worker(config: dict[str, Any]) -> None:
    """One Train worker of a trial (rank 0 writes the checkpoints)."""
    import ray.train
    import ray.train.torch

    from tuning.verdicts import STOP, wait_for_verdict

    torch.manual_seed(config["seed"])
    torch.set_num_threads(config["threads_per_worker"])
    ctx = ray.train.get_context()
    world, rank = ctx.get_world_size(), ctx.get_world_rank()
    device = ray.train.torch.get_device()
    ds = load_dataset(config["dataset"], config["data_dir"], False)
    spec = ModelSpec.from_dict(config["spec"])
    model = build_model(spec)

    start_epoch, starts, history, optim_state = 0, [], [], None
    state = restore(ray.train.get_checkpoint(), config["run_uri"])
    if state is not None:
        meta, model_state, optim_state = state
        model.load_state_dict(model_state)
        start_epoch = int(meta["epoch"]) + 1
        starts = list(meta.get("starts", []))
        history = list(meta.get(HISTORY, []))
        if start_epoch >= config["epochs"]:
            # Restarted after its last epoch (the driver died before Tune
            # recorded the end): Tune needs the metric once more, not training.
            ray.train.report(history[-1] if history else meta["metrics"])
            return
    starts.append(start_epoch)
    attempt = len(starts)

    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"]
    )
    if optim_state is not None:
        optimizer.load_state_dict(optim_state)
    loader = ray.train.torch.prepare_data_loader(
        DataLoader(
            split_tensors(ds.train),
            batch_size=config["batch_size"] // world,
            shuffle=True,
        )
    )
    val_x = torch.from_numpy(ds.val.x[rank::world]).to(device)
    val_y = torch.from_numpy(ds.val.y[rank::world]).to(device)
    unwrapped = model.module if hasattr(model, "module") else model
    extra = {"starts": starts, "config": config, HISTORY: history}

    def report(epoch: int, loop_metrics: dict[str, float]) -> None:
        loss = loop_metrics["train_loss"]
        if not math.isfinite(loss):
            raise NonFiniteLoss(
                f"train loss is {loss} in epoch {epoch} (lr {config['lr']:g}, "
                f"batch {config['batch_size']}): the configuration diverges"
            )
        metrics = {**loop_metrics, TIME_ATTR: epoch + 1, "attempt": attempt}
        history.append(metrics)
        with tempfile.TemporaryDirectory(prefix="rg-ckpt-") as tmp:
            ckpt = None
            if rank == 0:
                checkpointing.save(
                    tmp, unwrapped, optimizer, epoch, spec, metrics, extra=extra
                )
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(
                metrics,
                checkpoint=ckpt,
                checkpoint_dir_name=checkpoint_name(epoch, attempt),
            )
        board = config.get("verdicts")
        if board and wait_for_verdict(board, config["trial_id"], epoch + 1) == STOP:
            raise _StoppedByTune

    try:
        train_epochs(
            model,
            optimizer,
            loader,
            val_x,
            val_y,
            range(start_epoch, config["epochs"]),
            world=world,
            device=device,
            use_bf16=False,
            report=report,
        )
    except _StoppedByTune:
        return


# ------------------------------------------------------------------ the driver


def check_config(settings: TrialSettings, config: dict[str, Any]) -> ModelSpec:
    """The trial's model spec, once it is known to build (ConfigCannotBuild)."""
    if config["batch_size"] < settings.num_workers:
        raise ConfigCannotBuild(
            f"batch_size: {config['batch_size']} is less than the "
            f"{settings.num_workers} workers"
        )
    spec = model_spec(settings, config)
    try:
        build_model(spec)  # milliseconds for the MLP
    except JobInputError as exc:
        raise ConfigCannotBuild(str(exc)) from None
    return spec


def run_trial(config: dict[str, Any], settings: TrialSettings) -> None:
    """Tune's trainable: one TorchTrainer run for one configuration."""
    import ray.tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from train import controller_env

    spec = check_config(settings, config)
    trial_id = ray.tune.get_context().get_trial_id()
    runs = parse_storage(settings.runs_uri)
    loop_config = {
        **config,
        "spec": spec.to_dict(),
        "dataset": settings.dataset,
        "data_dir": settings.data_dir,
        "epochs": settings.epochs,
        "seed": settings.seed,
        "threads_per_worker": max(1, int(settings.cpus_per_worker)),
        "run_uri": runs.join(trial_id).uri,
        "trial_id": trial_id,
        "verdicts": settings.verdicts,
    }
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=settings.num_workers,
            use_gpu=settings.use_gpu,
            resources_per_worker={"CPU": settings.cpus_per_worker},
        ),
        run_config=RunConfig(
            # The trial id, stable across a restore: the restarted trial's
            # TorchTrainer finds its own checkpoints.
            name=trial_id,
            storage_path=runs.path,
            storage_filesystem=runs.filesystem if runs.is_remote else None,
            # A worker error ends the trial (Tune records it): retrying a
            # diverging configuration would only diverge again. Train retries
            # its controller without end by default: a trial whose workers
            # cannot start would hold the search.
            failure_config=FailureConfig(
                max_failures=0, controller_failure_limit=CONTROLLER_RETRIES
            ),
            checkpoint_config=CheckpointConfig(
                num_to_keep=settings.keep_checkpoints,
                checkpoint_score_attribute=METRIC,
                checkpoint_score_order=MODE,
            ),
            callbacks=[TuneReportCallback()],
        ),
    )
    with controller_env(settings.poll_interval_s):
        trainer.fit()
