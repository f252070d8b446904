"""The simulator's command: ``python -m deeplense_tf.data.simulate --help``.

The engine is ``deeplense_tf.sim`` (no TensorFlow); this command adds the argument parsing and
``--format shards`` (``simulate_packed``): the images drawn exactly as for the DeepLense layout
(same per-index seeds) into a hidden staging folder ``OUT/.simulation/`` (resumable: an
interrupted run continues there), then checked and packed by ``shards.write_shards``
(``shard-*.npy`` + ``metadata.csv`` + ``pack.json``, written last); the staging folder is then
removed. ``--shard K/N`` packs its index range into ``OUT/part-K-of-N/``; ``--data OUT`` joins
the parts and names any part that is still missing. lenstronomy and astropy load when the
first image is drawn, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from deeplense_tf.cli import command_parser
from deeplense_tf.data.shards import MANIFEST, part_name, write_shards
from deeplense_tf.data.sources import load_data
from deeplense_tf.errors import ConfigError, UserError
from deeplense_tf.sim.generate import check_args, simulate
from deeplense_tf.sim.physics import GEOMETRIES, NOISE_MODES, PRESETS

STAGING = ".simulation"
FORMATS = ("deeplense", "shards")

EPILOG = """\
Output: OUT/<class>/<class>_<index>.npy (float32 (H, W) arrays, (H, W, 4) for
lens_finding_ground; never pickled) and
OUT/metadata.csv (one row per image with every sampled parameter: class, axion mass and
log10 mass, vortex half-length and mass, number and total mass of subhalos, their mass fraction
f_sub, main-halo mass log10_halo_mass, Einstein radius, source position/magnitude/size, exposure,
seed). The presets <model>_halo, <model>_fsub and <model>_vortex draw the main-halo mass, the
subhalo abundance (cdm only) or the vortex mass over a range (README "Simulated targets"). Image <index> of a class depends only on
(--seed, class, index): any --workers and any --shard split give the same images.
An interrupted run resumes when started again with the same arguments.
--format shards instead writes the project's packed shards (OUT/shard-*.npy,
OUT/metadata.csv, OUT/pack.json; with --shard K/N one OUT/part-K-of-N/ per job),
the fastest input for training: python -m deeplense_tf.train --data OUT.

Example (a SLURM job array of 8 tasks, #SBATCH --array=0-7, filling one folder):
  python -m deeplense_tf.data.simulate --preset model_ii --samples 30000 --seed 0 \\
      --out /scratch/model_ii --shard $SLURM_ARRAY_TASK_ID/8
"""


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N), K counting from 0 (as SLURM_ARRAY_TASK_ID=0.. and Kubernetes indexed jobs)."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like K/N, e.g. 0/4; received: {text!r}") from None
    check_args("model_ii", 1, 0, "on", "deeplensesim", None, (k, n))
    return k, n


def simulate_packed(preset: str, n_per_class: int, seed: int, out: str | Path, workers: int | None = None,
                    noise: str = "on", progress: bool = True, geometry: str = "deeplensesim",
                    shard: tuple[int, int] | None = None, shard_size: int | None = None) -> Path:
    """Simulate (or, with ``shard``, simulate part K of N) and pack; return the packed folder."""
    p = check_args(preset, n_per_class, seed, noise, geometry, workers, shard)
    if shard is not None and shard[1] > n_per_class:
        raise ConfigError(f"--format shards needs at least one image per class in every part: --shard K/N with "
                          f"N <= --samples ({n_per_class}); received N={shard[1]}")
    target = Path(out) if shard is None else Path(out) / part_name(*shard)
    recipe = {"preset": p.name, "n_per_class": int(n_per_class), "seed": int(seed), "noise": noise,
              "geometry": geometry, "shard": list(shard) if shard else None}
    if (target / MANIFEST).is_file():
        done = json.loads((target / MANIFEST).read_text()).get("simulation")
        if done == recipe:
            return target  # finished earlier: nothing to do
        raise ConfigError(f"{target} already holds packed data ({done or 'not from the simulator'}); "
                          f"requested {recipe}. Choose another --out.")
    foreign = sorted(c.name for c in target.iterdir() if not _ours(c.name)) if target.is_dir() else []
    if foreign:
        raise ConfigError(f"--out {target} holds other files ({', '.join(foreign[:5])}); choose an empty folder "
                          "(--format shards writes shard-*.npy, metadata.csv and pack.json there)")
    staging = target / STAGING
    simulate(p.name, n_per_class, seed, staging, workers=workers, noise=noise, progress=progress,
             geometry=geometry, shard=shard)
    if shard is not None:  # this part's rows only: the staging folder holds no other images
        k, n = shard
        shutil.copyfile(staging / f"metadata-shard-{k:04d}-of-{n:04d}.csv", staging / "metadata.csv")
    index = load_data(str(staging), workers=workers, seed=seed)
    write_shards(index, target, shard_size=shard_size, seed=seed, overwrite=True,
                 extra={"simulation": recipe, "source": f"python -m deeplense_tf.data.simulate ({p.name})"})
    shutil.rmtree(staging, ignore_errors=True)
    return target


def _ours(name: str) -> bool:
    """What an interrupted run of ours may have left in its folder (and may resume or replace)."""
    return name in (STAGING, "metadata.csv") or name.startswith(("shard-", "pack.json"))


def build_parser() -> argparse.ArgumentParser:
    ap = command_parser(
        "python -m deeplense_tf.data.simulate",
        "Simulate strong-lensing images with lenstronomy: the DeepLense substructure classes\n"
        "no_sub / cdm / axion (Models I-III) or lens / non_lens stamps (lens finding).", epilog=EPILOG)
    presets = "; ".join(f"{name}: {p.description}" for name, p in PRESETS.items())
    ap.add_argument("--preset", required=True, metavar="NAME",
                    help=f"data set recipe. {presets}")
    ap.add_argument("--samples", "--n", type=int, required=True,
                    help="images per class (train's --samples; --n is the older spelling)")
    ap.add_argument("--seed", type=int, default=0,
                    help="master seed (non-negative); each image gets its own seed from (seed, class, index)")
    ap.add_argument("--out", required=True, help="output folder (created; an existing run there is resumed)")
    ap.add_argument("--workers", type=int, default=None,
                    help="worker processes (default: all cores); does not change the images")
    ap.add_argument("--noise", choices=NOISE_MODES, default="on",
                    help="on: the preset's noise is added (Models II/III: sky + read-out "
                         "background and Poisson noise of the instrument; Model I: background and photon "
                         "counts). off: noiseless model image (Model I: expected counts). published: "
                         "reproduces the released DeepLense data: for Model II/III twice the noiseless image "
                         "and no noise (the published code computes the noise and never adds it); for "
                         "Model I its doubled Poisson term")
    ap.add_argument("--geometry", choices=GEOMETRIES, default="deeplensesim",
                    help="deeplensesim: Einstein radius from luminosity distances (1.28\" for "
                         "1e12 Msun) and, in Models II/III, lenstronomy's z_source_convention 2.5, as "
                         "DeepLenseSim did (rings match the released data). physical: angular-diameter "
                         "distances (1.66\") defined at the true source redshift 1.0. "
                         "Lens-finding presets draw their Einstein radii directly and ignore it")
    ap.add_argument("--shard", metavar="K/N", default=None,
                    help="write only the K-th (from 0) of N contiguous index ranges of every class, with "
                         "the same per-image seeds as the full set; all shards may share one --out, the "
                         "last one to finish joins their metadata into metadata.csv")
    ap.add_argument("--format", choices=FORMATS, default="deeplense",
                    help="deeplense: OUT/<class>/*.npy + metadata.csv, the released data's layout. "
                         "shards: the same images packed as python -m deeplense_tf.data.pack writes them "
                         "(memory-mapped .npy shards, the fastest for training); drawn in OUT/.simulation/ "
                         "first, which is removed once packed")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        shard = parse_shard(args.shard) if args.shard else None
        start = time.perf_counter()
        make = simulate_packed if args.format == "shards" else simulate
        out = make(args.preset, args.samples, args.seed, args.out, workers=args.workers, noise=args.noise,
                       progress=not args.no_progress, geometry=args.geometry, shard=shard)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    print(f"wrote {args.preset} ({args.samples} per class, seed {args.seed}, {args.format} format) to {out} "
          f"in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
