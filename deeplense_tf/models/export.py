"""Export a trained model: a TensorFlow SavedModel that plain TensorFlow can serve, and ``.keras``.

``model.export`` would trace the model in training mode and keep the random flips on
(STACK.md): the ``serve`` endpoint here calls the model with ``training=False``, so two
calls on the same images agree. From plain TensorFlow::

    m = tf.saved_model.load("RUN/export/saved_model")
    out = m.serve(images)                  # images float32 [N, H, W, C] as stored on disk
    meta = json.loads(m.metadata().numpy())  # task, classes, target and units, input shape, calibration

``serve`` (also ``signatures["serving_default"]``) returns named outputs: ``mean`` (and ``sigma`` with
``--uncertainty gaussian``) and the calibrated ``lower68`` / ``upper68`` / ``lower95`` / ``upper95`` for
regression, calibrated ``probabilities`` for classification, ``lens_probability``, ``anomaly_score``;
with the run's feature statistics also ``feature_distance`` (Mahalanobis distance of the image's
backbone features from the training images'; ``metadata.calibration.feature_distance_threshold`` is
the 99th percentile of the validation images'). ``load_run_model`` reads a run's model back
(importing ``deeplense_tf.models`` has registered every custom layer by the time this module is
imported).
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from deeplense_tf import runs
from deeplense_tf.errors import UserError
from deeplense_tf.models.heads import features_model
from deeplense_tf.tasks import target_units

EXPORT_FORMAT = 2  # 1: ``serve`` returned the bare model output (runs made before 2026-12-01)


def export_metadata(info: dict, calibration: dict | None = None) -> dict:
    """What a downstream user needs beside the weights: task, classes, target and units, input, calibration."""
    target = info.get("target") if info["task"] == "regression" else None
    return {"export_format": EXPORT_FORMAT, "task": info["task"], "class_names": info.get("class_names") or [],
            "target": target, "target_units": target_units(target) if target else None,
            "input_shape": list(info["input_shape"]), "input_dtype": "float32",
            "normal_class": info.get("normal_class") if info["task"] == "anomaly" else None,
            "calibration": calibration or {}}


def named_outputs(task: str, outputs, calibration: dict) -> dict:
    """The model's raw outputs as the named, calibrated outputs of the ``serve`` endpoint."""
    if task == "regression":
        named = {"mean": outputs[:, 0]}
        sigma = outputs[:, 1] if outputs.shape[-1] == 2 else None
        if sigma is not None:
            named["sigma"] = sigma
        conformal = calibration.get("conformal")
        if conformal:
            for level, q in zip(conformal["levels"], conformal["quantiles"]):
                half = q * sigma if conformal["normalised"] and sigma is not None else tf.fill(tf.shape(named["mean"]), q)
                named[f"lower{round(level * 100)}"] = named["mean"] - half
                named[f"upper{round(level * 100)}"] = named["mean"] + half
        return named
    temperature = calibration.get("temperature") or 1.0
    if task == "classification":
        logits = tf.math.log(tf.clip_by_value(outputs, 1e-7, 1.0)) / temperature
        return {"probabilities": tf.nn.softmax(logits, axis=-1)}
    if task == "lens_finding":
        p = tf.clip_by_value(outputs[:, 0], 1e-7, 1 - 1e-7)
        return {"lens_probability": tf.sigmoid((tf.math.log(p) - tf.math.log1p(-p)) / temperature)}
    return {"anomaly_score": tf.reshape(outputs, [-1])}


def checked_images(images: tf.Tensor, expected: tuple[int, ...]) -> tf.Tensor:
    """``images`` with its static shape set to (N, *expected), after a run-time check whose error
    names the expected and the received shape."""
    shape = tf.shape(images)
    received = tf.strings.reduce_join(tf.strings.as_string(shape[1:]), separator=",")
    wanted = ",".join(str(v) for v in expected)
    check = tf.debugging.Assert(tf.equal(received, wanted), [
        f"images must be a float32 batch of shape (N, {', '.join(map(str, expected))}); received shape", shape], summarize=8)
    with tf.control_dependencies([check]):
        return tf.ensure_shape(tf.identity(images), (None, *expected))


def export_saved_model(model: keras.Model, path: str | Path, metadata: dict | None = None,
                       features: dict[str, np.ndarray] | None = None) -> Path:
    metadata = metadata or {"export_format": EXPORT_FORMAT, "task": _task_of(model), "calibration": {}}
    task, calibration = metadata["task"], metadata.get("calibration") or {}
    archive = keras.export.ExportArchive()
    archive.track(model)
    extract = None
    if features and task != "anomaly":
        extract = features_model(model)
        archive.track(extract)
        mean = tf.constant(features["mean"], tf.float32)
        precision = tf.constant(features["precision"], tf.float32)

    expected = tuple(int(v) for v in model.input_shape[1:])

    def serve(images):
        images = checked_images(images, expected)
        named = named_outputs(task, model(images, training=False), calibration)
        if extract is not None:
            centred = tf.cast(extract(images, training=False), tf.float32) - mean  # bfloat16 under mixed precision
            named["feature_distance"] = tf.sqrt(tf.maximum(
                tf.reduce_sum(tf.matmul(centred, precision) * centred, axis=-1), 0.0))
        return named

    # Any shape is accepted at the signature and checked inside: a wrong one then fails with one
    # line naming the expected shape, not TensorFlow's signature-mismatch dump of the input.
    spec = tf.TensorSpec(None, tf.float32, name="images")
    archive.add_endpoint("serve", serve, input_signature=[spec])
    document = json.dumps(metadata)
    archive.add_endpoint("metadata", lambda: tf.constant(document), input_signature=[])
    with runs.atomic_path(path) as tmp:
        archive.write_out(str(tmp), verbose=False)
    return Path(path)


def _task_of(model: keras.Model) -> str:
    """The task of a model exported without metadata, from its output layer's name."""
    return {"target": "regression", "probabilities": "classification",
            "lens_probability": "lens_finding"}.get(model.layers[-1].name, "anomaly")


def export_run(model: keras.Model, run_dir: str | Path, metadata: dict | None = None,
               features: dict[str, np.ndarray] | None = None) -> dict[str, Path]:
    run_dir = Path(run_dir)
    runs.save_keras_model(model, run_dir / runs.KERAS_MODEL)
    saved = export_saved_model(model, run_dir / runs.SAVED_MODEL, metadata, features)
    return {"saved_model": saved, "keras": run_dir / runs.KERAS_MODEL}


def load_run_model(run_dir: str | Path) -> keras.Model:
    """``model.keras`` of a finished run, else its best (or last) checkpoint."""
    run_dir = Path(run_dir)
    for name in (runs.KERAS_MODEL, runs.BEST, runs.LAST):
        if (run_dir / name).is_file():
            return keras.models.load_model(run_dir / name, compile=False)
    raise UserError(f"{run_dir} has no trained model ({runs.KERAS_MODEL} or checkpoints/*.keras)")
