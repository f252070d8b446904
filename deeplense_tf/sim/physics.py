"""Presets and parameter draws of the simulator: pure numpy, no lenstronomy, no TensorFlow.

Everything here follows the DeepLenseSim recipe (``shared/DOMAIN.md``, "Simulation recipe").
A draw returns lenstronomy keyword arguments plus one metadata row; rendering them is
``render``'s job, so metadata can be rebuilt cheaply (resuming a run) without rendering.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import numpy as np

CLASSES = ("no_sub", "cdm", "axion")
LENS_CLASSES = ("lens", "non_lens")
NOISE_MODES = ("on", "off", "published")
GEOMETRIES = ("deeplensesim", "physical")

Z_LENS, Z_SOURCE, Z_SOURCE_CONVENTION = 0.5, 1.0, 2.5
MAIN_HALO_MASS = 1e12  # Msun
VORTEX_MASS, VORTEX_POINTS = 3e10, 100
N_SUBHALOS, SUBHALO_MASS_RANGE, SUBHALO_SLOPE = 25, (1e6, 1e10), -0.9
SOURCE_SHAPE = {"R_sersic": 0.25, "n_sersic": 1.0, "e1": -0.1, "e2": 0.1}
SOURCE_OFFSET = 0.35  # arcsec, half-width of the uniform source-centre box
ARCSEC_PER_RAD = 180 * 3600 / math.pi


@dataclass(frozen=True)
class Preset:
    """One simulated data set: instrument, image size and source brightness."""

    name: str
    description: str
    num_pix: int
    instrument: str  # "euclid_vis" | "hst_wfc3_f160w" (lenstronomy SimAPI presets) | "gaussian"
    pixel_scale: float  # arcsec per pixel
    psf_fwhm: float | None = None  # arcsec, "gaussian" instrument only
    background_rms: float | None = None  # "gaussian" instrument only, flux units
    log10_exposure: tuple[float, float] | None = None  # "gaussian": exposure 10^U(a, b) s
    source_magnitude: float | None = None  # SimAPI presets give the source a magnitude ...
    source_amp: float | None = None  # ... the generic one a lenstronomy amplitude
    classes: tuple[str, ...] = CLASSES
    kind: str = "deeplense"  # "deeplense" (physics + render) | "lens_finding" (lens_finding) | "lens_survey"
    bands: tuple[str, ...] = ()  # lens finding: one channel per band, stored (H, W) or (H, W, bands)
    # Opt-in variation of the DeepLense recipe (None: the fixed value of the published recipe):
    log10_halo_mass: tuple[float, float] | None = None  # main halo 10^U(a, b) Msun, else MAIN_HALO_MASS
    subhalo_abundance: tuple[float, float] | None = None  # cdm: Poisson(N_SUBHALOS x U(a, b)) subhalos
    log10_vortex_mass: tuple[float, float] | None = None  # axion: vortex 10^U(a, b) Msun, else VORTEX_MASS

    @property
    def uses_simapi(self) -> bool:
        return self.instrument != "gaussian"


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("model_i", "Model I: 150x150 at 0.05\"/px, Gaussian PSF FWHM 0.087\", photon counts",
               150, "gaussian", 0.05, psf_fwhm=0.087, background_rms=0.01,
               log10_exposure=(3.0, 3.5), source_amp=20.0),
        Preset("model_ii", "Model II: 64x64 Euclid VIS (Gaussian PSF, 6-year coadd), e-/s",
               64, "euclid_vis", 0.101, source_magnitude=20.0),
        Preset("model_iii", "Model III: 64x64 HST WFC3 F160W (Gaussian PSF), e-/s",
               64, "hst_wfc3_f160w", 0.08, source_magnitude=20.0),
        Preset("lens_finding", "lens vs non-lens, space-like: 101x101 at 0.1\"/px, Gaussian PSF FWHM 0.18\", "
               "Euclid VIS depth", 101, "space", 0.1, psf_fwhm=0.18, classes=LENS_CLASSES,
               kind="lens_finding", bands=("VIS",)),
        Preset("lens_finding_ground", "lens vs non-lens, ground-like: 101x101x4 (r, i, g, u) at 0.2\"/px, "
               "LSST 1-year depth and seeing per band", 101, "ground", 0.2, classes=LENS_CLASSES,
               kind="lens_finding", bands=("r", "i", "g", "u")),
        Preset("lens_finding_survey", "lens_finding with survey confusers among the non-lenses (spirals, rings, "
               "mergers, edge-on disks, unlensed arcs, stars) and lensed quasars", 101, "space", 0.1,
               psf_fwhm=0.18, classes=LENS_CLASSES, kind="lens_survey", bands=("VIS",)),
        Preset("lens_finding_ground_survey", "lens_finding_ground with survey confusers, lensed quasars and "
               "per-image seeing and depth", 101, "ground", 0.2, classes=LENS_CLASSES, kind="lens_survey",
               bands=("r", "i", "g", "u")),
    )
}

# Opt-in variants of Models I-III (README "Simulated targets"), one varied quantity each, so each
# target can be learnt alone; everything else is drawn as in the base preset. Where the ranges
# come from (DOMAIN.md and the DeepLense papers fix 1e12 and 3e10 Msun and give no range):
# - halo: log10 M in [11.5, 12.5], one dex centred on DeepLenseSim's 1e12 Msun: Einstein radii
#   0.72"-2.28" (geometry deeplensesim; the ring at 0.46"-1.44" in Models II/III), the span of
#   galaxy-scale lenses (about 0.5"-2"). A 1e11-1e13 range would put the ring of 1e13 Msun at
#   4", outside the 6.5" Model II stamp. geometry=physical makes every ring 1.3x larger: at the
#   top of the range it leaves the 5.1" Model III stamp.
# - fsub: subhalo count Poisson(25 A), A ~ U(0, 2) (mean: the recipe's 25): f_sub from 0 to
#   about 5 % (95th percentile), mean about 2 %, variance about 2.8e-4 (derived), the GSoC
#   "Test III" regime (label variance about 2.1e-4). cdm images only: f_sub regression trains on
#   the images with subhalos and no no_sub or axion rows need dropping.
# - vortex: log10 M in [10, 11], one dex centred on DeepLenseSim's 3e10 Msun (1-10 % of the main
#   halo); the axion mass is drawn as before, so the linear density M / 2L varies over ~3 dex.
VARIANTS = {
    "halo": ("main-halo mass 10^U(11.5, 12.5) Msun", {"log10_halo_mass": (11.5, 12.5)}),
    "fsub": ("cdm only, Poisson(25 x U(0, 2)) subhalos: f_sub from 0 to about 0.05",
             {"subhalo_abundance": (0.0, 2.0), "classes": ("cdm",)}),
    "vortex": ("vortex mass 10^U(10, 11) Msun", {"log10_vortex_mass": (10.0, 11.0)}),
}
PRESETS.update({
    f"{base}_{suffix}": replace(PRESETS[base], name=f"{base}_{suffix}",
                                description=f"{PRESETS[base].description.split(':')[0]}, {what}", **fields)
    for base in ("model_i", "model_ii", "model_iii") for suffix, (what, fields) in VARIANTS.items()
})


@functools.lru_cache(maxsize=None)
def cosmology():
    from astropy.cosmology import FlatLambdaCDM

    return FlatLambdaCDM(H0=70, Om0=0.3, Ob0=0.05)


@functools.lru_cache(maxsize=None)
def einstein_scale(geometry: str) -> float:
    """theta_E in arcsec of 1 Msun; a point mass M has theta_E = scale * sqrt(M).

    "deeplensesim" uses luminosity distances with D_ls = D_s - D_l, as DeepLenseSim does
    (1.28" for 1e12 Msun); "physical" uses angular-diameter distances (1.66").
    """
    from astropy import constants, units

    cosmo = cosmology()
    if geometry == "deeplensesim":
        d_l, d_s = cosmo.luminosity_distance(Z_LENS), cosmo.luminosity_distance(Z_SOURCE)
        d_ls = d_s - d_l
    else:
        d_l, d_s = cosmo.angular_diameter_distance(Z_LENS), cosmo.angular_diameter_distance(Z_SOURCE)
        d_ls = cosmo.angular_diameter_distance(Z_LENS, Z_SOURCE)
    theta2 = 4 * constants.G * constants.M_sun / constants.c**2 * d_ls / (d_l * d_s)
    return float(np.sqrt(theta2.to(units.dimensionless_unscaled).value) * ARCSEC_PER_RAD)


def z_source_convention(preset: Preset, geometry: str) -> float | None:
    """Source redshift at which theta_E is defined (SimAPI presets only)."""
    if not preset.uses_simapi:
        return None
    return Z_SOURCE_CONVENTION if geometry == "deeplensesim" else Z_SOURCE


@functools.lru_cache(maxsize=None)
def deflection_rescale(z_convention: float | None) -> float:
    """Factor by which lenstronomy shrinks deflections defined for z_convention at Z_SOURCE."""
    if z_convention is None or z_convention == Z_SOURCE:
        return 1.0
    cosmo = cosmology()

    def ratio(z_s):
        return (cosmo.angular_diameter_distance(Z_LENS, z_s) / cosmo.angular_diameter_distance(z_s)).value

    return float(ratio(Z_SOURCE) / ratio(z_convention))


def subhalo_masses(rng: np.random.Generator, n: int) -> np.ndarray:
    """Masses with dN/dm ~ m^SUBHALO_SLOPE on SUBHALO_MASS_RANGE (inverse-CDF draw)."""
    a = SUBHALO_SLOPE + 1.0
    lo, hi = (m**a for m in SUBHALO_MASS_RANGE)
    return (lo + (hi - lo) * rng.uniform(size=n)) ** (1.0 / a)


def vortex_half_length(axion_mass_ev: float) -> float:
    """Half-length of the vortex in arcsec: 0.03" x (1e-22 eV / m)."""
    return 0.03 * 1e-22 / axion_mass_ev


def substructure_fraction(masses, x, y, halo_mass: float, theta_e: float, rescale: float = 1.0) -> float:
    """f_sub: the subhalo mass projected inside the Einstein ring over the main halo's mass inside it.

    The point-mass formula sets ``theta_e`` so that the main halo holds ``halo_mass`` inside it (its
    mean convergence there is 1; the SIE's small ellipticity aside), so with ``rescale`` 1 this is
    sum(m_i for subhalos at |x_i| < theta_e) / halo_mass. ``rescale`` (``deflection_rescale``) is
    the factor by which lenstronomy's z_source_convention shrinks every deflection (Models II/III,
    geometry "deeplensesim": 0.63): the ring then lies at rescale * theta_e, a subhalo deflects as a
    mass rescale * m_i and the isothermal main halo (mass growing as the radius) holds
    rescale**2 * halo_mass inside the ring, so f_sub = sum(m_i inside the ring) / (rescale * halo_mass):
    the ratio of the masses as the image feels them.
    """
    inside = np.hypot(x, y) < rescale * theta_e
    return float(np.sum(np.asarray(masses, dtype=float)[inside]) / (rescale * halo_mass))


def _point_masses(preset: Preset, cls: str, rng: np.random.Generator):
    """The class's subhalos or vortex points: (masses, x, y in arcsec, metadata).

    Draws in the published recipe's order; a preset's variations draw after it (``subhalo_abundance``
    before the subhalos, whose number it sets).
    """
    nan = float("nan")
    meta = {
        "axion_mass_ev": nan, "log10_axion_mass": nan, "vortex_half_length_arcsec": nan,
        "vortex_angle_rad": nan, "vortex_mass_msun": nan, "log10_vortex_mass": nan,
        "vortex_linear_density_msun_per_arcsec": nan,
        "n_subhalos": 0.0, "subhalo_mass_total": 0.0, "subhalo_abundance": 0.0 if cls == "no_sub" else nan,
    }
    if cls == "no_sub":
        return np.zeros(0), np.zeros(0), np.zeros(0), meta
    if cls == "cdm":
        n, abundance = N_SUBHALOS, 1.0
        if preset.subhalo_abundance is not None:
            abundance = float(rng.uniform(*preset.subhalo_abundance))
            n = int(rng.poisson(N_SUBHALOS * abundance))
        masses = subhalo_masses(rng, n)
        r = rng.uniform(0.25, 2.0, n)
        phi = rng.uniform(0.0, 2 * np.pi, n)
        meta.update(n_subhalos=float(n), subhalo_mass_total=float(masses.sum()), subhalo_abundance=abundance)
        return masses, r * np.cos(phi), r * np.sin(phi), meta
    if cls == "axion":
        log10_m = float(rng.uniform(-24.0, -22.0))
        angle = float(rng.uniform(0.0, 2 * np.pi))
        vortex_mass, log10_vortex = VORTEX_MASS, math.log10(VORTEX_MASS)
        if preset.log10_vortex_mass is not None:
            log10_vortex = float(rng.uniform(*preset.log10_vortex_mass))
            vortex_mass = 10**log10_vortex
        half = vortex_half_length(10**log10_m)
        along = np.linspace(-half, half, VORTEX_POINTS)
        meta.update(axion_mass_ev=10**log10_m, log10_axion_mass=log10_m,
                    vortex_half_length_arcsec=half, vortex_angle_rad=angle,
                    vortex_mass_msun=vortex_mass, log10_vortex_mass=log10_vortex,
                    vortex_linear_density_msun_per_arcsec=vortex_mass / (2 * half))
        masses = np.full(VORTEX_POINTS, vortex_mass / VORTEX_POINTS)
        return masses, along * math.cos(angle), along * math.sin(angle), meta
    raise ValueError(f"class {cls!r} is not one of {CLASSES}")


def draw(preset: Preset, cls: str, geometry: str, rng: np.random.Generator):
    """Sample one lens system: ((kwargs_lens, source kwargs), metadata dict).

    The order of the draws is part of the reproducibility contract: change it and every
    cached data set changes. A preset's variations draw after the published recipe's draws
    (the main-halo mass last), so a ``_halo`` or ``_vortex`` image shares its source, subhalos
    and axion mass with the base preset's image of the same seed, class and index.
    """
    scale = einstein_scale(geometry)
    nan = float("nan")
    source_x, source_y = (float(v) for v in rng.uniform(-SOURCE_OFFSET, SOURCE_OFFSET, 2))
    exposure = nan
    if preset.log10_exposure is not None:
        exposure = float(10 ** rng.uniform(*preset.log10_exposure))
    masses, xs, ys, meta = _point_masses(preset, cls, rng)
    halo_mass, log10_halo = MAIN_HALO_MASS, math.log10(MAIN_HALO_MASS)
    if preset.log10_halo_mass is not None:
        log10_halo = float(rng.uniform(*preset.log10_halo_mass))
        halo_mass = 10**log10_halo
    theta_e = scale * math.sqrt(halo_mass)
    rescale = deflection_rescale(z_source_convention(preset, geometry))
    kwargs_lens = [
        {"theta_E": theta_e, "e1": 0.1, "e2": 0.0, "center_x": 0.0, "center_y": 0.0},
        {"gamma1": 0.05, "gamma2": 0.0},
    ] + [
        {"theta_E": float(scale * math.sqrt(m)), "center_x": float(x), "center_y": float(y)}
        for m, x, y in zip(masses, xs, ys)
    ]
    source = dict(SOURCE_SHAPE, center_x=source_x, center_y=source_y)
    if preset.source_magnitude is not None:
        source["magnitude"] = preset.source_magnitude
    else:
        source["amp"] = preset.source_amp
    meta.update(
        main_halo_mass_msun=halo_mass, log10_halo_mass=log10_halo, theta_e_arcsec=theta_e,
        theta_e_effective_arcsec=theta_e * rescale,
        # undefined for the vortex: not a population of subhalos (README "Simulated targets")
        f_sub=nan if cls == "axion" else substructure_fraction(masses, xs, ys, halo_mass, theta_e, rescale),
        source_x=source_x, source_y=source_y,
        source_mag=float(preset.source_magnitude) if preset.source_magnitude is not None else nan,
        source_amp=nan if preset.source_amp is None else float(preset.source_amp),
        source_r_sersic=SOURCE_SHAPE["R_sersic"], source_n_sersic=SOURCE_SHAPE["n_sersic"],
        exposure_s=exposure,
    )
    return (kwargs_lens, source), meta
