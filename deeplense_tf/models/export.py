"""Export a trained model: a TensorFlow SavedModel that plain TensorFlow can serve, and ``.keras``.

``model.export`` would trace the model in training mode and keep the random flips on
(STACK.md): the ``serve`` endpoint here calls the model with ``training=False``, so two
calls on the same images agree. Load it with ``tf.saved_model.load(path).serve(images)``
(images float32 ``[N, H, W, C]`` as stored on disk), or ``signatures["serving_default"]``.
``load_run_model`` reads a run's model back (importing ``deeplense_tf.models`` has registered
every custom layer by the time this module is imported).
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from deeplense_tf import runs
from deeplense_tf.errors import UserError


def export_saved_model(model: keras.Model, path: str | Path) -> Path:
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name="images")
    archive.add_endpoint("serve", lambda images: model(images, training=False), input_signature=[spec])
    with runs.atomic_path(path) as tmp:
        archive.write_out(str(tmp), verbose=False)
    return Path(path)


def export_run(model: keras.Model, run_dir: str | Path) -> dict[str, Path]:
    run_dir = Path(run_dir)
    runs.save_keras_model(model, run_dir / runs.KERAS_MODEL)
    saved = export_saved_model(model, run_dir / runs.SAVED_MODEL)
    return {"saved_model": saved, "keras": run_dir / runs.KERAS_MODEL}


def load_run_model(run_dir: str | Path) -> keras.Model:
    """``model.keras`` of a finished run, else its best (or last) checkpoint."""
    run_dir = Path(run_dir)
    for name in (runs.KERAS_MODEL, runs.BEST, runs.LAST):
        if (run_dir / name).is_file():
            return keras.models.load_model(run_dir / name, compile=False)
    raise UserError(f"{run_dir} has no trained model ({runs.KERAS_MODEL} or checkpoints/*.keras)")
