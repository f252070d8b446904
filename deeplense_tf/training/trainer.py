"""The training run behind ``python -m deeplense_tf.train``: each step a function of its own.

``train_run``: data -> model -> fit (atomic checkpoints, history, TensorBoard) -> test
metrics and plots from the best checkpoint -> SavedModel + ``.keras``.
``resume_run``: the same from a run directory's saved config and last checkpoint.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from deeplense_tf import runs
from deeplense_tf.config import RunConfig, TrainConfig, model_seed, replace
from deeplense_tf.data.pipeline import create_dataset
from deeplense_tf.data.prepare import PreparedData, check_split, prepare_data, split_table
from deeplense_tf.data.stream import StreamSource
from deeplense_tf.errors import ConfigError, UserError
from deeplense_tf.evaluation.plots import training_curves
from deeplense_tf.evaluation.report import evaluate_predictions, predict, summary_line
from deeplense_tf.models.augment import augmenter
from deeplense_tf.models.build import create_model
from deeplense_tf.models.export import export_metadata, export_run
from deeplense_tf.models.registry import check_arch_task, check_weights
from deeplense_tf.tasks import Task, get_task
from deeplense_tf.training.batchnorm import AverageBatchNormOverReplicas, RecalibrateBatchNorm
from deeplense_tf.training.calibrate import calibrate, write_calibration
from deeplense_tf.training.callbacks import (AtomicCheckpoint, LogEpochPhases, LogEpochTime, LogLearningRate,
                                             StopOnNaN, hparams_callback)
from deeplense_tf.training.distributed import (distribute, fit_distributed, is_chief, make_strategy, on_chief,
                                               strategy_share, whole_step_batch, whole_steps)
from deeplense_tf.training.ema import ValidateWithEMA, ema_weights
from deeplense_tf.training.finetune import finetune_callbacks, set_finetune_state
from deeplense_tf.training.losses import gaussian_metrics, task_loss  # also registers what checkpoints name
from deeplense_tf.training.reseed import ReseedRandomLayers
from deeplense_tf.training.revalidate import revalidate
from deeplense_tf.training.sam import enable_sam
from deeplense_tf.training.tracking import MLflowLogger, check_tracker, log_results
from deeplense_tf.training.schedules import learning_rate  # also registers the schedules checkpoints name

OPTIMIZER_FACTORIES = {  # kw: --ema's use_ema / ema_momentum (ema.py)
    "adam": lambda t, lr, clip, **kw: keras.optimizers.Adam(lr, clipnorm=clip, **kw),
    "adamw": lambda t, lr, clip, **kw: keras.optimizers.AdamW(lr, weight_decay=t.weight_decay, clipnorm=clip, **kw),
    "sgd": lambda t, lr, clip, **kw: keras.optimizers.SGD(lr, momentum=t.momentum, nesterov=True, clipnorm=clip, **kw),
}
METRICS = {
    "mae": lambda: keras.metrics.MeanAbsoluteError(name="mae"),
    "rmse": lambda: keras.metrics.RootMeanSquaredError(name="rmse"),
    "accuracy": lambda: "accuracy",
    "auc": lambda: keras.metrics.AUC(name="auc"),
}


def train_run(config: RunConfig) -> Path:
    check_arch_task(config.model.arch, config.model.task)  # a typo fails now, not after minutes of data loading
    check_weights(config.model.arch, config.model.weights)  # imagenet for an arch without it: refused now
    runs.check_room(config.train.out, 0)  # an unwritable --out fails before the data are read or simulated
    check_tracker(config.train.tracker)  # --tracker mlflow without MLflow: refused now
    strategy = set_up(config.train)
    data = prepare_data(config)
    model = new_model(config, data, strategy)  # before the run folder exists: a bad arch or weights writes nothing
    check_batch_size(config.train.batch_size, data.n_train)
    runs.check_room(config.train.out, model.count_params())
    run_dir = runs.new_run_dir(config.train.out, config.model.arch, config.model.task)
    print(f"run directory: {run_dir}")
    config.save(run_dir / runs.CONFIG)
    write_data_files(run_dir, config, data)
    return fit_and_finish(model, config, data, run_dir, initial_epoch=0)


def new_model(config: RunConfig, data: PreparedData, strategy: tf.distribute.Strategy) -> keras.Model:
    """The run's model, built and compiled in the strategy's scope."""
    with strategy.scope():
        model = create_model(config.model, data.input_shape, n_classes=len(data.class_names),
                             target_mean=data.target_mean, target_std=data.target_std,
                             image_size=config.data.image_size, seed=model_seed(config.train))
        set_finetune_state(model, config.model, epoch=0)  # --freeze-backbone: before compile
        compile_model(model, config, steps_per_epoch(config, data))
    return model


def write_data_files(run_dir: Path, config: RunConfig, data: PreparedData) -> None:
    """data.json, split.csv and (--skip-bad) skipped_files.csv: what a resumed run or evaluate checks."""
    runs.write_json(run_dir / runs.DATA_INFO, data.info(config))
    split_table(data).to_csv(run_dir / "split.csv", index=False)
    if data.skipped:  # --skip-bad: what was left out, and why
        pd.DataFrame(data.skipped, columns=["file", "problem"]).to_csv(run_dir / "skipped_files.csv", index=False)


def restart_run(run_dir: Path, config: RunConfig) -> Path:
    """A run stopped before its first checkpoint (a requeued job), or whose every checkpoint is
    unreadable: start it over in its own folder, from its saved config, on the same split."""
    print(f"{run_dir} has no loadable checkpoint (stopped during its first epoch, or every checkpoint "
          "unreadable): starting it over from its saved config")
    for partial in ("history.csv", "logs", runs.STATE):  # the state's best value would block a new best.keras
        path = run_dir / partial
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    strategy = set_up(config.train)
    data = prepare_data(config)
    if (run_dir / "split.csv").is_file():
        check_split(data, run_dir / "split.csv")
    else:
        write_data_files(run_dir, config, data)
    return fit_and_finish(new_model(config, data, strategy), config, data, run_dir, initial_epoch=0)


def check_batch_size(batch_size: int, n_train: int) -> None:
    if batch_size > n_train:
        raise ConfigError(f"--batch-size {batch_size} is larger than the training split ({n_train} images); "
                          "lower it or use more data")


def resume_run(run_dir: Path, epochs: int | None = None) -> Path:
    run_dir = runs.require_run_dir(run_dir)
    config = RunConfig.load(run_dir / runs.CONFIG)
    check_tracker(config.train.tracker)
    if epochs is not None:
        config = replace(config, train={"epochs": epochs})
        config.save(run_dir / runs.CONFIG)
    for path in runs.remove_stale_temporaries(run_dir):
        print(f"removed {path.relative_to(run_dir)}, left by an interrupted write")
    found = loadable_checkpoint(run_dir)
    if found is None:
        return restart_run(run_dir, config)
    checkpoint, done = found
    trim_history(run_dir, done)  # rows of an epoch killed after its history row, before its checkpoint
    strategy = set_up(config.train)
    data = prepare_data(config)
    check_split(data, run_dir / "split.csv")
    print(f"resuming {run_dir} after epoch {done} of {config.train.epochs} from {checkpoint}")
    with strategy.scope():
        model = keras.models.load_model(run_dir / checkpoint)
        if checkpoint == runs.LAST:
            recover_lost_best(run_dir, model, config.model.task, done)
        restore_schedule(model, config, steps_per_epoch(config, data))  # --epochs N: over the new length
        enable_sam(model, config.train.sam_rho)  # the train step is not part of the saved model
        set_finetune_state(model, config.model, epoch=done)  # frozen or not, as due at this epoch
    return fit_and_finish(model, config, data, run_dir, initial_epoch=done)


def loadable_checkpoint(run_dir: Path) -> tuple[str, int] | None:
    """The newest whole checkpoint (last, else best) and the epochs it holds, or None.

    An unreadable one (truncated, zero bytes: a full disk, a failed copy) is set aside as
    ``*.corrupt`` and the run says so; best is checked too, since ``finish`` evaluates it."""
    state = runs.read_json(run_dir / runs.STATE) if (run_dir / runs.STATE).is_file() else {}
    found = []
    for name, key in ((runs.LAST, "epochs_done"), (runs.BEST, "best_epoch")):
        path = run_dir / name
        if not path.is_file():
            continue
        problem = runs.checkpoint_problem(path)
        if problem:
            print(f"{name} is unreadable ({problem}): set aside as {runs.set_aside(path).name}")
        elif state.get(key):
            found.append((name, int(state[key])))
    if found and found[0][0] != runs.LAST:
        print(f"continuing from {found[0][0]}, the newest loadable checkpoint (epoch {found[0][1]})")
        trim_history(run_dir, found[0][1])
    return found[0] if found else None


def trim_history(run_dir: Path, epochs: int) -> None:
    """Drop history.csv's rows after ``epochs``: a run continued from an older checkpoint trains
    those epochs again, and their first rows belong to weights that were set aside."""
    path = run_dir / "history.csv"
    if path.is_file() and path.stat().st_size:
        history = pd.read_csv(path)
        with runs.atomic_path(path, suffix=".csv") as tmp:
            history[history["epoch"] < epochs].to_csv(tmp, index=False)


def recover_lost_best(run_dir: Path, model: keras.Model, task_name: str, done: int) -> None:
    """A kill after last.keras and state.json but before best.keras leaves best.keras an epoch behind
    when that epoch improved (the checkpoint order, callbacks.AtomicCheckpoint): history.csv's row of
    the epoch says whether it did, and ``model``, loaded from last.keras, holds its weights. They are
    saved as best.keras as the checkpoint would have: with --ema the average its optimiser holds
    (ema.py), BatchNorm statistics as recalibrated for that average before the checkpoint."""
    state_path, history_path = run_dir / runs.STATE, run_dir / "history.csv"
    if not state_path.is_file() or not history_path.is_file() or not history_path.stat().st_size:
        return
    state, task = runs.read_json(state_path), get_task(task_name)
    row = pd.read_csv(history_path).query("epoch == @done - 1")
    if row.empty or task.monitor not in row or state.get("best_epoch") == done:
        return
    value, best = float(row[task.monitor].iloc[0]), state.get("best")
    sign = 1.0 if task.monitor_mode == "min" else -1.0
    if math.isfinite(value) and (best is None or sign * value < sign * best):
        with ema_weights(model):
            runs.save_keras_model(model, run_dir / runs.BEST)
        runs.write_json(state_path, {**state, "best": value, "best_epoch": done})
        print(f"epoch {done} improved {task.monitor} but was killed before {runs.BEST} was written: "
              f"saved from {runs.LAST} (its weights)")


def restore_schedule(model: keras.Model, config: RunConfig, steps: int) -> None:
    """The learning-rate schedule over the config's epochs, at the optimiser's saved step.

    ``--resume RUN --epochs N`` changes the length: the cosine (or one-cycle) is recomputed over the
    new total, so the rate continues where the longer schedule would be at this step (README,
    "train it longer") instead of staying at the old schedule's 1 % floor. With the same epochs the
    schedule is the saved one. plateau / constant keep the optimiser's own (maybe reduced) rate."""
    t = config.train
    lr = learning_rate(t.schedule, t.lr, steps, t.epochs, t.warmup_epochs)
    if not isinstance(lr, float):
        model.optimizer.learning_rate = lr


def set_up(train: TrainConfig) -> tf.distribute.Strategy:
    """Strategy (``--strategy``, distributed.py), devices, seeds and precision."""
    strategy = make_strategy(train.strategy, train.device)  # first: MultiWorkerMirroredStrategy precedes any op
    gpus = tf.config.list_logical_devices("GPU")
    if train.device == "gpu" and not gpus:
        raise ConfigError("--device gpu: TensorFlow sees no GPU (install tensorflow[and-cuda] and check nvidia-smi)")
    keras.utils.set_random_seed(model_seed(train))
    # float16 needs a GPU (tensor cores, loss scaling added by compile); CPUs compute bfloat16 natively.
    keras.mixed_precision.set_global_policy(
        ("mixed_float16" if gpus else "mixed_bfloat16") if train.mixed_precision else "float32")
    return strategy


def steps_per_epoch(config: RunConfig, data: PreparedData) -> int:
    return max(1, -(-data.n_train // config.train.batch_size))


def make_optimizer(train: TrainConfig, steps: int) -> keras.optimizers.Optimizer:
    """The run's optimiser with its learning-rate schedule (``steps`` optimiser steps per epoch)."""
    lr = learning_rate(train.schedule, train.lr, steps, train.epochs, train.warmup_epochs)
    ema = {"use_ema": True, "ema_momentum": train.ema} if train.ema else {}
    return OPTIMIZER_FACTORIES[train.optimizer](train, lr, train.clipnorm, **ema)


def compile_model(model: keras.Model, config: RunConfig, steps: int = 1) -> None:
    task = get_task(config.model.task)
    gaussian = task.name == "regression" and config.model.uncertainty == "gaussian"
    model.compile(optimizer=make_optimizer(config.train, steps),
                  loss=task_loss(task.name, task.loss, config.train, config.model),
                  metrics=gaussian_metrics() if gaussian else [METRICS[name]() for name in task.metrics],
                  jit_compile=config.train.jit_compile)
    # The optimiser's slots (and --ema's averages) exist before fit traces its step: built in the first
    # trace instead, TensorFlow traces the step a second time (BENCHMARKS.md, "Run start-up").
    model.optimizer.build(model.trainable_variables)
    enable_sam(model, config.train.sam_rho)


def fit_and_finish(model: keras.Model, config: RunConfig, data: PreparedData, run_dir: Path,
                   initial_epoch: int) -> Path:
    fit_model(model, config, data, run_dir, initial_epoch, extra_callbacks=hparams_callbacks(config, run_dir))
    if config.train.strategy == "multiworker":  # evaluation and export on the chief only
        return on_chief(model.distribute_strategy, lambda: finish(config, data, run_dir)) or run_dir
    return finish(config, data, run_dir)


@dataclass
class FitInputs:
    """What ``fit`` reads, in per-replica batches: training (with its steps per epoch), validation,
    the batches BatchNorm recalibration reads, and the stream of a ``sim-stream:`` run."""

    train: tf.data.Dataset
    batch: int  # per replica
    steps: int | None
    recalibration: Callable[[], tf.data.Dataset]
    stream: StreamSource | None = None
    val: tf.data.Dataset | None = None
    val_steps: int | None = None


def fit_model(model: keras.Model, config: RunConfig, data: PreparedData, run_dir: Path, initial_epoch: int = 0,
              extra_callbacks: tuple = ()) -> keras.callbacks.History | None:
    """``model.fit`` with the run's callbacks; None when the run had already finished its epochs."""
    if initial_epoch >= config.train.epochs:
        return None
    inputs = fit_inputs(model, config, data, initial_epoch)
    callbacks, nan_guard = fit_callbacks(model, config, run_dir, inputs, initial_epoch, extra_callbacks)
    history = run_fit(model, config, run_dir, inputs, callbacks, initial_epoch)
    nan_guard.raise_if_failed()
    return history


def local_replicas(model: keras.Model, train: TrainConfig) -> int:
    """Replicas ``fit`` spreads a step over (``fit_distributed`` counts its own under multiworker)."""
    return 1 if train.strategy == "multiworker" else model.distribute_strategy.num_replicas_in_sync


def fit_inputs(model: keras.Model, config: RunConfig, data: PreparedData, initial_epoch: int) -> FitInputs:
    """Training batches (stored or streamed) and validation batches cut to whole steps over the replicas."""
    replicas = local_replicas(model, config.train)
    if data.stream is not None:  # --data sim-stream:<preset>: batches simulated on the fly, class-balanced
        inputs = stream_inputs(model, config, data, initial_epoch)
    else:
        inputs = stored_inputs(model, config, data, initial_epoch, replicas)
    x_val, y_val = data.subset("val")
    val = create_dataset(x_val, fit_labels(config.model.task, y_val),
                         whole_step_batch(len(y_val), inputs.batch, replicas), training=False)
    inputs.val, inputs.val_steps = whole_steps(val, replicas, training=False)
    return inputs


def pipeline_augmenter(config: RunConfig):
    """``--augment-in-pipeline``: the flips / rotations as a tf.data map instead of model layers."""
    return augmenter(model_seed(config.train)) if config.model.augment and config.model.augment_in_pipeline else None


def stored_inputs(model: keras.Model, config: RunConfig, data: PreparedData, initial_epoch: int,
                  replicas: int) -> FitInputs:
    t, task = config.train, config.model.task
    x, y, batch = *data.subset("train"), t.batch_size
    if model.distribute_strategy is not tf.distribute.get_strategy():  # this worker's rows, per-replica batch
        x, y, batch = strategy_share(model.distribute_strategy, x, y, batch)
    labels = fit_labels(task, y)
    train = create_dataset(x, labels, batch, training=True, seed=model_seed(t), balance=t.balance,
                           first_epoch=initial_epoch,  # a resumed run: the same batches
                           deterministic=t.deterministic, augment=pipeline_augmenter(config),
                           cache=(True if t.cache == "memory" else t.cache) if t.cache else False)
    if t.class_weights == "balanced" and task in ("classification", "lens_finding"):
        train = with_class_weights(train, data.y[data.splits["train"]])  # whole split: alike on every worker
    train, steps = whole_steps(train, replicas)  # local replicas: whole steps (distributed.whole_steps)
    # Recalibration reads its own copy of the training pipeline (another seed), per-replica batches as
    # BatchNorm trains, epoch-indexed like the training batches so a resumed run draws the same.
    recalibration = lambda: create_dataset(x, labels, batch, training=True, seed=model_seed(t) + 1,  # noqa: E731
                                           first_epoch=initial_epoch)
    return FitInputs(train, batch, steps, recalibration)


def stream_inputs(model: keras.Model, config: RunConfig, data: PreparedData, initial_epoch: int) -> FitInputs:
    """The stream from ``initial_epoch``'s position; recalibration reads the epoch's last batches."""
    strategy, batch = model.distribute_strategy, config.train.batch_size
    if strategy is not tf.distribute.get_strategy():  # per-replica batches; a step takes one per replica
        batch = strategy_share(strategy, None, np.zeros(0), batch)[2]
    stream = StreamSource(data.stream, batch, lambda y: fit_labels(config.model.task, y), first_epoch=initial_epoch,
                          keep_last=config.train.bn_recalibration, replicas=strategy.num_replicas_in_sync)
    return FitInputs(stream.dataset(pipeline_augmenter(config)), batch, data.stream.steps_per_epoch,
                     stream.recalibration_dataset, stream)


def fit_callbacks(model: keras.Model, config: RunConfig, run_dir: Path, inputs: FitInputs, initial_epoch: int,
                  extra: tuple = ()) -> tuple[list[keras.callbacks.Callback], StopOnNaN]:
    """The run's callbacks in the order they must run, and the NaN guard among them."""
    t, task = config.train, get_task(config.model.task)
    state_path = run_dir / runs.STATE
    best = runs.read_json(state_path).get("best") if state_path.exists() else None
    nan_guard = StopOnNaN()
    callbacks = [
        *((inputs.stream.callback,) if inputs.stream else ()),  # first: tells the stream which epoch begins
        LogEpochTime(),  # early: the epoch's time includes every callback after it
        ReseedRandomLayers(model_seed(t)),  # epoch e's augmentation and dropout from (seed, e), as on --resume
        nan_guard,
        *((ValidateWithEMA(),) if t.ema else ()),  # before recalibration: statistics of the averaged weights
        *batch_norm_callbacks(model, config, inputs),  # before the checkpoint: it saves the recalibrated statistics
        LogEpochPhases(),  # after recalibration and EMA: it times them as the gap before validation
        LogLearningRate(),  # before CSVLogger and TensorBoard, which write the logs
        # the history row before the checkpoint: a kill between them leaves a row that --resume trims
        # (trim_history), never a checkpoint whose epoch has no row
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=initial_epoch > 0),
        AtomicCheckpoint(run_dir, task.monitor, task.monitor_mode, best=best),
        *schedule_callbacks(t, task),
        keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"), update_freq="epoch"),
        *finetune_callbacks(config.model),  # --unfreeze-at
        *extra,
    ]
    return callbacks, nan_guard


def hparams_callbacks(config: RunConfig, run_dir: Path) -> tuple:
    """Every config field as a TensorBoard HParams session in the run's logs/ (the chief's only: one
    writer per run): ``tensorboard --logdir runs`` compares runs in its HParams tab."""
    if not is_chief():
        return ()
    values = {name: value for section in config.to_dict().values() for name, value in section.items()}
    trackers = (MLflowLogger(run_dir, config.to_dict()),) if config.train.tracker == "mlflow" else ()
    return (hparams_callback(run_dir / "logs", values, run_dir.name), *trackers)


def batch_norm_callbacks(model: keras.Model, config: RunConfig, inputs: FitInputs) -> tuple:
    """Recalibration before each validation (batchnorm.py), or, where it cannot run, one average over replicas."""
    if config.train.bn_recalibration and not tf.distribute.has_strategy():
        return (RecalibrateBatchNorm(inputs.recalibration(), config.train.bn_recalibration),)
    if local_replicas(model, config.train) > 1:  # fit_distributed (multiworker) averages itself
        # No recalibration (--bn-recalibration 0, or fit inside a strategy scope as KerasTuner calls it):
        # each replica would keep its own BatchNorm averages; make them one.
        return (AverageBatchNormOverReplicas(model.distribute_strategy),)
    return ()


def schedule_callbacks(t: TrainConfig, task: Task) -> tuple:
    """--schedule plateau and --early-stopping, both on the task's validation monitor."""
    callbacks = []
    if t.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor=task.monitor, mode=task.monitor_mode, factor=0.5,
                                                           patience=2, verbose=1))
    if t.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=task.monitor, mode=task.monitor_mode,
                                                       patience=t.early_stopping, verbose=1))
    return tuple(callbacks)


def run_fit(model: keras.Model, config: RunConfig, run_dir: Path, inputs: FitInputs, callbacks: list,
            initial_epoch: int) -> keras.callbacks.History:
    """``fit`` (or, under multiworker, ``fit_distributed``); an interrupt says how to resume."""
    t, strategy = config.train, model.distribute_strategy
    started = time.time()
    try:
        if t.strategy == "multiworker":  # Keras' fit fails under MultiWorkerMirroredStrategy (STACK.md)
            history = fit_distributed(model, inputs.train, inputs.val, t.epochs, initial_epoch, callbacks,
                                      chief=is_chief())
        else:
            history = model.fit(distribute(strategy, inputs.train), validation_data=distribute(strategy, inputs.val),
                                epochs=t.epochs, initial_epoch=initial_epoch, callbacks=callbacks, shuffle=False,
                                steps_per_epoch=inputs.steps, validation_steps=inputs.val_steps,
                                verbose=1 if sys.stdout.isatty() else 2)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM from a scheduler (train.main turns it into this)
        state_path = run_dir / runs.STATE
        done = runs.read_json(state_path)["epochs_done"] if state_path.exists() else 0
        raise UserError(f"interrupted; {done} complete epoch(s) are saved in {run_dir}. Continue with: "
                        f"python -m deeplense_tf.train --resume {run_dir}") from None
    finally:
        if inputs.stream:
            inputs.stream.close()  # the simulator processes
    print(f"training took {time.time() - started:.0f} s")
    return history


def finish(config: RunConfig, data: PreparedData, run_dir: Path) -> Path:
    """Re-measure the kept checkpoints on the validation split (revalidate.py), evaluate the best on the
    test split, plot the history, export."""
    x_val, y_val = data.subset("val")
    revalidation = revalidate(run_dir, config.model.task,
                              create_dataset(x_val, fit_labels(config.model.task, y_val), config.train.batch_size,
                                             training=False))
    best = run_dir / (runs.BEST if (run_dir / runs.BEST).is_file() else runs.LAST)
    model = keras.models.load_model(best, compile=False)
    calibration, features = calibrate(model, config.model.task, (x_val, y_val),
                                      None if data.stream is not None else data.subset("train"),
                                      config.train.batch_size, config.train.seed)
    write_calibration(run_dir, calibration, features)
    x_test, y_test = data.subset("test")
    outputs = predict(model, x_test, config.train.batch_size)
    info = data.info(config)
    document = evaluate_predictions(config.model.task, y_test, outputs, info,
                                    data.table.loc[data.splits["test"]], run_dir,
                                    {"run": str(run_dir), "data": data.source, "split": "test",
                                     "tta": False, "n": int(len(y_test)), "checkpoint": best.name,
                                     **({"revalidation": revalidation} if revalidation else {})},
                                    model=model, images=x_test, calibration=calibration,
                                    plot_format=config.train.plot_format)
    if (run_dir / "history.csv").is_file():
        training_curves(run_dir / "history.csv", run_dir / "plots", fmt=config.train.plot_format)
    paths = export_run(model, run_dir, export_metadata(info, calibration), features)
    if config.train.tracker == "mlflow":
        log_results(run_dir, document["metrics"])
    print(summary_line(document))
    print(f"metrics:     {run_dir / 'metrics.json'}\npredictions: {run_dir / 'predictions.csv'}\n"
          f"plots:       {run_dir / 'plots'}\nSavedModel:  {paths['saved_model']}\nKeras model: {paths['keras']}\n"
          f"TensorBoard: tensorboard --logdir {run_dir / 'logs'}")
    return run_dir


def class_weight_table(y: np.ndarray) -> np.ndarray:
    """``n / (classes x count)`` per class index: every class carries the same total weight."""
    labels = np.asarray(y).reshape(-1).astype(np.int64)
    counts = np.bincount(labels)
    present = counts > 0
    weights = np.zeros(len(counts), np.float32)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights


def with_class_weights(dataset: tf.data.Dataset, y_train: np.ndarray) -> tf.data.Dataset:
    """(images, labels) -> (images, labels, per-image weight of its class)."""
    table = tf.constant(class_weight_table(y_train))

    def add_weight(x, y):
        return x, y, tf.gather(table, tf.cast(tf.reshape(y, [-1]), tf.int32))

    return dataset.map(add_weight, num_parallel_calls=tf.data.AUTOTUNE)


def fit_labels(task: str, y: np.ndarray) -> np.ndarray:
    """Class indices stay (N,) for the sparse loss; scalar targets become (N, 1) like the one-unit heads."""
    if task == "anomaly":  # the autoencoder's target is its input
        return np.zeros(len(y), np.float32)
    return y if task == "classification" else y.reshape(-1, 1).astype(np.float32)
