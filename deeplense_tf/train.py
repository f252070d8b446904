"""Train a model on lensing images, evaluate it on a held-out test split and export it.

    python -m deeplense_tf.train --arch resnet18

With no other flag: regression of log10 axion mass on a simulated DeepLense Model II set
(3000 images per class, generated once with lenstronomy and cached; regression trains on the
axion class), resnet18, 8 epochs at batch 32 with a warm-up + cosine schedule: about 10
minutes on a 2-core CPU. On a GPU raise --samples (e.g. 30000) and --epochs (e.g. 50) and try
the larger backbones (--list-archs). Everything goes to runs/<arch>-<task>-<time>/.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import signal
import sys
from pathlib import Path

from deeplense_tf.cli import prepare_environment, run_cli
from deeplense_tf.config import CLASS_WEIGHTS, DEVICES, LOSSES, NORMALIZATIONS, OPTIMIZERS, SCHEDULES, STRATEGIES, TASKS, DataConfig, ModelConfig, RunConfig, TrainConfig


def add_data_flags(data) -> None:
    """The data flags, shared with ``tuning`` (one definition, the same config fields)."""
    from deeplense_tf.config import VALIDATE_MODES

    d = DataConfig()
    data.add_argument("--data", nargs="+", metavar="PATH",
                      help="class folders, train/ + test/ folders, images.npy/.npz, HDF5, FITS Band<k>/ folders, "
                      f"pack shards, or sim:<preset> (default {d.data}); several are joined into one set. "
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
    data.add_argument("--samples", type=int, help=f"images per class for sim: data (default {d.samples}); "
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deeplense_tf.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=None)
    d, m, t = DataConfig(), ModelConfig(), TrainConfig()
    add_data_flags(p.add_argument_group("Data"))
    model = p.add_argument_group("Model")
    model.add_argument("--arch", help=f"architecture name, see --list-archs (default {m.arch}; "
                       "for --task anomaly conv_autoencoder or vae, default conv_autoencoder)")
    model.add_argument("--task", choices=TASKS, help=f"what to learn (default {m.task})")
    model.add_argument("--weights", help="none (train from scratch, default), imagenet (needs a network "
                       "or ~/.keras/models), or a local weights file")
    model.add_argument("--dropout", type=float, help=f"dropout in the head (default {m.dropout})")
    model.add_argument("--fc-units", type=int, nargs=2, metavar=("N1", "N2"),
                       help=f"widths of the regression head's two Dense layers (default {m.fc_units})")
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
    opt = p.add_argument_group("Optimisation")
    opt.add_argument("--epochs", type=int, help=f"training epochs (default {t.epochs})")
    opt.add_argument("--batch-size", type=int, help=f"images per optimiser step, all GPUs and workers together "
                     f"(default {t.batch_size})")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, help=f"(default {t.optimizer}); sgd uses Nesterov momentum (--momentum)")
    opt.add_argument("--lr", type=float, help=f"peak learning rate (default {t.lr})")
    opt.add_argument("--weight-decay", type=float, help=f"AdamW decoupled weight decay (default {t.weight_decay})")
    opt.add_argument("--schedule", choices=SCHEDULES,
                     help=f"learning-rate schedule (default {t.schedule}: linear warm-up then cosine to 1%%); onecycle; "
                     "plateau halves the rate after 2 epochs without improvement; constant")
    opt.add_argument("--warmup-epochs", type=float, help=f"cosine warm-up length (default {t.warmup_epochs})")
    opt.add_argument("--momentum", type=float, help=f"SGD Nesterov momentum (default {t.momentum})")
    opt.add_argument("--clipnorm", type=float, help="clip each step's gradient to this global norm (default: off)")
    opt.add_argument("--sam", dest="sam_rho", type=float, metavar="RHO",
                     help="sharpness-aware minimisation around the optimiser, radius RHO (e.g. 0.05; two passes a step)")
    opt.add_argument("--loss", choices=[v for v in LOSSES if v],
                     help="regression loss on the target in its own units (default mse)")
    opt.add_argument("--label-smoothing", type=float, help="classification / lens finding (default 0)")
    opt.add_argument("--class-weights", choices=CLASS_WEIGHTS,
                     help="balanced: weight images by inverse class frequency (classification, lens finding)")
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
    run = p.add_argument_group("Run")
    run.add_argument("--cache", metavar="memory|PATH",
                     help="per-file .npy data: keep decoded images after epoch 1 in memory or in a cache file")
    run.add_argument("--nondeterministic", dest="deterministic", action="store_false", default=None,
                     help="let parallel reads deliver batches out of order: faster, not reproducible")
    run.add_argument("--seed", type=int, help=f"seeds data, split, initialisation and augmentation (default {t.seed})")
    run.add_argument("--device", choices=DEVICES, help="cpu, gpu (all local GPUs, mirrored), auto (default)")
    run.add_argument("--strategy", choices=STRATEGIES,
                     help="auto (default): mirrored over several local GPUs, else none; mirrored: all local GPUs "
                     "(or the CPU); one-device: first GPU or the CPU; multiworker: several machines described by "
                     "the TF_CONFIG environment variable (README, 'Several machines'). --batch-size is always "
                     "the global batch, split over GPUs and workers")
    run.add_argument("--jit-compile", action="store_true", default=None,
                     help="XLA compilation: off by default, it made CPU training 5-7x slower; try it on GPUs")
    run.add_argument("--out", help=f"parent folder of run directories (default {t.out}/)")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR",
                     help="continue an interrupted run from its last checkpoint with its saved config")
    run.add_argument("--config", type=Path, help="a config.json whose values become the defaults")
    run.add_argument("--list-archs", nargs="?", const="*", metavar="PATTERN",
                     help="list the architecture names (optionally matching a glob pattern) and exit")
    return p


DEFAULT_ANOMALY_ARCH = "conv_autoencoder"
# Every config field whose name is also a flag's dest: adding a field and its flag is enough.
FLAG_FIELDS = {section: tuple(f.name for f in dataclasses.fields(cls))
               for section, cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig))}


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults <- --config file <- flags given on the command line."""
    from deeplense_tf.config import replace

    base = RunConfig.load(args.config) if args.config else RunConfig()
    changes = {section: {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}
               for section, fields in FLAG_FIELDS.items()}
    if changes["model"].get("weights") in ("none", ""):
        changes["model"]["weights"] = None
    if changes["model"].get("task") == "anomaly" and "arch" not in changes["model"]:
        changes["model"]["arch"] = DEFAULT_ANOMALY_ARCH
    return replace(base, **{k: v for k, v in changes.items() if v})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_archs:
        return run_cli(lambda: print_archs(args.list_archs))
    prepare_environment()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a scheduler's SIGTERM stops like Ctrl-C

    def job():
        from deeplense_tf.trainer import resume_run, train_run

        if args.resume:
            return resume_run(args.resume, epochs=args.epochs)
        return train_run(config_from_args(args))

    return run_cli(job)


def print_archs(pattern: str) -> None:
    """Name, family, backbone parameters at 64x64x1 (cached table, param_counts.py), sizes, source."""
    prepare_environment()
    from deeplense_tf.models.param_counts import format_count, load_table, param_count
    from deeplense_tf.models.registry import ARCHS, list_archs

    names, table = list_archs(pattern), load_table()
    print(f"{'name':<28} {'family':<16} {'params@64':>9}  {'min':>5}  {'default':>7}  source")
    for name in names:
        spec = ARCHS[name]
        params = format_count(param_count(name, table))
        sizes = f"{spec.min_size:>3}px  {spec.default_size:>5}px"
        print(f"{name:<28} {spec.family:<16} {params:>9}  {sizes}  {spec.source}")
    print(f"{len(names)} architectures", file=sys.stderr)
    from deeplense_tf.models.autoencoders import AUTOENCODERS

    for spec in AUTOENCODERS.values():
        if fnmatch.fnmatch(spec.name, pattern):
            print(f"{spec.name:<28} {'autoencoder':<16} --task anomaly: {spec.description}")


if __name__ == "__main__":
    sys.exit(main())
