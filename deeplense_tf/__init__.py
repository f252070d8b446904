"""deeplense_tf: dark-matter properties from strong-lensing images (Keras 3 / TensorFlow).

    import deeplense_tf as dl
    run = dl.train(arch="resnet18", epochs=2, samples=100)
    run.metrics, run.predict(images)

The public API (``api.py``): ``list_archs``, ``create_model``, ``load_data``, ``simulate``,
``train``, ``evaluate``, ``load_run``, ``load_model``, ``Run``, ``RunConfig``. Importing the package
is cheap: TensorFlow loads on first use of one of them (so every command's ``--help`` stays fast),
after the environment it needs is set (``cli.prepare_environment``).
"""

import sys

from deeplense_tf.cli import prepare_environment
from deeplense_tf.version import __version__

API = ("Run", "RunConfig", "create_model", "evaluate", "list_archs", "load_data", "load_model", "load_run",
       "simulate", "train")
__all__ = [*API, "__version__"]


# Also command modules, made callable as the API's function of the same name (cli.callable_as).
COMMANDS = ("train", "evaluate")


def __getattr__(name: str):
    if name not in API:
        raise AttributeError(f"module 'deeplense_tf' has no attribute {name!r}")
    prepare_environment()
    if name in COMMANDS:  # ``from deeplense_tf import train`` gets the module, ``dl.train(...)`` calls it
        __import__(f"deeplense_tf.{name}")
        return sys.modules[f"deeplense_tf.{name}"]
    from deeplense_tf import api  # TensorFlow loads here, on first use

    value = getattr(api, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *API})
