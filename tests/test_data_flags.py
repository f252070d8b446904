"""The data flags of train (--data several, --val-data/--test-data, --validate, --skip-bad, --label-column)
reach prepare_data and config.json, and every kind of bad input of issue 4 stops with the files named."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from tests.helpers import tiny_images, write_class_folders
from deeplense_tf.config import RunConfig, replace
from deeplense_tf.data.prepare import prepare_data
from deeplense_tf.data.sources import load_data
from deeplense_tf.errors import ConfigError, DataError
from deeplense_tf.cli import config_from_args
from deeplense_tf.train import build_parser


def config(task="classification", **data):
    return replace(RunConfig(), data=data, model={"task": task})


def files_of(data, split):
    return sorted(data.table.loc[data.splits[split], "file"])


# ---------------------------------------------------------------------------------------------
# Flags -> config -> config.json

def test_flags_reach_the_config_and_round_trip(tmp_path):
    args = build_parser().parse_args(["--data", "a", "b", "--val-data", "v", "--test-data", "t1", "t2",
                                      "--validate", "quick", "--skip-bad", "--label-column", "is_lens",
                                      "--classes", "lens", "non_lens"])
    d = config_from_args(args).data
    assert (d.data, d.val_data, d.test_data) == (("a", "b"), "v", ("t1", "t2"))
    assert (d.validate, d.skip_bad, d.label_column, d.classes) == ("quick", True, "is_lens", ("lens", "non_lens"))
    config_from_args(args).save(tmp_path / "config.json")
    assert RunConfig.load(tmp_path / "config.json") == config_from_args(args)
    single = config_from_args(build_parser().parse_args(["--data", "x"])).data
    assert (single.data, single.val_data, single.validate, single.skip_bad) == ("x", None, "full", False)


def test_tuning_reports_a_train_command_with_the_data_flags():
    import shlex

    from tuning.report import train_command

    wanted = config(data=("a", "b c"), test_data="t", validate="quick", skip_bad=True, label_column="is_lens",
                    classes=("cdm", "no_sub"))
    argv = shlex.split(train_command(wanted))[3:]
    assert config_from_args(build_parser().parse_args(argv)) == wanted


@pytest.mark.parametrize("change, word", [
    ({"validate": "fast"}, "validate"),
    ({"data": ()}, "data"),
    ({"test_data": ("a", " ")}, "test_data"),
    ({"label_column": ""}, "label_column"),
    ({"classes": ("a", "a")}, "classes"),
])
def test_bad_data_settings_are_rejected(change, word):
    with pytest.raises(ConfigError, match=word):
        replace(RunConfig(), data=change)


# ---------------------------------------------------------------------------------------------
# prepare_data: explicit sets, nested folders, joined paths, skip-bad, quick scan, label column

def test_explicit_test_and_val_sets_are_kept(tmp_path):
    train = write_class_folders(tmp_path / "train_set", per_class=4)
    for name, seed in (("test_set", 5), ("val_set", 50)):
        for c, cls in enumerate(("axion", "cdm", "no_sub")):
            (tmp_path / name / cls).mkdir(parents=True)
            np.save(tmp_path / name / cls / "x.npy", tiny_images(1, 32, seed=seed + c)[0] + 1)
    data = prepare_data(config(data=str(train), test_data=str(tmp_path / "test_set")))
    assert files_of(data, "test") == [f"test_set/{c}/x.npy" for c in ("axion", "cdm", "no_sub")]
    assert len(data.splits["val"]) >= 3 and len(data.splits["train"]) + len(data.splits["val"]) == 12
    both = prepare_data(config(data=str(train), test_data=str(tmp_path / "test_set"),
                               val_data=str(tmp_path / "val_set")))
    assert [len(both.splits[s]) for s in ("train", "val", "test")] == [12, 3, 3]
    assert all(f.startswith("val_set/") for f in files_of(both, "val"))


def test_same_image_in_train_and_test_set_is_refused(tmp_path):
    train = write_class_folders(tmp_path / "tr", per_class=3)
    (tmp_path / "te" / "cdm").mkdir(parents=True)
    (tmp_path / "te" / "cdm" / "leak.npy").write_bytes((train / "cdm" / "cdm_2.npy").read_bytes())
    with pytest.raises(DataError, match="te/cdm/leak.npy .same pixels as tr/cdm/cdm_2.npy"):
        prepare_data(config(data=str(train), test_data=str(tmp_path / "te")))


def test_nested_train_test_folders_are_the_split(tmp_path):
    write_class_folders(tmp_path / "d" / "train", per_class=4)
    for cls in ("axion", "cdm", "no_sub"):
        (tmp_path / "d" / "test" / cls).mkdir(parents=True)
        np.save(tmp_path / "d" / "test" / cls / "t.npy", tiny_images(1, 32, seed=len(cls))[0] + 2)
    data = prepare_data(config(data=str(tmp_path / "d")))
    assert files_of(data, "test") == [f"test/{c}/t.npy" for c in ("axion", "cdm", "no_sub")]
    assert all(f.startswith("train/") for s in ("train", "val") for f in files_of(data, s))
    with pytest.raises(DataError, match="already has its own test"):
        prepare_data(config(data=str(tmp_path / "d"), test_data=str(tmp_path / "d" / "test")))


def test_several_data_paths_are_joined(tmp_path):
    a = write_class_folders(tmp_path / "a", per_class=3)
    b = tmp_path / "b"
    for c, cls in enumerate(("axion", "cdm", "no_sub")):
        (b / cls).mkdir(parents=True)
        np.save(b / cls / "y.npy", tiny_images(1, 32, seed=20 + c)[0] + 3)
    data = prepare_data(config(data=(str(a), str(b))))
    assert len(data.y) == 12 and sum(f.startswith("b/") for f in data.table["file"]) == 3


def test_skip_bad_drops_files_and_records_them(tmp_path):
    root = write_class_folders(tmp_path / "d", per_class=4)
    np.save(root / "cdm" / "zeros.npy", np.zeros((32, 32), np.float32))
    (root / "axion" / "broken.npy").write_bytes(b"\x93NUMPY junk")
    with pytest.raises(DataError, match="2 of 14 files"):
        prepare_data(config(data=str(root)))
    data = prepare_data(config(data=str(root), skip_bad=True))
    skipped = data.info(config(data=str(root), skip_bad=True))["skipped_files"]
    assert sorted(s["file"] for s in skipped) == ["axion/broken.npy", "cdm/zeros.npy"] and len(data.y) == 12
    assert "all-zero" in json.dumps(skipped)


def test_saved_config_rebuilds_the_same_split(tmp_path):
    """What --resume and evaluate do: config.json -> prepare_data -> the split saved in split.csv."""
    from deeplense_tf.data.prepare import check_split, split_table

    write_class_folders(tmp_path / "tr", per_class=5)
    np.save(tmp_path / "tr" / "cdm" / "zeros.npy", np.zeros((32, 32), np.float32))
    write_class_folders(tmp_path / "te", per_class=1, size=32)
    for path in (tmp_path / "te").rglob("*.npy"):
        np.save(path, np.load(path) + 5)
    first = config(data=str(tmp_path / "tr"), test_data=str(tmp_path / "te"), skip_bad=True)
    first.save(tmp_path / "config.json")
    split_table(prepare_data(first)).to_csv(tmp_path / "split.csv", index=False)
    again = prepare_data(RunConfig.load(tmp_path / "config.json"))
    check_split(again, tmp_path / "split.csv")
    assert again.skipped == [("tr/cdm/zeros.npy", "all-zero image")]
    assert files_of(again, "test") == ["te/axion/axion_0.npy", "te/cdm/cdm_0.npy", "te/no_sub/no_sub_0.npy"]


def test_quick_validation_streams_and_the_pipeline_names_a_nan_file(tmp_path):
    import tensorflow as tf

    from deeplense_tf.data.pipeline import create_dataset

    root = write_class_folders(tmp_path / "d", per_class=3)
    bad = tiny_images(1, 32, seed=9)[0]
    bad[3, 3] = np.inf
    np.save(root / "cdm" / "inf_pixel.npy", bad)
    with pytest.raises(DataError, match="inf_pixel.npy"):
        prepare_data(config(data=str(root)))
    data = prepare_data(config(data=str(root), validate="quick"))
    assert "inf_pixel.npy" in list(data.table["file"].str.split("/").str[-1])
    with pytest.raises(tf.errors.InvalidArgumentError, match="inf_pixel.npy"):
        for _ in create_dataset(data.images, data.y, 10, training=False):
            pass


def test_classes_flag_refuses_other_classes(tmp_path):
    root = write_class_folders(tmp_path / "d", per_class=3)
    args = build_parser().parse_args(["--data", str(root), "--classes", "axion", "cdm", "--task", "classification"])
    with pytest.raises(DataError, match="unknown class folder.*no_sub"):
        prepare_data(config_from_args(args))
    np.savez(tmp_path / "set.npz", images=tiny_images(6, 16), labels=np.array(["cdm", "axion", "sub"] * 2))
    with pytest.raises(DataError, match=r"2 image\(s\).*\['sub'\].*set.npz\[2\], set.npz\[5\]"):
        prepare_data(config(data=str(tmp_path / "set.npz"), classes=("axion", "cdm")))
    assert len(prepare_data(config(data=str(root), classes=("no_sub", "cdm", "axion"))).y) == 9


def test_label_column_of_an_hdf5_catalogue(tmp_path):
    with h5py.File(tmp_path / "cat.h5", "w") as f:
        f["images"], f["lensed"], f["mag"] = tiny_images(12, 32), np.arange(12) % 2, np.linspace(20, 22, 12)
    data = prepare_data(config("lens_finding", data=str(tmp_path / "cat.h5"), label_column="lensed"))
    assert list(data.y) == [0, 1] * 6
    with pytest.raises(DataError, match="no label column 'is_lens'"):
        prepare_data(config("lens_finding", data=str(tmp_path / "cat.h5"), label_column="is_lens"))


def test_label_column_of_class_folder_metadata(tmp_path):
    root = write_class_folders(tmp_path / "d", per_class=4)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.npy"))
    pd.DataFrame({"file": files, "lensed": [i % 2 for i in range(12)]}).to_csv(root / "metadata.csv", index=False)
    data = prepare_data(config("lens_finding", data=str(root), label_column="lensed"))
    assert sorted(data.y.tolist()) == [0] * 6 + [1] * 6
    with pytest.raises(DataError, match="is_lens"):  # three class folders and no is_lens column
        prepare_data(config("lens_finding", data=str(root)))


# ---------------------------------------------------------------------------------------------
# Bad input not covered in test_sources.py: each stops with one error naming the files

def test_error_lists_the_first_20_bad_files_and_the_total(tmp_path):
    root = write_class_folders(tmp_path / "d", per_class=2)
    for i in range(25):
        np.save(root / "cdm" / f"zero_{i:02d}.npy", np.zeros((32, 32), np.float32))
    with pytest.raises(DataError) as err:
        load_data(str(root))
    message = str(err.value)
    assert "25 of 31 files" in message and "all-zero image (25 files)" in message
    assert "zero_19.npy" in message and "zero_20.npy" not in message and "and 5 more" in message


@pytest.mark.parametrize("name, stored, problem", [
    ("zeros.npy", np.zeros((32, 32), np.float32), "all-zero image"),
    ("inf_pixel.npy", np.where(np.eye(32) > 0, np.inf, 1).astype(np.float32), "NaN/Inf pixels"),
    ("nan_label.npy", np.append(np.ones(32 * 32, np.float32), np.nan), "non-finite label"),
    ("object.npy", "pickled", "pickled object array"),
])
def test_each_bad_file_kind_is_named(tmp_path, name, stored, problem):
    root = write_class_folders(tmp_path / "d", per_class=2)
    if isinstance(stored, str):
        obj = np.empty(2, dtype=object)
        obj[0], obj[1] = np.ones((32, 32)), 1e-23
        np.save(root / "cdm" / name, obj, allow_pickle=True)
    else:
        np.save(root / "cdm" / name, stored)
    for validate in ("full", "quick"):
        if problem in ("all-zero image", "NaN/Inf pixels") and validate == "quick":
            continue  # pixels are not read by a quick scan (the pipeline checks them)
        with pytest.raises(DataError, match=f"{problem}.*cdm/{name}"):
            load_data(str(root), validate=validate)


@pytest.mark.parametrize("rows, message", [
    (lambda files: files[:-1], "no row for 1 image"),
    (lambda files: files + ["cdm/gone.npy"], "name files that do not exist: cdm/gone.npy"),
    (lambda files: files + files[:1], "more than once: axion/axion_0.npy"),
])
def test_label_rows_must_match_the_images(tmp_path, rows, message):
    root = write_class_folders(tmp_path / "d", per_class=2)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.npy"))
    listed = rows(files)
    pd.DataFrame({"file": listed, "log10_axion_mass": -23.0}).to_csv(root / "metadata.csv", index=False)
    with pytest.raises(DataError, match=message):
        load_data(str(root))


def test_infinite_labels_are_refused(tmp_path):
    root = write_class_folders(tmp_path / "d", per_class=2)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.npy"))
    masses = [-23.0] * len(files)
    masses[1] = -np.inf
    pd.DataFrame({"file": files, "log10_axion_mass": masses}).to_csv(root / "metadata.csv", index=False)
    with pytest.raises(DataError, match=f"'log10_axion_mass' is infinite for 1 image.*{files[1]}"):
        load_data(str(root))
    np.savez(tmp_path / "set.npz", images=tiny_images(4, 16), mass=np.array([1.0, np.nan, 2.0, np.inf]))
    with pytest.raises(DataError, match=r"'mass' is infinite for 1 image\(s\), indices \[3\]"):
        load_data(str(tmp_path / "set.npz"))


def test_missing_labels_in_a_packed_file_are_allowed(tmp_path):
    """DeepLenseSim's own files hold NaN as the axion mass of no_sub and cdm images."""
    np.savez(tmp_path / "set.npz", images=tiny_images(3, 16), label=np.array(["no_sub", "axion", "axion"]),
             axion_mass=np.array([np.nan, 1e-23, 1e-22]))
    index = load_data(str(tmp_path / "set.npz"))
    assert index.table["axion_mass"].isna().tolist() == [True, False, False]


def test_hdf5_label_count_must_match_images(tmp_path):
    with h5py.File(tmp_path / "cat.h5", "w") as f:
        f["images"], f["is_lens"] = tiny_images(6, 16), np.arange(5) % 2
    with pytest.raises(DataError, match="'is_lens' has 5 entries but there are 6 images"):
        load_data(str(tmp_path / "cat.h5"))


def test_evaluate_other_data_reads_it_as_the_run_did(tmp_path):
    """evaluate --data OTHER uses the run's data settings: here --validate quick, which leaves
    pixel checks to the pipeline (a full scan stops at the NaN image)."""
    from tests.helpers import write_class_folders
    from deeplense_tf.data.prepare import load_other_data

    root = write_class_folders(tmp_path / "other", per_class=2)
    bad = np.load(root / "cdm" / "cdm_0.npy")
    bad[0, 0] = np.nan
    np.save(root / "cdm" / "cdm_0.npy", bad)
    info = {"input_shape": [32, 32, 1], "class_names": ["axion", "cdm", "no_sub"]}
    quick = RunConfig.from_dict({"model": {"task": "classification"}, "data": {"validate": "quick"}})
    images, y, _ = load_other_data(quick, info, str(root), False)
    assert len(images) == 6 and sorted(y.tolist()) == [0, 0, 1, 1, 2, 2]
    with pytest.raises(DataError, match="cdm_0.npy"):
        load_other_data(RunConfig.from_dict({"model": {"task": "classification"}}), info, str(root), False)


def test_cache_flag_reaches_the_config_and_refuses_balance():
    from deeplense_tf.cli import config_from_args
    from deeplense_tf.train import build_parser

    config = config_from_args(build_parser().parse_args(["--cache", "memory"]))
    assert config.train.cache == "memory"
    with pytest.raises(ConfigError, match="--cache and --balance"):
        config_from_args(build_parser().parse_args(["--cache", "memory", "--balance", "--task", "classification"]))


def test_training_from_per_file_data_with_cache(tmp_path):
    """--validate quick keeps per-file .npy on disk (read by the pipeline); --cache memory keeps them after epoch 1."""
    from deeplense_tf import train

    data = write_class_folders(tmp_path / "d", per_class=6)
    out = tmp_path / "runs"
    assert train.main(["--arch", "mobilenet_v3_small", "--task", "classification", "--data", str(data),
                       "--validate", "quick", "--cache", "memory", "--epochs", "2", "--batch-size", "4",
                       "--bn-recalibration", "1", "--out", str(out)]) == 0
    (run,) = out.iterdir()
    history = pd.read_csv(run / "history.csv")
    assert len(history) == 2 and history["loss"].notna().all()
    assert json.loads((run / "config.json").read_text())["train"]["cache"] == "memory"


# ---------------------------------------------------------------------------------------------
# Other data beside a run: a simulated set never holds the run's training lenses

def test_other_simulated_data_is_drawn_from_another_seed(monkeypatch):
    """One seed draws the same lenses whatever the noise option, so evaluate --data sim:model_ii on a
    run trained on sim:model_ii:noise=published must not use the run's seed; files keep it."""
    from deeplense_tf.data import prepare
    from deeplense_tf.sim.generate import simulate_one

    same = [simulate_one("model_ii", "axion", 3, 42, noise=noise, render=False)[1] for noise in ("on", "published")]
    assert same[0]["log10_axion_mass"] == same[1]["log10_axion_mass"]  # why the seed must change
    seeds = {}

    def record(data, **kwargs):
        seeds[data] = kwargs["seed"]
        raise DataError("recorded")

    monkeypatch.setattr(prepare, "load_data", record)
    config = replace(RunConfig(), train={"seed": 42})
    for data in ("sim:model_ii", "/data/model_ii_test"):
        with pytest.raises(DataError, match="recorded"):
            prepare.load_other_data(config, {}, data, allow_pickle=False)
    assert seeds == {"sim:model_ii": 42 + prepare.OTHER_SIM_SEED_OFFSET, "/data/model_ii_test": 42}
