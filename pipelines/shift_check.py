"""Does a run know when images are unlike its training images? Its far-from-training flag, metric
and interval coverage on its own test split and on other data sets, side by side.

    python -m pipelines.shift_check runs/<model_ii run> --data sim:model_iii:noise=published \\
        ../shared/reference/deeplensesim_model_ii_sample.npz --markdown

For each data set: images, the share flagged ``far_from_training`` (Mahalanobis distance of the
backbone features beyond the run's 99th-percentile validation threshold: about 1 % on data like the
training set by construction), the median distance, and the task's headline metric; for
regression also the coverage of the calibrated 68 % and 95 % intervals. A run without
``calibration.json`` is calibrated first (``training/calibrate.py``).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from deeplense_tf.cli import command_parser, prepare_environment


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("python -m pipelines.shift_check", __doc__, verbose=True)
    parser.add_argument("run_dir", help="a finished run directory")
    parser.add_argument("--data", nargs="*", default=[], help="other data sets (any --data of train)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per prediction batch")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    return parser


def shift_rows(run_dir: str, datasets: list[str], batch_size: int = 64) -> list[dict]:
    from deeplense_tf.api import load_run
    from deeplense_tf.data.prepare import evaluation_set
    from deeplense_tf.evaluation import metrics
    from deeplense_tf.evaluation.intervals import regression_uncertainty_metrics
    from deeplense_tf.evaluation.report import predict, regression_outputs
    from deeplense_tf.models.heads import features_model
    from deeplense_tf.runs import HEADLINE
    from deeplense_tf.training.calibrate import calibrate_run, mahalanobis, read_calibration

    run = load_run(run_dir)
    task = run.config.model.task
    calibration, stats = read_calibration(run.path)
    if calibration is None:
        calibrate_run(run.path, run.config, run.model, batch_size)
        calibration, stats = read_calibration(run.path)
    extract = features_model(run.model)
    headline = HEADLINE[task][0]
    rows = []
    for name in [None, *datasets]:
        images, y, _, split = evaluation_set(run.config, run.info, run.path, name)
        distance = mahalanobis(extract.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0),
                               stats["mean"], stats["precision"])
        outputs = predict(run.model, images, batch_size)
        row = {"data": name or f"{run.info['source']} ({split})", "images": int(len(y)),
               "far_from_training": float(np.mean(distance > calibration["feature_distance_threshold"])),
               "median_distance": float(np.median(distance))}
        if task == "regression":
            mean, sigma = regression_outputs(outputs)
            found = regression_uncertainty_metrics(y, mean, sigma, calibration["conformal"])
            row.update(mae=metrics.regression_metrics(y, mean)["mae"], coverage_68=found["coverage_68_calibrated"],
                       coverage_95=found["coverage_95_calibrated"])
        else:
            row[headline] = metrics.metrics_for_task(task, y, outputs if task == "classification" else
                                                     outputs.reshape(-1), class_names=run.info["class_names"])[headline]
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prepare_environment(args.verbose)
    rows = shift_rows(args.run_dir, args.data, args.batch_size)
    print(markdown(rows) if args.markdown else "\n".join(map(str, rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
