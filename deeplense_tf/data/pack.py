"""Convert any readable layout into the project's shards (``deeplense_tf.data.shards``).

    python -m deeplense_tf.data.pack SRC DST [--shard-size N]

``SRC`` is anything ``load_data`` reads (class folders, train/test folders, packed arrays, an
HDF5 catalogue, FITS cut-outs, several of them comma-separated, ``sim:<preset>``). ``DST`` gets
``shard-*.npy``, ``metadata.csv`` and ``pack.json`` (written last); see ``shards.py`` for the
format and why it is the fastest input.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from deeplense_tf.cli import command_parser, run_cli
from deeplense_tf.data.shards import write_shards
from deeplense_tf.data.sources import load_data


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m deeplense_tf.data.pack", __doc__)
    p.add_argument("src", help="data to convert (any layout --data accepts; several comma-separated)")
    p.add_argument("dst", type=Path, help="output folder for shards, metadata.csv and pack.json")
    p.add_argument("--shard-size", type=int, help="images per shard (default: about 64 MiB per shard)")
    p.add_argument("--seed", type=int, default=0, help="seed of the one-time row shuffle")
    p.add_argument("--keep-order", action="store_true", help="keep the source's row order instead of shuffling")
    p.add_argument("--allow-pickle", action="store_true", help="read pickled .npy files (runs code from the file)")
    p.add_argument("--label-column", help="catalogue column with the labels (HDF5 / FITS CSV / packed arrays)")
    p.add_argument("--validate", choices=("full", "quick"), default="full",
                   help="full: check every pixel; quick: headers only")
    p.add_argument("--skip-bad", action="store_true", help="leave bad files out (listed in DST/skipped.csv)")
    p.add_argument("--workers", type=int, help="reader threads (default: 2 per core, at most 8)")
    p.add_argument("--overwrite", action="store_true", help="replace shards already in DST")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def job():
        started = time.perf_counter()
        index = load_data(args.src, allow_pickle=args.allow_pickle, label_column=args.label_column,
                          validate=args.validate, skip_bad=args.skip_bad, workers=args.workers, stream=None)
        print(f"read {index.describe()}")
        manifest = write_shards(index, args.dst, shard_size=args.shard_size,
                                seed=None if args.keep_order else args.seed, overwrite=args.overwrite)
        if index.skipped:
            pd.DataFrame(index.skipped, columns=["file", "problem"]).to_csv(args.dst / "skipped.csv", index=False)
            print(f"left out {len(index.skipped)} bad file(s), listed in {args.dst / 'skipped.csv'}")
        seconds = time.perf_counter() - started
        print(f"packed {manifest['count']} images {tuple(manifest['image_shape'])} into {len(manifest['shards'])} "
              f"shard(s) of {manifest['shard_size']} in {args.dst} ({seconds:.1f} s); "
              f"train on it with --data {args.dst}")

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
