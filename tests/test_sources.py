import numpy as np
import pandas as pd
import pytest

from conftest import tiny_images, write_class_folders
from deeplense_tf.data.npy import ALL_ZERO, NON_FINITE, PICKLED, UNREADABLE, BadFile, read_npy
from deeplense_tf.data.sources import load_data
from deeplense_tf.errors import DataError

IMG = tiny_images(1, 16)[0]


@pytest.mark.parametrize("stored", [
    IMG, IMG[None], IMG[..., None], IMG.ravel(), np.append(IMG.ravel(), 7.0), IMG.astype(np.uint16),
])
def test_every_npy_variant_reads_as_hwc(tmp_path, stored):
    np.save(tmp_path / "a.npy", stored)
    result = read_npy(tmp_path / "a.npy")
    assert result.image.shape == (16, 16, 1) and result.image.dtype == np.float32
    np.testing.assert_allclose(result.image[..., 0], IMG.astype(stored.dtype), rtol=1e-6)
    assert result.label == (7.0 if stored.size == IMG.size + 1 else None)


def test_channels_first_multiband_is_moved_last(tmp_path):
    np.save(tmp_path / "a.npy", np.stack([IMG, 2 * IMG, 3 * IMG]))
    assert read_npy(tmp_path / "a.npy").image.shape == (16, 16, 3)


def test_pickled_file_needs_permission(tmp_path):
    obj = np.empty(2, dtype=object)
    obj[0], obj[1] = IMG, 3e-23
    np.save(tmp_path / "a.npy", obj, allow_pickle=True)
    with pytest.raises(BadFile) as err:
        read_npy(tmp_path / "a.npy")
    assert err.value.kind == PICKLED
    assert read_npy(tmp_path / "a.npy", allow_pickle=True).label == pytest.approx(3e-23)


@pytest.mark.parametrize("make, kind", [
    (lambda p: np.save(p, np.where(IMG > 0.5, np.nan, IMG)), NON_FINITE),
    (lambda p: np.save(p, np.zeros((16, 16), np.float32)), ALL_ZERO),
    (lambda p: p.write_bytes(b"\x93NUMPY garbage"), UNREADABLE),
])
def test_broken_files_are_classified(tmp_path, make, kind):
    make(tmp_path / "a.npy")
    with pytest.raises(BadFile) as err:
        read_npy(tmp_path / "a.npy")
    assert err.value.kind == kind


def test_class_folders_with_metadata(tmp_path):
    root = write_class_folders(tmp_path / "d", per_class=3)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.npy"))
    pd.DataFrame({"file": files, "log10_axion_mass": np.linspace(-24, -22, len(files))}).to_csv(
        root / "metadata.csv", index=False)
    index = load_data(str(root))
    assert index.images.shape == (9, 32, 32, 1)
    assert sorted(set(index.table["class"])) == ["axion", "cdm", "no_sub"]
    assert index.table["log10_axion_mass"].notna().all()


def test_pickled_axion_files_are_refused_then_read_with_flag(tmp_path):
    root = write_class_folders(tmp_path / "d", per_class=3, pickled_axion=True)
    with pytest.raises(DataError, match="--allow-pickle"):
        load_data(str(root))
    index = load_data(str(root), allow_pickle=True)
    masses = index.table.loc[index.table["class"] == "axion", "axion_mass_ev"]
    assert ((masses > 1e-24) & (masses < 1e-22)).all()


def test_all_bad_files_named_in_one_error(tmp_path):
    root = write_class_folders(tmp_path / "d", per_class=3)
    np.save(root / "cdm" / "nan_pixels.npy", np.full((32, 32), np.nan, np.float32))
    np.save(root / "cdm" / "wrong_shape.npy", np.ones((32, 48), np.float32))
    good = (root / "no_sub" / "no_sub_0.npy").read_bytes()
    (root / "no_sub" / "truncated.npy").write_bytes(good[: len(good) // 3])
    with pytest.raises(DataError) as err:
        load_data(str(root))
    for name in ("nan_pixels.npy", "wrong_shape.npy", "truncated.npy"):
        assert name in str(err.value)
    assert "3 of 12 files" in str(err.value)


@pytest.mark.parametrize("setup, message", [
    (lambda root: None, "no such file"),
    (lambda root: root.mkdir(), "holds no images"),
    (lambda root: (write_class_folders(root, 2), (root / "empty_class").mkdir()), "empty_class"),
])
def test_missing_or_empty_data(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DataError, match=message):
        load_data(str(root))


@pytest.mark.parametrize("layout", ["npz", "folder", "channels_first"])
def test_packed_arrays(tmp_path, layout):
    images = tiny_images(6, 16)
    labels = np.array(["cdm", "no_sub"] * 3)
    if layout == "npz":
        np.savez(tmp_path / "set.npz", images=images, label=labels, axion_mass=np.full(6, 1e-23))
        index = load_data(str(tmp_path / "set.npz"))
        assert "axion_mass" in index.table
    else:
        stored = images[:, None] if layout == "channels_first" else images
        np.save(tmp_path / "images.npy", stored)
        np.save(tmp_path / "labels.npy", labels[:, None])
        index = load_data(str(tmp_path))
    assert index.images.shape == (6, 16, 16, 1)
    assert list(index.table["class"][:2]) == ["cdm", "no_sub"]


def test_packed_label_count_mismatch(tmp_path):
    np.savez(tmp_path / "set.npz", images=tiny_images(6, 16), labels=np.arange(5))
    with pytest.raises(DataError, match="5 entries but there are 6 images"):
        load_data(str(tmp_path / "set.npz"))


def test_packed_nan_images_named_by_index(tmp_path):
    images = tiny_images(4, 16)
    images[2, 0, 0] = np.inf
    np.save(tmp_path / "images.npy", images)
    with pytest.raises(DataError, match=r"indices \[2\]"):
        load_data(str(tmp_path))
