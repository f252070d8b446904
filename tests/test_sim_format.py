"""simulate --format: the DeepLense layout and the packed shards hold the same images and labels."""

import json

import numpy as np
import pytest

from deeplense_tf.data.shards import MANIFEST
from deeplense_tf.data.simulate import main as simulate_main
from deeplense_tf.data.sources import load_data
from deeplense_tf.errors import ConfigError, DataError

LABELS = ["class", "log10_axion_mass", "n_subhalos", "theta_e_arcsec", "source_mag", "seed"]


def run(out, *extra, n=2):
    return simulate_main(["--preset", "model_ii", "--n", str(n), "--seed", "3", "--out", str(out), "--workers", "1",
                          "--no-progress", *extra])


def by_file(index, strip_part=False):
    """Images and label table in file order (parts joined from --shard jobs lose their part-K-of-N/ prefix)."""
    table = index.table.copy()
    if strip_part:
        table["file"] = table["file"].str.split("/", n=1).str[1]
    order = np.argsort(table["file"].to_numpy())
    return np.asarray(index.images)[order], table.iloc[order].reset_index(drop=True)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sim_format")
    assert run(tmp / "deeplense") == 0 and run(tmp / "shards", "--format", "shards") == 0
    return tmp


def test_formats_hold_the_same_images_and_labels(both):
    assert (both / "deeplense" / "cdm").is_dir() and not (both / "deeplense" / MANIFEST).exists()
    assert sorted(p.name for p in (both / "shards").iterdir()) == ["metadata.csv", MANIFEST, "shard-00000.npy"]
    files, shards = load_data(str(both / "deeplense")), load_data(str(both / "shards"))
    assert (files.layout, shards.layout) == ("class_folders", "shards")
    images_a, table_a = by_file(files)
    images_b, table_b = by_file(shards)
    assert len(table_a) == 6
    np.testing.assert_array_equal(images_a, images_b)
    assert list(table_a["file"]) == list(table_b["file"])
    for column in LABELS:
        np.testing.assert_array_equal(table_a[column].to_numpy(), table_b[column].to_numpy())


def test_rerun_is_a_no_op_and_another_recipe_is_refused(both, capsys):
    before = (both / "shards" / "shard-00000.npy").stat().st_mtime_ns
    assert run(both / "shards", "--format", "shards") == 0
    assert (both / "shards" / "shard-00000.npy").stat().st_mtime_ns == before
    assert json.loads((both / "shards" / MANIFEST).read_text())["simulation"]["seed"] == 3
    assert run(both / "shards", "--format", "shards", n=3) == 2
    assert "already holds packed data" in capsys.readouterr().err
    assert run(both / "deeplense", "--format", "shards") == 2  # a folder of class folders is not ours
    assert "holds other files" in capsys.readouterr().err


def test_shard_parts_joined_equal_one_run(both, tmp_path):
    out = tmp_path / "parts"
    assert run(out, "--format", "shards", "--shard", "1/2") == 0
    with pytest.raises(DataError, match=r"1 of 2 parts are missing.*--shard 0/2"):
        load_data(str(out))
    assert run(out, "--format", "shards", "--shard", "0/2") == 0
    assert sorted(p.name for p in out.iterdir()) == ["part-0000-of-0002", "part-0001-of-0002"]
    images_a, table_a = by_file(load_data(str(both / "shards")))
    images_b, table_b = by_file(load_data(str(out)), strip_part=True)
    np.testing.assert_array_equal(images_a, images_b)
    assert list(table_a["file"]) == list(table_b["file"])
    np.testing.assert_array_equal(table_a["log10_axion_mass"].to_numpy(), table_b["log10_axion_mass"].to_numpy())


def test_more_parts_than_images_is_refused(tmp_path):
    from deeplense_tf.data.simulate import simulate_packed

    with pytest.raises(ConfigError, match="N <= --samples"):
        simulate_packed("model_ii", 2, 0, tmp_path / "x", shard=(0, 3), progress=False)
    assert not (tmp_path / "x").exists()
