"""Evaluate a trained run: metrics, predictions and plots.

    python -m deeplense_tf.evaluate RUN_DIR                 # the run's own test split
    python -m deeplense_tf.evaluate RUN_DIR --data OTHER    # every labelled image of another data set
    python -m deeplense_tf.evaluate RUN_DIR --tta           # average over the 8 flips/rotations

Writes ``metrics.json``, ``predictions.csv`` and ``plots/`` (``--plot-format``) into ``--out`` (default
``RUN_DIR/eval-<data>``). ``train`` calls the same functions on the test split at the end; from
Python: ``deeplense_tf.evaluate(run, data)`` (``api.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deeplense_tf.cli import callable_as, command_parser, prepare_environment, run_cli
from deeplense_tf.config import PLOT_FORMATS


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("python -m deeplense_tf.evaluate", __doc__, verbose=True)
    parser.add_argument("run_dir", type=Path, help="a run directory written by deeplense_tf.train")
    parser.add_argument("--data", help="evaluate on this data set (path or sim:<preset>) instead of the test split")
    parser.add_argument("--out", type=Path, help="output folder (default RUN_DIR/eval-<data>)")
    parser.add_argument("--plot-format", choices=PLOT_FORMATS,
                        help="file format of the plots: png, or pdf / svg for a paper (default: the run's own)")
    parser.add_argument("--tta", action="store_true", help="test-time augmentation: mean over the 8 flips/rotations")
    parser.add_argument("--batch-size", type=int, default=64, help="images per prediction batch")
    parser.add_argument("--allow-pickle", action="store_true", help="allow pickled .npy files in --data (runs code from them)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prepare_environment(args.verbose)
    return run_cli(lambda: evaluate_run(args))


def evaluate_run(args) -> Path:
    from deeplense_tf.api import evaluate  # TensorFlow loads here, once the arguments are parsed: --help stays fast

    return Path(evaluate(args.run_dir, args.data, tta=args.tta, out=args.out, batch_size=args.batch_size,
                         allow_pickle=args.allow_pickle, plot_format=args.plot_format)["out"])


def api_evaluate(*args, **kwargs):
    """``deeplense_tf.evaluate(...)``: the Python API's ``evaluate`` (``api.py``)."""
    from deeplense_tf.api import evaluate  # TensorFlow loads on the first call: --help stays fast

    return evaluate(*args, **kwargs)


callable_as(__name__, api_evaluate)

if __name__ == "__main__":
    sys.exit(main())
