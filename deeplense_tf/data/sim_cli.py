"""Command line of the simulator: ``python -m deeplense_tf.data.simulate --help``.

Only argparse and the preset table are imported before the arguments are parsed; lenstronomy
and astropy load when the first image is drawn.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..errors import UserError
from .sim_physics import GEOMETRIES, NOISE_MODES, PRESETS

EPILOG = """\
Output: OUT/<class>/<class>_<index>.npy (float32 (H, W) arrays, (H, W, 4) for
lens_finding_ground; never pickled) and
OUT/metadata.csv (one row per image with every sampled parameter: class, axion mass and
log10 mass, vortex half-length, number and total mass of subhalos, Einstein radius, source
position/magnitude/size, exposure, seed). Image <index> of a class depends only on
(--seed, class, index): any --workers and any --shard split give the same images.
An interrupted run resumes when started again with the same arguments.
--format shards instead writes the project's packed shards (OUT/shard-*.npy,
OUT/metadata.csv, OUT/pack.json; with --shard K/N one OUT/part-K-of-N/ per job),
the fastest input for training: python -m deeplense_tf.train --data OUT.

Example (a SLURM job array of 8 tasks, #SBATCH --array=0-7, filling one folder):
  python -m deeplense_tf.data.simulate --preset model_ii --n 30000 --seed 0 \\
      --out /scratch/model_ii --shard $SLURM_ARRAY_TASK_ID/8
"""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m deeplense_tf.data.simulate",
        description="Simulate strong-lensing images with lenstronomy: the DeepLense substructure classes "
                    "no_sub / cdm / axion (Models I-III) or lens / non_lens stamps (lens finding).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    presets = "; ".join(f"{name}: {p.description}" for name, p in PRESETS.items())
    ap.add_argument("--preset", required=True, metavar="NAME",
                    help=f"data set recipe. {presets}")
    ap.add_argument("--n", type=int, required=True, help="number of images per class")
    ap.add_argument("--seed", type=int, default=0,
                    help="master seed (non-negative); each image gets its own seed from (seed, class, index)")
    ap.add_argument("--out", required=True, help="output folder (created; an existing run there is resumed)")
    ap.add_argument("--workers", type=int, default=None,
                    help="worker processes (default: all cores); does not change the images")
    ap.add_argument("--noise", choices=NOISE_MODES, default="on",
                    help="on (default): the preset's noise is added (Models II/III: sky + read-out "
                         "background and Poisson noise of the instrument; Model I: background and photon "
                         "counts). off: noiseless model image (Model I: expected counts). published: "
                         "reproduces the released DeepLense data: for Model II/III twice the noiseless image "
                         "and no noise (the published code computes the noise and never adds it); for "
                         "Model I its doubled Poisson term")
    ap.add_argument("--geometry", choices=GEOMETRIES, default="deeplensesim",
                    help="deeplensesim (default): Einstein radius from luminosity distances (1.28\" for "
                         "1e12 Msun) and, in Models II/III, lenstronomy's z_source_convention 2.5, as "
                         "DeepLenseSim did (rings match the released data). physical: angular-diameter "
                         "distances (1.66\") defined at the true source redshift 1.0. "
                         "Lens-finding presets draw their Einstein radii directly and ignore it")
    ap.add_argument("--shard", metavar="K/N", default=None,
                    help="write only the K-th (from 0) of N contiguous index ranges of every class, with "
                         "the same per-image seeds as the full set; all shards may share one --out, the "
                         "last one to finish joins their metadata into metadata.csv")
    ap.add_argument("--format", choices=("deeplense", "shards"), default="deeplense",
                    help="deeplense (default): OUT/<class>/*.npy + metadata.csv, the released data's layout. "
                         "shards: the same images packed as python -m deeplense_tf.data.pack writes them "
                         "(memory-mapped .npy shards, the fastest for training); drawn in OUT/.simulation/ "
                         "first, which is removed once packed")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .simulate import parse_shard, simulate

    try:
        shard = parse_shard(args.shard) if args.shard else None
        start = time.perf_counter()
        if args.format == "shards":
            from .sim_shards import simulate_packed as simulate
        out = simulate(args.preset, args.n, args.seed, args.out, workers=args.workers, noise=args.noise,
                       progress=not args.no_progress, geometry=args.geometry, shard=shard)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    print(f"wrote {args.preset} (n={args.n} per class, seed {args.seed}, {args.format} format) to {out} "
          f"in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
