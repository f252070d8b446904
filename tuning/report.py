"""What a search leaves for people: ``trials.csv``, ``trials.png`` and the command of the best trial.

Everything is read back from files (KerasTuner's ``trial.json`` and the run directories), so
any process of a distributed search, or a later one, writes the same table. No TensorFlow.
"""

from __future__ import annotations

import fcntl
import json
import shlex
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from deeplense_tf import runs
from deeplense_tf.cli import FLAG_FIELDS
from deeplense_tf.config import RunConfig
from tuning.space import DEFAULT_SPACE, to_config, trained_values

TRIALS_DIR = "trials"  # KerasTuner's project folder: one run directory per trial
TRIAL_INFO = "tuning.json"  # per trial: wall time, memory, which worker ran it
SETTINGS = "search.json"
# Flags printed in every reproduce command, whatever their value; the rest only when not default.
ALWAYS = {"data", "task", "samples", "image_size", "arch", "lr", "optimizer", "weight_decay", "dropout",
          "fc_units", "batch_size", "epochs", "seed"}
MACHINE = {"out", "workers", "device"}  # where and how fast, not what is trained: left to the user


def trials_table(out: Path, objective: str) -> pd.DataFrame:
    """One row per trial, in trial order: id, status, objective, time, memory, hyperparameters."""
    rows = []
    for path in (out / TRIALS_DIR).glob("trial_*/trial.json"):
        rows.append(_trial_row(path.parent, json.loads(path.read_text()), objective))
    columns = ["trial", "status", objective, "best_epoch", "epochs", "wall_s", "rss_mb", "tuner_id"]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=[*columns, "run_dir", "message"])
    frame = frame.sort_values("trial", key=lambda ids: ids.astype(int)).reset_index(drop=True)
    order = {name: i for i, name in enumerate(DEFAULT_SPACE)}  # Hyperband's "tuner/..." columns last
    hps = sorted((c for c in frame.columns if c not in columns and c not in ("run_dir", "message")),
                 key=lambda c: (order.get(c, len(order)), c))
    return frame[[*columns, *hps, "run_dir", "message"]]


def _trial_row(run_dir: Path, trial: dict[str, Any], objective: str) -> dict[str, Any]:
    values = trial.get("hyperparameters", {}).get("values", {})
    info = runs.read_json(run_dir / TRIAL_INFO) if (run_dir / TRIAL_INFO).is_file() else {}
    completed = trial.get("status") == "COMPLETED"
    first_epoch = int(values.get("tuner/initial_epoch", 0))
    epochs = values.get("tuner/epochs")
    if (run_dir / runs.CONFIG).is_file():  # what the trial trained with, not what the tuner asked for
        config = json.loads((run_dir / runs.CONFIG).read_text())
        epochs, values = config["train"]["epochs"], trained_values(values, config)
    return {
        "trial": trial["trial_id"], "status": trial.get("status"),
        objective: trial.get("score") if completed else None,
        "best_epoch": first_epoch + int(trial["best_step"]) + 1 if completed and trial.get("best_step") is not None
        else None,
        "epochs": epochs, "wall_s": info.get("wall_s"), "rss_mb": info.get("rss_mb"),
        "tuner_id": info.get("tuner_id"), **values, "run_dir": str(run_dir),
        # A worker's error does not travel to the chief's trial.json; the worker wrote it to tuning.json.
        "message": None if completed else last_line(trial.get("message")) or info.get("error"),
    }


def last_line(message: str | None) -> str | None:
    """KerasTuner stores the traceback; its last line is the error."""
    lines = [line for line in (message or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


def best_row(frame: pd.DataFrame, objective: str, direction: str) -> pd.Series | None:
    done = frame[(frame["status"] == "COMPLETED") & frame[objective].notna()]
    if done.empty:
        return None
    values = done[objective].astype(float)
    return done.loc[values.idxmin() if direction == "min" else values.idxmax()]


def write_report(out: Path, objective: str, direction: str) -> pd.DataFrame:
    """Rewrite ``trials.csv`` and ``trials.png``; a lock keeps concurrent workers from interleaving."""
    with _locked(out / ".report.lock"):
        frame = trials_table(out, objective)
        with runs.atomic_path(out / "trials.csv", suffix=".csv") as tmp:
            frame.to_csv(tmp, index=False)
        if not frame.empty:
            with runs.atomic_path(out / "trials.png", suffix=".png") as tmp:
                plot_trials(frame, objective, direction, tmp)
    return frame


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def plot_trials(frame: pd.DataFrame, objective: str, direction: str, path: Path) -> None:
    """Objective per trial, coloured by architecture, with the best-so-far line; failures as red x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    number = frame["trial"].astype(int)
    done = frame["status"] == "COMPLETED"
    score = pd.to_numeric(frame[objective], errors="coerce")
    arch = frame["arch"] if "arch" in frame else pd.Series(["trial"] * len(frame))
    for name in sorted(arch[done].astype(str).unique()):
        pick = done & (arch.astype(str) == name)
        ax.scatter(number[pick], score[pick], label=name, zorder=3)
    if done.any():
        best = score.where(done).cummin() if direction == "min" else score.where(done).cummax()
        ax.step(number, best, where="post", color="0.4", label="best so far")
    failed = ~done & frame["status"].isin(["FAILED", "INVALID"])
    if failed.any():
        ax.scatter(number[failed], [0.98] * int(failed.sum()), marker="x", color="red", label="failed",
                   transform=ax.get_xaxis_transform(), zorder=3)
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{objective} (best epoch, {direction})")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def train_command(config: RunConfig) -> str:
    """The ``python -m deeplense_tf.train`` command that trains ``config`` from scratch."""
    default = RunConfig()
    words = ["python", "-m", "deeplense_tf.train"]
    for section, names in FLAG_FIELDS.items():
        for name in names:
            value = getattr(getattr(config, section), name)
            is_default = value == getattr(getattr(default, section), name)
            if name in MACHINE or value is None or (name not in ALWAYS and is_default):
                continue
            if name == "augment":
                words += [] if value else ["--no-augment"]
            elif name == "deterministic":
                words += [] if value else ["--nondeterministic"]
            elif isinstance(value, bool):
                words += [f"--{name.replace('_', '-')}"] if value else []
            else:
                words += [f"--{name.replace('_', '-')}", *map(str, value if isinstance(value, tuple) else [value])]
    return shlex.join(words)


def summary_lines(frame: pd.DataFrame, objective: str, direction: str, out: Path) -> list[str]:
    """What the search prints at the end: counts, the best trial, and how to reproduce / continue it."""
    counts = frame["status"].value_counts().to_dict() if not frame.empty else {}
    lines = [f"{len(frame)} trials ({', '.join(f'{n} {s.lower()}' for s, n in sorted(counts.items()))}): "
             f"{out / 'trials.csv'}, plot {out / 'trials.png'}"]
    best = best_row(frame, objective, direction)
    if best is None:
        return lines + ["no trial completed yet: see the message column of trials.csv"]
    run_dir = Path(best["run_dir"])
    lines.append(f"best trial {best['trial']}: {objective} {float(best[objective]):.4g} "
                 f"at epoch {int(best['best_epoch'])}, run directory {run_dir}")
    config = best_config(out, run_dir)
    if config is not None:
        lines.append(f"reproduce it: {train_command(config)}")
    if (run_dir / runs.CONFIG).is_file():
        lines.append(f"continue it:  python -m deeplense_tf.train --resume {shlex.quote(str(run_dir))} "
                     f"--epochs {2 * config.train.epochs}")
        lines.append(f"evaluate it:  python -m deeplense_tf.evaluate {shlex.quote(str(run_dir))}")
    lines.append(f"TensorBoard (HParams tab): tensorboard --logdir {shlex.quote(str(out / TRIALS_DIR))}")
    return lines


def best_config(out: Path, run_dir: Path) -> RunConfig | None:
    """The trial's saved config; where its run directory is on another machine, rebuilt from search.json."""
    if (run_dir / runs.CONFIG).is_file():
        return RunConfig.load(run_dir / runs.CONFIG)
    if not (out / SETTINGS).is_file() or not (run_dir / "trial.json").is_file():
        return None
    values = runs.read_json(run_dir / "trial.json")["hyperparameters"]["values"]
    base = RunConfig.from_dict(runs.read_json(out / SETTINGS)["config"])
    return to_config(base, values, epochs=values.get("tuner/epochs"))
