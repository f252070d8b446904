"""Learning-rate range test (Smith 2017): train briefly while the rate grows exponentially,
plot the loss against the rate, and suggest a rate.

    python -m deeplense_tf.lr_find --arch efficientnet_b0 [any train flag] [--min-lr 1e-7 --max-lr 1 --steps 100]

Writes ``lr_find.csv`` (step, learning rate, loss, smoothed loss) and ``lr_find.png`` into
``<out>/<arch>-<task>-lr_find-<time>/`` and prints the suggestion and the train command that
uses it. The suggestion is the rate of the steepest descent of the smoothed loss, capped at a
tenth of the rate of the lowest loss (the usual rule of thumb); the test stops early when the
smoothed loss exceeds four times its minimum. The model is thrown away: nothing else changes.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deeplense_tf import runs
from deeplense_tf.cli import config_from_args, prepare_environment, run_cli, train_parser
from deeplense_tf.config import replace
from deeplense_tf.errors import ConfigError


@dataclass
class RangeTest:
    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggestion: float | None


def smooth(losses: np.ndarray, beta: float = 0.9) -> np.ndarray:
    """Bias-corrected exponential moving average (what the range test plots)."""
    out, avg = np.empty(len(losses)), 0.0
    for i, value in enumerate(losses):
        avg = beta * avg + (1 - beta) * value
        out[i] = avg / (1 - beta ** (i + 1))
    return out


def suggest(lrs: np.ndarray, smoothed: np.ndarray, skip_start: int = 5, skip_end: int = 3) -> float | None:
    """Rate of the steepest fall of the smoothed loss (per log-rate), at most a tenth of the minimum's rate."""
    if len(lrs) < skip_start + skip_end + 3:
        return None
    lo, hi = skip_start, len(lrs) - skip_end
    slopes = np.gradient(smoothed[lo:hi], np.log10(lrs[lo:hi]))
    steepest = float(lrs[lo + int(np.argmin(slopes))])
    at_minimum = float(lrs[int(np.argmin(smoothed))])
    return min(steepest, at_minimum / 10) if at_minimum / 10 >= lrs[0] else steepest


def range_test(model, dataset, min_lr: float, max_lr: float, steps: int, diverge: float = 4.0) -> RangeTest:
    """Train ``model`` (compiled) on ``dataset`` (repeated) for up to ``steps`` steps, rate rising geometrically."""
    import keras

    factor = (max_lr / min_lr) ** (1.0 / max(1, steps - 1))
    lrs, losses = [], []

    class Ramp(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.model.optimizer.learning_rate = min_lr * factor ** batch

        def on_train_batch_end(self, batch, logs=None):
            loss = float(logs["loss"])
            lrs.append(min_lr * factor ** batch)
            # Keras reports the running mean over the epoch: recover this step's loss from it.
            losses.append(loss * (batch + 1) - sum(losses) if losses else loss)
            s = smooth(np.array(losses))
            if not math.isfinite(loss) or (batch > 5 and s[-1] > diverge * s.min()):
                self.model.stop_training = True

    model.fit(dataset.repeat(), steps_per_epoch=steps, epochs=1, callbacks=[Ramp()], verbose=0)
    lrs, losses = np.array(lrs), np.array(losses)
    finite = np.isfinite(losses)
    lrs, losses = lrs[finite], losses[finite]
    smoothed = smooth(losses)
    return RangeTest(lrs, losses, smoothed, suggest(lrs, smoothed))


def plot(result: RangeTest, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.plot(result.lrs, result.losses, color="0.75", lw=0.8, label="loss per step")
    ax.plot(result.lrs, result.smoothed, color="C0", label="smoothed")
    if result.suggestion:
        ax.axvline(result.suggestion, color="C3", ls="--", label=f"suggested {result.suggestion:.2g}")
    ax.set_xscale("log")
    finite = result.smoothed[np.isfinite(result.smoothed)]
    if len(finite):
        ax.set_ylim(finite.min() - 0.05 * abs(finite.min()), min(finite.max(), 4 * finite.min() + 1e-12) * 1.05)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("learning-rate range test")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = train_parser("python -m deeplense_tf.lr_find", __doc__, resume=False)
    test = p.add_argument_group("Range test")
    test.add_argument("--min-lr", type=float, default=1e-7, help="first rate")
    test.add_argument("--max-lr", type=float, default=1.0, help="last rate")
    test.add_argument("--steps", type=int, default=100, help="training steps at most")
    return p


def run(args: argparse.Namespace, argv: list[str]) -> Path:
    import pandas as pd  # TensorFlow and the rest load once the arguments are parsed: --help stays fast

    from deeplense_tf.data.pipeline import create_dataset
    from deeplense_tf.data.prepare import prepare_data
    from deeplense_tf.models.build import create_model
    from deeplense_tf.models.registry import check_arch_task, check_weights
    from deeplense_tf.training.trainer import check_batch_size, compile_model, fit_labels, set_up

    if not 0 < args.min_lr < args.max_lr:
        raise ConfigError(f"need 0 < --min-lr < --max-lr. Received: {args.min_lr}, {args.max_lr}")
    if args.steps < 10:
        raise ConfigError(f"--steps must be >= 10. Received: {args.steps}")
    config = config_from_args(args)
    if config.train.strategy == "multiworker":
        raise ConfigError("lr_find runs on one machine (all its GPUs with --strategy mirrored); "
                          "--strategy multiworker is not supported")
    config = replace(config, train={"schedule": "constant", "sam_rho": 0.0})  # the ramp sets the rate
    check_arch_task(config.model.arch, config.model.task)  # before the data are read or simulated
    check_weights(config.model.arch, config.model.weights)
    strategy = set_up(config.train)
    data = prepare_data(config)
    check_batch_size(config.train.batch_size, len(data.splits["train"]))
    with strategy.scope():
        model = create_model(config.model, data.input_shape, n_classes=len(data.class_names),
                             target_mean=data.target_mean, target_std=data.target_std,
                             image_size=config.data.image_size, seed=config.train.seed)
        compile_model(model, config)
    x, y = data.subset("train")
    dataset = create_dataset(x, fit_labels(config.model.task, y), config.train.batch_size, training=True,
                             seed=config.train.seed)
    result = range_test(model, dataset, args.min_lr, args.max_lr, args.steps)
    out = runs.new_run_dir(config.train.out, config.model.arch, f"{config.model.task}-lr_find")
    (out / "checkpoints").rmdir()
    pd.DataFrame({"step": np.arange(len(result.lrs)), "learning_rate": result.lrs, "loss": result.losses,
                  "smoothed_loss": result.smoothed}).to_csv(out / "lr_find.csv", index=False)
    plot(result, out / "lr_find.png")
    print(f"range test: {len(result.lrs)} steps, rates {result.lrs[0]:.2g} .. {result.lrs[-1]:.2g}")
    print(f"table: {out / 'lr_find.csv'}\nplot:  {out / 'lr_find.png'}")
    if result.suggestion is None:
        print("no suggestion: the loss diverged within the first steps; lower --min-lr or --max-lr")
    else:
        print(f"suggested learning rate: {result.suggestion:.3g}\n"
              f"train with it: python -m deeplense_tf.train {shlex.join(_without_range_flags(argv))} "
              f"--lr {result.suggestion:.3g}")
    return out


def _without_range_flags(argv: list[str]) -> list[str]:
    out, skip = [], False
    for word in argv:
        if skip:
            skip = False
            continue
        name = word.split("=", 1)[0]
        if name in ("--min-lr", "--max-lr", "--steps", "--lr"):
            skip = "=" not in word
            continue
        out.append(word)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    prepare_environment(args.verbose)
    return run_cli(lambda: run(args, argv))


if __name__ == "__main__":
    sys.exit(main())
