"""The house plan holds: import-linter's contracts (setup.cfg), a cheap package import, and
``.keras`` files written before the layout move still load (a fixture made by commit e8f3120)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
LEGACY = ROOT / "tests" / "data" / "legacy_e8f3120"


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_importing_the_package_loads_no_tensorflow():
    code = ("import sys, deeplense_tf, deeplense_tf.sim.generate, deeplense_tf.data.sources; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_unknown_attribute_of_the_package_is_an_attribute_error():
    import deeplense_tf

    with pytest.raises(AttributeError, match="no attribute 'trainer'"):
        deeplense_tf.trainer  # noqa: B018


@pytest.mark.parametrize("name, inputs, outputs", [
    ("regression_last.keras", "regression_input.npy", "regression_output.npy"),
    ("vae.keras", "regression_input.npy", "vae_output.npy"),
])
def test_keras_files_from_before_the_move_load(name, inputs, outputs):
    import deeplense_tf as dl

    model = dl.load_model(LEGACY / name)
    np.testing.assert_allclose(model.predict(np.load(LEGACY / inputs), verbose=0), np.load(LEGACY / outputs),
                               rtol=1e-5, atol=1e-6)


def test_checkpoint_from_before_the_move_resumes_with_its_optimizer():
    """A compiled ``last.keras`` (warm-up cosine schedule, optimiser state) loads with its training state."""
    import keras

    import deeplense_tf.api  # noqa: F401  (registers the layers, schedules and losses)

    model = keras.models.load_model(LEGACY / "regression_last.keras")
    assert type(model.optimizer.learning_rate).__name__ != "float" and int(model.optimizer.iterations) == 2
    x = np.load(LEGACY / "regression_input.npy")
    loss = model.train_on_batch(x, np.full((len(x), 1), -23.0, np.float32))
    assert np.all(np.isfinite(loss))
