"""Simulator throughput: images/s per preset and worker count, against the published scripts' way.

    python -m pipelines.sim_speed                                  # every preset, 1 and 2 workers
    python -m pipelines.sim_speed --preset model_ii --workers 1 2 4 --samples 200 --markdown

"workers K": ``simulate(preset, n, ...)`` end to end into a fresh folder (process start-up,
lenstronomy import, rendering, the atomic ``.npy`` writes and ``metadata.csv``), images of
all classes divided by the wall time. "rebuilt per image": one process that, like the
DeepLenseSim scripts, builds the cosmology and every lenstronomy class again for each image
(``--baseline-n`` images, the caches emptied before each one; as theirs, one lenstronomy
``POINT_MASS`` per subhalo or vortex point and lenstronomy's whole ``ImageModel.image``).
The published scripts also draw a pyHalo CDM realisation for every image
(``DeepLens.__init__`` calls ``CDM(z_lens, z_source, cone_opening_angle_arcsec=10)`` only to
get a cosmology, for Models I-III alike): where pyHalo imports, "published way" adds the
measured time of that call (mean of ``--pyhalo-n`` draws after one untimed draw) to the
rebuilt-per-image time. Without pyHalo that column is empty and the gain over "rebuilt per
image" is a lower bound. pyHalo >= 1.4 needs a newer lenstronomy than this project's; 1.3.5
imports against lenstronomy 1.14:

    pip install "pyHalo==1.3.5" colossus

The issue's target: at least 5x the published way on the same 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from deeplense_tf.cli import command_parser
from deeplense_tf.sim import lens_finding as sim_lensfinding, physics as sim_physics, render as sim_render
from deeplense_tf.sim.generate import PRESETS, get_preset, simulate, simulate_one


def workers_rate(preset: str, n_per_class: int, workers: int, seed: int = 0) -> float:
    """Images/s of ``simulate`` end to end with ``workers`` processes."""
    out = Path(tempfile.mkdtemp(prefix=f"sim_speed_{preset}_"))
    try:
        start = time.perf_counter()
        simulate(preset, n_per_class, seed, out / "set", workers=workers, progress=False)
        elapsed = time.perf_counter() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return n_per_class * len(get_preset(preset).classes) / elapsed


def _forget_built_objects() -> None:
    sim_render._RENDERERS.clear()
    sim_lensfinding._RENDERERS.clear()
    sim_physics.cosmology.cache_clear()
    sim_physics.einstein_scale.cache_clear()


class _PublishedRenderer(sim_render.Renderer):
    """Renders as the published scripts do: lenstronomy's whole ``ImageModel.image`` (lens light
    and point sources included, though empty), one ``POINT_MASS`` per point (``grouped=False``)."""

    def model(self, kwargs_lens, kwargs_source):
        return self.image_model.image(kwargs_lens, kwargs_source, None, None)


def rebuilt_rate(preset: str, n_images: int, seed: int = 0) -> float:
    """Images/s in one process when every image builds its cosmology and lenstronomy classes anew."""
    classes = get_preset(preset).classes
    _forget_built_objects()  # whatever ran before in this process
    simulate_one(preset, classes[0], 0, seed)  # imports, not counted
    start = time.perf_counter()
    p = get_preset(preset)
    for i in range(n_images):
        _forget_built_objects()
        cls = classes[i % len(classes)]
        if p.kind == "deeplense":  # the published way: one lenstronomy POINT_MASS per subhalo / vortex point
            sim_render._RENDERERS[(p, cls, "deeplensesim")] = _PublishedRenderer(p, cls, "deeplensesim",
                                                                               grouped=False)
        simulate_one(preset, cls, i // len(classes), seed)
    return n_images / (time.perf_counter() - start)


def pyhalo_seconds(n_draws: int) -> tuple[float | None, str]:
    """Mean seconds of the pyHalo CDM realisation the published scripts draw per image, or (None, why)."""
    try:
        try:
            from pyHalo.preset_models import CDM  # the published scripts' import (pyHalo < 1.0)
        except ImportError:
            from pyHalo.PresetModels.cdm import CDM
    except Exception as e:  # absent, or built for another lenstronomy
        return None, f"pyHalo not importable ({type(e).__name__}: {e})"
    CDM(sim_physics.Z_LENS, sim_physics.Z_SOURCE, cone_opening_angle_arcsec=10)  # set-up, not counted
    start = time.perf_counter()
    for _ in range(n_draws):
        CDM(sim_physics.Z_LENS, sim_physics.Z_SOURCE, cone_opening_angle_arcsec=10)
    return (time.perf_counter() - start) / n_draws, f"pyHalo {_installed_version('pyHalo')}"


def _installed_version(distribution: str) -> str:
    """The installed package's version (pyHalo 1.3.5's ``__version__`` still says 0.2.8)."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "?"


def published_rate(rebuilt: float | None, pyhalo_s: float | None) -> float | None:
    """Images/s of the published way: the rebuilt-per-image time plus one pyHalo realisation."""
    if not rebuilt or pyhalo_s is None:
        return None
    return 1.0 / (1.0 / rebuilt + pyhalo_s)


def measure(presets: list[str], workers: list[int], n_per_class: int, baseline_n: int,
            pyhalo_n: int = 0) -> list[dict]:
    rows = []
    pyhalo_s = None
    if pyhalo_n and baseline_n and any(get_preset(p).kind == "deeplense" for p in presets):
        pyhalo_s, why = pyhalo_seconds(pyhalo_n)
        print(f"pyHalo CDM realisation per image: {pyhalo_s:.3f} s ({why})" if pyhalo_s is not None else why,
              flush=True)
    for preset in presets:
        row = {"preset": preset, "rebuilt": rebuilt_rate(preset, baseline_n) if baseline_n else None}
        deeplense = get_preset(preset).kind == "deeplense"  # the presets the published scripts make
        row["published"] = published_rate(row["rebuilt"], pyhalo_s if deeplense else None)
        for k in workers:
            row[k] = workers_rate(preset, n_per_class, k)
        row["load"] = os.getloadavg()[0]
        rows.append(row)
        print(_text_row(row, workers), flush=True)
    return rows


def _text_row(row: dict, workers: list[int]) -> str:
    cells = [f"{row['preset']:<20}"] + [f"{k} worker(s) {row[k]:7.1f} images/s" for k in workers]
    if row["rebuilt"]:
        cells.append(f"rebuilt per image {row['rebuilt']:6.1f} images/s")
    if row.get("published"):
        cells.append(f"published way {row['published']:6.2f} images/s")
    return "  ".join(cells) + f"  load {row['load']:.1f}"


def markdown(rows: list[dict], workers: list[int]) -> str:
    top = max(workers)
    head = ["preset", *[f"{k} worker{'s' if k > 1 else ''} (img/s)" for k in workers],
            "rebuilt per image, 1 process (img/s)", f"gain at {top} workers over rebuilt",
            "published way with pyHalo, 1 process (img/s)", f"gain at {top} workers over published", "load"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["preset"], *[f"{row[k]:.1f}" for k in workers]]
        for base, digits in (("rebuilt", 1), ("published", 2)):
            rate = row.get(base)
            cells += [f"{rate:.{digits}f}", f"{row[top] / rate:.1f}x"] if rate else ["-", "-"]
        cells.append(f"{row['load']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("python -m pipelines.sim_speed", __doc__)
    parser.add_argument("--preset", nargs="+", choices=list(PRESETS), default=list(PRESETS), help="presets to time")
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2], help="worker process counts to time")
    parser.add_argument("--samples", "--n", type=int, default=150,
                        help="images per class for each timed run (--n: the older spelling)")
    parser.add_argument("--baseline-n", type=int, default=30,
                        help="images for the rebuilt-per-image baseline; 0 skips it (default 30)")
    parser.add_argument("--pyhalo-n", type=int, default=3,
                        help="timed pyHalo CDM realisations for the published-way column, where pyHalo "
                             "imports; 0 skips them (default 3)")
    parser.add_argument("--markdown", action="store_true", help="also print a BENCHMARKS.md table")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.samples < 1 or args.baseline_n < 0 or args.pyhalo_n < 0 or min(args.workers) < 1:
        parser.error("--samples and --workers must be positive, --baseline-n and --pyhalo-n at least 0")
    rows = measure(args.preset, args.workers, args.samples, args.baseline_n, args.pyhalo_n)
    if args.markdown:
        print(markdown(rows, args.workers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
