"""Bayesian optimisation (a Gaussian process over the hyperparameters) of a deeplense_tf model.

    python -m tuning.bayes --max-trials 20 --epochs 5
    python -m tuning.bayes --task classification --archs efficientnet_b0 resnet50_v2 --space space.json

The first --initial-points trials are random; later ones are proposed where the process
expects the best objective. Results: OUT/trials.csv, OUT/trials.png, one run directory per
trial under OUT/trials/, and the train command of the best trial. The same command again
continues the search. Several machines: see tuning/common.py or the README's "Tuning".
"""

from __future__ import annotations

import argparse
import sys

from tuning import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Bayesian optimisation")
    # KerasTuner's own default, 3 per hyperparameter (about 27 here), would leave a short search purely random.
    group.add_argument("--initial-points", type=int, default=3,
                       help="random trials before the Gaussian process proposes (default 3)")


def make_tuner(args: argparse.Namespace, **kwargs):
    import keras_tuner

    tuner_class = common.with_trial_runs(keras_tuner.BayesianOptimization)
    return tuner_class(max_trials=args.max_trials, num_initial_points=args.initial_points, **kwargs)


def main(argv: list[str] | None = None) -> int:
    return common.main(argv, name="bayes", description=__doc__, make_tuner=make_tuner, add_arguments=add_arguments)


if __name__ == "__main__":
    sys.exit(main())
