"""The ranges a search explores, and the ``--space FILE.json`` that overrides them.

Pure Python on purpose: a typo in a space file fails in a second, before TensorFlow loads.
``search_space.py`` turns a resolved space into KerasTuner hyperparameters.

A space file maps hyperparameter names (the keys of ``DEFAULT_SPACE``) to one of

    {"values": [...]}                                   a choice
    {"min": a, "max": b, "sampling": "log", "step": s}  a numeric range (sampling, step optional)
    a plain value, or {"fixed": value}                  fixed for this search

A range given for a name whose default is a range is merged into it, so
``{"lr": {"max": 1e-3}}`` keeps the default minimum and log sampling. Example::

    {"arch": {"values": ["mobilenet_v3_small"]}, "lr": {"min": 1e-5, "max": 1e-3},
     "optimizer": "adamw", "batch_size": {"values": [16, 32]}}
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from deeplense_tf.config import OPTIMIZERS, RunConfig, replace
from deeplense_tf.errors import ConfigError

# resnet18 first: on the default CPU job it learnt the axion mass where efficientnet_b0 stayed at
# the mean predictor (BENCHMARKS.md, "Default main job").
DEFAULT_ARCHS = ("resnet18", "xresnet18", "mobilenet_v3_small", "efficientnet_b0")

# The knobs the DeepLense regression studies tuned by hand, at ranges that train on a CPU.
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "arch": {"values": list(DEFAULT_ARCHS)},
    "optimizer": {"values": list(OPTIMIZERS)},
    "lr": {"min": 1e-4, "max": 1e-2, "sampling": "log"},
    # Only AdamW uses it (the package's Adam and SGD have no weight decay): searched only then.
    "weight_decay": {"min": 1e-6, "max": 1e-2, "sampling": "log"},
    # The regression head's two Dense widths; not searched for the other tasks.
    "fc_units_1": {"values": [128, 256, 512]},
    "fc_units_2": {"values": [32, 64, 128]},
    "dropout": {"min": 0.0, "max": 0.5, "step": 0.1},
    # Clipped to the training split's size at fit time, so tiny data sets still run.
    "batch_size": {"values": [16, 32, 64]},
    # Flips + 90-degree rotations on or off; with them, the strength of the extra augmentation:
    # random shifts (fraction of the side) and Gaussian noise (standardised units).
    "augment": {"values": [True, False]},
    "shift": {"values": [0.0, 0.05, 0.1]},
    "noise": {"values": [0.0, 0.05, 0.1]},
}

INTEGER = {"fc_units_1", "fc_units_2", "batch_size"}
RANGE_KEYS = {"min", "max", "sampling", "step"}
SAMPLINGS = ("linear", "log", "reverse_log")

# What each value must be, checked for every choice, bound and fixed value.
_CHECKS = {
    "arch": (lambda v: isinstance(v, str) and v != "", "an architecture name"),
    "optimizer": (lambda v: v in OPTIMIZERS, f"one of {list(OPTIMIZERS)}"),
    "lr": (lambda v: _number(v) and v > 0, "a number > 0"),
    "weight_decay": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "fc_units_1": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "fc_units_2": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "dropout": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "batch_size": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "augment": (lambda v: isinstance(v, bool), "true or false"),
    "shift": (lambda v: _number(v) and 0 <= v < 0.5, "a number in [0, 0.5)"),
    "noise": (lambda v: _number(v) and v >= 0, "a number >= 0"),
}


def load_space(path: str | Path | None = None, archs: list[str] | None = None,
               fixed: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Defaults <- the space file <- ``--archs`` <- ``fixed`` values (train flags given to a tuner);
    every entry normalised and checked."""
    space = copy.deepcopy(DEFAULT_SPACE)
    if path is not None:
        overrides = _read(Path(path))
        unknown = sorted(set(overrides) - set(DEFAULT_SPACE))
        if unknown:
            raise ConfigError(f"{path}: unknown hyperparameter(s) {unknown}. Known: {sorted(DEFAULT_SPACE)}")
        for name, entry in overrides.items():
            space[name] = _merge(name, space[name], entry, where=str(path))
    if archs:
        space["arch"] = {"values": list(dict.fromkeys(archs))}
    for name, value in (fixed or {}).items():
        space[name] = {"fixed": value}
    for name, spec in space.items():
        _check(name, spec, where=str(path) if path else "the search space")
    return space


def candidate_values(spec: dict[str, Any]) -> list[Any] | None:
    """The values a choice or fixed entry can take; None for a range."""
    if "fixed" in spec:
        return [spec["fixed"]]
    return list(spec["values"]) if "values" in spec else None


def to_config(base: RunConfig, values: dict[str, Any], epochs: int | None = None,
              max_batch: int | None = None) -> RunConfig:
    """One trial's ``RunConfig``: the search's data / task / seed plus the trial's values."""
    model = {k: values[k] for k in ("arch", "dropout") if k in values}
    if "augment" in values:
        model["augment"] = bool(values["augment"])
    for name in ("shift", "noise"):
        if values.get(name) is not None:
            model[name] = float(values[name])
    if "fc_units_1" in values:
        model["fc_units"] = (values["fc_units_1"], values["fc_units_2"])
    train = {k: values[k] for k in ("optimizer", "lr", "batch_size") if k in values}
    if values.get("weight_decay") is not None:
        train["weight_decay"] = values["weight_decay"]
    if max_batch is not None and train.get("batch_size", base.train.batch_size) > max_batch:
        train["batch_size"] = max_batch
    if epochs is not None:
        train["epochs"] = int(epochs)
    return replace(base, model=model, train=train)


def trained_values(values: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A trial's hyperparameters as its run trained them (``config``: its config.json as a dict), the
    inverse of ``to_config``: a batch size of 64 cut to a 22-image training split reads 22. A value
    the trial did not use (None: a conditional one whose condition did not hold) stays None."""
    fields = {**config["model"], **config["train"]}
    fields["fc_units_1"], fields["fc_units_2"] = fields["fc_units"]
    return {name: fields[name] if value is not None and name in fields else value for name, value in values.items()}


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read the space file {path}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object of hyperparameter ranges. Received: {type(raw).__name__}")
    return raw


def _merge(name: str, default: dict[str, Any], entry: Any, where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        return {"fixed": entry}
    keys = set(entry)
    bad = sorted(keys - RANGE_KEYS - {"values", "fixed"})
    if bad:
        raise ConfigError(f"{where}: '{name}' has unknown field(s) {bad}; use 'values', 'fixed', or "
                          f"'min'/'max' with optional 'sampling' {list(SAMPLINGS)} and 'step'. Received: {entry}")
    if len(keys & {"values", "fixed"}) + bool(keys & RANGE_KEYS) != 1:
        raise ConfigError(f"{where}: '{name}' must be exactly one of a choice ('values'), a fixed value ('fixed') "
                          f"or a range ('min'/'max'). Received: {entry}")
    if keys & RANGE_KEYS and "min" in default:
        return {**default, **entry}
    return dict(entry)


def _check(name: str, spec: dict[str, Any], where: str) -> None:
    values = candidate_values(spec)
    if values is None:
        _check_range(name, spec, where)
        values = [spec["min"], spec["max"]]
    elif "values" in spec and (not isinstance(spec["values"], list) or not values):
        raise ConfigError(f"{where}: '{name}' values must be a non-empty list. Received: {spec['values']!r}")
    elif len(values) != len(set(map(repr, values))):
        raise ConfigError(f"{where}: '{name}' lists a value twice. Received: {values}")
    ok, expected = _CHECKS[name]
    wrong = [v for v in values if not ok(v)]
    if wrong:
        raise ConfigError(f"{where}: every value of '{name}' must be {expected}. Received: {wrong}")
    if "min" in spec and not spec["min"] < spec["max"]:
        raise ConfigError(f"{where}: '{name}' needs min < max. Received: min={spec['min']}, max={spec['max']}")


def _check_range(name: str, spec: dict[str, Any], where: str) -> None:
    if name in ("arch", "optimizer", "augment"):
        raise ConfigError(f"{where}: '{name}' takes 'values' or a fixed value, not a range. Received: {spec}")
    missing = sorted({"min", "max"} - set(spec))
    if missing:
        raise ConfigError(f"{where}: the range for '{name}' needs {missing}. Received: {spec}")
    sampling = spec.get("sampling", "linear")
    if sampling not in SAMPLINGS:
        raise ConfigError(f"{where}: '{name}' sampling must be one of {list(SAMPLINGS)}. Received: {sampling!r}")
    if sampling != "linear" and not (_number(spec["min"]) and spec["min"] > 0):
        raise ConfigError(f"{where}: '{name}' with {sampling} sampling needs min > 0. Received: min={spec['min']}")
    step = spec.get("step")
    kind = "integer" if name in INTEGER else "number"
    if step is not None and not (_number(step) and step > 0 and (kind == "number" or _integer(step))):
        raise ConfigError(f"{where}: '{name}' step must be a positive {kind}. Received: step={step!r}")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
