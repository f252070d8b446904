"""More images from the original DeepLenseSim generator, in the format of shared/reference/*.npz.

    git clone https://github.com/mwt5345/DeepLenseSim ../refgen/DeepLenseSim      # kept outside this repository
    python -m pipelines.deeplensesim_reference --deeplensesim ../refgen/DeepLenseSim --model model_ii \\
        --classes axion --n 2000 --seed 1 --out ../refgen/deeplensesim_model_ii_axion_2000.npz \\
        --compare ../shared/reference/deeplensesim_model_ii_sample.npz
    python -m pipelines.deeplensesim_reference --deeplensesim ../refgen/DeepLenseSim --per-class 500 \\
        --out ../refgen/deeplensesim_model_ii_3class_500.npz

The images come from DeepLenseSim's own ``deeplense.lens.DeepLens``, imported from the checkout
``--deeplensesim`` names and called as its ``Model_I/II/sim_*.py`` scripts call it: a 1e12 Msun
SIE with shear, then no substructure, 25 point-mass subhalos or a 3e10 Msun vortex whose axion
mass is drawn as ``10**U(-24, -22)`` eV up front for the whole class, then the source and the
render. No code of DeepLenseSim is kept here. Three things are adapted at run time, as for
shared/reference (its README): ``pyHalo.preset_models.CDM``, which the code only asks for a
cosmology (pyHalo has since moved it), is a stub whose ``astropy_instance`` is
``FlatLambdaCDM(H0=70, Om0=0.3, Ob0=0.05)``; lenstronomy's renamed keywords ``numpix`` ->
``num_pix`` (``SimAPI``, Model II) and ``numPix``/``deltapix`` -> ``num_pix``/``delta_pix``
(``make_grid_with_coordtransform``, Model I) are translated while the generator runs.

The file holds ``images`` (Model II: float32 (N, 64, 64), noiseless: the published function
returns twice the model image; Model I: uint16 (N, 150, 150) counts), ``label`` (class names) and
``axion_mass`` (eV, NaN outside the axion class), classes in the order no_sub, cdm, axion. Each
class draws from its own stream, ``np.random.seed([seed, class index])`` (the generator uses
NumPy's global state), so ``--classes axion`` repeats the axion part of an all-class file of the
same seed. Model III is not offered: the published ``set_instrument`` ignores its ``'hst'``.
``--compare`` prints per-class pixel statistics beside those of a reference file.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import os
import sys
import time
import types
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from deeplense_tf.cli import command_parser

CLASSES = ("no_sub", "cdm", "axion")
# the scripts' calls: DeepLens method that adds the substructure, and its arguments
STRUCTURE = {"no_sub": ("make_no_sub", ()), "cdm": ("make_old_cdm", ()), "axion": ("make_vortex", (3e10,))}
MAIN_HALO_MSUN = 1e12
LOG10_AXION_MASS_EV = (-24.0, -22.0)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One data set as its ``Model_*/sim_*.py`` scripts make it."""
    size: int
    dtype: str
    instrument: str | None  # DeepLens.set_instrument argument; None: not called
    source: str  # DeepLens method that makes the source light
    render: str  # DeepLens method that fills ``image_real``


RECIPES = {"model_i": Recipe(150, "uint16", None, "make_source_light", "simple_sim"),
           "model_ii": Recipe(64, "float32", "Euclid", "make_source_light_mag", "simple_sim_2")}
# lenstronomy keywords renamed since the generator was written: (module, attribute, old -> new)
RENAMED = (("lenstronomy.SimulationAPI.sim_api", "SimAPI", {"numpix": "num_pix"}),
           ("lenstronomy.Util.util", "make_grid_with_coordtransform", {"numPix": "num_pix", "deltapix": "delta_pix"}))


def _renamed(func: Callable, renames: dict[str, str]) -> Callable:
    @functools.wraps(func)
    def call(*args, **kwargs):
        return func(*args, **{renames.get(k, k): v for k, v in kwargs.items()})
    return call


def _pyhalo_stub() -> dict[str, types.ModuleType]:
    """``pyHalo.preset_models.CDM``, of which DeepLens keeps only the cosmology."""
    from astropy.cosmology import FlatLambdaCDM

    cosmology = FlatLambdaCDM(H0=70, Om0=0.3, Ob0=0.05)
    preset_models = types.ModuleType("pyHalo.preset_models")
    preset_models.CDM = lambda *args, **kwargs: types.SimpleNamespace(astropy_instance=cosmology)
    package = types.ModuleType("pyHalo")
    package.preset_models = preset_models
    return {"pyHalo": package, "pyHalo.preset_models": preset_models}


def check_checkout(path: Path) -> None:
    """Exit with one line unless ``path`` holds DeepLenseSim and lenstronomy and astropy import."""
    if not (path / "deeplense" / "lens.py").is_file():
        raise SystemExit(f"no DeepLenseSim code at {path}: expected {path / 'deeplense' / 'lens.py'} "
                         "(git clone https://github.com/mwt5345/DeepLenseSim, then --deeplensesim that folder)")
    for package in ("lenstronomy", "astropy"):
        if importlib.util.find_spec(package) is None:
            raise SystemExit(f"{package} is not installed, and DeepLenseSim needs it: pip install {package}")


@contextlib.contextmanager
def deeplens_class(path: Path):
    """DeepLenseSim's ``DeepLens``, imported from ``path``, with the shims in place until the block ends."""
    check_checkout(path)
    saved_modules = {name: sys.modules.get(name) for name in ("pyHalo", "pyHalo.preset_models", "deeplense",
                                                              "deeplense.lens")}
    patched = []
    sys.path.insert(0, str(path))
    try:
        for name in ("deeplense", "deeplense.lens"):
            sys.modules.pop(name, None)
        sys.modules.update(_pyhalo_stub())
        for module_name, attribute, renames in RENAMED:
            module = importlib.import_module(module_name)
            patched.append((module, attribute, getattr(module, attribute)))
            setattr(module, attribute, _renamed(getattr(module, attribute), renames))
        lens = importlib.import_module("deeplense.lens")
        if Path(lens.__file__).resolve().parent.parent != path.resolve():
            raise SystemExit(f"imported deeplense from {lens.__file__}, not from {path}: uninstall that copy")
        with warnings.catch_warnings():
            # lenstronomy asks, once per image, that the given astropy cosmology match its default model: it does
            warnings.filterwarnings("ignore", "Cosmology is provided", UserWarning)
            yield lens.DeepLens
    finally:
        sys.path.remove(str(path))
        for module, attribute, original in patched:
            setattr(module, attribute, original)
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def render_one(deeplens: type, recipe: Recipe, cls: str, axion_mass: float | None) -> np.ndarray:
    """One image, by the calls of the published ``sim_<cls>.py`` (global NumPy random state)."""
    lens = deeplens(axion_mass=axion_mass)
    lens.make_single_halo(MAIN_HALO_MSUN)
    method, args = STRUCTURE[cls]
    getattr(lens, method)(*args)
    if recipe.instrument:
        lens.set_instrument(recipe.instrument)
    getattr(lens, recipe.source)()
    getattr(lens, recipe.render)()
    return np.asarray(lens.image_real)


def generate(render: Callable[[str, float | None], np.ndarray], classes: list[str], n_per_class: int, seed: int,
             dtype: str = "float32", progress: bool = True) -> dict[str, np.ndarray]:
    """``images``, ``label`` and ``axion_mass`` of ``n_per_class`` images per class, classes in CLASSES order."""
    images, labels, masses = [], [], []
    start = time.perf_counter()
    for cls in sorted(classes, key=CLASSES.index):
        np.random.seed([seed, CLASSES.index(cls)])
        # the axion script draws every mass before its first image
        drawn = 10 ** np.random.uniform(*LOG10_AXION_MASS_EV, n_per_class) if cls == "axion" else None
        for i in range(n_per_class):
            image = render(cls, None if drawn is None else float(drawn[i]))
            if np.issubdtype(np.dtype(dtype), np.integer) and image.max() > np.iinfo(dtype).max:
                raise ValueError(f"a {cls} image reaches {image.max()}, beyond {dtype}: store it wider")
            images.append(image.astype(dtype))
            labels.append(cls)
            masses.append(np.nan if drawn is None else drawn[i])
            if progress and (len(images) % 100 == 0):
                print(f"{len(images)} images, {len(images) / (time.perf_counter() - start):.1f} images/s", flush=True)
    return {"images": np.stack(images), "label": np.array(labels, dtype=f"<U{max(map(len, CLASSES))}"),
            "axion_mass": np.array(masses, dtype=np.float64)}


def write_npz(arrays: dict[str, np.ndarray], out: Path) -> None:
    """Compressed, as shared/reference, and atomically: a stopped run leaves no half file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial.npz")
    np.savez_compressed(partial, **arrays)
    os.replace(partial, out)


def ring_radius(images: np.ndarray) -> float:
    """Brightness-weighted radius (pixels) of the top 20 % of the mean normalised radial profile."""
    mean = np.mean(images / images.max(axis=(1, 2), keepdims=True), axis=0)
    n = mean.shape[0]
    y, x = np.indices(mean.shape)
    r = np.hypot(x - (n - 1) / 2, y - (n - 1) / 2).astype(int).ravel()
    profile = (np.bincount(r, mean.ravel()) / np.bincount(r))[: n // 2]
    top = profile >= 0.8 * profile.max()
    return float((np.arange(len(profile))[top] * profile[top]).sum() / profile[top].sum())


def class_stats(arrays: dict, name: str) -> list[dict]:
    """Per class: pixel mean, per-image max (mean and its standard error), ring radius, axion masses."""
    rows = []
    for cls in [c for c in CLASSES if c in set(arrays["label"])]:
        images = np.asarray(arrays["images"], np.float64)[arrays["label"] == cls]
        peak, mass = images.max(axis=(1, 2)), arrays["axion_mass"][arrays["label"] == cls]
        rows.append({"file": name, "class": cls, "images": len(images), "pixel_mean": images.mean(),
                     "pixel_mean_se": images.mean(axis=(1, 2)).std(ddof=1) / np.sqrt(len(images)),
                     "max_mean": peak.mean(), "max_se": peak.std(ddof=1) / np.sqrt(len(images)),
                     "ring_radius_px": ring_radius(images),
                     "log10_mass": (f"{np.log10(mass).min():.2f}..{np.log10(mass).max():.2f}"
                                    if cls == "axion" else f"NaN: {np.isnan(mass).all()}")})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    for row in rows:
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("python -m pipelines.deeplensesim_reference", __doc__)
    parser.add_argument("--deeplensesim", type=Path, required=True,
                        help="a checkout of github.com/mwt5345/DeepLenseSim (the folder holding deeplense/lens.py)")
    parser.add_argument("--model", choices=list(RECIPES), default="model_ii", help="which data set's recipe")
    parser.add_argument("--classes", nargs="+", choices=CLASSES, default=list(CLASSES), help="classes to make")
    parser.add_argument("--per-class", "--n", dest="per_class", type=int, default=100,
                        help="images per class (--n: the same, reads better with one class; default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seeds NumPy's global state, per class")
    parser.add_argument("--out", type=Path, required=True, help="the .npz to write")
    parser.add_argument("--compare", type=Path, help="a reference .npz whose per-class statistics to print beside")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.per_class < 1 or args.seed < 0:
        parser.error(f"--per-class must be positive and --seed at least 0. Received: per_class={args.per_class}, "
                     f"seed={args.seed}")
    if args.out.suffix != ".npz":
        parser.error(f"--out must end in .npz. Received: out={args.out}")
    recipe = RECIPES[args.model]
    start = time.perf_counter()
    with deeplens_class(args.deeplensesim) as deeplens:
        arrays = generate(functools.partial(render_one, deeplens, recipe), args.classes, args.per_class, args.seed,
                          recipe.dtype)
    elapsed = time.perf_counter() - start
    write_npz(arrays, args.out)
    print(f"{len(arrays['images'])} images in {elapsed:.0f} s ({len(arrays['images']) / elapsed:.1f} images/s, "
          f"load {os.getloadavg()[0]:.1f}) -> {args.out}")
    if args.compare:
        print(markdown(class_stats(arrays, args.out.name) + class_stats(dict(np.load(args.compare)), args.compare.name)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
