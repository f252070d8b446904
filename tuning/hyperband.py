"""Hyperband search of a deeplense_tf model: many short trials, the best continued for longer.

    python -m tuning.hyperband --max-epochs 27 --factor 3
    python -m tuning.hyperband --max-trials 12 --epochs 9

Each bracket trains random configurations for a few epochs and continues the best 1/factor
of them (from their weights) up to --max-epochs. Without --max-trials one full Hyperband
iteration runs; with it, iterations repeat until that many trials. A continued trial is a run
directory of its own whose history.csv includes the epochs it inherited.
"""

from __future__ import annotations

import argparse
import sys

from tuning import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Hyperband")
    group.add_argument("--max-epochs", type=int, help="epochs of the longest trials (default: --epochs)")
    group.add_argument("--factor", type=int, default=3, help="keep the best 1/factor at each round (default 3)")
    group.add_argument("--hyperband-iterations", type=int,
                       help="full Hyperband sweeps (default 1, or as many as --max-trials allows)")


def make_tuner(args: argparse.Namespace, **kwargs):
    import keras_tuner

    from deeplense_tf.errors import ConfigError

    max_epochs = args.max_epochs or common.base_config(args).train.epochs  # --epochs, else --config, else default
    if max_epochs < 1 or args.factor < 2:
        raise ConfigError(f"--max-epochs must be >= 1 and --factor >= 2. Received: {max_epochs}, {args.factor}")
    iterations = args.hyperband_iterations or (None if args.max_trials else 1)  # None: until --max-trials
    tuner = common.with_trial_runs(keras_tuner.Hyperband)(max_epochs=max_epochs, factor=args.factor,
                                                          hyperband_iterations=iterations, **kwargs)
    tuner.oracle.max_trials = args.max_trials  # KerasTuner's Hyperband has no such argument; its Oracle does
    return tuner


def main(argv: list[str] | None = None) -> int:
    return common.main(argv, name="hyperband", description=__doc__, make_tuner=make_tuner,
                       add_arguments=add_arguments, max_trials=None)


if __name__ == "__main__":
    sys.exit(main())
