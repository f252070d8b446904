"""The lenstronomy simulator of the DeepLense data sets (Models I-III), without pyHalo or TensorFlow.

    python -m deeplense_tf.data.simulate --preset model_ii --samples 1000 --seed 0 --out data/model_ii

writes ``<out>/<class>/<class>_<index>.npy`` (plain float32 (H, W) arrays, never pickled) and
``<out>/metadata.csv`` (one row per image: every sampled parameter, for regression targets).
Image ``index`` of class ``c`` is drawn from its own generator,
``SeedSequence(seed, spawn_key=(class_position, index))``, so a set does not depend on the
number of workers, and ``--shard K/N`` runs joined equal one run. Recipes: ``physics``;
lenstronomy rendering and noise: ``render``; worker processes: ``workers``.

Ring check (brightness-weighted radius of the mean max-normalised no_sub image, the measure of
``shared/acceptance/03-simulator``; n=30, seed 3, lenstronomy 1.14.2, 2026-11-22):
model_ii 7.48 px with noise "on", "off" and "published" (DeepLenseSim reference sample: 7.50 px);
model_i 24.99 px "on", 24.99 px "off", 24.98 px "published" (reference: 24.99 px);
model_iii 9.49 px (no reference). Presets lens_finding / lens_finding_ground: ``lens_finding``;
their survey variants (confusers, lensed quasars, per-image seeing): ``lens_survey``;
an endless stream of fresh images for training: ``stream.stream``; the command line:
``deeplense_tf/data/simulate.py``. No TensorFlow here (import-linter checks it).
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import socket
import uuid
from concurrent.futures import as_completed
from pathlib import Path

import numpy as np

from deeplense_tf.errors import ConfigError
from deeplense_tf.sim import lens_finding, lens_survey, physics
from deeplense_tf.sim import render as rendering  # `render` is simulate_one's flag
from deeplense_tf.sim.physics import CLASSES, GEOMETRIES, NOISE_MODES, PRESETS, Preset
from deeplense_tf.sim.workers import default_workers, pool_context, process_pool

__all__ = ["PRESETS", "CLASSES", "Preset", "simulate", "cached_simulation", "merge_shards",
           "image_rng", "simulate_one"]

MANIFEST = "simulation.json"
# what draws and renders the images of each Preset.kind
SIMULATORS = {"deeplense": (physics.draw, rendering.get_renderer),
              "lens_finding": (lens_finding.draw, lens_finding.get_renderer),
              "lens_survey": (lens_survey.draw, lens_survey.get_renderer)}


def cache_dir() -> Path:
    """Where generated data lives: ``$DEEPLENSE_TF_CACHE`` or ``~/.cache/deeplense_tf``."""
    root = os.environ.get("DEEPLENSE_TF_CACHE") or Path.home() / ".cache" / "deeplense_tf"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        close = difflib.get_close_matches(str(name), PRESETS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}.{hint}")
    return PRESETS[name]


def image_rng(seed: int, class_position: int, index: int) -> np.random.Generator:
    """The generator of one image: depends on (seed, class, index) only."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(class_position, index)))


def simulate_one(preset: str | Preset, cls: str, index: int, seed: int, noise: str = "on",
                 geometry: str = "deeplensesim", render: bool = True):
    """Image ``index`` of class ``cls``: (float32 image or None when not ``render``, metadata dict)."""
    p = preset if isinstance(preset, Preset) else get_preset(preset)
    draw, get_renderer = SIMULATORS[p.kind]
    rng = image_rng(seed, p.classes.index(cls), index)
    params, meta = draw(p, cls, geometry, rng)
    renderer = get_renderer(p, cls, geometry)
    params = renderer.prepare(params, meta)
    meta = {"class": cls, "index": index, "seed": seed, "preset": p.name, "noise": noise,
            "geometry": geometry, **meta}
    return (renderer.render(params, meta, rng, noise) if render else None), meta


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
    os.replace(tmp, path)  # a reader never sees a half-written file


def _run_chunk(job: dict) -> list[dict]:
    """Render (or, for files already there, only re-draw the metadata of) a list of indices."""
    out, cls, width = Path(job["out"]), job["cls"], job["width"]
    rows = []
    for index in job["indices"]:
        rel = f"{cls}/{cls}_{index:0{width}d}.npy"
        exists = (out / rel).exists()
        image, meta = simulate_one(job["preset"], cls, index, job["seed"], job["noise"], job["geometry"],
                                   render=not exists)
        if image is not None:
            _save_atomic(out / rel, image)
        rows.append({"file": rel, **meta})
    return rows


def check_args(preset, n_per_class, seed, noise, geometry, workers, shard) -> Preset:
    p = get_preset(preset)
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise ConfigError(f"n_per_class (--samples) must be a positive integer; received: {n_per_class!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer; received: {seed!r}")
    if noise not in NOISE_MODES:
        raise ConfigError(f"noise must be one of {', '.join(NOISE_MODES)}; received: {noise!r}")
    if noise == "published" and p.kind != "deeplense":
        raise ConfigError(f"noise 'published' reproduces the released DeepLense Model I-III data; preset "
                          f"{p.name} has no published version: use 'on' or 'off'")
    if geometry not in GEOMETRIES:
        raise ConfigError(f"geometry must be one of {', '.join(GEOMETRIES)}; received: {geometry!r}")
    if workers is not None and (not isinstance(workers, (int, np.integer)) or workers < 1):
        raise ConfigError(f"workers must be a positive integer or None; received: {workers!r}")
    if shard is not None:
        k, n = shard
        if not (n >= 1 and 0 <= k < n):
            raise ConfigError(f"shard K/N needs 0 <= K < N (K counts from 0); received: {k}/{n}")
    return p


def _prepare_out(out: Path, manifest: dict, p: Preset, clean_tmp: bool) -> None:
    """Create the folders; refuse to mix two different simulations in one folder (resuming is fine)."""
    try:
        for cls in p.classes:
            (out / cls).mkdir(parents=True, exist_ok=True)
        path = out / MANIFEST
        if path.exists():
            old = json.loads(path.read_text())
            if old != manifest:
                raise ConfigError(f"{out} already holds a different simulation ({old}); "
                                  f"requested {manifest}. Choose another --out.")
        else:
            if any(next((out / c).glob("*.npy"), None) for c in p.classes):
                raise ConfigError(f"{out} holds .npy files but no {MANIFEST}: choose an empty --out")
            tmp = out / f".{MANIFEST}.tmp-{os.getpid()}"
            tmp.write_text(json.dumps(manifest, indent=1))
            os.replace(tmp, path)
        if clean_tmp:  # leftovers of an interrupted run
            for cls in p.classes:
                for f in (out / cls).glob(".*.tmp-*"):
                    f.unlink(missing_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot write the simulation to --out {out}: {e}") from None


def _jobs(p: Preset, ranges: range, n_per_class, seed, noise, geometry, out, workers) -> list[dict]:
    total = len(ranges) * len(p.classes)
    size = int(min(50, max(1, -(-total // (workers * 8)))))
    width = max(5, len(str(n_per_class - 1)))
    per_class = [[{"preset": p.name, "cls": c, "indices": list(ranges[i:i + size]), "seed": seed,
                   "noise": noise, "geometry": geometry, "out": str(out), "width": width}
                  for i in range(0, len(ranges), size)] for c in p.classes]
    # round robin over classes: even load and an honest images/s from the start
    return [j for group in zip(*per_class) for j in group]


def _build_renderers_here(jobs: list[dict]) -> None:
    """Import lenstronomy and build each class's renderer in this process, before forking.

    Forked workers inherit both, so the ~3-4 s of imports and set-up are paid once, not once
    per worker (for Model I at 150 per class that was a third of the run). Drawing without
    rendering leaves every image's generator untouched: the images do not change.
    """
    for preset, cls, geometry in dict.fromkeys((j["preset"], j["cls"], j["geometry"]) for j in jobs):
        simulate_one(preset, cls, 0, 0, geometry=geometry, render=False)


def _execute(jobs: list[dict], workers: int, progress: bool, desc: str) -> list[dict]:
    from tqdm.auto import tqdm

    rows = []
    with tqdm(total=sum(len(j["indices"]) for j in jobs), unit="img", desc=desc, disable=not progress,
              smoothing=0.1) as bar:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                rows += _run_chunk(job)
                bar.update(len(job["indices"]))
            return rows
        if pool_context().get_start_method() == "fork":
            _build_renderers_here(jobs)
        with process_pool(min(workers, len(jobs))) as pool:
            futures = {pool.submit(_run_chunk, job): job for job in jobs}
            for future in as_completed(futures):
                rows += future.result()
                bar.update(len(futures[future]["indices"]))
    return rows


def _write_csv(rows: list[dict], path: Path, classes: tuple[str, ...]) -> None:
    import pandas as pd

    df = pd.DataFrame(rows)
    df["_order"] = df["class"].map(classes.index)
    df = df.sort_values(["_order", "index"], kind="stable").drop(columns="_order")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def merge_shards(out: str | Path, n_shards: int) -> bool:
    """Join ``metadata-shard-K-of-N.csv`` into ``metadata.csv`` once all N shards are there."""
    import pandas as pd

    out = Path(out)
    parts = sorted(out.glob(f"metadata-shard-*-of-{n_shards:04d}.csv"))
    if len(parts) != n_shards:
        return False
    manifest = json.loads((out / MANIFEST).read_text())
    frames = [pd.read_csv(f) for f in parts if f.stat().st_size > 0]  # empty: a shard with no indices
    _write_csv(pd.concat(frames).to_dict("records"), out / "metadata.csv", PRESETS[manifest["preset"]].classes)
    return True


def simulate(preset: str, n_per_class: int, seed: int, out: str | Path, workers: int | None = None,
             noise: str = "on", progress: bool = True, geometry: str = "deeplensesim",
             shard: tuple[int, int] | None = None) -> Path:
    """Write ``n_per_class`` images per class (or shard ``(K, N)`` of them) into ``out``; return ``out``.

    Resumable: images already in ``out`` (from the same preset, n, seed, noise and geometry)
    are kept and only their metadata is re-drawn.
    """
    p = check_args(preset, n_per_class, seed, noise, geometry, workers, shard)
    out = Path(out)
    workers = workers or default_workers()
    manifest = {"preset": p.name, "n_per_class": int(n_per_class), "seed": int(seed), "noise": noise,
                "geometry": geometry}
    _prepare_out(out, manifest, p, clean_tmp=shard is None)
    k, n_shards = shard or (0, 1)
    ranges = range(n_per_class * k // n_shards, n_per_class * (k + 1) // n_shards)
    jobs = _jobs(p, ranges, int(n_per_class), int(seed), noise, geometry, out, workers)
    desc = p.name if shard is None else f"{p.name} shard {k}/{n_shards}"
    rows = _execute(jobs, workers, progress, desc)
    if shard is None:
        _write_csv(rows, out / "metadata.csv", p.classes)
    else:
        if rows:
            _write_csv(rows, out / f"metadata-shard-{k:04d}-of-{n_shards:04d}.csv", p.classes)
        else:  # an empty shard (N > n) still reports in, so the join can happen
            (out / f"metadata-shard-{k:04d}-of-{n_shards:04d}.csv").write_text("")
        merge_shards(out, n_shards)  # the last shard to finish writes metadata.csv
    return out


RECIPE_OPTIONS = {"noise": NOISE_MODES, "geometry": GEOMETRIES}


def parse_recipe(text: str) -> dict:
    """``model_ii`` or ``model_ii:noise=published:geometry=physical`` (what follows ``sim:`` in
    ``--data``) -> ``{"preset", "noise", "geometry"}``, checked, so the released data's recipe
    (``noise=published``) is one ``--data`` away from the default."""
    preset, *options = str(text).strip().split(":")
    recipe = {"preset": get_preset(preset).name, "noise": "on", "geometry": "deeplensesim"}
    for option in options:
        key, eq, value = option.partition("=")
        if not eq or key not in RECIPE_OPTIONS or value not in RECIPE_OPTIONS[key]:
            choices = "; ".join(f"{k}={'|'.join(v)}" for k, v in RECIPE_OPTIONS.items())
            raise ConfigError(f"--data sim:{text}: cannot read option {option!r}; options are {choices}, "
                              "e.g. sim:model_ii:noise=published (the released data's recipe)")
        recipe[key] = value
    check_args(recipe["preset"], 1, 0, recipe["noise"], recipe["geometry"], None, None)
    return recipe


def cached_simulation(preset: str, n_per_class: int, seed: int, workers: int | None = None, progress=True,
                      noise: str = "on", geometry: str = "deeplensesim") -> Path:
    """A simulated set under ``cache_dir()/sim``, generated once (atomically) and then reused."""
    check_args(preset, n_per_class, seed, noise, geometry, workers, None)
    key = f"{preset}-n{n_per_class}-s{seed}" + ("" if noise == "on" else f"-noise_{noise}") \
        + ("" if geometry == "deeplensesim" else f"-{geometry}")
    root = cache_dir() / "sim"
    final = root / key
    if (final / "metadata.csv").exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale(root, key)
    tmp = root / f".{key}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        simulate(preset, n_per_class, seed, tmp, workers=workers, noise=noise, progress=progress,
                 geometry=geometry)
        if final.exists() and not (final / "metadata.csv").exists():
            shutil.rmtree(final)  # cannot come from us (we rename whole sets), but never reuse it
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same set first: keep theirs
            if not (final / "metadata.csv").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _remove_stale(root: Path, key: str) -> None:
    """Delete temp dirs of interrupted generations (dead process on this host)."""
    host = socket.gethostname()
    for d in root.glob(f".{key}.tmp-{host}-*"):
        try:
            pid = int(d.name[len(f".{key}.tmp-{host}-"):].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (ValueError, PermissionError):
            pass

