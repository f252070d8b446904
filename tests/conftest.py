"""Shared fixtures: a session-wide simulator cache and one small image set in three forms (helpers: helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import write_class_folders

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

@pytest.fixture(scope="session")
def sim_cache(tmp_path_factory) -> Path:
    """One simulator cache for the whole session, so each tiny preset is generated once."""
    path = tmp_path_factory.mktemp("sim_cache")
    old = os.environ.get("DEEPLENSE_TF_CACHE")
    os.environ["DEEPLENSE_TF_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("DEEPLENSE_TF_CACHE", None)
    else:
        os.environ["DEEPLENSE_TF_CACHE"] = old


@pytest.fixture(scope="module")
def image_sources(tmp_path_factory):
    """The same 12 images (16 px) as a resident array, as per-file .npy and as shards (both streamed)."""
    from deeplense_tf.data.shards import write_shards
    from deeplense_tf.data.sources import load_data

    tmp = tmp_path_factory.mktemp("sources")
    root = write_class_folders(tmp / "files", per_class=4, size=16)
    resident = load_data(str(root))
    write_shards(resident, tmp / "shards", shard_size=5, seed=None)
    return {"array": resident.images, "files": load_data(str(root), validate="quick").images,
            "shards": load_data(str(tmp / "shards"), stream=True).images}


@pytest.fixture(scope="module")
def tiny_deeplens():
    """The DeepLens ResNet builder with two narrow stages: a registered architecture that trains in
    seconds (the full one is built and trained one step by tests/test_zoo_extra.py)."""
    import functools

    from deeplense_tf.models.convnets import scratch_only
    from deeplense_tf.models.deeplens_resnet import deeplens_resnet
    from deeplense_tf.models.registry import ARCHS, ArchSpec, register_arch

    name = "test_tiny_deeplens_resnet"
    build = functools.partial(deeplens_resnet, stages=((8, 16), (16, 32)), units=1, stem=8, name=name)
    register_arch(ArchSpec(name, functools.partial(scratch_only, build), 45, 32, "resnet", "tests"))
    yield name
    ARCHS.pop(name)
