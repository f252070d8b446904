"""Lens-finding stamps (Bologna-challenge-like): a lens galaxy in every stamp, a lensed source in "lens" ones.

Presets ``lens_finding`` (1 band, space-like) and ``lens_finding_ground`` (r, i, g, u). The
parameter ranges reach small Einstein radii (0.5", 2.5 px on the ground) and faint sources
(magnitude 25.5 against a magnitude-18 to 21 deflector), so some lenses are hard to see.
Ground stamps are stored channels-last (H, W, 4). The ``geometry`` option does not apply here.
The survey-like variants (confusers, lensed quasars, per-image seeing) build on these draws: ``lens_survey``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from deeplense_tf.sim.physics import Preset

# colour of each band relative to the first one (r or VIS): red deflector, bluer source
LENS_COLOUR = {"VIS": 0.0, "r": 0.0, "i": -0.45, "g": 0.85, "u": 2.3}
SOURCE_COLOUR = {"VIS": 0.0, "r": 0.0, "i": -0.15, "g": 0.3, "u": 0.7}
_RENDERERS: dict[tuple, "LensFindingRenderer"] = {}


def _ellipticity(q: float, phi: float) -> tuple[float, float]:
    e = (1 - q) / (1 + q)
    return e * math.cos(2 * phi), e * math.sin(2 * phi)


def _sersic(mag, r, n, q, phi, x=0.0, y=0.0) -> dict:
    e1, e2 = _ellipticity(q, phi)
    return {"magnitude": mag, "R_sersic": r, "n_sersic": n, "e1": e1, "e2": e2, "center_x": x, "center_y": y}


def draw(preset: Preset, cls: str, geometry: str, rng: np.random.Generator):
    """One stamp's parameters: ({"lens", "lens_light", "source"} kwargs per band, metadata)."""
    u = rng.uniform
    theta_e, q_mass, phi = u(0.5, 2.5), u(0.6, 1.0), u(0, math.pi)
    gamma, phi_gamma = u(0.0, 0.08), u(0, math.pi)
    lens_mag, lens_r, lens_n = u(18.0, 21.0), u(0.5, 2.0), u(2.5, 5.0)
    q_light = float(np.clip(q_mass + rng.normal(0, 0.05), 0.4, 1.0))
    src_mag, src_r, src_n, q_src, phi_src = u(21.5, 25.5), u(0.05, 0.5), u(0.5, 2.0), u(0.4, 1.0), u(0, math.pi)
    rho, angle = theta_e * math.sqrt(u()), u(0, 2 * math.pi)
    src_x, src_y = rho * math.cos(angle), rho * math.sin(angle)
    lens_colour = rng.normal(0, 0.1, len(preset.bands))
    src_colour = rng.normal(0, 0.2, len(preset.bands))
    is_lens = cls == "lens"
    e1, e2 = _ellipticity(q_mass, phi)
    params = {
        "lens": [{"theta_E": theta_e, "e1": e1, "e2": e2, "center_x": 0.0, "center_y": 0.0},
                 {"gamma1": gamma * math.cos(2 * phi_gamma), "gamma2": gamma * math.sin(2 * phi_gamma)}],
        "lens_light": [_sersic(lens_mag + LENS_COLOUR[b] + c, lens_r, lens_n, q_light, phi)
                       for b, c in zip(preset.bands, lens_colour)],
        "source": [_sersic(src_mag + SOURCE_COLOUR[b] + c, src_r, src_n, q_src, phi_src, src_x, src_y)
                   for b, c in zip(preset.bands, src_colour)],
    }
    nan = float("nan")
    lensed = (lambda v: float(v)) if is_lens else (lambda v: nan)
    meta = {
        "is_lens": float(is_lens), "theta_e_arcsec": lensed(theta_e), "lens_e1": e1, "lens_e2": e2,
        "shear_gamma1": lensed(params["lens"][1]["gamma1"]), "shear_gamma2": lensed(params["lens"][1]["gamma2"]),
        "lens_mag": lens_mag, "lens_r_sersic": lens_r, "lens_n_sersic": lens_n,
        "source_mag": lensed(src_mag), "source_r_sersic": lensed(src_r), "source_n_sersic": lensed(src_n),
        "source_x": lensed(src_x), "source_y": lensed(src_y), "exposure_s": nan,
    }
    return params, meta


def get_renderer(preset: Preset, cls: str, geometry: str) -> "LensFindingRenderer":
    key = (preset, cls)
    if key not in _RENDERERS:
        _RENDERERS[key] = LensFindingRenderer(preset, cls)
    return _RENDERERS[key]


def _band_kwargs(preset: Preset, band: str) -> dict:
    if preset.instrument == "space":
        from lenstronomy.SimulationAPI.ObservationConfig.Euclid import Euclid

        kwargs = Euclid(band="VIS", psf_type="GAUSSIAN").kwargs_single_band()
        kwargs.update(pixel_scale=preset.pixel_scale, seeing=preset.psf_fwhm)
        return kwargs
    from lenstronomy.SimulationAPI.ObservationConfig.LSST import LSST

    return LSST(band=band, psf_type="GAUSSIAN", coadd_years=1).kwargs_single_band()


class LensFindingRenderer:
    """One SimAPI per band, built once; "non_lens" has no lens model and no source."""

    def __init__(self, preset: Preset, cls: str):
        from lenstronomy.SimulationAPI.sim_api import SimAPI

        self.preset, self.is_lens = preset, cls == "lens"
        kwargs_model = {"lens_model_list": ["SIE", "SHEAR"] if self.is_lens else [],
                        "source_light_model_list": ["SERSIC_ELLIPSE"] if self.is_lens else [],
                        "lens_light_model_list": ["SERSIC_ELLIPSE"]}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.sims = [SimAPI(num_pix=preset.num_pix, kwargs_single_band=_band_kwargs(preset, b),
                                kwargs_model=kwargs_model) for b in preset.bands]
        self.models = [s.image_model_class({"supersampling_factor": 1}) for s in self.sims]

    def prepare(self, params: dict, meta: dict) -> list[tuple]:
        """Per band: (kwargs_lens, kwargs_source, kwargs_lens_light) with amplitudes."""
        meta["exposure_s"] = float(self.sims[0].exposure_time)
        prepared = []
        for sim, light, source in zip(self.sims, params["lens_light"], params["source"]):
            kwargs_light, kwargs_source, _ = sim.magnitude2amplitude([light], [source] if self.is_lens else None)
            prepared.append((params["lens"] if self.is_lens else [], kwargs_source, kwargs_light))
        return prepared

    def render(self, prepared: list[tuple], meta: dict, rng: np.random.Generator, noise: str) -> np.ndarray:
        return stack_bands([(model.image(kwargs_lens, kwargs_source, kwargs_light, None), sim)
                            for sim, model, (kwargs_lens, kwargs_source, kwargs_light)
                            in zip(self.sims, self.models, prepared)], rng, noise)


def stack_bands(bands: list[tuple], rng: np.random.Generator, noise: str) -> np.ndarray:
    """(noiseless image, its SimAPI or SingleBand) per band -> float32 (H, W) or (H, W, bands), noise added."""
    images = []
    for image, observation in bands:
        if noise == "on":
            image = (image + rng.standard_normal(image.shape) * observation.background_noise
                     + rng.standard_normal(image.shape) * observation.flux_noise(image))
        images.append(image)
    stack = images[0] if len(images) == 1 else np.stack(images, axis=-1)
    return stack.astype(np.float32)
