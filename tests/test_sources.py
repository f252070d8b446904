import numpy as np
import pandas as pd
import pytest

from tests.helpers import tiny_images, write_class_folders
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


# ---------------------------------------------------------------------------------------------
# Layouts and validation added with the data readers (issue 4)

import h5py  # noqa: E402

from deeplense_tf.data.npy import ArrayImages, NpyFileImages, read_npy_header  # noqa: E402
from deeplense_tf.data.readers_astro import MASK_VALUE  # noqa: E402


def test_header_reader_matches_numpy_and_catches_truncation(tmp_path):
    np.save(tmp_path / "a.npy", IMG[None])
    header = read_npy_header(tmp_path / "a.npy")
    assert (header.shape, header.layout, header.image_shape) == ((1, 16, 16), "chw", (16, 16, 1))
    (tmp_path / "b.npy").write_bytes((tmp_path / "a.npy").read_bytes()[:-10])
    with pytest.raises(BadFile) as err:
        read_npy_header(tmp_path / "b.npy")
    assert err.value.kind == UNREADABLE


def test_quick_validation_streams_files(tmp_path):
    root = write_class_folders(tmp_path / "d", per_class=3)
    index = load_data(str(root), validate="quick")
    assert isinstance(index.images, NpyFileImages) and index.images.shape == (9, 32, 32, 1)
    full = load_data(str(root))
    np.testing.assert_array_equal(np.asarray(index.images), full.images)
    assert "9 images" in index.describe() and "on disk" in index.describe()


def test_quick_validation_names_truncated_and_wrong_shape(tmp_path):
    root = write_class_folders(tmp_path / "d", per_class=3)
    np.save(root / "cdm" / "wrong_shape.npy", np.ones((32, 48), np.float32))
    good = (root / "cdm" / "cdm_0.npy").read_bytes()
    (root / "cdm" / "truncated.npy").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="truncated.npy") as err:
        load_data(str(root), validate="quick")
    assert "wrong_shape.npy" in str(err.value)


def test_skip_bad_drops_and_lists(tmp_path):
    root = write_class_folders(tmp_path / "d", per_class=3)
    np.save(root / "cdm" / "nan_pixels.npy", np.full((32, 32), np.nan, np.float32))
    np.save(root / "cdm" / "zeros.npy", np.zeros((32, 32), np.float32))
    index = load_data(str(root), skip_bad=True)
    assert len(index.table) == 9 and sorted(f for f, _ in index.skipped) == ["cdm/nan_pixels.npy", "cdm/zeros.npy"]


def test_duplicated_images_are_named(tmp_path):
    root = write_class_folders(tmp_path / "d", per_class=3)
    (root / "cdm" / "copy.npy").write_bytes((root / "axion" / "axion_1.npy").read_bytes())
    with pytest.raises(DataError, match=r"duplicated image.*cdm/copy.npy \(same pixels as axion/axion_1.npy\)"):
        load_data(str(root))


def test_unknown_class_folder_when_classes_given(tmp_path):
    root = write_class_folders(tmp_path / "d", per_class=2)
    with pytest.raises(DataError, match="unknown class folder.*no_sub"):
        load_data(str(root), classes=["axion", "cdm"])


def test_train_test_folders_become_split_column(tmp_path):
    write_class_folders(tmp_path / "d" / "train", per_class=3)
    for cls in ("axion", "cdm"):
        (tmp_path / "d" / "test" / cls).mkdir(parents=True)
        np.save(tmp_path / "d" / "test" / cls / "t.npy", tiny_images(1, 32, seed=9)[0] + len(cls))
    index = load_data(str(tmp_path / "d"))
    assert index.table["split"].value_counts().to_dict() == {"train": 9, "test": 2}
    assert index.table["file"].iloc[0].startswith("train/")


def test_same_image_in_train_and_test_is_refused(tmp_path):
    write_class_folders(tmp_path / "d" / "train", per_class=2)
    (tmp_path / "d" / "test" / "cdm").mkdir(parents=True)
    (tmp_path / "d" / "test" / "cdm" / "leak.npy").write_bytes((tmp_path / "d/train/cdm/cdm_1.npy").read_bytes())
    with pytest.raises(DataError, match="test/cdm/leak.npy .same pixels as train/cdm/cdm_1.npy"):
        load_data(str(tmp_path / "d"))


def test_several_paths_are_joined(tmp_path):
    a = write_class_folders(tmp_path / "a", per_class=2)
    b = tmp_path / "b"
    np.save(b / "images.npy" if b.mkdir() is None else None, tiny_images(4, 32, seed=5))
    index = load_data(f"{a},{b}")
    assert len(index.table) == 10 and index.table["file"].str.startswith(("a/", "b")).all()
    with pytest.raises(DataError, match="more than once"):
        load_data([str(a), str(a)])


def test_joined_sets_must_share_shape(tmp_path):
    a, b = write_class_folders(tmp_path / "a", 2), write_class_folders(tmp_path / "b", 2, size=16)
    with pytest.raises(DataError, match="different image shapes"):
        load_data([str(a), str(b)])


def test_packed_memory_map_streams_when_asked(tmp_path):
    np.save(tmp_path / "images.npy", tiny_images(6, 16)[:, None])  # (N, 1, H, W)
    index = load_data(str(tmp_path), stream=True)
    assert isinstance(index.images, ArrayImages) and index.images.shape == (6, 16, 16, 1)
    view = index.images[np.array([True, False] * 3)]
    np.testing.assert_allclose(np.asarray(view)[..., 0], tiny_images(6, 16)[::2])


def write_hdf5_table(path, n=6, bad_row=None):
    """An astropy-style table: one compound dataset with an (4, 16, 16) image column."""
    dtype = np.dtype([("ID", "i8"), ("image", "f4", (4, 16, 16)), ("is_lens", "i4"), ("mag", "f8")])
    rows = np.zeros(n, dtype)
    rows["ID"], rows["is_lens"], rows["mag"] = np.arange(n), np.arange(n) % 2, 20.5
    rows["image"] = np.repeat(tiny_images(n, 16)[:, None], 4, axis=1)
    if bad_row is not None:
        rows["image"][bad_row, 0, 0, 0] = np.nan
    with h5py.File(path, "w") as f:
        f.create_dataset("ground", data=rows)


def test_hdf5_table_with_label_column(tmp_path):
    write_hdf5_table(tmp_path / "catalogs.hdf5")
    index = load_data(str(tmp_path / "catalogs.hdf5"), label_column="is_lens")
    assert index.images.shape == (6, 16, 16, 4) and index.layout == "hdf5"
    assert list(index.table["is_lens"]) == [0, 1] * 3 and "mag" in index.table
    with pytest.raises(DataError, match="no label column 'lens'"):
        load_data(str(tmp_path / "catalogs.hdf5"), label_column="lens")


def test_hdf5_separate_datasets_and_bad_image(tmp_path):
    with h5py.File(tmp_path / "set.h5", "w") as f:
        f["images"], f["class_id"] = tiny_images(5, 16), np.array([0, 1, 2, 0, 1])
        f["images"][3, 0, 0] = np.inf
    with pytest.raises(DataError, match=r"indices \[3\]|set.h5\[3\]"):
        load_data(str(tmp_path))  # the folder holding one .h5 is detected
    index = load_data(str(tmp_path), skip_bad=True, label_column="class_id")
    assert len(index.table) == 4 and list(index.table["class"]) == ["0", "1", "2", "1"]


def write_bologna(root, ids=(100001, 100002, 100003), bands=2, labels=True, missing=None):
    from astropy.io import fits

    for k in range(1, bands + 1):
        (root / f"Band{k}").mkdir(parents=True, exist_ok=True)
        for j, i in enumerate(ids):
            if missing == (k, i):
                continue
            data = tiny_images(1, 16, seed=j)[0] * k
            data[0, :3] = MASK_VALUE
            fits.writeto(root / f"Band{k}" / f"imageSDSS_B{k}-{i}.fits", data)
    if labels:
        pd.DataFrame({"ID": list(ids), "is_lens": [i % 2 for i in ids]}).to_csv(root / "classifications.csv",
                                                                              index=False)
    return root


def test_fits_bands_stacked_and_masked(tmp_path):
    root = write_bologna(tmp_path / "bologna")
    index = load_data(str(root))
    assert index.images.shape == (3, 16, 16, 2) and index.layout == "fits"
    assert (index.images[:, 0, :3] == 0).all() and (index.table["masked_pixels"] == 6).all()
    assert list(index.table["is_lens"]) == [1, 0, 1] and list(index.table["ID"]) == ["100001", "100002", "100003"]


@pytest.mark.parametrize("case, message", [
    ("missing_band", "object 100002 has no file in Band2"),
    ("csv_without_files", "have no FITS files: 100009"),
])
def test_fits_problems_name_the_object(tmp_path, case, message):
    root = write_bologna(tmp_path / "b", missing=(2, 100002) if case == "missing_band" else None)
    if case == "csv_without_files":
        pd.DataFrame({"ID": [100001, 100002, 100003, 100009], "is_lens": [1, 0, 1, 0]}).to_csv(
            root / "classifications.csv", index=False)
    with pytest.raises(DataError, match=message):
        load_data(str(root))
