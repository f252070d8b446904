"""Run configuration: three frozen dataclasses, saved as ``config.json`` in every run.

A run directory's ``config.json`` is enough to rebuild its data split and its model, so
``--resume`` and ``evaluate`` never need the original command line. ``from_dict`` rejects
unknown keys (a typo in a hand-edited config must not be silently ignored).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deeplense_tf.errors import ConfigError
from deeplense_tf.runs import atomic_write_text

TASKS = ("regression", "classification", "lens_finding", "anomaly")
OPTIMIZERS = ("adam", "adamw", "sgd")
DEVICES = ("auto", "cpu", "gpu")
SCHEDULES = ("cosine", "onecycle", "plateau", "constant")
NORMALIZATIONS = ("standardize", "minmax", "asinh", "clip", "cmu")
LOSSES = (None, "mse", "huber", "mae")
UNCERTAINTIES = ("none", "gaussian")
CLASS_WEIGHTS = ("none", "balanced")
VALIDATE_MODES = ("full", "quick")
STRATEGIES = ("auto", "mirrored", "multiworker", "one-device")
PLOT_FORMATS = ("png", "pdf", "svg")
TRACKERS = ("none", "mlflow")
DATA_PATH_FIELDS = ("data", "val_data", "test_data")


@dataclass(frozen=True)
class DataConfig:
    # A path (class folders, packed .npy/.npz, HDF5, FITS, shards) or "sim:<preset>" for the built-in
    # simulator; several (a tuple, e.g. simulator shard folders) are joined into one set.
    data: str | tuple[str, ...] = "sim:model_ii"
    # Images per class generated for "sim:" data (9000 images take ~35 s on 2 cores, cached once).
    # Regression uses the 3000 axion images: with fewer (600) no network learned the mass in the
    # default job's 8 epochs (BENCHMARKS.md, "Default main job").
    samples: int = 3000
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
    # The scan before training: "full" reads every pixel (in parallel; seconds for a DeepLense-sized
    # set), "quick" only headers and sizes (huge sets; NaN/Inf pixels then stop the pipeline, naming the file).
    validate: str = "full"
    # Drop bad files (unreadable, NaN/Inf, all-zero, duplicated...) instead of stopping: each is logged and
    # listed in the run's data.json; a rebuilt split (--resume, evaluate) drops the same ones.
    skip_bad: bool = False
    # Catalogue column holding the labels (HDF5 table, FITS classifications.csv, .npz, metadata.csv);
    # 0/1 values become is_lens, anything else the class.
    label_column: str | None = None
    # Explicit evaluation sets (any `data` layout; a tuple is joined) instead of cutting val_fraction /
    # test_fraction off `data`; a split not given is still cut off the training data.
    val_data: str | tuple[str, ...] | None = None
    test_data: str | tuple[str, ...] | None = None
    # The class names the data must have (e.g. no_sub cdm axion): any other class folder or label is an
    # error naming it, so a stray folder is not silently learnt as a class. None accepts what is found.
    classes: tuple[str, ...] | None = None

    def __post_init__(self):
        # argparse (nargs="+") and JSON give lists: one path stays a string, several become a tuple,
        # so config.json round-trips and a single --data reads as before.
        for name in DATA_PATH_FIELDS:
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, str(value[0]) if len(value) == 1 else tuple(str(v) for v in value))


@dataclass(frozen=True)
class ModelConfig:
    # A backbone from --list-archs; for --task anomaly an autoencoder (conv_autoencoder, vae).
    # resnet18 learns the default CPU job; efficientnet_b0 stayed at the mean predictor there (BENCHMARKS.md).
    arch: str = "resnet18"
    task: str = "regression"
    # None/"none" = train from scratch (the default: no network needed); "imagenet" or a local weights file.
    weights: str | None = None
    # Dropout in the head; None = the task's default (``head_dropout``: 0 for classification, else 0.2).
    dropout: float | None = None
    # Widths of the two hidden Dense layers of the regression head.
    fc_units: tuple[int, int] = (256, 64)
    # Random flips and 90-degree rotations during training: lensing images have that symmetry.
    augment: bool = True
    # Regression only: "gaussian" predicts a mean and a standard deviation per image (Gaussian
    # negative log-likelihood, beta-NLL weighted: training/losses.py); "none" a point estimate.
    # Either way the run calibrates 68/95 % intervals on the validation split (conformal).
    uncertainty: str = "none"
    # Fine-tuning (finetune.py): train the head on a frozen backbone (its BatchNorm in inference mode).
    freeze_backbone: bool = False
    # With freeze_backbone: epochs 1..N train the head only, then the whole network; None = frozen throughout.
    unfreeze_at: int | None = None
    # Per-image scaling, the first layer of the model (so exports apply it too): standardize, minmax,
    # asinh (standardise, then asinh stretch), clip (standardise, clip to -3..10 sigma, standardise) or
    # cmu (CMU DeepLens on the Bologna ground set: masked 100s -> 0, clip to +-1e-9, scale to +-100).
    normalization: str = "standardize"
    # Extra augmentation: random shifts up to this fraction of the side; Gaussian noise of this std
    # (standardised units). 0 = off.
    shift: float = 0.0
    noise: float = 0.0
    # Flips / rotations in the tf.data pipeline on the CPU instead of in the model (for comparison:
    # BENCHMARKS.md "Input pipeline"); shift and noise stay model-only.
    augment_in_pipeline: bool = False


# Defaults an architecture needs when it trains from scratch, over DataConfig's and TrainConfig's own:
# they apply where neither a flag nor a --config file sets the field. EfficientNet V1 at 64 px learnt
# faster at a 3x higher peak rate (BENCHMARKS.md, "EfficientNet at 64 px"); B4 (B5-B7 are larger still)
# needs more than the default budget, and images more than epochs: on noise-free data 6,000 images per
# class for 20 epochs reached test MAE 0.245 where 3,000 for 40 epochs (as many steps) reached 0.255; on
# the default noisy data 6,000 x 20 overfit (0.2885, above half the mean predictor's), 20,000 x 10 did not
# (BENCHMARKS.md, "efficientnet_b4 on 20,000 noisy images per class").
# `samples` only sizes simulated data ("sim:" sets).
ARCH_DEFAULTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("efficientnet_b[0-7]", {"lr": 3e-3}),
    ("efficientnet_b[4-7]", {"epochs": 10, "samples": 20000}),
)


# The head's dropout where neither --dropout nor a config sets it. Classification: none, as torchvision's
# and timm's ResNets; with convolutions drawn over fan-out it brought resnet18 level with a plain timm
# loop on the same files (BENCHMARKS.md, "Level with timm"). The other heads keep 0.2: nothing measured
# says otherwise.
TASK_DROPOUT = {"classification": 0.0}
DEFAULT_DROPOUT = 0.2


def head_dropout(model: "ModelConfig") -> float:
    """The dropout rate of ``model``'s head: its own, else its task's default."""
    return model.dropout if model.dropout is not None else TASK_DROPOUT.get(model.task, DEFAULT_DROPOUT)


def model_seed(train: "TrainConfig") -> int:
    """The seed of a run's training randomness (``init_seed``, else ``seed``)."""
    return train.seed if train.init_seed is None else train.init_seed


def arch_defaults(arch: str, weights: str | None) -> dict[str, Any]:
    """The ``DataConfig`` / ``TrainConfig`` fields ``ARCH_DEFAULTS`` sets for ``arch`` (none with pretrained weights)."""
    if weights not in (None, "none", ""):
        return {}
    values: dict[str, Any] = {}
    for pattern, fields in ARCH_DEFAULTS:
        if fnmatch.fnmatchcase(str(arch), pattern):
            values.update(fields)
    return values


def with_arch_defaults(changes: dict[str, dict], base: "RunConfig") -> dict[str, dict]:
    """``changes`` (section -> field -> value, the settings a user gave) with the architecture's
    defaults added for the data and train fields it leaves unset."""
    model = {**dataclasses.asdict(base.model), **changes.get("model", {})}
    defaults = arch_defaults(model["arch"], model["weights"])
    result = dict(changes)
    for section, config_class in (("data", DataConfig), ("train", TrainConfig)):
        names = {f.name for f in dataclasses.fields(config_class)}
        result[section] = {**{k: v for k, v in defaults.items() if k in names}, **changes.get(section, {})}
    return result


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 8
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 42
    # Seeds initialisation, augmentation, dropout and batch order only (data, simulation and split keep
    # ``seed``): deep-ensemble members on one split differ by it. None: ``seed``.
    init_seed: int | None = None
    device: str = "auto"
    # XLA: off by default, it made CPU training 5-7x slower (STACK.md).
    jit_compile: bool = False
    out: str = "runs"
    # Learning-rate schedule (schedules.py): cosine with linear warm-up, onecycle, plateau (halve
    # when the monitored validation metric stalls for 2 epochs) or constant.
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    # SGD momentum (Nesterov); ignored by Adam/AdamW.
    momentum: float = 0.9
    # Clip each step's gradient to this global norm; None = no clipping.
    clipnorm: float | None = None
    # Sharpness-aware minimisation (Foret et al. 2021) around the chosen optimiser: neighbourhood radius; 0 = off.
    sam_rho: float = 0.0
    # Exponential moving average of the weights (Keras' use_ema) with this momentum; None = off. Validation,
    # best.keras and so the test metrics and the export use the average (training/ema.py).
    ema: float | None = None
    # Regression loss on the target in its own units (dex): mse, huber (delta 1) or mae; None = the task's default.
    loss: str | None = None
    # --uncertainty gaussian: the beta of the beta-NLL loss (Seitzer et al. 2022); 0 = plain Gaussian NLL, 1 gives
    # the mean the gradient of MSE. 1 trained the best mean of 0, 0.5 and 1 (BENCHMARKS.md, "The `uncertainty`
    # study"). Runs made before the field existed used 0.5; their checkpoints keep it in their loss (--resume).
    nll_beta: float = 1.0
    # Classification / lens finding: 0..1 of the target mass spread over the other classes.
    label_smoothing: float = 0.0
    # "balanced": weight each training image by n / (classes x count of its class); "none".
    class_weights: str = "none"
    # Stop after this many epochs without improvement of the monitored metric; 0 = never.
    early_stopping: int = 0
    # Re-estimate BatchNorm moving statistics from this many training batches before each validation
    # (batchnorm.py: a short run from scratch otherwise validates a different network); 0 = off.
    bn_recalibration: int = 20
    # mixed_float16 on GPUs, mixed_bfloat16 on CPUs; the last layer and the loss stay float32.
    mixed_precision: bool = False
    # Batches in the same order every run (reproducible by seed); False lets parallel reads finish
    # out of order, about a third faster for per-file data (BENCHMARKS.md) but not reproducible.
    deterministic: bool = True
    # Per-file .npy sets: keep decoded images after the first epoch, "memory" or a cache file path
    # (tf.data cache); arrays and shards are one memory copy away already and ignore it.
    cache: str | None = None
    # Class-balanced training batches (classification, lens finding): imbalance such as 1 lens in 100
    # would otherwise teach "never a lens"; validation and test keep the real class mix.
    balance: bool = False
    # tf.distribute strategy (distributed.py): auto = MirroredStrategy over several local GPUs, else none;
    # mirrored (all local GPUs, or the CPU); one-device (first GPU or the CPU); multiworker = several
    # machines described by the TF_CONFIG environment variable (batch_size stays the global batch).
    strategy: str = "auto"
    # File format of the run's plots: png (300 dpi), or pdf / svg (vector) for a paper.
    plot_format: str = "png"
    # Experiment tracker beside TensorBoard (training/tracking.py): none, or mlflow (an extra).
    tracker: str = "none"


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
        (t.init_seed is None or 0 <= t.init_seed < 2**32, f"init_seed must be in [0, 2**32). Received: init_seed={t.init_seed}"),
        (m.normalization in NORMALIZATIONS, f"normalization must be one of {NORMALIZATIONS}. "
         f"Received: {m.normalization!r}"),
        (m.uncertainty in UNCERTAINTIES, f"uncertainty must be one of {UNCERTAINTIES}. "
         f"Received: uncertainty={m.uncertainty!r}"),
        (m.uncertainty == "none" or m.task == "regression",
         f"--uncertainty {m.uncertainty} applies to regression only (classifiers are calibrated by temperature "
         f"scaling anyway). Received task={m.task!r}"),
        (m.uncertainty == "none" or t.loss is None,
         f"--uncertainty {m.uncertainty} trains with the Gaussian likelihood; drop --loss {t.loss}"),
        (0 <= m.shift < 0.5, f"shift must be in [0, 0.5). Received: {m.shift}"),
        (m.noise >= 0, f"noise must be >= 0. Received: {m.noise}"),
        (t.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}. Received: schedule={t.schedule!r}"),
        (t.loss in LOSSES, f"loss must be one of {LOSSES[1:]} (regression only). Received: loss={t.loss!r}"),
        (t.loss is None or m.task == "regression", f"--loss applies to regression only. Received: loss={t.loss!r} "
         f"with task={m.task!r}"),
        (t.class_weights in CLASS_WEIGHTS, f"class_weights must be one of {CLASS_WEIGHTS}. Received: {t.class_weights!r}"),
        (0 <= t.label_smoothing < 1, f"label_smoothing must be in [0, 1). Received: {t.label_smoothing}"),
        (t.warmup_epochs >= 0, f"warmup_epochs must be >= 0. Received: {t.warmup_epochs}"),
        (t.clipnorm is None or t.clipnorm > 0, f"clipnorm must be > 0. Received: {t.clipnorm}"),
        (t.sam_rho >= 0, f"sam_rho must be >= 0. Received: {t.sam_rho}"),
        (0 <= t.nll_beta <= 1, f"nll_beta must be in [0, 1] (0 = plain Gaussian NLL). Received: nll_beta={t.nll_beta}"),
        (t.ema is None or 0 < t.ema < 1, f"ema (the average's momentum) must be in (0, 1), e.g. 0.99. "
         f"Received: ema={t.ema}"),
        (t.tracker in TRACKERS, f"tracker must be one of {TRACKERS}. Received: tracker={t.tracker!r}"),
        (t.plot_format in PLOT_FORMATS, f"plot_format must be one of {PLOT_FORMATS}. "
         f"Received: plot_format={t.plot_format!r}"),
        (t.early_stopping >= 0, f"early_stopping must be >= 0 epochs. Received: {t.early_stopping}"),
        (t.bn_recalibration >= 0, f"bn_recalibration must be >= 0 batches. Received: {t.bn_recalibration}"),
        (0 <= t.momentum < 1, f"momentum must be in [0, 1). Received: {t.momentum}"),
        (not (t.cache and t.balance), "--cache and --balance do not combine (a cached epoch is replayed "
         "in one order); drop one of them"),
        (d.samples >= 1, f"samples must be >= 1. Received: samples={d.samples}"),
        (t.epochs >= 1, f"epochs must be >= 1. Received: epochs={t.epochs}"),
        (t.batch_size >= 1, f"batch_size must be >= 1. Received: batch_size={t.batch_size}"),
        (t.lr > 0, f"lr must be > 0. Received: lr={t.lr}"),
        (m.dropout is None or 0 <= m.dropout < 1, f"dropout must be in [0, 1). Received: dropout={m.dropout}"),
        (len(m.fc_units) == 2 and min(m.fc_units) >= 1, f"fc_units takes two positive widths. Received: {m.fc_units}"),
        (0 < d.val_fraction and 0 < d.test_fraction and d.val_fraction + d.test_fraction < 1,
         f"val_fraction and test_fraction must be > 0 and sum below 1. Received: {d.val_fraction}, {d.test_fraction}"),
        (d.image_size is None or d.image_size >= 8, f"image_size must be >= 8. Received: {d.image_size}"),
        (not m.freeze_backbone or m.task != "anomaly",
         "freeze_backbone: an anomaly autoencoder has no separate backbone; drop --freeze-backbone"),
        (m.unfreeze_at is None or m.freeze_backbone,
         f"unfreeze_at needs freeze_backbone (add --freeze-backbone). Received: unfreeze_at={m.unfreeze_at}"),
        (m.unfreeze_at is None or m.unfreeze_at >= 1,
         f"unfreeze_at must be >= 1 (epochs of head-only training). Received: unfreeze_at={m.unfreeze_at}"),
        (not t.balance or m.task in ("classification", "lens_finding"),
         f"balance needs class labels (task classification or lens_finding). Received: task={m.task!r}"),
        (t.strategy in STRATEGIES, f"strategy must be one of {STRATEGIES}. Received: strategy={t.strategy!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    _validate_data_sources(d)


def _validate_data_sources(d: DataConfig) -> None:
    """The data paths and scan options (kept apart from the list above, which the other sections share)."""
    if d.validate not in VALIDATE_MODES:
        raise ConfigError(f"validate must be one of {VALIDATE_MODES}. Received: validate={d.validate!r}")
    if d.label_column is not None and (not isinstance(d.label_column, str) or not d.label_column.strip()):
        raise ConfigError(f"label_column must be a column name. Received: label_column={d.label_column!r}")
    if d.classes is not None and (len(d.classes) < 1 or len(set(d.classes)) != len(d.classes)):
        raise ConfigError(f"classes must be distinct names. Received: classes={d.classes!r}")
    for name in DATA_PATH_FIELDS:
        value = getattr(d, name)
        values = value if isinstance(value, tuple) else (value,)
        if value is None and name != "data":
            continue
        if not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise ConfigError(f"{name} must be a path or sim:<preset>, or a list of them. Received: {name}={value!r}")


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
