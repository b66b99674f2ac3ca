"""tune.py's results: progress lines, the table, tune_result.json and the plots.

Everything is written to the experiment folder (local or s3://) after the
search: `results.csv` and `results.md` (one row per trial, best first),
`tune_result.json` (the best configuration, its validation accuracy and the URI
of its checkpoint, the trials' counts, the epochs trained and the request), and
two PNG plots: `val_curves.png` (every trial's validation accuracy per epoch)
and `best_so_far.png` (each trial's best and the running best, in the order the
trials finished).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ray.tune import Callback

from mlcore import checkpointing
from mlcore.checkpointing import META_FILE, list_checkpoints
from mlcore.storage import StoragePath, read_text, write_text
from tuning.space import PARAMS
from tuning.trial import HISTORY, METRIC, TIME_ATTR

FILES = {
    "csv": "results.csv",
    "markdown": "results.md",
    "json": "tune_result.json",
    "curves": "val_curves.png",
    "best_so_far": "best_so_far.png",
}


def trial_dirname(trial) -> str:
    """Tune's folder for a trial: its id (the default name runs to 200 chars)."""
    return f"trial_{trial.trial_id}"


def error_line(text: str | None) -> str:
    """The line of a trial's traceback that says what went wrong."""
    if not text:
        return ""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    named = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Loss|Exception|Build)): (.+)$")
    found = [ln for ln in lines if named.match(ln)]
    chosen = found[-1] if found else lines[-1]
    m = named.match(chosen)
    line = f"{m.group(1)}: {m.group(2)}" if m else chosen
    return line[:300]


def _short_config(config: dict) -> str:
    return " ".join(f"{k}={_fmt(config[k])}" for k in PARAMS if k in config)


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class Progress(Callback):
    """A line per finished trial (done, stopped early or failed) with the best so
    far. Stateless: Tune pickles its callbacks and restores them with the search."""

    def __init__(self, epochs: int, planned: int | None):
        self.epochs = epochs
        self.planned = planned

    def _line(self, trials, trial, what: str) -> None:
        # `trial` itself is not marked ended yet when Tune calls back
        ended = [t for t in trials if t.status in ("TERMINATED", "ERROR")]
        ended += [trial] if trial not in ended else []
        best = max(
            (t for t in ended if t.metric_analysis.get(METRIC)),
            key=lambda t: t.metric_analysis[METRIC]["max"],
            default=None,
        )
        of = f"/{self.planned}" if self.planned else ""
        text = f"[raygpu] trial {len(ended)}{of} {trial.trial_id} {what}"
        text += f" ({_short_config(trial.config)})"
        if best is not None:
            acc = best.metric_analysis[METRIC]["max"]
            text += f"; best so far {METRIC}={acc:.4f} ({best.trial_id})"
        print(text, flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        done = trial.last_result.get(TIME_ATTR, 0)
        acc = trial.metric_analysis.get(METRIC, {}).get("max", float("nan"))
        how = "done" if done >= self.epochs else "stopped early"
        self._line(trials, trial, f"{how} after {done} epoch(s): {METRIC}={acc:.4f}")

    def on_trial_error(self, iteration, trials, trial, **info):
        reason = ""
        try:
            with open(trial.error_file) as f:
                reason = error_line(f.read())
        except (OSError, TypeError):
            reason = "see error.txt in its folder"
        self._line(trials, trial, f"failed: {reason}")


# ------------------------------------------------------------------- the rows


@dataclass
class Row:
    trial_id: str
    status: str  # done, stopped early, error
    config: dict
    epochs: int = 0  # epochs trained (its checkpoints' record)
    reported: int = 0  # epochs whose results Tune took
    best: float | None = None  # best validation accuracy over its epochs
    best_epoch: int | None = None  # epochs done at the best (1-based)
    last: float | None = None
    checkpoint: str | None = None  # of the best epoch
    error: str = ""
    finished_at: float = math.inf
    curve: list[tuple[int, float]] = field(default_factory=list)


def trial_history(run: StoragePath) -> tuple[list[dict], dict[tuple, str]]:
    """A trial's metrics of every epoch, from the meta.json of its newest
    complete checkpoint, and its checkpoint folders by (epoch, attempt)."""
    found = list_checkpoints(run.filesystem, run.path)
    folders = {(c.epoch, c.attempt): c.path for c in found}
    for listed in reversed(found):
        try:
            meta = json.loads(read_text(run.join(listed.name, META_FILE)))
        except (OSError, ValueError):
            continue  # interrupted while writing it: an older one has the rest
        return list(meta.get(HISTORY, [])), folders
    return [], folders


def _reported(result) -> list[dict]:
    """What Tune recorded of a trial's epochs (for a trial without checkpoints)."""
    df = result.metrics_dataframe
    if df is None or not len(df) or TIME_ATTR not in df or METRIC not in df:
        return []
    return df[[TIME_ATTR, METRIC, "epoch"]].dropna().to_dict("records")


def collect(grid, runs: StoragePath, epochs: int) -> list[Row]:
    """One Row per trial of a ResultGrid, best first, failed ones last.

    A trial's curve comes from its checkpoints (Tune's own record of a trial
    restarted after a kill can miss the epochs before it)."""
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or result.path.rstrip("/").rsplit("_", 1)[-1]
        config = {k: v for k, v in (result.config or {}).items() if k in PARAMS}
        row = Row(trial_id=trial_id, status="done", config=config)
        history, folders = trial_history(runs.join(trial_id))
        reported = _reported(result)
        seen = {int(m[TIME_ATTR]) for m in reported}
        row.reported = len(seen)
        by_epoch = {int(m[TIME_ATTR]): m for m in history or reported}
        if by_epoch:
            done = sorted(by_epoch)
            row.curve = [(e, float(by_epoch[e][METRIC])) for e in done]
            row.epochs, row.last = len(done), row.curve[-1][1]
            # the latest of equal bests: the one Train keeps (checkpoint_score_*)
            at = max(range(len(done)), key=lambda i: (row.curve[i][1], i))
            row.best_epoch, row.best = row.curve[at]
            best = by_epoch[row.best_epoch]
            path = folders.get((int(best["epoch"]), int(best.get("attempt", 0))))
            row.checkpoint = path and checkpointing.checkpoint_uri(runs, path)
        if "timestamp" in metrics:
            row.finished_at = float(metrics["timestamp"])
        if result.error is not None:
            row.status, row.error = "error", error_line(str(result.error))
        elif max(seen or {row.epochs}) < epochs:
            # Tune's word: ASHA stopped it (it may have trained on a little
            # while it was torn down)
            row.status = "stopped early"
        rows.append(row)
    rows.sort(key=lambda r: (r.status == "error", -(r.best or 0.0), r.trial_id))
    return rows


def best_row(rows: list[Row]) -> Row | None:
    ok = [r for r in rows if r.status != "error" and r.best is not None]
    return max(ok, key=lambda r: r.best) if ok else None


# ------------------------------------------------------------------- writing


def _columns() -> list[str]:
    return [
        "trial_id",
        "status",
        *PARAMS,
        "epochs",
        "epochs_reported",
        f"best_{METRIC}",
        "best_epoch",
        f"last_{METRIC}",
        "checkpoint",
        "error",
    ]


def _values(row: Row) -> list:
    return [
        row.trial_id,
        row.status,
        *(row.config.get(k, "") for k in PARAMS),
        row.epochs,
        row.reported,
        "" if row.best is None else round(row.best, 6),
        "" if row.best_epoch is None else row.best_epoch,
        "" if row.last is None else round(row.last, 6),
        row.checkpoint or "",
        row.error,
    ]


def table_csv(rows: list[Row]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_columns())
    writer.writerows(_values(r) for r in rows)
    return out.getvalue()


def table_markdown(rows: list[Row], title: str) -> str:
    cols = [c for c in _columns() if c != "checkpoint"]
    lines = [f"# {title}", "", "| " + " | ".join(cols) + " |"]
    lines.append("|" + "---|" * len(cols))
    for row in rows:
        cells = [
            v
            for c, v in zip(_columns(), _values(row), strict=True)
            if c != "checkpoint"
        ]
        text = [_fmt(v) if isinstance(v, float) else str(v) for v in cells]
        lines.append("| " + " | ".join(t.replace("|", "/") for t in text) + " |")
    return "\n".join(lines) + "\n"


def summary(rows: list[Row], experiment: StoragePath, request: dict) -> dict:
    best = best_row(rows)
    return {
        "experiment": experiment.uri,
        "metric": METRIC,
        "mode": "max",
        "best": None
        if best is None
        else {
            "trial_id": best.trial_id,
            "config": best.config,
            METRIC: best.best,
            "epoch": best.best_epoch,
            "checkpoint": best.checkpoint,
        },
        "trials": {
            "total": len(rows),
            "done": sum(r.status == "done" for r in rows),
            "stopped_early": sum(r.status == "stopped early" for r in rows),
            "errored": sum(r.status == "error" for r in rows),
        },
        "epochs_trained": sum(r.epochs for r in rows),
        # what Tune took; the rest a stopped trial trained while torn down
        "epochs_reported": sum(r.reported for r in rows),
        "errors": {r.trial_id: r.error for r in rows if r.error},
        "request": request,
        "files": {k: experiment.join(v).uri for k, v in FILES.items()},
    }


def _png(figure) -> bytes:
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plots(rows: list[Row], title: str) -> dict[str, bytes]:
    """The two plots as PNG bytes, drawn with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    best = best_row(rows)
    curves = Figure(figsize=(7, 4.5))
    ax = curves.subplots()
    for row in rows:
        if not row.curve:
            continue
        xs, ys = zip(*row.curve, strict=True)
        is_best = best is not None and row.trial_id == best.trial_id
        ax.plot(
            xs,
            ys,
            marker="o" if len(xs) == 1 else None,
            linewidth=2.5 if is_best else 1,
            alpha=1.0 if is_best else 0.6,
            linestyle="--" if row.status == "error" else "-",
            label=f"best: {row.trial_id}" if is_best else None,
        )
    ax.set(xlabel="epoch", ylabel="validation accuracy", title=f"{title}: every trial")
    if best is not None:
        ax.legend(loc="best")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)

    ordered = sorted(
        (r for r in rows if r.best is not None), key=lambda r: r.finished_at
    )
    so_far = Figure(figsize=(7, 4.5))
    ax = so_far.subplots()
    xs = list(range(1, len(ordered) + 1))
    running, top = [], -math.inf
    for row in ordered:
        top = max(top, row.best)
        running.append(top)
    ax.scatter(xs, [r.best for r in ordered], s=18, alpha=0.6, label="trial's best")
    ax.step(xs, running, where="post", linewidth=2, label="best so far")
    ax.set(
        xlabel="trial (in the order they finished)",
        ylabel="validation accuracy",
        title=f"{title}: best so far",
    )
    ax.legend(loc="best")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return {"curves": _png(curves), "best_so_far": _png(so_far)}


def write_bytes(target: StoragePath, data: bytes) -> None:
    target.filesystem.create_dir(target.path.rsplit("/", 1)[0], recursive=True)
    with target.filesystem.open_output_stream(target.path) as f:
        f.write(data)


def write_all(
    rows: list[Row], experiment: StoragePath, request: dict, extra: dict
) -> dict:
    """Write the table, tune_result.json (with `extra`) and the plots; return
    what tune_result.json holds."""
    title = experiment.uri.rstrip("/").rsplit("/", 1)[-1]
    result = summary(rows, experiment, request) | extra
    write_text(experiment.join(FILES["csv"]), table_csv(rows))
    write_text(experiment.join(FILES["markdown"]), table_markdown(rows, title))
    for key, data in plots(rows, title).items():
        write_bytes(experiment.join(FILES[key]), data)
    text = json.dumps(result, indent=2, default=str)
    write_text(experiment.join(FILES["json"]), text)
    return result
