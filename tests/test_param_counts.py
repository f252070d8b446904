"""The cached parameter counts that --list-archs prints must match freshly built backbones."""

import pytest

from deeplense_tf import train
from deeplense_tf.models import param_counts
from deeplense_tf.models.registry import list_archs

# Cheap to build, one per family of builder: Keras Applications, our ConvNeXt, ViT, our EfficientNet.
SPOT_CHECKS = ["mobilenet_v3_small", "convnext_atto", "vit", "efficientnet_lite0"]


@pytest.mark.parametrize("name", SPOT_CHECKS)
def test_table_matches_a_fresh_build(name):
    assert param_counts.load_table()[name] == param_counts.count_params(name), (
        f"param_counts.json is stale for {name}: python -m deeplense_tf.models.param_counts {name}")


def test_every_registered_arch_is_in_the_table():
    missing = sorted(set(list_archs()) - set(param_counts.load_table()))
    assert not missing, f"run: python -m deeplense_tf.models.param_counts {' '.join(missing)}"


def test_name_missing_from_the_table_is_built():
    assert param_counts.param_count("vit", table={}) == param_counts.load_table()["vit"]


@pytest.mark.parametrize("n, text", [(4_012_345, "4.0M"), (52_340, "52.3K"), (2_100_000_000, "2.1G"), (999, "999")])
def test_format_count(n, text):
    assert param_counts.format_count(n) == text


def test_list_archs_prints_family_tasks_imagenet_params_and_min_size(capsys):
    assert train.main(["--list-archs", "inception_v3"]) == 0
    line = capsys.readouterr().out.splitlines()[1].split()
    params = param_counts.format_count(param_counts.load_table()["inception_v3"])
    assert line[:6] == ["inception_v3", "inception", "supervised", "yes", params, "75px"]


def test_list_archs_shows_the_autoencoders_with_their_task(capsys):
    assert train.main(["--list-archs", "*autoencoder*"]) == 0
    line = capsys.readouterr().out.splitlines()[1].split()
    assert line[:4] == ["conv_autoencoder", "autoencoder", "anomaly", "no"]
