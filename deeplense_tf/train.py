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
import signal
import sys

from deeplense_tf.cli import callable_as, config_from_args, prepare_environment, run_cli, train_parser


def build_parser() -> argparse.ArgumentParser:
    p = train_parser("python -m deeplense_tf.train", __doc__)
    p.add_argument("--list-archs", nargs="?", const="*", metavar="PATTERN",
                   help="list the architecture names (optionally matching a glob pattern) and their tasks, and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_archs:
        return run_cli(lambda: print_archs(args.list_archs))
    prepare_environment(args.verbose)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a scheduler's SIGTERM stops like Ctrl-C

    def job():
        from deeplense_tf.training.trainer import resume_run, train_run

        if args.resume:
            return resume_run(args.resume, epochs=args.epochs)
        return train_run(config_from_args(args))

    return run_cli(job)


def print_archs(pattern: str) -> None:
    """Name, family, tasks, ImageNet weights, parameters at 64x64x1 (cached table, param_counts.py),
    sizes and source of every registered architecture (autoencoders included)."""
    prepare_environment()
    from deeplense_tf.models.param_counts import format_count, load_table, param_count
    from deeplense_tf.models.registry import ARCHS, SUPERVISED_TASKS, list_archs

    names, table = list_archs(pattern), load_table()
    print(f"{'name':<22} {'family':<14} {'tasks':<10} {'imagenet':<8} {'params@64':>9}  {'min':>5}  {'default':>7}  "
          "source")
    for name in names:
        spec = ARCHS[name]
        tasks = "supervised" if spec.tasks == SUPERVISED_TASKS else ",".join(spec.tasks)
        params = format_count(param_count(name, table))
        sizes = f"{spec.min_size:>3}px  {spec.default_size:>5}px"
        print(f"{name:<22} {spec.family:<14} {tasks:<10} {'yes' if spec.has_imagenet else 'no':<8} {params:>9}  "
              f"{sizes}  {spec.source}")
    print(f"{len(names)} architectures (supervised: --task regression, classification or lens_finding; "
          "anomaly: --task anomaly; imagenet yes: --weights imagenet is allowed)", file=sys.stderr)


def api_train(*args, **kwargs):
    """``deeplense_tf.train(...)``: the Python API's ``train`` (``api.py``)."""
    from deeplense_tf.api import train  # TensorFlow loads on the first call: --help stays fast

    return train(*args, **kwargs)


callable_as(__name__, api_train)

if __name__ == "__main__":
    sys.exit(main())
