"""After ``fit``: measure the kept checkpoints on the validation split again, outside ``fit``.

Why: the run reports (tests, exports) ``best.keras``, chosen epoch by epoch from the validation
value ``fit`` logged. If that in-fit validation ever disagrees with the weights it saves, the
wrong epoch is kept and nothing says so. It happened (BENCHMARKS.md, "Rerun of the regression"):
a 40-epoch regression kept its epoch-2 weights (test MAE 0.245) because fit logged val_loss 0.20
for its last epoch, whose saved weights score 0.012 (MAE 0.077) on the same images. The cause,
found later, was the input pipeline letting the model overwrite the validation images (BENCHMARKS.md,
"In-fit validation that drifted"; fixed in ``data.pipeline._take``); the check stays as the guard
that says so if anything ever makes the two disagree again. It costs one validation pass per
checkpoint (two at most) and:

- records, per checkpoint, the epoch, the value ``fit`` logged and the value measured now
  (``metrics.json``, key ``revalidation``), and warns when they differ by more than ``TOLERANCE``;
- keeps the better checkpoint as measured now: when ``last.keras`` beats ``best.keras``, it
  becomes ``best.keras`` (``state.json`` follows), so test metrics, the export and ``--resume``
  agree on one model.

Checkpoints are measured with ``--ema``'s averaged weights (``ema.py``), as ``fit`` validated them.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf

from deeplense_tf import runs
from deeplense_tf.tasks import get_task
from deeplense_tf.training.ema import ema_weights

# Relative difference between the logged and the re-measured value that counts as a disagreement:
# the same weights on the same images differ by float rounding only (below 1e-4 in the tests).
TOLERANCE = 0.02


def revalidate(run_dir: Path, task_name: str, val: tf.data.Dataset) -> dict:
    """Measure ``best.keras`` and ``last.keras`` (when they hold different epochs) on ``val``; keep
    the better as ``best.keras``. Returns ``{"monitor", "checkpoints": {name: {epoch, logged,
    measured}}, "kept": epoch, "disagreement": bool}``; ``{}`` when the run has no history to compare."""
    task = get_task(task_name)
    state_path = run_dir / runs.STATE
    state = runs.read_json(state_path) if state_path.is_file() else {}
    logged = logged_values(run_dir / "history.csv", task.monitor)
    epochs = {runs.BEST: state.get("best_epoch"), runs.LAST: state.get("epochs_done")}
    names = [name for name in (runs.BEST, runs.LAST) if epochs[name] and (run_dir / name).is_file()]
    if not names or not logged:
        return {}
    if len(names) == 2 and epochs[runs.BEST] == epochs[runs.LAST]:
        names = [runs.BEST]
    checkpoints = {}
    for name in names:
        model = keras.models.load_model(run_dir / name)
        with ema_weights(model):
            measured = float(model.evaluate(val, verbose=0, return_dict=True)["loss"])
        checkpoints[name] = {"epoch": int(epochs[name]), "logged": logged.get(int(epochs[name])),
                             "measured": measured}
    sign = 1.0 if task.monitor_mode == "min" else -1.0
    kept = min(checkpoints, key=lambda n: (_ranked(sign * checkpoints[n]["measured"]), n != runs.BEST))
    report = {"monitor": task.monitor, "checkpoints": checkpoints, "kept": checkpoints[kept]["epoch"],
              "disagreement": any(disagree(c["logged"], c["measured"]) for c in checkpoints.values())}
    for name, c in checkpoints.items():
        if disagree(c["logged"], c["measured"]):
            print(f"warning: fit logged {task.monitor} {c['logged']:.6g} for epoch {c['epoch']}, but {name} scores "
                  f"{c['measured']:.6g} on the validation split now: the in-fit validation disagrees with the saved "
                  "weights (recorded in metrics.json, 'revalidation')")
    if kept != runs.BEST:
        promote_last(run_dir, state, checkpoints[kept])
    return report


def logged_values(history: Path, monitor: str) -> dict[int, float]:
    """``{epoch (1-based): monitor value}`` from history.csv; ``{}`` when it is missing or lacks the column."""
    if not history.is_file() or not history.stat().st_size:
        return {}
    table = pd.read_csv(history)
    if monitor not in table or "epoch" not in table:
        return {}
    return {int(e) + 1: float(v) for e, v in zip(table["epoch"], table[monitor])}


def disagree(logged: float | None, measured: float) -> bool:
    if logged is None or not (math.isfinite(logged) and math.isfinite(measured)):
        return logged is not None and math.isfinite(logged) != math.isfinite(measured)
    return abs(logged - measured) > TOLERANCE * max(abs(logged), abs(measured), 1e-12)


def promote_last(run_dir: Path, state: dict, last: dict) -> None:
    """``last.keras`` measured better than ``best.keras``: it becomes ``best.keras`` (with ``--ema`` its
    averaged weights, as ``AtomicCheckpoint`` writes best), and ``state.json`` names its epoch and value."""
    print(f"keeping epoch {last['epoch']} (last.keras, {last['measured']:.6g} on the validation split now) "
          f"instead of epoch {state.get('best_epoch')} (best.keras): it scores better")
    model = keras.models.load_model(run_dir / runs.LAST)
    with ema_weights(model):
        runs.save_keras_model(model, run_dir / runs.BEST)
    runs.write_json(run_dir / runs.STATE, {**state, "best": last["measured"], "best_epoch": last["epoch"]})


def _ranked(value: float) -> float:
    """Lower is better; a non-finite value ranks last."""
    return value if math.isfinite(value) else math.inf
