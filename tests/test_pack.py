"""pack: any layout -> fixed-size .npy shards + metadata.csv + pack.json, read back memory-mapped."""

import json

import numpy as np
import pytest

from tests.helpers import write_class_folders
from deeplense_tf.data.pack import main as pack_main
from deeplense_tf.data.shards import MANIFEST, ShardedImages
from deeplense_tf.data.sources import load_data
from deeplense_tf.errors import DataError


@pytest.fixture()
def packed(tmp_path):
    src = write_class_folders(tmp_path / "src", per_class=5)
    assert pack_main([str(src), str(tmp_path / "shards"), "--shard-size", "4"]) == 0
    return src, tmp_path / "shards"


def by_file(index):
    order = np.argsort(index.table["file"].to_numpy())
    return np.asarray(index.images)[order], index.table.iloc[order].reset_index(drop=True)


def test_pack_round_trip(packed):
    src, dst = packed
    manifest = json.loads((dst / MANIFEST).read_text())
    assert manifest["count"] == 15 and manifest["shards"] == [f"shard-0000{k}.npy" for k in range(4)]
    assert np.load(dst / "shard-00003.npy").shape == (3, 32, 32, 1)
    original, shards = load_data(str(src)), load_data(str(dst))
    assert shards.layout == "shards"
    images_a, table_a = by_file(original)
    images_b, table_b = by_file(shards)
    np.testing.assert_array_equal(images_a, images_b)
    assert list(table_a["class"]) == list(table_b["class"])


def test_shards_stream_as_memory_maps(packed):
    _, dst = packed
    index = load_data(str(dst), stream=True)
    assert isinstance(index.images, ShardedImages)
    resident = load_data(str(dst), stream=False).images
    rows = np.array([14, 0, 7, 3, 8])  # across shards, out of order
    np.testing.assert_array_equal(index.images.read(rows), resident[rows])
    view = index.images[index.table["class"].to_numpy() == "cdm"]
    assert view.shape == (5, 32, 32, 1)
    np.testing.assert_array_equal(np.asarray(view), resident[index.table["class"].to_numpy() == "cdm"])


def test_truncated_shard_is_named(packed):
    _, dst = packed
    raw = (dst / "shard-00001.npy").read_bytes()
    (dst / "shard-00001.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="shard-00001.npy"):
        load_data(str(dst))


def test_pack_refuses_to_overwrite(packed, capsys):
    src, dst = packed
    assert pack_main([str(src), str(dst)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert pack_main([str(src), str(dst), "--overwrite", "--keep-order"]) == 0
    assert load_data(str(dst)).table["file"].iloc[0] == "axion/axion_0.npy"
