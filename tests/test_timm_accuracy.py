"""pipelines.timm_accuracy: scores and table by hand; both sides end to end where a torch Python exists (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines import timm_accuracy
from pipelines.timm_compare import DEFAULT_TORCH_PYTHON


def test_scores_by_hand():
    labels = np.array([0, 1, 2, 2])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]])
    got = timm_accuracy.scores(labels, probabilities)
    assert got["accuracy"] == 0.75
    # one-vs-rest AUC: the share of (positive, negative) pairs ranked right, per class
    axion = np.mean([p > n for p in [0.8] for n in [0.2, 0.1, 0.5]])
    cdm = np.mean([p > n for p in [0.7] for n in [0.1, 0.2, 0.1]])
    no_sub = np.mean([p > n for p in [0.7, 0.4] for n in [0.1, 0.1]])
    assert got["auc"] == pytest.approx((axion + cdm + no_sub) / 3)
    # cross-entropy: minus the mean log of the probability given to the true class
    assert got["nll"] == pytest.approx(-np.mean(np.log([0.8, 0.7, 0.7, 0.4])))


def test_table_gives_each_seed_and_the_mean_per_side():
    rows = [{"seed": s, "side": side, "train_seconds": 60 + s, "last_train_loss": 0.2 + s / 10, "test_auc": auc,
             "test_accuracy": 0.9, "test_nll": 0.3, "reference_auc": auc - 0.01, "reference_accuracy": 0.85}
            for s, (side, auc) in [(0, ("ours", 0.97)), (0, ("timm", 0.96)), (1, ("ours", 0.99)), (1, ("timm", 0.98))]]
    text = timm_accuracy.table(rows, markdown=True)
    assert "| mean | ours | 60 | 0.250 | 0.9800 | 0.900 | 0.300 | 0.9700 | 0.850 |" in text
    assert "| 1 | timm | 61 | 0.300 | 0.9800 | 0.900 | 0.300 | 0.9700 | 0.850 |" in text


def test_reference_labels_follow_the_class_order(tmp_path):
    path = tmp_path / "reference.npz"  # the layout of shared/reference/deeplensesim_model_ii_sample.npz
    np.savez(path, images=np.zeros((3, 64, 64)), label=np.array(["no_sub", "axion", "cdm"]))
    images, labels = timm_accuracy.load_reference(path)
    assert images.shape == (3, 64, 64) and images.dtype == np.float32 and labels.tolist() == [2, 0, 1]


def test_missing_torch_python_is_refused_before_any_simulation(tmp_path):
    with pytest.raises(SystemExit, match="no PyTorch Python at"):
        timm_accuracy.main(["--torch-python", str(tmp_path / "python")])


@pytest.mark.slow  # ~2 min: a tiny set simulated, our run and timm's
@pytest.mark.skipif(not Path(DEFAULT_TORCH_PYTHON).is_file(), reason="no torch Python (.torchvenv or $TORCH_PYTHON)")
@pytest.mark.skipif(not timm_accuracy.DEFAULT_REFERENCE.is_file(), reason="no DeepLenseSim reference images beside the repo")
def test_both_sides_end_to_end(sim_cache, tmp_path):
    out = tmp_path / "rows.json"
    assert timm_accuracy.main(["--seeds", "0", "--train-per-class", "8", "--val-per-class", "4",
                               "--test-per-class", "4", "--epochs", "1", "--batch-size", "8", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["side"] for r in rows] == ["ours", "ours (last epoch)", "timm"]
    for row in rows:
        assert 0 <= row["test_auc"] <= 1 and 0 <= row["reference_auc"] <= 1 and row["train_seconds"] > 0
        assert len(row["epoch_loss"]) == 1 and row["last_train_loss"] == row["epoch_loss"][-1] > 0 and row["test_nll"] > 0
