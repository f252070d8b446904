"""Rendering of the survey-like lens-finding stamps that ``lens_survey`` draws.

Each image gets its own seeing: the light profiles are rendered by lenstronomy without PSF, then
convolved as lenstronomy convolves a Gaussian PSF (``_convolve``), and point sources are drawn as
that PSF integrated over each pixel (``point_images``). ``prepare`` makes the noiseless image and
its metadata (seeing, sky sigma, depth, the SNR of the lensed light); ``render`` adds the noise.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from deeplense_tf.sim.lens_finding import _band_kwargs, stack_bands
from deeplense_tf.sim.physics import Preset

PSF_TRUNCATION = 5  # sigmas, lenstronomy's default for a Gaussian PSF
_UNIT_MODELS: dict = {}


def _sigma_px(fwhm: float, pixel_scale: float) -> float:
    return fwhm / (2 * math.sqrt(2 * math.log(2))) / pixel_scale


def _unit_model(profile: str):
    if profile not in _UNIT_MODELS:
        from lenstronomy.LightModel.light_model import LightModel

        _UNIT_MODELS[profile] = LightModel([profile])
    return _UNIT_MODELS[profile]


def _unit_flux(profile: str, kwargs: dict) -> float:
    """Flux of one component at amp 1 (what ``SimAPI.magnitude2amplitude`` divides by); lenstronomy cannot
    normalise SHAPELETS, whose flux (amp = the coefficients) is summed on a fine grid instead."""
    shape = {k: v for k, v in kwargs.items() if k not in ("magnitude", "negative_of")}
    if profile != "SHAPELETS":
        return float(_unit_model(profile).total_flux([shape], norm=True, k=0)[0])
    half, n = 6 * kwargs["beta"], 121
    g = np.linspace(-half, half, n)
    x, y = np.meshgrid(g + kwargs["center_x"], g + kwargs["center_y"])
    return float(_unit_model(profile).surface_brightness(x.ravel(), y.ravel(), [shape]).sum() * (g[1] - g[0]) ** 2)


def _amplitudes(profiles: list[str], components: list[dict], units: list[float], obs) -> list[dict]:
    """lenstronomy kwargs with ``amp`` for this band's magnitudes (``negative_of``: minus that one's amp)."""
    out = []
    for profile, comp, unit in zip(profiles, components, units):
        kwargs = {k: v for k, v in comp.items() if k not in ("magnitude", "negative_of", "amp")}
        if "negative_of" in comp:
            kwargs["amp"] = -out[comp["negative_of"]]["amp"]
        elif profile == "SHAPELETS":
            kwargs["amp"] = np.asarray(comp["amp"]) * obs.magnitude2cps(comp["magnitude"]) / unit
        else:
            kwargs["amp"] = obs.magnitude2cps(comp["magnitude"]) / unit
        out.append(kwargs)
    return out


def depth_mag(obs, zero_point: float, fwhm: float, pixel_scale: float) -> float:
    """5-sigma point-source depth, sky-limited: zp - 2.5 log10(5 sigma_sky sqrt(4 pi) sigma_psf / pixel)."""
    sigma_px = _sigma_px(fwhm, pixel_scale)
    return float(zero_point - 2.5 * math.log10(5 * obs.background_noise * math.sqrt(4 * math.pi) * sigma_px))


def _convolve(image: np.ndarray, fwhm: float, pixel_scale: float) -> np.ndarray:
    """lenstronomy's GAUSSIAN PSF convolution (``MultiGaussianConvolution``), at this image's seeing."""
    from scipy import ndimage

    return ndimage.gaussian_filter(image, _sigma_px(fwhm, pixel_scale), mode="nearest", truncate=PSF_TRUNCATION)


def point_images(num_pix: int, x_pix, y_pix, amps, fwhm: float, pixel_scale: float) -> np.ndarray:
    """Point sources (pixel coordinates, fluxes) as the Gaussian PSF integrated over each pixel."""
    from scipy.special import erf

    scale = math.sqrt(2) * _sigma_px(fwhm, pixel_scale)
    edges = np.arange(num_pix + 1) - 0.5
    image = np.zeros((num_pix, num_pix))
    for x, y, amp in zip(x_pix, y_pix, amps):
        gx, gy = (np.diff(erf((edges - c) / scale)) / 2 for c in (x, y))
        image += amp * np.outer(gy, gx)
    return image


class SurveyRenderer:
    """Renders a ``lens_survey.Stamp``: one lenstronomy ``SimAPI`` per band and per list of profiles
    (built on first use), without PSF; each image is convolved at its own seeing."""

    def __init__(self, preset: Preset, cls: str):
        self.preset, self.is_lens = preset, cls == "lens"
        self.band_kwargs = [_band_kwargs(preset, b) for b in preset.bands]
        self._sims: dict[tuple, list] = {}
        self._lens_model = self._solver = None

    def _models(self, stamp) -> list:
        models = stamp.models(self.is_lens)
        key = tuple(tuple(v) for v in models.values())
        if key not in self._sims:
            from lenstronomy.SimulationAPI.sim_api import SimAPI

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sims = [SimAPI(num_pix=self.preset.num_pix, kwargs_single_band={**kw, "psf_type": "NONE"},
                               kwargs_model=models) for kw in self.band_kwargs]
            self._sims[key] = [(s.image_model_class({"supersampling_factor": 1}), s.data_class) for s in sims]
        return self._sims[key]

    def _lensed_points(self, lens: list, x: float, y: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image positions and |magnifications| of a point source at (x, y)."""
        if self._solver is None:
            from lenstronomy.LensModel.lens_model import LensModel
            from lenstronomy.LensModel.Solver.lens_equation_solver import LensEquationSolver

            self._lens_model = LensModel(["SIE", "SHEAR"])
            self._solver = LensEquationSolver(self._lens_model)
        xs, ys = self._solver.image_position_from_source(x, y, lens, solver="analytical")
        if len(xs) == 0:  # never seen; the numerical solver as a fallback
            xs, ys = self._solver.image_position_from_source(x, y, lens, solver="lenstronomy")
        return np.asarray(xs), np.asarray(ys), np.abs(self._lens_model.magnification(xs, ys, lens))

    def _points(self, stamp, lens: list, meta: dict) -> tuple | None:
        """(x, y, flux gain, magnitudes (bands, points)) of the point sources, or None."""
        meta.update(n_point_images=0.0, quasar_magnification=float("nan"))
        if stamp.points is None:
            return None
        x, y, gain = np.asarray(stamp.points["x"]), np.asarray(stamp.points["y"]), np.ones(len(stamp.points["x"]))
        mags = stamp.points["mags"]
        if stamp.profiles["point"][0] == "LENSED_POSITION":
            x, y, gain = self._lensed_points(lens, x[0], y[0])
            mags = np.repeat(mags[:, :1], len(x), axis=1)
            meta.update(n_point_images=float(len(x)), quasar_magnification=float(gain.sum()))
        return x, y, gain, mags

    def prepare(self, survey: dict, meta: dict) -> list[tuple]:
        """Per band: (noiseless image, the image's ``SingleBand`` observation); metadata completed."""
        from lenstronomy.SimulationAPI.observation_api import SingleBand

        stamp, lens = survey["stamp"], survey["lens"]
        models, points = self._models(stamp), self._points(stamp, lens, meta)
        units = {part: [_unit_flux(p, c) for p, c in zip(stamp.profiles[part], stamp.light[part][0])]
                 for part in ("lens_light", "source")}
        prepared, snr2 = [], 0.0
        for b, (kw, (model, data)) in enumerate(zip(self.band_kwargs, models)):
            fwhm, scale = kw["seeing"] * survey["seeing_factor"], kw["pixel_scale"]
            obs = SingleBand(**{**kw, "exposure_time": kw["exposure_time"] * survey["exposure_factor"],
                                "seeing": fwhm})
            light, source = (_amplitudes(stamp.profiles[p], stamp.light[p][b], units[p], obs)
                             for p in ("lens_light", "source"))
            image = _convolve(model.image(lens, source, light, None, lens_light_add=not self.is_lens), fwhm, scale)
            if points is not None:
                x, y, gain, mags = points
                x_pix, y_pix = data.map_coord2pix(x, y)
                image += point_images(self.preset.num_pix, x_pix, y_pix, obs.magnitude2cps(mags[b]) * gain, fwhm, scale)
            if self.is_lens:  # `image` is the lensed light alone so far
                signal = image
                image = signal + _convolve(model.image(lens, source, light, None, source_add=False), fwhm, scale)
                snr2 += float(np.sum(signal**2 / (obs.background_noise**2 + obs.flux_noise(image) ** 2)))
            prepared.append((image, obs))
            if b == 0:
                meta.update(exposure_s=float(obs.exposure_time), seeing_arcsec=float(fwhm),
                            sky_sigma=float(obs.background_noise),
                            depth_mag=depth_mag(obs, kw["magnitude_zero_point"], fwhm, scale))
        meta["lensed_snr"] = math.sqrt(snr2) if self.is_lens else float("nan")
        return prepared

    def render(self, prepared: list[tuple], meta: dict, rng: np.random.Generator, noise: str) -> np.ndarray:
        return stack_bands(prepared, rng, noise)
