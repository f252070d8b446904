"""Shared command-line plumbing: every train flag (defined once, used by ``train``, ``lr_find`` and
every tuner), the config they make, the parser every command starts from (``command_parser``: every
default in ``--help``, ``--version``, ``--verbose``), the environment set before TensorFlow loads
(a quiet start), clean error exits.

Every flag's ``dest`` is a field of ``DataConfig``, ``ModelConfig`` or ``TrainConfig`` (``FLAG_FIELDS``):
adding a field and its flag is enough. Defaults are ``None`` on the parser, so ``config_from_args``
can tell a flag that was given from one that was not: defaults <- ``--config`` file <- flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import shutil
import sys
import tempfile
import types
from pathlib import Path
from typing import Callable

from deeplense_tf.config import (CLASS_WEIGHTS, DEVICES, LOSSES, NORMALIZATIONS, OPTIMIZERS, PLOT_FORMATS, SCHEDULES,
                                 STRATEGIES, TASKS, TRACKERS, UNCERTAINTIES, VALIDATE_MODES, DataConfig, ModelConfig, RunConfig,
                                 TrainConfig, arch_defaults, replace, with_arch_defaults)
from deeplense_tf.errors import ConfigError, UserError
from deeplense_tf.version import __version__

DEFAULT_ANOMALY_ARCH = "conv_autoencoder"
# Every config field whose name is also a flag's dest: adding a field and its flag is enough.
FLAG_FIELDS = {section: tuple(f.name for f in dataclasses.fields(cls))
               for section, cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig))}


def add_data_flags(data) -> None:
    """--data ... --workers: ``DataConfig``'s fields."""
    d = DataConfig()
    data.add_argument("--data", nargs="+", metavar="PATH",
                      help="class folders, train/ + test/ folders, images.npy/.npz, HDF5, FITS Band<k>/ folders, "
                      f"pack shards, or sim:<preset> (default {d.data}; options sim:model_ii:noise=published reproduces the "
                      "released, noise-free data, :geometry=physical the angular-diameter Einstein radius); several "
                      "are joined into one set. "
                      "sim-stream:<preset> trains on an endless stream of new simulated images from --workers "
                      "processes (val/test: a fixed simulated set of --samples per class, another seed)")
    data.add_argument("--val-data", nargs="+", metavar="PATH",
                      help="a validation set (any --data layout) instead of cutting val_fraction (15%%) off --data")
    data.add_argument("--test-data", nargs="+", metavar="PATH",
                      help="a test set (any --data layout) instead of cutting test_fraction (15%%) off --data")
    data.add_argument("--validate", choices=VALIDATE_MODES,
                      help="scan before training: full (default) reads every file's pixels in parallel; quick "
                      "reads headers only (very large sets; NaN/Inf pixels then stop training, naming the file)")
    data.add_argument("--skip-bad", action="store_true", default=None,
                      help="drop unreadable, broken, all-zero or duplicated files instead of stopping; each is "
                      "logged and listed in the run's data.json (skipped_files)")
    data.add_argument("--label-column", help="column with the labels in an HDF5 table, classifications.csv, "
                      ".npz or metadata.csv (e.g. is_lens); 0/1 values become is_lens, others the class")
    data.add_argument("--classes", nargs="+", metavar="NAME",
                      help="the class names the data must have (e.g. no_sub cdm axion); any other class folder "
                      "or label stops the run, naming it (default: accept the classes found)")
    data.add_argument("--samples", type=int, help=f"images per class for sim: data (default {d.samples}; "
                      f"{arch_defaults('efficientnet_b4', None)['samples']} for efficientnet_b4..b7 from scratch); "
                      "regression uses the axion class only. sim-stream: the fixed val/test set, and the "
                      "images per class an epoch draws from the stream")
    data.add_argument("--image-size", type=int, help="model input side; images are resized inside the model "
                      "(default: their own size, raised to the architecture's minimum)")
    data.add_argument("--target", help=f"regression target column (default {d.target})")
    data.add_argument("--allow-pickle", action="store_true", default=None,
                      help="read pickled .npy files (DeepLense axion files): unpickling runs code from the file")
    data.add_argument("--normal-class", help="--task anomaly: the class the autoencoder learns (default no_sub)")
    data.add_argument("--workers", type=int, help="simulator processes (sim: and sim-stream: data) / threads for "
                      "reading (default: all cores)")


def add_model_flags(model) -> None:
    """--arch ... --unfreeze-at: ``ModelConfig``'s fields."""
    m = ModelConfig()
    model.add_argument("--arch", help=f"architecture name, see --list-archs (default {m.arch}; "
                       "for --task anomaly conv_autoencoder or vae, default conv_autoencoder)")
    model.add_argument("--task", choices=TASKS, help=f"what to learn (default {m.task})")
    model.add_argument("--weights", help="none (train from scratch, default), imagenet (needs a network "
                       "or ~/.keras/models), or a local weights file")
    model.add_argument("--dropout", type=float, help="dropout in the head (default 0 for classification, 0.2 otherwise)")
    model.add_argument("--fc-units", type=int, nargs=2, metavar=("N1", "N2"),
                       help=f"widths of the regression head's two Dense layers (default {m.fc_units})")
    model.add_argument("--uncertainty", choices=UNCERTAINTIES,
                       help=f"regression: gaussian predicts a mean and a sigma per image (Gaussian likelihood); "
                       f"either way 68/95 %% intervals are calibrated on the validation split (default {m.uncertainty})")
    model.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                       help="switch off the random flips / 90-degree rotations during training")
    model.add_argument("--shift", type=float, help="also shift images randomly by up to this fraction of the side "
                       "(e.g. 0.05; default 0)")
    model.add_argument("--noise", type=float, help="also add Gaussian noise of this std to the standardised "
                       "images (default 0)")
    model.add_argument("--augment-in-pipeline", action="store_true", default=None,
                       help="flips / rotations in the tf.data pipeline (CPU) instead of the model, for comparison")
    model.add_argument("--normalization", choices=NORMALIZATIONS,
                       help=f"per-image scaling inside the model (default {m.normalization}): minmax to [0, 1]; "
                       "asinh stretch; clip to -3..10 sigma; cmu: CMU DeepLens' Bologna scaling")
    model.add_argument("--freeze-backbone", action="store_true", default=None,
                       help="fine-tuning: train the head only, backbone weights and BatchNorm statistics fixed")
    model.add_argument("--unfreeze-at", type=int, metavar="EPOCH",
                       help="with --freeze-backbone: train the head for EPOCH epochs, then the whole network")


def add_optimisation_flags(opt) -> None:
    """--epochs ... --balance: ``TrainConfig``'s optimisation fields."""
    t = TrainConfig()
    opt.add_argument("--epochs", type=int, help=f"training epochs (default {t.epochs}; "
                     f"{arch_defaults('efficientnet_b4', None)['epochs']} for efficientnet_b4..b7 from scratch); "
                     "with --resume the run's new "
                     "total: the cosine / one-cycle schedule is recomputed over it, continuing from the step reached")
    opt.add_argument("--batch-size", type=int, help=f"images per optimiser step, all GPUs and workers together "
                     f"(default {t.batch_size})")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, help=f"(default {t.optimizer}); sgd uses Nesterov momentum (--momentum)")
    opt.add_argument("--lr", type=float, help=f"peak learning rate (default {t.lr}; "
                     f"{arch_defaults('efficientnet_b0', None)['lr']} for efficientnet_b0..b7 from scratch)")
    opt.add_argument("--weight-decay", type=float, help=f"AdamW decoupled weight decay (default {t.weight_decay})")
    opt.add_argument("--schedule", choices=SCHEDULES,
                     help=f"learning-rate schedule (default {t.schedule}: linear warm-up then cosine to 1%%); onecycle; "
                     "plateau halves the rate after 2 epochs without improvement; constant")
    opt.add_argument("--warmup-epochs", type=float, help=f"cosine warm-up length (default {t.warmup_epochs})")
    opt.add_argument("--momentum", type=float, help=f"SGD Nesterov momentum (default {t.momentum})")
    opt.add_argument("--clipnorm", type=float, help="clip each step's gradient to this global norm (default: off)")
    opt.add_argument("--sam", dest="sam_rho", type=float, metavar="RHO",
                     help="sharpness-aware minimisation around the optimiser, radius RHO (e.g. 0.05; two passes a "
                     "step; default 0: off)")
    opt.add_argument("--ema", type=float, nargs="?", const=0.99, metavar="MOMENTUM",
                     help="exponential moving average of the weights (momentum 0.99 if none given, 0.999 for long "
                     "runs); validation, best.keras, test metrics and export use the average (default: off)")
    opt.add_argument("--loss", choices=[v for v in LOSSES if v],
                     help="regression loss on the target in its own units (default mse)")
    opt.add_argument("--nll-beta", type=float, help=f"--uncertainty gaussian: beta of the beta-NLL loss, 0 = plain "
                     f"Gaussian NLL (default {t.nll_beta})")
    opt.add_argument("--label-smoothing", type=float, help="classification / lens finding (default 0)")
    opt.add_argument("--class-weights", choices=CLASS_WEIGHTS,
                     help="balanced: weight images by inverse class frequency (classification, lens finding; "
                     "default none)")
    opt.add_argument("--early-stopping", type=int, metavar="EPOCHS",
                     help="stop after this many epochs without a better validation loss (default 0: never)")
    opt.add_argument("--bn-recalibration", type=int, metavar="BATCHES",
                     help=f"re-estimate BatchNorm statistics from this many training batches before each validation "
                     f"(default {t.bn_recalibration}; 0 = off)")
    opt.add_argument("--mixed-precision", action="store_true", default=None,
                     help="mixed_float16 on GPUs, mixed_bfloat16 on CPUs (last layer and loss in float32)")
    opt.add_argument("--balance", action="store_true", default=None,
                     help="draw every class equally often in training batches (imbalanced sets, e.g. 1 lens in 100); "
                     "validation and test keep the real mix")


def add_run_flags(run, resume: bool = True, out_help: str | None = None) -> None:
    """--cache ... --config: ``TrainConfig``'s run fields, ``--resume`` (unless ``resume`` is False:
    a search continues by running its command again) and ``--config``."""
    t = TrainConfig()
    run.add_argument("--cache", metavar="memory|PATH",
                     help="per-file .npy data: keep decoded images after epoch 1 in memory or in a cache file")
    run.add_argument("--nondeterministic", dest="deterministic", action="store_false", default=None,
                     help="let parallel reads deliver batches out of order: faster, not reproducible")
    run.add_argument("--seed", type=int, help=f"seeds data, split, initialisation and augmentation (default {t.seed})")
    run.add_argument("--init-seed", type=int, help="seeds initialisation, augmentation, dropout and batch order only, "
                     "keeping --seed's data and split: members of a deep ensemble (default: --seed)")
    run.add_argument("--device", choices=DEVICES, help="cpu, gpu (all local GPUs, mirrored), auto (default)")
    run.add_argument("--strategy", choices=STRATEGIES,
                     help="auto (default): mirrored over several local GPUs, else none; mirrored: all local GPUs "
                     "(or the CPU); one-device: first GPU or the CPU; multiworker: several machines described by "
                     "the TF_CONFIG environment variable (README, 'Several machines'). --batch-size is always "
                     "the global batch, split over GPUs and workers")
    run.add_argument("--jit-compile", action="store_true", default=None,
                     help="XLA compilation: off by default, it made CPU training 5-7x slower; try it on GPUs")
    run.add_argument("--out", help=out_help or f"parent folder of run directories (default {t.out}/)")
    run.add_argument("--tracker", choices=TRACKERS, help=f"also log the run to an experiment tracker (default "
                     f"{t.tracker}); mlflow: MLFLOW_TRACKING_URI, else a SQLite store <--out>/mlflow.db (pip install -e "
                     "\".[mlflow]\")")
    run.add_argument("--plot-format", choices=PLOT_FORMATS, help=f"file format of the plots (default {t.plot_format}, "
                     "300 dpi); pdf or svg: vector figures for a paper")
    if resume:
        run.add_argument("--resume", type=Path, metavar="RUN_DIR",
                         help="continue an interrupted run from its last loadable checkpoint with its saved config; "
                         "with --epochs N train it longer (the schedule stretched to N epochs)")
    run.add_argument("--config", type=Path, help="a config.json whose values become the defaults")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Every command's ``--help``: the description as written (its example commands keep their lines)
    and every flag's default, argparse's ``(default: X)`` unless the help text already says it.
    On/off switches and flags without a value (default None) get none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or isinstance(action.default, bool) or "default" in text:
            return text
        return super()._get_help_string(action)


def command_parser(prog: str, description: str | None = None, verbose: bool = False,
                   **kwargs) -> argparse.ArgumentParser:
    """The parser every command starts from: ``HelpFormatter``, ``--version`` and (commands that load
    TensorFlow: ``verbose``) ``--verbose``. ``prog`` is the ``python -m`` form; run as a console
    script (setup.cfg: ``deeplense-train``, ...) the usage line names the script instead."""
    script = Path(sys.argv[0]).name
    p = argparse.ArgumentParser(prog=script if script.startswith("deeplense-") else prog, description=description,
                                formatter_class=HelpFormatter, **kwargs)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    if verbose:
        p.add_argument("--verbose", action="store_true",
                       help="keep TensorFlow's own start-up and C++ log lines (hidden by default)")
    return p


def train_parser(prog: str, description: str | None, resume: bool = True,
                 out_help: str | None = None) -> argparse.ArgumentParser:
    """A parser with every train flag in its four groups (Data, Model, Optimisation, Run)."""
    p = command_parser(prog, description, verbose=True, argument_default=None)
    add_data_flags(p.add_argument_group("Data"))
    add_model_flags(p.add_argument_group("Model"))
    add_optimisation_flags(p.add_argument_group("Optimisation"))
    add_run_flags(p.add_argument_group("Run"), resume=resume, out_help=out_help)
    return p


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults <- --config file <- flags given on the command line."""
    base = RunConfig.load(args.config) if args.config else RunConfig()
    changes = {section: {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}
               for section, fields in FLAG_FIELDS.items()}
    if changes["model"].get("weights") in ("none", ""):
        changes["model"]["weights"] = None
    if changes["model"].get("task") == "anomaly" and "arch" not in changes["model"]:
        changes["model"]["arch"] = DEFAULT_ANOMALY_ARCH
    if not args.config:  # a config file states every field: it wins over the architecture's defaults
        changes = with_arch_defaults(changes, base)
    config = replace(base, **{k: v for k, v in changes.items() if v})
    # Checked here, on the flag, not in validate(): a saved config holds nll_beta whatever the uncertainty.
    if "nll_beta" in changes["train"] and config.model.uncertainty != "gaussian":
        raise ConfigError(f"--nll-beta weights the Gaussian likelihood of --uncertainty gaussian; add it or drop "
                        f"--nll-beta {config.train.nll_beta}")
    return config


def config_from_options(options: dict, config: RunConfig | None = None) -> RunConfig:
    """The run config of ``dl.train(**options)`` / a study entry: ``config`` (default: the defaults)
    <- the architecture's defaults (only without ``config``, which states every field) <- ``options``,
    the train flags' names."""
    changes: dict[str, dict] = {section: {} for section in FLAG_FIELDS}
    for key, value in options.items():
        section = next((s for s, names in FLAG_FIELDS.items() if key in names), None)
        if section is None:
            known = [n for names in FLAG_FIELDS.values() for n in names]
            close = difflib.get_close_matches(key, known, n=3)
            raise ConfigError(f"train() got an unknown setting {key!r}"
                              f"{'; closest: ' + ', '.join(close) if close else ''}. Settings: the fields of "
                              "DataConfig, ModelConfig and TrainConfig (deeplense_tf.config)")
        changes[section][key] = tuple(value) if isinstance(value, list) else value
    if changes["model"].get("task") == "anomaly" and "arch" not in changes["model"]:
        changes["model"]["arch"] = DEFAULT_ANOMALY_ARCH
    if config is None:
        config = RunConfig()
        changes = with_arch_defaults(changes, config)
    return replace(config, **{k: v for k, v in changes.items() if v})


def callable_as(module_name: str, function: Callable) -> None:
    """Make command module ``module_name`` callable as ``function``.

    ``deeplense_tf.train`` and ``deeplense_tf.evaluate`` are commands and, as ``dl.train(...)`` /
    ``dl.evaluate(...)``, functions of the Python API: once the command module is imported it is
    the package's attribute of that name, so the module itself must be the function too."""

    class CommandModule(types.ModuleType):
        __call__ = staticmethod(function)

    sys.modules[module_name].__class__ = CommandModule


def prepare_environment(verbose: bool = False) -> None:
    """Set before TensorFlow is imported; a user's own setting always wins.

    oneDNN: TensorFlow leaves it off on AMD CPUs; on the 2-core EPYC it took ResNet50 training
    from 13 to 40 images/s (STACK.md, BENCHMARKS.md), and it is TF's default on Intel anyway.

    A quiet start unless ``verbose`` (the commands' ``--verbose``): TF_CPP_MIN_LOG_LEVEL 2 hides
    TensorFlow's C++ info and warning lines; 3 on a machine without an NVIDIA driver, whose one
    C++ error line is then the failed cuInit (``CUDA_VISIBLE_DEVICES=""`` does not stop it, measured
    with TF 2.21). The lines its libraries write while loading (oneDNN, "Could not find cuda
    drivers") come before that setting is read: ``import_tensorflow_quietly`` filters them alike.
    """
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if has_nvidia_driver() else "3")
    import_tensorflow_quietly()


def has_nvidia_driver() -> bool:
    return os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi") is not None


# absl's log line, as TensorFlow's C++ writes it: severity, date (0000 before absl is set up), time, thread, file:line]
ABSL_LINE = re.compile(r"([IWEF])\d{4} [\d:.]+ +\d+ \S+:\d+\] ")
ABSL_PRE_INIT = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
PYTHON_WARNING = re.compile(r"\S.*:\d+: \w*Warning: ")


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its libraries' load-time lines filtered by TF_CPP_MIN_LOG_LEVEL (as
    TensorFlow filters its later lines); everything else written meanwhile is passed on. Without a
    standard error to filter (a daemon) TensorFlow is left to load later, as usual."""
    if "tensorflow" in sys.modules or sys.stderr is None:
        return
    try:
        level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL") or 0)
    except ValueError:
        level = 0
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            sys.stderr.write(filter_log_lines(captured.read().decode(errors="replace"), level))
            sys.stderr.flush()


def filter_log_lines(text: str, level: int) -> str:
    """``text`` without absl lines below ``level`` (I 0, W 1, E 2, F 3), their continuation lines and
    absl's pre-initialisation banner; any other line (a Python warning, an error) is kept."""
    kept, dropping = [], False
    for line in text.splitlines(keepends=True):
        header = ABSL_LINE.match(line)
        if header:
            dropping = "IWEF".index(header[1]) < level
        elif line.startswith(ABSL_PRE_INIT):
            dropping = level > 0
        elif PYTHON_WARNING.match(line):
            dropping = False
        if not dropping:
            kept.append(line)
    return "".join(kept)


def run_cli(job: Callable[[], object]) -> int:
    """Run ``job``; a ``UserError`` becomes one ``error:`` line and exit code 2, not a traceback."""
    try:
        job()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
