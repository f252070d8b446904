"""Run configuration: three frozen dataclasses, saved as ``config.json`` in every run.

A run directory's ``config.json`` is enough to rebuild its data split and its model, so
``--resume`` and ``evaluate`` never need the original command line. ``from_dict`` rejects
unknown keys (a typo in a hand-edited config must not be silently ignored).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deeplense_tf.errors import ConfigError

TASKS = ("regression", "classification", "lens_finding", "anomaly")
OPTIMIZERS = ("adam", "adamw", "sgd")
DEVICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class DataConfig:
    # A path (class folders, packed .npy/.npz) or "sim:<preset>" for the built-in simulator.
    data: str = "sim:model_ii"
    # Images per class generated for "sim:" data. 600 keeps the default job inside ~10 min on 2 CPU cores.
    samples: int = 600
    # Model input size; None keeps the images' own size (raised to the architecture's minimum).
    image_size: int | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    # Regression target: a numeric column of metadata.csv / the .npz, or the per-file label.
    target: str = "log10_axion_mass"
    # Unpickling runs code from the file: only for data you trust (DeepLense axion files need it).
    allow_pickle: bool = False
    # Worker processes for simulation and threads for reading; None = all cores.
    workers: int | None = None
    # Anomaly detection trains on this class only and scores every other class against it.
    normal_class: str = "no_sub"


@dataclass(frozen=True)
class ModelConfig:
    # A backbone from --list-archs; for --task anomaly an autoencoder (conv_autoencoder, vae).
    arch: str = "efficientnet_b0"
    task: str = "regression"
    # None/"none" = train from scratch (the default: no network needed); "imagenet" or a local weights file.
    weights: str | None = None
    dropout: float = 0.2
    # Widths of the two hidden Dense layers of the regression head.
    fc_units: tuple[int, int] = (256, 64)
    # Random flips and 90-degree rotations during training: lensing images have that symmetry.
    augment: bool = True


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 8
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 42
    device: str = "auto"
    # XLA: off by default, it made CPU training 5-7x slower (STACK.md).
    jit_compile: bool = False
    out: str = "runs"


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunConfig":
        _reject_unknown(raw, cls, "config")
        parts = {}
        for f in dataclasses.fields(cls):
            section = raw.get(f.name, {})
            if not isinstance(section, dict):
                raise ConfigError(f"config section '{f.name}' must be a mapping. Received: {section!r}")
            _reject_unknown(section, f.default_factory, f"config.{f.name}")
            parts[f.name] = f.default_factory(**_coerce(f.default_factory, section))
        config = cls(**parts)
        validate(config)
        return config

    def save(self, path: str | Path) -> None:
        from deeplense_tf.runs import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read config {path}: {err}") from None
        return cls.from_dict(raw)


def replace(config: RunConfig, **sections: dict[str, Any]) -> RunConfig:
    """Return a copy with some fields of some sections changed, e.g. replace(c, train={"epochs": 3})."""
    _reject_unknown(sections, RunConfig, "config")
    parts = {}
    for name, changes in sections.items():
        section = getattr(config, name)
        _reject_unknown(changes, type(section), f"config.{name}")
        parts[name] = dataclasses.replace(section, **_coerce(type(section), changes))
    new = dataclasses.replace(config, **parts)
    validate(new)
    return new


def validate(config: RunConfig) -> None:
    """Reject values that would fail later, with the valid choices in the message."""
    d, m, t = config.data, config.model, config.train
    checks = [
        (m.task in TASKS, f"task must be one of {TASKS}. Received: task={m.task!r}"),
        (t.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}. Received: optimizer={t.optimizer!r}"),
        (t.device in DEVICES, f"device must be one of {DEVICES}. Received: device={t.device!r}"),
        (d.samples >= 1, f"samples must be >= 1. Received: samples={d.samples}"),
        (t.epochs >= 1, f"epochs must be >= 1. Received: epochs={t.epochs}"),
        (t.batch_size >= 1, f"batch_size must be >= 1. Received: batch_size={t.batch_size}"),
        (t.lr > 0, f"lr must be > 0. Received: lr={t.lr}"),
        (0 <= m.dropout < 1, f"dropout must be in [0, 1). Received: dropout={m.dropout}"),
        (len(m.fc_units) == 2 and min(m.fc_units) >= 1, f"fc_units takes two positive widths. Received: {m.fc_units}"),
        (0 < d.val_fraction and 0 < d.test_fraction and d.val_fraction + d.test_fraction < 1,
         f"val_fraction and test_fraction must be > 0 and sum below 1. Received: {d.val_fraction}, {d.test_fraction}"),
        (d.image_size is None or d.image_size >= 8, f"image_size must be >= 8. Received: {d.image_size}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _reject_unknown(raw: dict[str, Any], cls: type, where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(unknown)}. Known keys: {', '.join(sorted(known))}")


def _coerce(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """JSON has no tuples: turn lists back into tuples where the field is a tuple."""
    out = dict(values)
    for f in dataclasses.fields(cls):
        if f.name in out and isinstance(out[f.name], list) and "tuple" in str(f.type):
            out[f.name] = tuple(out[f.name])
    return out
