"""The Python API (``import deeplense_tf as dl``): README's example runs as a script, unguarded."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import deeplense_tf as dl
from deeplense_tf.errors import ConfigError, UserError

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## From Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_as_a_plain_script(tmp_path, sim_cache):
    """No ``if __name__ == "__main__":`` guard: the simulator's spawned workers must not re-run it."""
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    assert "__main__" not in script.read_text() and "dl.train(" in script.read_text()
    env = {**os.environ, "DEEPLENSE_TF_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "BrokenProcessPool" not in result.stderr
    runs = list((tmp_path / "runs").glob("resnet18-regression-*"))
    assert len(runs) == 1 and (runs[0] / "metrics.json").is_file() and (runs[0] / "eval-sim_model_iii").is_dir()


def test_train_rejects_an_unknown_setting_with_the_closest_name():
    with pytest.raises(ConfigError, match="closest: epochs"):
        dl.train(epoch=3)


def test_create_model_and_list_archs():
    model = dl.create_model("resnet18", "classification", (32, 32, 1), n_classes=3)
    assert model.output_shape == (None, 3)
    assert dl.list_archs(task="anomaly") == ["conv_autoencoder", "vae"]
    with pytest.raises(ConfigError, match="unknown model setting"):
        dl.create_model("resnet18", epochs=3)


def test_run_predict_checks_the_image_shape(tmp_path):
    run = dl.Run(tmp_path, dl.RunConfig(), {"input_shape": [64, 64, 1]})
    with pytest.raises(UserError, match=r"takes \(64, 64, 1\)"):
        run.predict(np.zeros((2, 32, 32), np.float32))


def test_load_model_names_a_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such .keras file"):
        dl.load_model(tmp_path / "nothing.keras")
