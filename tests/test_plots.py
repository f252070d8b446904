"""Each plot function writes non-empty PNGs, also on tiny and awkward inputs."""

import numpy as np
import pytest

from deeplense_tf.evaluation import plot_style, plots

NAMES = ["no_sub", "cdm", "axion"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check(paths, out_dir, n):
    assert len(paths) == n
    for p in paths:
        assert p.parent == out_dir and p.suffix == ".png"
        data = p.read_bytes()
        assert len(data) > 1000 and data[:8] == PNG_MAGIC
    assert len({p.name for p in paths}) == n


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_regression_plots(tmp_path, rng):
    y = rng.uniform(-24, -22, 300)
    out = tmp_path / "plots" / "nested"  # created
    paths = plots.regression_plots(y, y + 0.2 * rng.standard_normal(300), out)
    _check(paths, out, 3)


def test_regression_plots_tiny_and_figures_closed(tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    _check(plots.regression_plots([1.0, 2.0, 3.0], [1.1, 1.9, 3.2], tmp_path, label="f_sub"), tmp_path, 3)
    assert len(plt.get_fignums()) == before
    assert matplotlib.get_backend().lower() == "agg"


def test_classification_plots(tmp_path, rng):
    y = rng.integers(0, 3, 200)
    logits = rng.standard_normal((200, 3))
    logits[np.arange(200), y] += 2
    P = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    _check(plots.classification_plots(y, P, NAMES, tmp_path), tmp_path, 2)


def test_classification_plots_absent_class(tmp_path):
    y = np.array([0, 1, 0, 1])
    P = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.4, 0.5, 0.1]])
    _check(plots.classification_plots(y, P, NAMES, tmp_path), tmp_path, 2)


def test_lens_finding_plots(tmp_path, rng):
    y = (rng.random(500) < 0.1).astype(int)
    s = 1 / (1 + np.exp(-(rng.standard_normal(500) + 3 * y - 1.5)))
    _check(plots.lens_finding_plots(y, s, tmp_path), tmp_path, 3)


def test_lens_finding_plots_few_negatives_and_raw_scores(tmp_path):
    # fewer than 10 non-lenses, scores not in [0, 1] (logits)
    _check(plots.lens_finding_plots([1, 0, 1, 1, 0], [2.0, -1.0, 0.5, -3.0, 1.0], tmp_path), tmp_path, 3)


def test_anomaly_plots(tmp_path, rng):
    labels = np.array(NAMES)[rng.integers(0, 3, 300)]
    s = np.exp(rng.standard_normal(300) + (labels != "no_sub")) * 1e-3
    _check(plots.anomaly_plots(s, labels, "no_sub", tmp_path), tmp_path, 2)


def test_anomaly_plots_normal_absent(tmp_path):
    _check(plots.anomaly_plots([0.1, 0.2, -0.3], ["cdm", "axion", "cdm"], "no_sub", tmp_path), tmp_path, 2)


def test_training_curves(tmp_path):
    csv = tmp_path / "history.csv"
    lines = ["epoch,learning_rate,loss,mae,val_loss,val_mae"]
    for e in range(6):
        lines.append(f"{e},0.001,{1 / (e + 1)},{0.5 / (e + 1)},{1.2 / (e + 1)},{0.6 / (e + 1)}")
    lines.append("5,0.001,0.15,0.08,0.2,0.1")  # resumed run re-logged epoch 5: last row wins
    csv.write_text("\n".join(lines) + "\n")
    paths = plots.training_curves(csv, tmp_path / "plots")
    _check(paths, tmp_path / "plots", 1)
    data = plots._read_history(csv)
    assert data["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    assert data["loss"][-1] == pytest.approx(0.15)


def test_training_curves_minimal_and_errors(tmp_path):
    csv = tmp_path / "h.csv"
    csv.write_text("epoch,loss\n0,1.0\n")
    _check(plots.training_curves(csv, tmp_path), tmp_path, 1)
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,loss,val_loss\n")
    with pytest.raises(ValueError, match="no epochs"):
        plots.training_curves(empty, tmp_path)
    with pytest.raises(FileNotFoundError):
        plots.training_curves(tmp_path / "missing.csv", tmp_path)


def test_plots_for_task_dispatch(tmp_path, monkeypatch):
    """Dispatch reaches the right plot function with the right arguments (no rendering here:
    every plot function is rendered by its own test above)."""
    assert set(plots.TASK_PLOTS) == {"regression", "classification", "lens_finding", "anomaly"}
    calls = {}
    for name in ("regression_plots", "classification_plots", "lens_finding_plots", "anomaly_plots"):
        monkeypatch.setattr(plots, name, lambda *a, _n=name, **k: calls.setdefault(_n, (a, k)) and [])
    plots.plots_for_task("regression", [1.0, 2.0], [1.0, 2.5], tmp_path, label="f_sub")
    assert calls.pop("regression_plots") == (([1.0, 2.0], [1.0, 2.5], tmp_path), {"label": "f_sub", "fmt": "png"})
    plots.plots_for_task("regression", [1.0], [1.0], tmp_path, label=None)  # evaluate may pass None
    assert calls.pop("regression_plots")[1] == {"label": plot_style.DEFAULT_TARGET_LABEL, "fmt": "png"}
    plots.plots_for_task("classification", [0, 1], [[0.8, 0.2], [0.3, 0.7]], tmp_path)
    a, _ = calls["classification_plots"]
    assert a[2] == ["class_0", "class_1"] and a[3] == tmp_path
    plots.plots_for_task("lens_finding", [0, 1], [0.1, 0.9], tmp_path)
    assert calls["lens_finding_plots"][0] == ([0, 1], [0.1, 0.9], tmp_path)
    plots.plots_for_task("anomaly", [0, 1, 2], [0.1, 0.5, 0.9], tmp_path, class_names=NAMES)
    assert calls["anomaly_plots"][0] == ([0.1, 0.5, 0.9], ["no_sub", "cdm", "axion"], "no_sub", tmp_path)
    with pytest.raises(ValueError, match="unknown task"):
        plots.plots_for_task("nope", [0], [0], tmp_path)
