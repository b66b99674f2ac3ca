"""tune.py: Ray Tune over the project's TorchTrainer, on a real local Ray cluster.

A small Optuna + ASHA search submitted as a job writes its results (table, JSON,
plots) while its diverging and unbuildable trials are recorded as errors; a
search whose driver is killed after its first trial resumes on the rerun;
and bad search spaces are refused, naming the entry, before any trial starts
(those need no cluster).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import ray

import tune
from mlcore import checkpointing
from mlcore.checkpointing import list_checkpoints
from mlcore.errors import CheckpointError
from mlcore.models import ModelSpec, build_model
from tests.conftest import RAY_JOBS
from tuning import space as tspace

PNG = b"\x89PNG\r\n\x1a\n"


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# ------------------------------------------------------- a search, failures


FAILING_SPACE = """
parameters:
  lr: {distribution: loguniform, low: 1.0e-3, high: 1.0e12}
  width: {distribution: choice, values: [4, 64]}
  depth: {distribution: choice, values: [2, 4]}
  batch_size: 64
points_to_evaluate:
  - {lr: 3.0e-3, width: 64, depth: 2}    # trains
  - {lr: 1.0e12, width: 64, depth: 2}    # its loss is NaN in the first epoch
  - {lr: 3.0e-3, width: 4, depth: 4}     # 4 halved over 4 layers: cannot build
"""


@pytest.fixture(scope="module")
def searched(ray_head, tmp_path_factory):
    """tune.py submitted as a job through raygpu submit, as users do: 4 trials
    (the 3 points, then one of TPE's), 2 epochs each, 2 at once."""
    root = tmp_path_factory.mktemp("tune")
    cmd = [
        sys.executable,
        "-m",
        "raygpu",
        "submit",
        "--address",
        ray_head.dashboard_url,
        "--",
        "python",
        "tune.py",
        "--space",
        write(root / "space.yaml", FAILING_SPACE),
        "--num-samples",
        "4",
        "--epochs",
        "2",
        "--storage-path",
        str(root / "store"),
        "--name",
        "search",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    return root / "store" / "search", done.stdout


@pytest.mark.slow
def test_a_search_writes_its_table_json_and_plots(searched):
    folder, logs = searched
    summary = json.loads((folder / "tune_result.json").read_text())
    assert summary["trials"]["total"] == 4
    assert summary["request"]["search"] == "optuna"
    assert summary["request"]["scheduler"] == "asha"
    best = summary["best"]
    assert best["val_accuracy"] > 0.5 and 1 <= best["epoch"] <= 2
    # the best checkpoint is the project's format, of the configuration found
    meta = checkpointing.verify(best["checkpoint"])
    assert meta["metrics"]["val_accuracy"] == pytest.approx(best["val_accuracy"])
    assert meta["model"]["width"] == best["config"]["width"]
    assert meta["config"]["lr"] == pytest.approx(best["config"]["lr"])

    with open(folder / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert set(summary["errors"]) == {r["trial_id"] for r in rows if r["error"]}
    table = (folder / "results.md").read_text().splitlines()
    assert table[2].startswith("| trial_id | status | lr |")
    assert len([line for line in table if line.startswith("| ")]) == 1 + 4
    for name in ("val_curves.png", "best_so_far.png"):
        data = (folder / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000
    assert summary["epochs_trained"] == sum(int(r["epochs"]) for r in rows)
    # Workers wait for ASHA's verdict on each epoch (tuning.verdicts): a trial
    # trains no epoch whose result Tune did not take.
    for r in rows:
        if not r["error"]:
            assert r["epochs"] == r["epochs_reported"], r
    assert "[raygpu] trial 4/4 " in logs and "best_val_accuracy=" in logs


@pytest.mark.slow
def test_failing_trials_are_recorded_and_the_others_finish(searched):
    folder, logs = searched
    with open(folder / "results.csv") as f:
        rows = {
            (float(r["lr"]), int(r["width"]), int(r["depth"])): r
            for r in csv.DictReader(f)
        }
    good = rows[(3e-3, 64, 2)]
    assert good["status"] in ("done", "stopped early") and not good["error"]
    assert float(good["best_val_accuracy"]) > 0.5
    nan = rows[(1e12, 64, 2)]
    assert nan["status"] == "error"
    assert nan["error"].startswith("NonFiniteLoss: train loss is nan in epoch 0")
    unbuildable = rows[(3e-3, 4, 4)]
    assert unbuildable["status"] == "error" and unbuildable["epochs"] == "0"
    assert unbuildable["error"].startswith("ConfigCannotBuild: width: 4 halved")
    # the search went on after them: TPE's own trial ran too
    assert len(rows) == 4 and "failed: NonFiniteLoss" in logs


# ----------------------------------------------------------------- resuming


def latest_good(run: Path):
    """The newest checkpoint of a trial's run folder that verifies, or None."""
    fs = pafs.LocalFileSystem()
    for found in reversed(list_checkpoints(fs, str(run))):
        try:
            return found, checkpointing.verify(found.path)
        except CheckpointError:
            continue
    return None


def kill_after_the_first_trial(argv: list, env: dict, tmp_path: Path, of: int) -> str:
    """Run the search and kill its driver once its first of `of` trials has
    ended; that trial's id."""
    with open(tmp_path / "first.err", "w") as err:
        first = subprocess.Popen(
            argv, cwd=RAY_JOBS, env=env, stdout=subprocess.PIPE, stderr=err, text=True
        )
        finished = None
        try:
            for line in first.stdout:
                if line.startswith(f"[raygpu] trial 1/{of} "):
                    finished = line.split()[3]
                    break
        finally:
            first.kill()
            first.wait(timeout=60)
    assert finished, (tmp_path / "first.err").read_text()[-3000:]
    return finished


@pytest.mark.slow
def test_a_killed_search_resumes_on_the_rerun(ray_head, tmp_path):
    """Killed once its first trial is done, the rerun restores the experiment:
    the same trials, the finished one left alone, the others resumed from their
    checkpoints, none trained from scratch again."""
    epochs = 3
    argv = [
        sys.executable,
        "tune.py",
        "--lr",
        "1e-3:1e-2",
        "--space",
        write(tmp_path / "space.json", '{"parameters": {"batch_size": 64}}'),
        "--num-samples",
        "3",
        "--scheduler",
        "fifo",
        "--epochs",
        str(epochs),
        "--storage-path",
        str(tmp_path),
        "--name",
        "resumed",
    ]
    env = {**os.environ, **ray_head.env()}
    finished = kill_after_the_first_trial(argv, env, tmp_path, 3)
    runs = tmp_path / "resumed" / "runs"
    before = {p.name: latest_good(p) for p in runs.iterdir()}

    second = subprocess.run(
        argv, cwd=RAY_JOBS, env=env, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "[raygpu] resuming the search in" in second.stdout
    summary = json.loads((tmp_path / "resumed" / "tune_result.json").read_text())
    with open(tmp_path / "resumed" / "results.csv") as f:
        rows = {r["trial_id"]: r for r in csv.DictReader(f)}
    # the same experiment: its trials, not three new ones
    assert summary["trials"]["total"] == 3 and set(before) <= set(rows)
    assert all(
        r["status"] == "done" and r["epochs"] == str(epochs) for r in rows.values()
    )
    # the finished trial was not trained again
    names = [
        c.name for c in list_checkpoints(pafs.LocalFileSystem(), str(runs / finished))
    ]
    assert names and all(n.endswith("_attempt01") for n in names)
    for trial, had in before.items():
        if had is None or had[0].epoch == epochs - 1:
            continue  # nothing to resume from, or it had trained every epoch
        after = latest_good(runs / trial)
        assert after is not None, trial
        starts = after[1]["starts"]
        # resumed after the epoch it had (or a later one it wrote while dying)
        assert len(starts) == 2 and starts[1] >= had[0].epoch + 1, (trial, starts)


@pytest.mark.slow
def test_an_epoch_budget_ends_the_search_and_survives_a_restore(ray_head, tmp_path):
    """--epoch-budget 5 over 4 trials of 2 epochs: killed after the first trial
    (2 epochs spent), the rerun goes on counting them and stops at 5, not 2 + 5."""
    budget = 5
    argv = [
        sys.executable,
        "tune.py",
        "--lr",
        "1e-3:1e-2",
        "--space",
        write(tmp_path / "space.json", '{"parameters": {"batch_size": 64}}'),
        "--num-samples",
        "4",
        "--scheduler",
        "fifo",
        "--epochs",
        "2",
        "--epoch-budget",
        str(budget),
        "--storage-path",
        str(tmp_path),
        "--name",
        "budget",
    ]
    env = {**os.environ, **ray_head.env()}
    kill_after_the_first_trial(argv, env, tmp_path, 4)

    second = subprocess.run(
        argv, cwd=RAY_JOBS, env=env, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "[raygpu] resuming the search in" in second.stdout
    assert "[raygpu] the epoch budget is spent (" in second.stdout
    summary = json.loads((tmp_path / "budget" / "tune_result.json").read_text())
    assert summary["epoch_budget"] == {"epochs": budget, "spent": True}
    # the budget counts the epochs Tune took; the step that spends it may take
    # one more result (FIFO's workers train on ahead of Tune: their epochs
    # trained are not bounded by it)
    assert budget <= summary["epochs_reported"] <= budget + 1, summary
    assert summary["trials"]["total"] <= 4 and summary["request"]["epoch_budget"] == 5


# ------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("parameters: {lr: 0.01, colour: 3}", "parameters.colour: unknown parameter"),
        ("parameters: {lr: 0.1}\nbudget: 3", "budget: unknown key; allowed"),
        (
            "parameters:\n  lr: {distribution: loguniform, low: 0.1, high: 0.001}",
            "parameters.lr: empty range: low 0.1 >= high 0.001",
        ),
        (
            "parameters:\n  dropout: {distribution: uniform, low: 0.2, high: 0.2}",
            "parameters.dropout: empty range",
        ),
        (
            "parameters:\n  lr: {distribution: gaussian, low: 0.1, high: 0.2}",
            "parameters.lr.distribution: unknown 'gaussian'; choose one of loguniform",
        ),
        (
            "parameters:\n  lr: {distribution: loguniform, low: '1e-4', high: 0.1}",
            "parameters.lr.low: must be a number, got '1e-4'",
        ),
        (
            "parameters:\n  lr: {distribution: uniform, low: 0.1, hgih: 0.2}",
            "parameters.lr.hgih: unknown key for a uniform distribution",
        ),
        (
            "parameters:\n  width: {distribution: uniform, low: 16, high: 64}",
            "parameters.width.distribution: uniform gives fractions",
        ),
        (
            "parameters:\n  dropout: {distribution: uniform, low: 0.0, high: 1.5}",
            "parameters.dropout.high: 1.5 is outside [0, 1)",
        ),
        (
            "parameters:\n  batch_size: {distribution: choice, values: []}",
            "parameters.batch_size.values: must be a non-empty list",
        ),
        (
            "parameters:\n  lr: {distribution: loguniform, low: 0.001, high: 0.1}\n"
            "points_to_evaluate:\n  - {lr: 0.5}",
            "points_to_evaluate[0].lr: 0.5 is outside the space's",
        ),
        ("parameters: [lr]", "parameters: must map parameter names"),
        ("parameters: {lr: 0.01}", "--space: nothing to search"),
        ("{not yaml", "is not valid"),
    ],
)
def test_bad_search_spaces_are_refused_naming_the_entry(
    tmp_path, capsys, text, fragment
):
    path = write(tmp_path / "space.yaml", text)
    with pytest.raises(SystemExit) as exc:
        tune.parse_args(["--space", path, "--storage-path", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("tune.py: error: ") and fragment in err, err


def test_a_bad_space_stops_the_job_before_any_trial(tmp_path, capsys, monkeypatch):
    """main() refuses it in one line with argparse's status 2, before Ray."""
    import ray

    def no_ray(*args, **kwargs):
        raise AssertionError("tune.main started Ray for a bad search space")

    # The session's driver may be connected already, so watch the call itself.
    monkeypatch.setattr(ray, "init", no_ray)
    path = write(
        tmp_path / "space.json", '{"parameters": {"lr": {"distribution": "x"}}}'
    )
    with pytest.raises(SystemExit) as exc:
        tune.main(["--space", path, "--storage-path", str(tmp_path)])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"tune.py: error: {path}: parameters.lr.distribution: unknown 'x'; choose "
        "one of loguniform, uniform, choice, randint"
    )
    assert list(tmp_path.iterdir()) == [tmp_path / "space.json"]


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--lr", "1e-4:abc"], "--lr: 'abc' is not a number"),
        (["--width", "8:4"], "--width: empty range: low 8 >= high 4"),
        (["--depth", "1.5"], "--depth: '1.5' is not an integer"),
        (["--search", "bayes"], "--search: unknown 'bayes'"),
        (["--search", "grid", "--num-samples", "4"], "--num-samples: a grid runs"),
        (["--grace-period", "5", "--epochs", "2"], "--grace-period: must be at most"),
        (["--max-concurrent", "0"], "--max-concurrent: must be a number >= 1"),
        (["--search", "grid", "--startup-trials", "3"], "--startup-trials: goes with"),
        (["--name", "../x"], "--name: use 1-100 letters"),
        (["--seed", "-1"], "--seed: must be a number >= 0"),
        (["--train-seed", "-2"], "--train-seed: must be a number >= 0"),
        (["--epoch-budget", "0"], "--epoch-budget: must be a number >= 1"),
    ],
)
def test_bad_flags_are_refused_naming_the_flag(tmp_path, capsys, argv, fragment):
    with pytest.raises(SystemExit):
        tune.parse_args([*argv, "--storage-path", str(tmp_path)])
    assert fragment in capsys.readouterr().err


def test_flags_and_the_shipped_space_make_the_search_space():
    args = tune.parse_args(
        ["--lr", "1e-4:1e-1", "--width", "64,128", "--dropout", "0.1"]
    )
    params = args.space_obj.params
    assert params["lr"].to_dict() == {
        "distribution": "loguniform",
        "low": 1e-4,
        "high": 0.1,
    }
    assert params["width"].to_dict() == {"distribution": "choice", "values": [64, 128]}
    assert params["dropout"].to_dict() == {"distribution": "fixed", "value": 0.1}
    # the rest from ray_jobs/search_spaces/digits_mlp.yaml
    assert params["depth"].to_dict() == {"distribution": "randint", "low": 1, "high": 3}
    assert args.space_obj.searched == [
        "lr",
        "batch_size",
        "width",
        "depth",
        "weight_decay",
    ]
    # a grid over the same ranges: 3 log-spaced rates x 3 batches x 2 widths x 3 x 3
    assert args.space_obj.params["lr"].grid(3) == pytest.approx(
        [1e-4, 3.1623e-3, 0.1], rel=1e-4
    )
    assert args.space_obj.grid_size(3) == 3 * 3 * 2 * 3 * 3


def test_the_mlp_takes_width_depth_and_dropout_and_keeps_its_default():
    default = ModelSpec("mlp", (1, 8, 8), 10)
    assert default.to_dict() == {
        "name": "mlp",
        "image_shape": (1, 8, 8),
        "num_classes": 10,
    }
    assert [p.shape[0] for p in build_model(default).parameters()][::2] == [
        256,
        128,
        10,
    ]
    shaped = ModelSpec("mlp", (1, 8, 8), 10, width=64, depth=3, dropout=0.2)
    assert ModelSpec.from_dict(shaped.to_dict()) == shaped
    model = build_model(shaped)
    assert [p.shape[0] for p in model.parameters()][::2] == [64, 32, 16, 10]
    assert sum(isinstance(m, type(model.net[3])) for m in model.net) == 3  # Dropout
    assert tspace.PARAMS["dropout"].bounds() == "[0, 1)"


@pytest.mark.slow
def test_the_verdict_board_hands_a_posted_verdict_to_its_waiter(ray_cluster):
    from tuning import verdicts

    board = verdicts.board_name(f"test-{os.getpid()}")
    verdicts._board(board).post.remote("t1", 3, verdicts.STOP)
    assert verdicts.wait_for_verdict(board, "t1", 3) == verdicts.STOP
    waiting = verdicts._board(board).wait.remote("t1", 4, 30)
    verdicts._board(board).post.remote("t1", 4, "CONTINUE")
    assert ray.get(waiting, timeout=30) == "CONTINUE"
    # nothing posted: the worker hears None when the wait runs out, and trains on
    assert ray.get(verdicts._board(board).wait.remote("t2", 1, 0.2)) is None
