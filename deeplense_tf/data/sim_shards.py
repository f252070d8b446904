"""``simulate --format shards``: the simulator's images as the project's packed shards (``pack.py``).

    python -m deeplense_tf.data.simulate --preset model_ii --n 10000 --out data/model_ii --format shards

The images are drawn exactly as for the DeepLense layout (same per-index seeds) into a hidden
staging folder ``OUT/.simulation/`` (resumable: an interrupted run continues there), then checked
and packed by ``pack.write_shards`` (``shard-*.npy`` + ``metadata.csv`` + ``pack.json``, written
last) and the staging folder is removed. ``--shard K/N`` packs its index range into
``OUT/part-K-of-N/``; ``--data OUT`` joins the parts and names any part that is still missing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import ConfigError
from .simulate import _check_args, simulate

STAGING = ".simulation"
FORMATS = ("deeplense", "shards")


def simulate_packed(preset: str, n_per_class: int, seed: int, out: str | Path, workers: int | None = None,
                    noise: str = "on", progress: bool = True, geometry: str = "deeplensesim",
                    shard: tuple[int, int] | None = None, shard_size: int | None = None) -> Path:
    """Simulate (or, with ``shard``, simulate part K of N) and pack; return the packed folder."""
    from .pack import MANIFEST, part_name, write_shards
    from .sources import load_data

    p = _check_args(preset, n_per_class, seed, noise, geometry, workers, shard)
    if shard is not None and shard[1] > n_per_class:
        raise ConfigError(f"--format shards needs at least one image per class in every part: --shard K/N with "
                          f"N <= --n ({n_per_class}); received N={shard[1]}")
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
