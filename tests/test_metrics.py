"""Metrics checked on hand-made inputs with known answers."""

import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from deeplense_tf.evaluation.metrics import (
    TASK_METRICS,
    anomaly_metrics,
    classification_metrics,
    lens_finding_metrics,
    metrics_for_task,
    regression_metrics,
    tpr_before_false_positives,
)

NAMES = ["no_sub", "cdm", "axion"]


def _json_roundtrip(d):
    s = json.dumps(d, allow_nan=False)  # no NaN/inf/numpy types may leak
    return json.loads(s)


# ----------------------------------------------------------------------------- regression
def test_regression_hand_computed():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 2.0, 2.0, 5.0])  # errors +0.5, 0, -1, +1
    m = regression_metrics(y, p)
    assert m["n"] == 4
    assert m["mae"] == pytest.approx(2.5 / 4)
    assert m["mse"] == pytest.approx(2.25 / 4)
    assert m["rmse"] == pytest.approx(math.sqrt(2.25 / 4))
    assert m["bias"] == pytest.approx(0.5 / 4)
    assert m["median_abs_error"] == pytest.approx(0.75)
    assert m["max_abs_error"] == pytest.approx(1.0)
    assert m["r2"] == pytest.approx(1 - 2.25 / 5.0)  # SS_tot = 2.25+0.25+0.25+2.25
    assert m["baseline_mae"] == pytest.approx(1.0)
    assert m["baseline_rmse"] == pytest.approx(math.sqrt(5.0 / 4))
    _json_roundtrip(m)


def test_regression_mean_predictor_is_baseline():
    rng = np.random.default_rng(1)
    y = rng.uniform(-24, -22, 5000)  # log10 m_a, uniform over two decades
    m = regression_metrics(y, np.full_like(y, y.mean()))
    assert m["r2"] == pytest.approx(0.0, abs=1e-12)
    assert m["mae"] == pytest.approx(m["baseline_mae"], rel=1e-12)
    assert m["rmse"] == pytest.approx(m["baseline_rmse"], rel=1e-12)
    # DOMAIN.md: mean predictor MAE 0.5 dex, RMSE 0.577 dex
    assert m["baseline_mae"] == pytest.approx(0.5, abs=0.02)
    assert m["baseline_rmse"] == pytest.approx(2 / math.sqrt(12), abs=0.02)


def test_regression_perfect_and_shapes():
    y = np.linspace(0, 1, 10)
    m = regression_metrics(y.reshape(-1, 1), y)  # (N,1) accepted
    assert m["mae"] == 0 and m["rmse"] == 0 and m["r2"] == 1.0


def test_regression_constant_target_and_bad_input():
    m = regression_metrics([2.0, 2.0], [1.0, 3.0])
    assert m["r2"] is None and m["warnings"]
    _json_roundtrip(m)
    with pytest.raises(ValueError, match="length mismatch"):
        regression_metrics([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="non-finite"):
        regression_metrics([1, 2, 3], [1, np.nan, 2])


# ----------------------------------------------------------------------------- classification
def _probs_from_logits(logits):
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_classification_perfect():
    y = np.array([0, 1, 2, 0, 1, 2])
    P = np.eye(3)[y] * 0.9 + 0.1 / 3
    m = classification_metrics(y, P, NAMES)
    assert m["accuracy"] == 1.0
    assert m["roc_auc_macro_ovr"] == 1.0 and m["roc_auc_macro_ovo"] == 1.0
    assert all(v == 1.0 for v in m["per_class_auc"].values())
    assert m["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
    assert m["per_class"]["cdm"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert m["warnings"] == []
    _json_roundtrip(m)


def test_classification_random_is_near_half():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 6000)
    P = _probs_from_logits(rng.standard_normal((6000, 3)))
    m = classification_metrics(y, P, NAMES)
    assert m["roc_auc_macro_ovr"] == pytest.approx(0.5, abs=0.03)
    assert m["roc_auc_macro_ovo"] == pytest.approx(0.5, abs=0.03)
    assert m["accuracy"] == pytest.approx(1 / 3, abs=0.03)


def test_classification_matches_sklearn_multiclass():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 500)
    logits = rng.standard_normal((500, 3))
    logits[np.arange(500), y] += 1.0
    P = _probs_from_logits(logits)
    m = classification_metrics(y, P, NAMES)
    assert m["roc_auc_macro_ovr"] == pytest.approx(roc_auc_score(y, P, multi_class="ovr"), abs=1e-12)
    assert m["roc_auc_macro_ovo"] == pytest.approx(roc_auc_score(y, P, multi_class="ovo"), abs=1e-12)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log(P[np.arange(500), y])))


def test_confusion_matrix_orientation_rows_are_true():
    # two true no_sub, both predicted axion; one true cdm predicted cdm
    y = np.array([0, 0, 1])
    P = np.array([[0.1, 0.1, 0.8], [0.2, 0.1, 0.7], [0.1, 0.8, 0.1]])
    m = classification_metrics(y, P, NAMES)
    assert m["confusion_matrix"] == [[0, 0, 2], [0, 1, 0], [0, 0, 0]]
    assert m["confusion_matrix_normalized"][0] == [0.0, 0.0, 1.0]
    assert m["per_class"]["no_sub"]["recall"] == 0.0
    assert m["per_class"]["axion"]["precision"] == 0.0


def test_classification_absent_class_does_not_crash():
    y = np.array([0, 1, 0, 1, 0])  # "axion" absent
    P = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.4, 0.5, 0.1], [0.5, 0.1, 0.4]])
    m = classification_metrics(y, P, NAMES)
    assert m["per_class_auc"]["axion"] is None
    assert m["per_class_auc"]["no_sub"] == 1.0 and m["per_class_auc"]["cdm"] == 1.0
    assert m["roc_auc_macro_ovr"] == 1.0  # macro over the present classes
    assert m["pairwise_auc_ovo"]["no_sub_vs_axion"] is None
    assert m["roc_auc_macro_ovo"] == 1.0
    assert any("axion" in w for w in m["warnings"])
    d = _json_roundtrip(m)
    assert d["per_class_auc"]["axion"] is None
    assert "null" in json.dumps(m)


def test_classification_single_class_present():
    y = np.zeros(4, dtype=int)
    P = _probs_from_logits(np.random.default_rng(0).standard_normal((4, 3)))
    m = classification_metrics(y, P, NAMES)
    assert m["roc_auc_macro_ovr"] is None and m["roc_auc_macro_ovo"] is None
    _json_roundtrip(m)


def test_classification_bad_input():
    with pytest.raises(ValueError, match="shape"):
        classification_metrics([0, 1], np.ones((2, 2)), NAMES)
    with pytest.raises(ValueError, match="outside"):
        classification_metrics([0, 3], np.ones((2, 3)) / 3, NAMES)


# ----------------------------------------------------------------------------- lens finding
def test_tpr0_first_false_positive_at_position_k():
    # ranking: L L N L L N ... -> two lenses before the first false positive
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    y = np.array([1, 1, 0, 1, 1, 0, 1])
    n_pos = 5
    m = lens_finding_metrics(y, score)
    assert m["tpr0"] == pytest.approx(2 / n_pos)
    assert m["n_pos"] == 5 and m["n"] == 7
    # fewer than 10 non-lenses: no tenth false positive, every lens counts as found
    assert m["tpr10"] == 1.0
    assert any("tpr10" in w for w in m["warnings"])
    assert tpr_before_false_positives(y, score, 2) == pytest.approx(4 / n_pos)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_tpr0_general_position(k):
    # k lenses, then a non-lens, then 3 more lenses and 20 non-lenses
    y = np.array([1] * k + [0] + [1] * 3 + [0] * 20)
    score = np.linspace(1, 0, y.size)
    assert lens_finding_metrics(y, score)["tpr0"] == pytest.approx(k / (k + 3))


def test_tpr10_hand_ranking():
    # 2 lenses, then 9 non-lenses (FP 1..9), 3 lenses, the 10th non-lens, 5 lenses, 5 non-lenses
    y = np.array([1, 1] + [0] * 9 + [1] * 3 + [0] + [1] * 5 + [0] * 5)
    score = np.linspace(1, 0, y.size)
    m = lens_finding_metrics(y, score)
    assert m["tpr0"] == pytest.approx(2 / 10)
    assert m["tpr10"] == pytest.approx(5 / 10)
    _json_roundtrip(m)


def test_tpr_ties_do_not_count():
    # the top lens is tied with the top non-lens: not found before the first FP
    y = np.array([1, 0, 1, 0])
    score = np.array([0.9, 0.9, 0.5, 0.1])
    assert lens_finding_metrics(y, score)["tpr0"] == 0.0
    # ties among non-lenses at the 2nd-highest: lens above both counts
    y = np.array([1, 0, 0, 1])
    score = np.array([0.9, 0.8, 0.8, 0.1])
    assert tpr_before_false_positives(y, score, 2) == pytest.approx(0.5)


def test_lens_finding_perfect_and_random():
    y = np.array([0] * 50 + [1] * 10)
    score = np.r_[np.linspace(0, 0.4, 50), np.linspace(0.6, 1, 10)]
    m = lens_finding_metrics(y, score)
    assert m["auc"] == 1.0 and m["average_precision"] == pytest.approx(1.0)
    assert m["tpr0"] == 1.0 and m["tpr10"] == 1.0 and m["accuracy"] == 1.0
    assert m["prevalence"] == pytest.approx(10 / 60)

    rng = np.random.default_rng(0)
    y = (rng.random(20000) < 0.1).astype(int)
    m = lens_finding_metrics(y, rng.random(20000))
    assert m["auc"] == pytest.approx(0.5, abs=0.03)
    assert m["average_precision"] == pytest.approx(m["prevalence"], abs=0.02)
    assert m["tpr0"] < 0.01


def test_lens_finding_one_class_only():
    m = lens_finding_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert m["auc"] is None and m["tpr0"] is None and m["average_precision"] is None
    m = lens_finding_metrics([1, 1], [0.1, 0.9])
    assert m["auc"] is None and m["tpr0"] == 1.0
    _json_roundtrip(m)
    with pytest.raises(ValueError, match="only 0 and 1"):
        lens_finding_metrics([0, 2], [0.1, 0.2])


# ----------------------------------------------------------------------------- anomaly
def test_anomaly_hand_computed():
    labels = ["no_sub"] * 4 + ["cdm"] * 2 + ["axion"] * 2
    scores = [0.1, 0.2, 0.3, 0.4, 0.35, 0.5, 0.9, 1.0]
    m = anomaly_metrics(scores, labels, "no_sub")
    assert m["auc_vs_axion"] == 1.0
    assert m["auc_vs_cdm"] == pytest.approx(7 / 8)  # 0.35 beats 3 of 4 normals, 0.5 beats all
    assert m["auc_vs_all"] == pytest.approx(15 / 16)
    assert m["per_class_auc"] == {"axion": 1.0, "cdm": 7 / 8}
    assert m["mean_score"]["no_sub"] == pytest.approx(0.25)
    assert m["n_per_class"] == {"no_sub": 4, "axion": 2, "cdm": 2}
    _json_roundtrip(m)


def test_anomaly_normal_absent():
    m = anomaly_metrics([0.1, 0.2], ["cdm", "axion"], "no_sub")
    assert m["auc_vs_all"] is None and m["auc_vs_cdm"] is None and m["warnings"]
    _json_roundtrip(m)


# ----------------------------------------------------------------------------- dispatch
def test_metrics_for_task_dispatch():
    assert set(TASK_METRICS) == {"regression", "classification", "lens_finding", "anomaly"}
    r = metrics_for_task("regression", [1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert r["task"] == "regression" and r["mae"] == pytest.approx(1 / 3)
    c = metrics_for_task("classification", [0, 1], np.array([[0.9, 0.1], [0.2, 0.8]]))
    assert c["class_names"] == ["class_0", "class_1"] and c["accuracy"] == 1.0
    lf = metrics_for_task("lens_finding", [0, 1], np.array([[0.2], [0.7]]))
    assert lf["auc"] == 1.0
    a = metrics_for_task("anomaly", [0, 1, 2, 0], [0.1, 0.5, 0.9, 0.2], class_names=NAMES)
    assert a["normal_class"] == "no_sub" and a["auc_vs_cdm"] == 1.0
    a = metrics_for_task("anomaly", ["x", "y"], [0.1, 0.5], normal_class="x")
    assert a["auc_vs_y"] == 1.0
    for d in (r, c, lf, a):
        _json_roundtrip(d)
    with pytest.raises(ValueError, match="unknown task"):
        metrics_for_task("segmentation", [0], [0])
