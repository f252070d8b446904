import numpy as np
import pandas as pd
import pytest

from deeplense_tf.data.splits import stratified_split
from deeplense_tf.errors import ConfigError, DataError
from deeplense_tf.tasks import get_task


def test_split_is_disjoint_complete_stratified_and_seeded():
    strata = np.array(["a"] * 20 + ["b"] * 10 + ["c"] * 30)
    split = stratified_split(strata, 0.2, 0.2, seed=3)
    joined = np.concatenate(list(split.values()))
    assert sorted(joined) == list(range(60))
    for name in ("a", "b", "c"):
        assert all((strata[idx] == name).any() for idx in split.values())
    again = stratified_split(strata, 0.2, 0.2, seed=3)
    other = stratified_split(strata, 0.2, 0.2, seed=4)
    assert all(np.array_equal(split[k], again[k]) for k in split)
    assert not np.array_equal(split["test"], other["test"])


def test_split_too_small():
    with pytest.raises(DataError, match="too few images"):
        stratified_split(np.array(["a", "b"]), 0.2, 0.2, seed=0)


TABLE = pd.DataFrame({"class": ["no_sub", "axion", "cdm", "axion"],
                      "axion_mass_ev": [np.nan, 1e-23, np.nan, 1e-24]})


def test_regression_derives_log10_mass_and_keeps_labelled_rows():
    labels = get_task("regression").labels(TABLE, "log10_axion_mass")
    np.testing.assert_allclose(labels.y, [-23, -24], rtol=1e-6)
    assert labels.keep.tolist() == [False, True, False, True]


def test_regression_unknown_target_lists_columns():
    with pytest.raises(DataError, match="axion_mass_ev"):
        get_task("regression").labels(TABLE, "einstein_radius")


def test_classification_alphabetical_class_order():
    labels = get_task("classification").labels(TABLE, "")
    assert labels.class_names == ["axion", "cdm", "no_sub"]
    assert labels.y.tolist() == [2, 0, 1, 0]


@pytest.mark.parametrize("table, expected", [
    (pd.DataFrame({"is_lens": [1, 0, 1]}), [1, 0, 1]),
    (pd.DataFrame({"class": ["lenses", "nonlenses", "lenses"]}), [1, 0, 1]),
])
def test_lens_finding_labels(table, expected):
    assert get_task("lens_finding").labels(table, "").y.tolist() == expected


def test_unknown_task():
    with pytest.raises(ConfigError, match="classification"):
        get_task("segmentation")
