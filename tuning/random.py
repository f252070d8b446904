"""Random search over the deeplense_tf hyperparameters: the baseline the other tuners must beat.

    python -m tuning.random --max-trials 20 --epochs 5

Results: OUT/trials.csv, OUT/trials.png, one run directory per trial under OUT/trials/, and
the train command of the best trial. The same command again continues the search.
"""

from __future__ import annotations

import argparse
import sys

from tuning import common


def make_tuner(args: argparse.Namespace, **kwargs):
    import keras_tuner

    return common.with_trial_runs(keras_tuner.RandomSearch)(max_trials=args.max_trials, **kwargs)


def main(argv: list[str] | None = None) -> int:
    return common.main(argv, name="random", description=__doc__, make_tuner=make_tuner)


if __name__ == "__main__":
    sys.exit(main())
