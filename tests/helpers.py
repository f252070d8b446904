"""Small assertions shared by test modules."""

import keras


def assert_config_roundtrip(layer: keras.layers.Layer) -> None:
    """get_config -> from_config -> get_config gives the same dict (keras-hub's discipline)."""
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
