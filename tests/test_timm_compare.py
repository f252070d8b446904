"""pipelines.timm_compare without PyTorch: medians, ratios, the table, and the missing-torch error."""

from __future__ import annotations

import sys

import pytest

from pipelines import timm_compare
from pipelines.timm_compare import Pair


def ok(rate, load=2.0, **extra):
    return {"status": "ok", "train_images_per_s": rate, "load": load, **extra}


def test_median_ratio_and_table_row():
    pair = Pair("convnext_tiny", "convnext_tiny")
    row = timm_compare.summarise(pair, [ok(30.0), ok(40.0, 3.5), ok(50.0)],
                                 [ok(20.0, backbone_params=27_800_000), ok(25.0), {"status": "timeout", "timeout_s": 9}],
                                 params=27_820_128, stat="median")
    assert (row["ours"], row["timm_rate"], row["ratio"]) == (40.0, 22.5, 40.0 / 22.5)
    assert row["failures"] == ["timm timeout: 9"]
    text = timm_compare.markdown([row])
    assert "| ours img/s (median of 3) | timm img/s (median of 3) |" in text
    assert "| convnext_tiny | convnext_tiny | 27.8M / 27.8M | 40.0 | 22.5 | 1.78 | 2.0-3.5 |" in text
    best = timm_compare.summarise(pair, [ok(30.0), ok(50.0)], [ok(20.0), ok(25.0)], None)  # the default: best run
    assert (best["ours"], best["timm_rate"], best["ratio"]) == (50.0, 25.0, 2.0)
    assert "every measured pair at ratio 0.9 or above" in text


def test_slower_and_failed_pairs_are_marked():
    slow = timm_compare.summarise(Pair("resnext50", "resnext50_32x4d", note="grouped"), [ok(8.0)], [ok(10.0)], None)
    failed = timm_compare.summarise(Pair("vit", "vit_tiny_patch16_224"), [{"status": "error", "error": "E"}],
                                    [ok(10.0)], None)
    assert slow["ratio"] == 0.8 and failed["ratio"] is None
    text = timm_compare.markdown([slow, failed], flag_below=0.9)
    assert "| resnext50 | resnext50_32x4d | ? / ? | 8.0 | 10.0 | 0.80 **slower** |" in text
    assert "| vit | vit_tiny_patch16_224 | ? / ? | failed | 10.0 |  |" in text
    assert "- resnext50 / resnext50_32x4d: grouped" in text
    assert "- vit / vit_tiny_patch16_224: ours error: E" in text
    assert "- ratio below 0.9: resnext50" in text


def test_every_pair_names_a_registered_arch():
    from deeplense_tf.models.registry import get_arch

    for pair in timm_compare.PAIRS:
        get_arch(pair.arch)
    assert len({p.arch for p in timm_compare.PAIRS}) == len(timm_compare.PAIRS)


def test_missing_torch_python_says_how_to_install(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        timm_compare.main(["--pair", "resnet18", "--torch-python", str(tmp_path / "nope" / "python")])
    assert "no PyTorch Python at" in str(err.value) and "pip install timm" in str(err.value)
    with pytest.raises(SystemExit) as err:  # a Python without torch: the project's own
        timm_compare.check_torch_python(sys.executable)
    assert "cannot import torch and timm" in str(err.value) and "pip install torch" in str(err.value)


def test_unknown_pair_lists_the_pairs():
    with pytest.raises(SystemExit, match="no timm pair for regnet.*convnext_tiny"):
        timm_compare.select_pairs(["regnet"])
