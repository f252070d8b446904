"""Bad input through the commands: one clear `error:` line, exit code 2, nothing written."""

import numpy as np
import pytest

from tests.helpers import write_class_folders
from deeplense_tf import evaluate, predict, train


@pytest.fixture
def tiny_folders(tmp_path):
    return write_class_folders(tmp_path / "data", per_class=5)


def _fails(main, argv, capsys, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
    for word in words:
        assert word in err, err
    return err


def test_unknown_arch_lists_close_names(tiny_folders, tmp_path, capsys):
    _fails(train.main, ["--arch", "efficientnet_b9", "--data", str(tiny_folders), "--out", str(tmp_path / "r")],
           capsys, "efficientnet_b", "--list-archs")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("data, word", [("does/not/exist", "no such file"), ("", "holds no images")])
def test_missing_or_empty_data(tmp_path, capsys, data, word):
    path = data or str(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    _fails(train.main, ["--data", path, "--out", str(tmp_path / "r")], capsys, word)


def test_bad_files_are_named(tiny_folders, tmp_path, capsys):
    np.save(tiny_folders / "cdm" / "nan_pixels.npy", np.full((32, 32), np.nan, np.float32))
    np.save(tiny_folders / "cdm" / "wrong_shape.npy", np.ones((16, 48), np.float32))
    _fails(train.main, ["--task", "classification", "--data", str(tiny_folders), "--out", str(tmp_path / "r")],
           capsys, "nan_pixels.npy", "wrong_shape.npy")


def test_pickled_files_need_the_flag(tmp_path, capsys):
    root = write_class_folders(tmp_path / "data", per_class=5, pickled_axion=True)
    _fails(train.main, ["--data", str(root), "--out", str(tmp_path / "r")], capsys, "--allow-pickle", "axion_0.npy")


def test_imagenet_weights_without_network(tiny_folders, tmp_path, capsys, monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- [Errno -3]")

    monkeypatch.setattr(file_utils, "get_file", offline)
    _fails(train.main, ["--arch", "mobilenet_v3_small", "--weights", "imagenet", "--task", "classification",
                        "--data", str(tiny_folders), "--out", str(tmp_path / "r")], capsys, "ImageNet", "--weights")
    assert not (tmp_path / "r").exists()


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    _fails(train.main, ["--resume", str(tmp_path / "notes")], capsys, "not a deeplense_tf run")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_evaluate_and_predict_need_a_run(tmp_path, capsys):
    _fails(evaluate.main, [str(tmp_path)], capsys, "config.json")
    _fails(predict.main, ["--model", str(tmp_path), str(tmp_path)], capsys)


def test_batch_larger_than_training_split(tiny_folders, tmp_path, capsys):
    _fails(train.main, ["--arch", "mobilenet_v3_small", "--task", "classification", "--data", str(tiny_folders),
                        "--batch-size", "64", "--out", str(tmp_path / "r")], capsys, "--batch-size 64")


def test_list_archs(capsys):
    assert train.main(["--list-archs"]) == 0
    out = capsys.readouterr().out
    for name in ("efficientnet_b0", "efficientnet_b7", "inception_resnet_v2", "densenet201", "convnext_large",
                 "resnet50_v2", "mobilenet_v3_small"):
        assert name in out
