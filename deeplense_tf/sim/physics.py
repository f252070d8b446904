"""Presets and parameter draws of the simulator: pure numpy, no lenstronomy, no TensorFlow.

Everything here follows the DeepLenseSim recipe (``shared/DOMAIN.md``, "Simulation recipe").
A draw returns lenstronomy keyword arguments plus one metadata row; rendering them is
``render``'s job, so metadata can be rebuilt cheaply (resuming a run) without rendering.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

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
    kind: str = "deeplense"  # "deeplense" (physics + render) | "lens_finding" (lens_finding)
    bands: tuple[str, ...] = ()  # lens finding: one channel per band, stored (H, W) or (H, W, bands)

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
    )
}


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


def draw(preset: Preset, cls: str, geometry: str, rng: np.random.Generator):
    """Sample one lens system: ((kwargs_lens, source kwargs), metadata dict).

    The order of the draws is part of the reproducibility contract: change it and every
    cached data set changes.
    """
    scale = einstein_scale(geometry)
    nan = float("nan")
    source_x, source_y = (float(v) for v in rng.uniform(-SOURCE_OFFSET, SOURCE_OFFSET, 2))
    exposure = nan
    if preset.log10_exposure is not None:
        exposure = float(10 ** rng.uniform(*preset.log10_exposure))
    theta_e = scale * math.sqrt(MAIN_HALO_MASS)
    kwargs_lens = [
        {"theta_E": theta_e, "e1": 0.1, "e2": 0.0, "center_x": 0.0, "center_y": 0.0},
        {"gamma1": 0.05, "gamma2": 0.0},
    ]
    meta = {
        "axion_mass_ev": nan, "log10_axion_mass": nan, "vortex_half_length_arcsec": nan,
        "vortex_angle_rad": nan, "vortex_mass_msun": nan,
        "n_subhalos": 0.0, "subhalo_mass_total": 0.0,
    }
    if cls == "cdm":
        masses = subhalo_masses(rng, N_SUBHALOS)
        r = rng.uniform(0.25, 2.0, N_SUBHALOS)
        phi = rng.uniform(0.0, 2 * np.pi, N_SUBHALOS)
        xs, ys = r * np.cos(phi), r * np.sin(phi)
        meta.update(n_subhalos=float(N_SUBHALOS), subhalo_mass_total=float(masses.sum()))
    elif cls == "axion":
        log10_m = float(rng.uniform(-24.0, -22.0))
        angle = float(rng.uniform(0.0, 2 * np.pi))
        half = vortex_half_length(10**log10_m)
        along = np.linspace(-half, half, VORTEX_POINTS)
        xs, ys = along * math.cos(angle), along * math.sin(angle)
        masses = np.full(VORTEX_POINTS, VORTEX_MASS / VORTEX_POINTS)
        meta.update(axion_mass_ev=10**log10_m, log10_axion_mass=log10_m,
                    vortex_half_length_arcsec=half, vortex_angle_rad=angle,
                    vortex_mass_msun=VORTEX_MASS)
    elif cls != "no_sub":
        raise ValueError(f"class {cls!r} is not one of {CLASSES}")
    if cls != "no_sub":
        kwargs_lens += [
            {"theta_E": float(scale * math.sqrt(m)), "center_x": float(x), "center_y": float(y)}
            for m, x, y in zip(masses, xs, ys)
        ]
    source = dict(SOURCE_SHAPE, center_x=source_x, center_y=source_y)
    if preset.source_magnitude is not None:
        source["magnitude"] = preset.source_magnitude
    else:
        source["amp"] = preset.source_amp
    meta.update(
        main_halo_mass_msun=MAIN_HALO_MASS, theta_e_arcsec=theta_e,
        theta_e_effective_arcsec=theta_e * deflection_rescale(z_source_convention(preset, geometry)),
        source_x=source_x, source_y=source_y,
        source_mag=float(preset.source_magnitude) if preset.source_magnitude is not None else nan,
        source_amp=nan if preset.source_amp is None else float(preset.source_amp),
        source_r_sersic=SOURCE_SHAPE["R_sersic"], source_n_sersic=SOURCE_SHAPE["n_sersic"],
        exposure_s=exposure,
    )
    return (kwargs_lens, source), meta
