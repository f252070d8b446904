"""What a finished run fits on its validation split so that its uncertainties mean what they say.

- regression: split-conformal quantiles of |y - mean| (over sigma, with ``--uncertainty gaussian``) at
  68 % and 95 %, so the intervals the run reports cover that share of new images;
- classification and lens finding: a temperature (``softmax(log p / T)``) that minimises the
  validation log-loss, so a probability of 0.9 is right nine times in ten;
- every supervised task: the mean and (Ledoit-Wolf) precision of the backbone features of training
  images, and the 99th percentile of the validation images' Mahalanobis distance from them: a new
  image beyond it is flagged "far from the training images" by ``predict``.

``calibration.json`` holds the numbers, ``calibration_features.npz`` the feature statistics; the
export serves both (``models/export.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.covariance import LedoitWolf

from deeplense_tf import runs
from deeplense_tf.config import RunConfig
from deeplense_tf.data.prepare import check_split, prepare_data
from deeplense_tf.evaluation.calibration import apply_temperature, expected_calibration_error, fit_temperature
from deeplense_tf.evaluation.intervals import fit_conformal
from deeplense_tf.evaluation.report import predict, regression_outputs
from deeplense_tf.models.heads import features_model

CALIBRATION = "calibration.json"
FEATURES = "calibration_features.npz"
LEVELS = (0.68, 0.95)
FEATURE_IMAGES = 2000  # training images the feature statistics are fitted on
DISTANCE_QUANTILE = 0.99  # of the validation images' distances: the "far from training" threshold


def calibrate(model, task: str, val: tuple[np.ndarray, np.ndarray], train: tuple[np.ndarray, np.ndarray] | None,
              batch_size: int = 64, seed: int = 0) -> tuple[dict, dict[str, np.ndarray]]:
    """``(calibration, feature statistics)`` of ``model`` from the validation (and training) split."""
    x_val, y_val = val
    calibration: dict = {"split": "val", "n": int(len(y_val)), "levels": list(LEVELS)}
    if task == "anomaly" or len(y_val) < 2:
        return calibration, {}
    outputs = predict(model, x_val, batch_size)
    if task == "regression":
        mean, sigma = regression_outputs(outputs)
        calibration["conformal"] = fit_conformal(y_val, mean, sigma, LEVELS)
        if train is not None:
            calibration["target_range"] = [float(np.min(train[1])), float(np.max(train[1]))]
    else:
        probs = outputs if task == "classification" else outputs.reshape(-1)
        temperature = fit_temperature(y_val, probs)
        calibration["temperature"] = float(temperature)
        calibrated = apply_temperature(probs, temperature)
        calibration["val_ece"] = {"uncalibrated": expected_calibration_error(y_val, probs),
                                  "calibrated": expected_calibration_error(y_val, calibrated)}
    stats = feature_statistics(model, x_val, train[0] if train is not None else None, batch_size, seed)
    calibration["feature_distance_threshold"] = float(stats.pop("threshold"))
    return calibration, stats


def calibrate_run(run_dir: Path, config: RunConfig, model, batch_size: int = 64) -> dict:
    """Fit and write the calibration of a run made before runs calibrated themselves (its export is
    left as it was: re-export by training it on with ``--resume``)."""
    data = prepare_data(config)
    check_split(data, Path(run_dir) / "split.csv")
    calibration, stats = calibrate(model, config.model.task, data.subset("val"),
                                   None if data.stream is not None else data.subset("train"), batch_size,
                                   config.train.seed)
    write_calibration(Path(run_dir), calibration, stats)
    print(f"{run_dir} had no {CALIBRATION}: fitted it on the validation split ({calibration['n']} images)")
    return calibration


def feature_statistics(model, x_val: np.ndarray, x_train: np.ndarray | None, batch_size: int = 64,
                       seed: int = 0) -> dict[str, np.ndarray]:
    """Mean and precision of the features of (up to ``FEATURE_IMAGES``) training images and the
    distance threshold from the validation images; a stream run (no stored training split) fits on
    one half of the validation split and sets the threshold on the other."""
    extract = features_model(model)
    rng = np.random.default_rng(seed)
    if x_train is None:
        order = rng.permutation(len(x_val))
        x_train, x_val = x_val[np.sort(order[::2])], x_val[np.sort(order[1::2])]
    rows = np.sort(rng.choice(len(x_train), min(FEATURE_IMAGES, len(x_train)), replace=False))
    fit = np.asarray(extract.predict(np.asarray(x_train[rows], np.float32), batch_size=batch_size, verbose=0),
                     np.float64)
    estimate = LedoitWolf().fit(fit)
    held_out = np.asarray(extract.predict(np.asarray(x_val, np.float32), batch_size=batch_size, verbose=0))
    distances = mahalanobis(held_out, estimate.location_, estimate.precision_)
    return {"mean": estimate.location_.astype(np.float32), "precision": estimate.precision_.astype(np.float32),
            "threshold": np.quantile(distances, DISTANCE_QUANTILE)}


def mahalanobis(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    centred = np.asarray(features, np.float64) - mean
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", centred, precision, centred), 0.0))


def write_calibration(run_dir: Path, calibration: dict, stats: dict[str, np.ndarray]) -> None:
    runs.write_json(run_dir / CALIBRATION, calibration)
    if stats:
        with runs.atomic_path(run_dir / FEATURES) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **stats)


def read_calibration(run_dir: Path) -> tuple[dict | None, dict[str, np.ndarray]]:
    """A run's calibration, or ``(None, {})`` for a run made before calibration existed."""
    path = Path(run_dir) / CALIBRATION
    if not path.is_file():
        return None, {}
    features = Path(run_dir) / FEATURES
    stats = dict(np.load(features)) if features.is_file() else {}
    return runs.read_json(path), stats
