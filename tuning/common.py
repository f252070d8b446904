"""The command line and search loop shared by ``python -m tuning.bayes | hyperband | random``.

A search folder ``--out`` holds ``search.json`` (the settings, checked when a search is
continued), ``trials/`` (KerasTuner's state; each ``trials/trial_<id>/`` is also a normal
deeplense_tf run directory), ``trials.csv`` and ``trials.png``. Running the same command again
continues the search; ``--overwrite`` starts afresh.

Several machines: KerasTuner's own chief/worker mode, set through its environment variables
(``KERASTUNER_TUNER_ID=chief`` runs only the oracle; ``worker0``, ``worker1``... train), with
``KERASTUNER_ORACLE_IP`` / ``KERASTUNER_ORACLE_PORT`` naming the chief, the same command on
every machine, and ``--out`` on a shared file system.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from deeplense_tf import runs
from deeplense_tf.cli import config_from_args, prepare_environment, run_cli, train_parser
from deeplense_tf.config import RunConfig, replace
from deeplense_tf.errors import ConfigError, UserError
from tuning.report import SETTINGS, TRIAL_INFO, TRIALS_DIR, last_line, summary_lines, write_report
from tuning.space import DEFAULT_ARCHS, candidate_values, load_space

# What each task's search optimises by default, and what else it may (the package's compiled metrics).
OBJECTIVES = {
    "regression": {"val_mae": "min", "val_rmse": "min", "val_loss": "min"},
    "classification": {"val_accuracy": "max", "val_loss": "min"},
    "lens_finding": {"val_auc": "max", "val_accuracy": "max", "val_loss": "min"},
    # The autoencoders learn the normal class only: their validation loss is its reconstruction error.
    "anomaly": {"val_loss": "min"},
}
ANOMALY_ARCHS = ("conv_autoencoder", "vae")
# Flags that may change when a search is continued; any other change is refused.
MAY_CHANGE = {"max_trials", "overwrite", "out", "workers", "device", "space", "archs"}
# Train flags whose values a search varies: given on the command line, they are fixed for the search.
SEARCHED_FLAGS = ("arch", "optimizer", "lr", "weight_decay", "dropout", "batch_size", "augment", "shift", "noise")


def build_parser(name: str, description: str, max_trials: int | None = 10) -> argparse.ArgumentParser:
    """Every train flag (cli.py; one a search varies, given, is fixed for the search) plus the search's own."""
    p = train_parser(f"python -m tuning.{name}", description, resume=False,
                     out_help=f"search folder; the same --out continues a search (default runs/tune-{name})")
    search = p.add_argument_group("Search")
    search.add_argument("--archs", nargs="+", metavar="ARCH",
                        help=f"architectures to choose from (default {' '.join(DEFAULT_ARCHS)})")
    search.add_argument("--space", type=Path, metavar="FILE.json",
                        help="override hyperparameter ranges (see tuning/space.py for the format)")
    search.add_argument("--objective", help="validation metric to optimise (default: val_mae for regression, "
                        "val_accuracy for classification, val_auc for lens_finding)")
    search.add_argument("--max-trials", type=int, default=max_trials,
                        help="trials in the whole search, failed ones included "
                        f"(default {max_trials or 'none: the tuner decides'})")
    search.add_argument("--executions-per-trial", type=int, default=1,
                        help="train each configuration this many times and average the objective (default 1)")
    search.add_argument("--overwrite", action="store_true", help="delete the search in --out and start afresh")
    p.set_defaults(search_name=name)
    return p


def main(argv: list[str] | None, *, name: str, description: str, make_tuner: Callable[..., Any],
         add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
         max_trials: int | None = 10) -> int:
    parser = build_parser(name, description, max_trials)
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(argv)
    prepare_environment(args.verbose)
    return run_cli(lambda: run_search(args, name, make_tuner))


def run_search(args: argparse.Namespace, name: str, make_tuner: Callable[..., Any]):
    """Check everything cheap first, then load TensorFlow, the data and the tuner, and search."""
    base = base_config(args)
    space = search_space(args, base.model.task)
    objective, direction = objective_for(base.model.task, args.objective)
    import keras_tuner

    from deeplense_tf.data.prepare import prepare_data
    from deeplense_tf.models.registry import check_arch_task, check_weights
    from deeplense_tf.training.trainer import set_up
    from tuning.search_space import LensHyperModel

    for arch in candidate_values(space["arch"]) or []:
        # A typo fails now, not as failed trials (and before --overwrite deletes anything).
        check_arch_task(arch, base.model.task)
        check_weights(arch, base.model.weights)
    role = _role()
    out = search_folder(args)
    if role != "worker":
        _prepare_out(out, _settings(args, name, space, objective, direction, base), args.overwrite)
    strategy = set_up(base.train)
    data = None if role == "chief" else prepare_data(base)  # the chief only runs the oracle
    hypermodel = LensHyperModel(base, space, data)
    tuner = make_tuner(args, hypermodel=hypermodel, objective=keras_tuner.Objective(objective, direction),
                       seed=base.train.seed, directory=str(out), project_name=TRIALS_DIR,
                       overwrite=args.overwrite and role != "worker", executions_per_trial=args.executions_per_trial,
                       distribution_strategy=strategy if strategy.num_replicas_in_sync > 1 else None)
    if role == "chief":
        address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
        print(f"chief: oracle listening on {address}; "
              "start the workers with the same command and KERASTUNER_TUNER_ID=worker0, worker1, ...", flush=True)
    try:
        tuner.search()
    except RuntimeError as err:
        if "consecutive failures" not in str(err):
            raise
        raise UserError(f"search stopped: {str(err).splitlines()[0]} See the message column of "
                        f"{out / 'trials.csv'}") from None
    finally:
        frame = write_report(out, objective, direction)
        print("\n".join(summary_lines(frame, objective, direction, out)), flush=True)
    if not (frame["status"] == "COMPLETED").any():
        raise UserError(f"no trial completed ({len(frame)} failed); see the message column of {out / 'trials.csv'}")
    return frame


def base_config(args: argparse.Namespace) -> RunConfig:
    """What every trial shares: defaults <- --config <- every train flag given (the searched ones are
    fixed through ``search_space``; the trials' folders are KerasTuner's, under --out)."""
    if args.executions_per_trial < 1 or (args.max_trials is not None and args.max_trials < 1):
        raise ConfigError(f"--max-trials and --executions-per-trial must be >= 1. "
                          f"Received: {args.max_trials}, {args.executions_per_trial}")
    config = config_from_args(args)
    if config.model.task not in OBJECTIVES:
        raise ConfigError(f"tuning searches {', '.join(OBJECTIVES)}; --task {config.model.task} is not supported")
    return replace(config, train={"out": str(search_folder(args))})


def search_space(args: argparse.Namespace, task: str) -> dict[str, dict[str, Any]]:
    """The space file (or the defaults), --archs, then every searched flag given on the command line."""
    if args.arch is not None and args.archs:
        raise ConfigError("give --arch (one architecture, fixed) or --archs (a choice to search), not both")
    archs = args.archs or ([args.arch] if args.arch else None) or (list(ANOMALY_ARCHS) if task == "anomaly" else None)
    fixed = {name: getattr(args, name) for name in SEARCHED_FLAGS if name != "arch" and getattr(args, name) is not None}
    if args.fc_units is not None:
        fixed["fc_units_1"], fixed["fc_units_2"] = (int(v) for v in args.fc_units)
    return load_space(args.space, archs, fixed)


def search_folder(args: argparse.Namespace) -> Path:
    return Path(args.out or f"runs/tune-{args.search_name}")


def objective_for(task: str, name: str | None) -> tuple[str, str]:
    if task not in OBJECTIVES:
        raise ConfigError(f"tuning searches {', '.join(OBJECTIVES)}; --task {task} is not supported yet")
    choices = OBJECTIVES[task]
    name = name or next(iter(choices))
    if name not in choices:
        raise ConfigError(f"--objective for {task} must be one of {list(choices)}. Received: {name!r}")
    return name, choices[name]


def _role() -> str:
    """KerasTuner's rule: distributed when KERASTUNER_ORACLE_IP is set; the chief's id contains 'chief'."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def _settings(args, name, space, objective, direction, base) -> dict[str, Any]:
    flags = {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items()) if k not in MAY_CHANGE}
    return json.loads(json.dumps({"tuner": name, "objective": [objective, direction], "flags": flags,
                                  "space": space, "config": base.to_dict()}))


def _prepare_out(out: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Start, or continue only a search with the same settings (mixing two would mislead)."""
    path = out / SETTINGS
    if overwrite:
        shutil.rmtree(out / TRIALS_DIR, ignore_errors=True)
        for name in (SETTINGS, "trials.csv", "trials.png"):
            (out / name).unlink(missing_ok=True)
    elif path.is_file() and any((out / TRIALS_DIR).glob("trial_*/trial.json")):
        saved = runs.read_json(path)
        changed = [k for k in ("tuner", "objective", "space") if saved.get(k) != settings[k]]
        flags = saved.get("flags", {})
        changed += [f"--{k.replace('_', '-')}" for k in sorted(set(flags) | set(settings["flags"]))
                    if flags.get(k) != settings["flags"].get(k)]
        if changed:
            raise UserError(f"{out} holds a search with other settings ({', '.join(changed)} differ): repeat its "
                            "command to continue it, add --overwrite to start afresh, or choose another --out")
        print(f"continuing the search in {out}", flush=True)
    runs.write_json(path, settings)


class TrialRuns:
    """Mixed into a KerasTuner tuner: each trial's folder is a deeplense_tf run directory.

    Also: the space is collected without building models; a restarted trial starts clean;
    the session is cleared between trials; every finished trial refreshes ``trials.csv``.
    """

    def _populate_initial_space(self):
        self.hypermodel.declare_only = True
        try:
            super()._populate_initial_space()
        finally:
            self.hypermodel.declare_only = False

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        run_dir = Path(self.get_trial_dir(trial.trial_id))
        for path in run_dir.iterdir():  # left by an interrupted run of this trial
            if path.name != "trial.json":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        self.hypermodel.execution = 0
        self._trial_started = time.time()
        self._gradients_before = set(_gradient_registry())
        print(f"trial {trial.trial_id} starts on {self.tuner_id}: {run_dir}", flush=True)

    def run_trial(self, trial, *args, **kwargs):
        values = trial.hyperparameters.values
        kwargs.update(run_dir=Path(self.get_trial_dir(trial.trial_id)), trial_id=trial.trial_id)
        if "tuner/trial_id" in values:  # Hyperband continues this earlier trial
            kwargs["previous_run"] = Path(self.get_trial_dir(values["tuner/trial_id"]))
        return super().run_trial(trial, *args, **kwargs)

    def on_trial_end(self, trial):
        _release_graphs(self._gradients_before)
        error = None if trial.status == "COMPLETED" else last_line(trial.message)
        if error:
            print(f"trial {trial.trial_id} failed: {error}", flush=True)
        run_dir = Path(self.get_trial_dir(trial.trial_id))
        runs.write_json(run_dir / TRIAL_INFO, {
            "trial": trial.trial_id, "tuner_id": self.tuner_id, "wall_s": round(time.time() - self._trial_started, 1),
            "rss_mb": _rss_mb(), "error": error})
        try:
            super().on_trial_end(trial)
        finally:
            objective = self.oracle.objective
            write_report(Path(self.directory), objective.name, objective.direction)


def with_trial_runs(tuner_class: type) -> type:
    """``TrialRuns`` in front of a KerasTuner tuner class, e.g. ``with_trial_runs(keras_tuner.Hyperband)``."""
    return type(f"{tuner_class.__name__}Runs", (TrialRuns, tuner_class), {})


def _release_graphs(gradients_before: set) -> None:
    """Free a finished trial's model and traced graphs before the next one."""
    import keras

    registry = _gradient_registry()
    for name in set(registry) - gradients_before:
        if name.startswith("CustomGradient-"):
            del registry[name]
    keras.backend.clear_session()
    gc.collect()


def _gradient_registry() -> dict:
    """TensorFlow's global table of gradient functions, or {} where its internals differ.

    Every ``tf.custom_gradient`` traced in graph mode is registered there under a new name and
    never removed, and the entry holds its whole graph. Keras 3's optimizer step goes through one
    (the default replica context's all-reduce), so each trial's training graph stayed alive:
    +150 MB per MobileNetV3-Small trial, whatever ``clear_session`` does. Dropping the entries a
    finished trial added frees it.
    """
    from tensorflow.python.framework import ops

    return getattr(getattr(ops, "_gradient_registry", None), "_registry", {})


def _rss_mb() -> float | None:
    """This process's resident memory now (Linux); the peak elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
