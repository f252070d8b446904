"""Train a model on lensing images, evaluate it on a held-out test split and export it.

    python -m deeplense_tf.train --arch efficientnet_b0

With no other flag: regression of log10 axion mass on a simulated DeepLense Model II set
(600 images per class, generated once with lenstronomy and cached), 8 epochs at batch 32.
These defaults finish in under ~10 minutes on a 2-core CPU; on a GPU raise --samples
(e.g. 10000) and --epochs (e.g. 50). Everything goes to runs/<arch>-<task>-<time>/.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import signal
import sys
from pathlib import Path

from deeplense_tf.cli import prepare_environment, run_cli
from deeplense_tf.config import DEVICES, OPTIMIZERS, TASKS, DataConfig, ModelConfig, RunConfig, TrainConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deeplense_tf.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=None)
    d, m, t = DataConfig(), ModelConfig(), TrainConfig()
    data = p.add_argument_group("Data")
    data.add_argument("--data", help=f"class folders, images.npy/.npz, or sim:<preset> (default {d.data})")
    data.add_argument("--samples", type=int, help=f"images per class for sim: data (default {d.samples}); "
                      "regression uses the axion class only")
    data.add_argument("--image-size", type=int, help="model input side; images are resized inside the model "
                      "(default: their own size, raised to the architecture's minimum)")
    data.add_argument("--target", help=f"regression target column (default {d.target})")
    data.add_argument("--allow-pickle", action="store_true", default=None,
                      help="read pickled .npy files (DeepLense axion files): unpickling runs code from the file")
    data.add_argument("--normal-class", help="--task anomaly: the class the autoencoder learns (default no_sub)")
    data.add_argument("--workers", type=int, help="processes for simulation / threads for reading (default: all cores)")
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
    opt = p.add_argument_group("Optimisation")
    opt.add_argument("--epochs", type=int, help=f"training epochs (default {t.epochs})")
    opt.add_argument("--batch-size", type=int, help=f"images per step (default {t.batch_size})")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, help=f"(default {t.optimizer}); sgd uses Nesterov momentum 0.9")
    opt.add_argument("--lr", type=float, help=f"learning rate (default {t.lr}); halved when val loss stalls")
    opt.add_argument("--weight-decay", type=float, help=f"AdamW decoupled weight decay (default {t.weight_decay})")
    run = p.add_argument_group("Run")
    run.add_argument("--seed", type=int, help=f"seeds data, split, initialisation and augmentation (default {t.seed})")
    run.add_argument("--device", choices=DEVICES, help="cpu, gpu (all local GPUs, mirrored), auto (default)")
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
    from deeplense_tf.models.registry import ARCHS, list_archs

    names = list_archs(pattern)
    for name in names:
        spec = ARCHS[name]
        print(f"{name:<28} {spec.family:<16} default {spec.default_size:>3}px  min {spec.min_size:>3}px  {spec.source}")
    print(f"{len(names)} architectures", file=sys.stderr)
    from deeplense_tf.models.autoencoders import AUTOENCODERS

    for spec in AUTOENCODERS.values():
        if fnmatch.fnmatch(spec.name, pattern):
            print(f"{spec.name:<28} {'autoencoder':<16} --task anomaly: {spec.description}")


if __name__ == "__main__":
    sys.exit(main())
