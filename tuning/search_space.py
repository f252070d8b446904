"""What is searched: KerasTuner hyperparameters -> deeplense_tf configs -> the package's builders.

``LensHyperModel.build(hp)`` declares the hyperparameters of a resolved space (``space.py``),
maps them onto ``ModelConfig`` / ``TrainConfig`` and calls ``create_model`` and
``compile_model``; ``fit`` batches the data at the trial's batch size and trains with the
package's ``fit_model`` into the trial's run directory. No model code lives in ``tuning/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import tensorflow as tf

from deeplense_tf import runs

from deeplense_tf.training import trainer
from deeplense_tf.config import RunConfig
from deeplense_tf.data.prepare import PreparedData, split_table
from deeplense_tf.errors import UserError
from deeplense_tf.models.build import create_model
from deeplense_tf.training.callbacks import hparams_callback
from tuning.space import INTEGER, candidate_values, to_config, trained_values


def declare(hp: keras_tuner.HyperParameters, space: dict[str, dict[str, Any]], task: str) -> dict[str, Any]:
    """Declare the space's hyperparameters on ``hp`` (idempotent) and return their values."""
    values = {name: _declare_one(hp, name, space[name]) for name in ("arch", "optimizer", "lr")}
    # A weight decay searched for Adam or SGD would be a dimension with no effect.
    values.update(_declare_where(hp, space, ("weight_decay",), parent="optimizer", active="adamw"))
    names = ("fc_units_1", "fc_units_2") if task == "regression" else ()
    for name in (*names, "dropout", "batch_size", "augment"):
        values[name] = _declare_one(hp, name, space[name])
    # An augmentation strength without augmentation means nothing.
    values.update(_declare_where(hp, space, ("shift", "noise"), parent="augment", active=True))
    return values


def _declare_where(hp: keras_tuner.HyperParameters, space: dict[str, dict[str, Any]], names: tuple[str, ...],
                   parent: str, active: Any) -> dict[str, Any]:
    """Declare ``names`` only where ``parent`` can take ``active``; conditional on it when ``parent`` is searched.

    Under a conditional scope KerasTuner returns None while the condition does not hold, and
    ``to_config`` leaves such a value at its default."""
    candidates = candidate_values(space[parent])
    if candidates is None or active not in candidates:
        return {}
    if len(candidates) == 1:
        return {name: _declare_one(hp, name, space[name]) for name in names}
    with hp.conditional_scope(parent, [active]):
        return {name: _declare_one(hp, name, space[name]) for name in names}


def _declare_one(hp: keras_tuner.HyperParameters, name: str, spec: dict[str, Any]) -> Any:
    if "fixed" in spec:
        return hp.Fixed(name, spec["fixed"])
    if "values" in spec and all(isinstance(v, bool) for v in spec["values"]):  # Choice makes them 1 / 0
        values = spec["values"]
        return hp.Boolean(name, default=True) if len(values) == 2 else hp.Fixed(name, values[0])
    if "values" in spec:
        return hp.Choice(name, spec["values"])
    kind = hp.Int if name in INTEGER else hp.Float
    return kind(name, spec["min"], spec["max"], step=spec.get("step"), sampling=spec.get("sampling", "linear"))


class LensHyperModel(keras_tuner.HyperModel):
    """Builds and trains one trial. ``data`` is None only in a chief, which never trains."""

    def __init__(self, base: RunConfig, space: dict[str, dict[str, Any]], data: PreparedData | None):
        super().__init__(name="deeplense_tf")
        self.base = base
        self.space = space
        self.data = data
        # The tuner sets this while it only collects the space: then no model is built.
        self.declare_only = False
        # Executions of the current trial so far (--executions-per-trial); the tuner resets it.
        self.execution = 0

    def config_for(self, hp: keras_tuner.HyperParameters, epochs: int | None = None) -> RunConfig:
        n_train = None if self.data is None else len(self.data.splits["train"])
        return to_config(self.base, declare(hp, self.space, self.base.model.task), epochs, n_train)

    def build(self, hp):
        config = self.config_for(hp)
        if self.declare_only:
            return None
        # Every trial's first execution starts from the seed of the train command that reproduces it;
        # repeated executions from other initialisations (the split, set by the seed in config.json, stays).
        keras.utils.set_random_seed(config.train.seed + self.execution)
        data = self.data
        model = create_model(config.model, data.input_shape, n_classes=len(data.class_names),
                             target_mean=data.target_mean, target_std=data.target_std,
                             image_size=config.data.image_size, seed=config.train.seed)
        trainer.compile_model(model, config, trainer.steps_per_epoch(config, data))
        return model

    def fit(self, hp, model, *args, run_dir: Path, trial_id: str, previous_run: Path | None = None,
            callbacks=(), epochs: int | None = None, initial_epoch: int = 0, **kwargs):
        """Train into ``run_dir`` (a normal run directory); a failure the user can act on fails the trial."""
        config = self.config_for(hp, epochs)
        run_dir = Path(run_dir) / f"execution_{self.execution}" if self.execution else Path(run_dir)
        self.execution += 1
        write_run_files(run_dir, config, self.data)
        if previous_run is not None and (previous_run / "history.csv").is_file():
            # Hyperband continues an earlier trial's weights: keep its epochs in this history.
            shutil.copyfile(previous_run / "history.csv", run_dir / "history.csv")
        hparams = _hparams_callback(run_dir, hp, trial_id, config)
        try:
            return trainer.fit_model(model, config, self.data, run_dir, initial_epoch=initial_epoch,
                                     extra_callbacks=(*callbacks, hparams))
        except UserError as err:  # e.g. the loss became NaN
            raise keras_tuner.errors.FailedTrialError(str(err)) from None
        except (tf.errors.ResourceExhaustedError, MemoryError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise keras_tuner.errors.FailedTrialError(f"out of memory: {first[:300]}") from None


def write_run_files(run_dir: Path, config: RunConfig, data: PreparedData) -> None:
    """What ``train_run`` writes before training, so ``--resume`` and ``evaluate`` work on a trial."""
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    config.save(run_dir / runs.CONFIG)
    runs.write_json(run_dir / runs.DATA_INFO, data.info(config))
    split_table(data).to_csv(run_dir / "split.csv", index=False)


def _hparams_callback(run_dir: Path, hp, trial_id: str, config: RunConfig) -> keras.callbacks.Callback:
    """TensorBoard HParams session in the run's own log folder: ``tensorboard --logdir OUT/trials``;
    the values the trial trains with (a batch size cut to the split is recorded cut)."""
    values = {name: value for name, value in hp.values.items() if not name.startswith("tuner/")}
    values = {**trained_values(values, config.to_dict()), "epochs": config.train.epochs}
    return hparams_callback(run_dir / "logs", values, f"trial_{trial_id}")
