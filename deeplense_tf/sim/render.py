"""Render drawn lens systems with lenstronomy, and add each preset's noise.

A ``Renderer`` builds the lenstronomy classes once per (preset, class, geometry) and then
only varies keyword arguments: building them per image, as the published scripts do, costs
far more than the ray tracing itself. lenstronomy is imported here, inside functions, so
``python -m deeplense_tf.data.simulate --help`` stays fast.
"""

from __future__ import annotations

import warnings

import numpy as np

from deeplense_tf.sim.physics import N_SUBHALOS, VORTEX_POINTS, Z_LENS, Z_SOURCE, Preset, cosmology, z_source_convention

_NUMERICS = {"supersampling_factor": 1, "point_source_supersampling_factor": 1}
_RENDERERS: dict[tuple, "Renderer"] = {}


def get_renderer(preset: Preset, cls: str, geometry: str) -> "Renderer":
    """The cached renderer of this worker process for (preset, class, geometry)."""
    key = (preset, cls, geometry)
    if key not in _RENDERERS:
        _RENDERERS[key] = Renderer(preset, cls, geometry)
    return _RENDERERS[key]


def _band_kwargs(instrument: str) -> dict:
    if instrument == "euclid_vis":
        from lenstronomy.SimulationAPI.ObservationConfig.Euclid import Euclid

        return Euclid(band="VIS", psf_type="GAUSSIAN", coadd_years=6).kwargs_single_band()
    if instrument == "hst_wfc3_f160w":
        from lenstronomy.SimulationAPI.ObservationConfig.HST import HST

        return HST(band="WFC3_F160W", psf_type="GAUSSIAN").kwargs_single_band()
    raise ValueError(f"no lenstronomy observation preset for instrument {instrument!r}")


class PointMasses:
    """All subhalo / vortex point masses of an image as one lenstronomy lens profile.

    lenstronomy evaluates each ``POINT_MASS`` over the whole grid in its own call, about a
    dozen array passes each: 100 calls per axion image, most of a 150x150 Model I render.
    This profile takes arrays of ``theta_E``, ``center_x``, ``center_y`` and sums
    alpha = sum_k theta_k^2 (x - x_k, y - y_k) / |r - r_k|^2 with in-place real arithmetic on
    preallocated buffers: the same deflection as ``POINT_MASS`` (to float64 rounding), faster
    than the same sum in complex arithmetic (numpy's complex division is slow) and several times
    faster than one ``POINT_MASS`` call per point (``python -m pipelines.sim_speed`` measures the
    whole render against the latter).
    Blocks of several point masses at once were slower: their temporaries leave the cache.
    Rendering an image needs only deflections, so only ``derivatives`` is provided.
    """

    param_names = ["theta_E", "center_x", "center_y"]

    def derivatives(self, x, y, theta_E, center_x, center_y):
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        centres_x = np.asarray(center_x, dtype=float).ravel()
        centres_y = np.asarray(center_y, dtype=float).ravel()
        strengths = np.asarray(theta_E, dtype=float).ravel() ** 2
        alpha_x, alpha_y = np.zeros_like(x), np.zeros_like(x)
        dx, dy, scale, dy2 = (np.empty_like(x) for _ in range(4))
        with np.errstate(divide="ignore", invalid="ignore"):
            for cx, cy, strength in zip(centres_x, centres_y, strengths):
                np.subtract(x, cx, out=dx)
                np.subtract(y, cy, out=dy)
                np.multiply(dx, dx, out=scale)
                np.multiply(dy, dy, out=dy2)
                scale += dy2
                np.divide(strength, scale, out=scale)  # theta_k^2 / |r - r_k|^2
                dx *= scale
                dy *= scale
                alpha_x += dx
                alpha_y += dy
        bad = ~(np.isfinite(alpha_x) & np.isfinite(alpha_y))
        if bad.any():  # pixels exactly on a point mass: lenstronomy gives that point's term 0
            off_x = x[bad][:, None] - centres_x[None, :]
            off_y = y[bad][:, None] - centres_y[None, :]
            r2 = off_x**2 + off_y**2
            scale = np.divide(strengths, r2, out=np.zeros_like(r2), where=r2 != 0)
            alpha_x[bad] = (scale * off_x).sum(axis=1)
            alpha_y[bad] = (scale * off_y).sum(axis=1)
        return alpha_x, alpha_y


def group_point_masses(kwargs_lens: list[dict]) -> list[dict]:
    """[SIE, SHEAR, point mass, point mass, ...] -> [SIE, SHEAR, {arrays of all point masses}]."""
    main, points = kwargs_lens[:2], kwargs_lens[2:]
    if not points:  # a cdm image whose drawn subhalo count is 0 (presets with subhalo_abundance)
        return [*main, {name: np.zeros(0) for name in PointMasses.param_names}]
    return [*main, {name: np.array([k[name] for k in points]) for name in PointMasses.param_names}]


def _use_grouped_point_masses(image_model) -> bool:
    """Swap lenstronomy's third lens profile for ``PointMasses``; False if its layout is unexpected."""
    from lenstronomy.LensModel.Profiles.point_mass import PointMass

    lens_model = getattr(getattr(image_model, "LensModel", None), "lens_model", None)
    holder = getattr(lens_model, "_multi_plane_base", lens_model)  # SimAPI presets: multi-plane, one redshift
    functions = getattr(holder, "func_list", None)
    if not isinstance(functions, list) or len(functions) != 3 or type(functions[2]) is not PointMass:
        return False
    functions[2] = PointMasses()
    return True


class Renderer:
    """Noiseless model images and noisy observations for one (preset, class, geometry)."""

    def __init__(self, preset: Preset, cls: str, geometry: str, grouped: bool = True):
        """``grouped``: all point masses as one ``PointMasses`` profile (the fast default);
        False, or a lenstronomy whose layout is not the expected one: one ``POINT_MASS`` each."""
        self.preset, self.geometry = preset, geometry
        n_points = {"no_sub": 0, "cdm": N_SUBHALOS, "axion": VORTEX_POINTS}[cls]
        self.grouped = False
        if grouped and n_points:
            self._build(geometry, ["SIE", "SHEAR", "POINT_MASS"])
            self.grouped = _use_grouped_point_masses(self.image_model)
        if not self.grouped:
            self._build(geometry, ["SIE", "SHEAR"] + ["POINT_MASS"] * n_points)

    def _build(self, geometry: str, lens_models: list[str]) -> None:
        self.lens_models = lens_models
        with warnings.catch_warnings():  # "Cosmology is provided ..." from multi-plane setup
            warnings.simplefilter("ignore")
            if self.preset.uses_simapi:
                self._build_simapi(geometry)
            else:
                self._build_generic()

    def _build_simapi(self, geometry: str) -> None:
        from lenstronomy.SimulationAPI.sim_api import SimAPI

        kwargs_model = {
            "lens_model_list": self.lens_models,
            "lens_redshift_list": [Z_LENS] * len(self.lens_models),
            "source_light_model_list": ["SERSIC_ELLIPSE"],
            "source_redshift_list": [Z_SOURCE],
            "cosmo": cosmology(),
            "z_source": Z_SOURCE,
            "z_source_convention": z_source_convention(self.preset, geometry),
        }
        self.sim = SimAPI(num_pix=self.preset.num_pix, kwargs_single_band=_band_kwargs(self.preset.instrument),
                          kwargs_model=kwargs_model)
        if abs(self.sim.pixel_scale - self.preset.pixel_scale) > 1e-9:
            raise ValueError(f"{self.preset.name}: lenstronomy pixel scale {self.sim.pixel_scale} "
                             f"!= preset {self.preset.pixel_scale}")
        self.image_model = self.sim.image_model_class(_NUMERICS)

    def _build_generic(self) -> None:
        from lenstronomy.Data.imaging_data import ImageData
        from lenstronomy.Data.psf import PSF
        from lenstronomy.ImSim.image_model import ImageModel
        from lenstronomy.LensModel.lens_model import LensModel
        from lenstronomy.LightModel.light_model import LightModel
        from lenstronomy.Util.util import make_grid_with_coordtransform

        p = self.preset
        _, _, ra0, dec0, _, _, pix2angle, _ = make_grid_with_coordtransform(num_pix=p.num_pix, delta_pix=p.pixel_scale)
        data = ImageData(image_data=np.zeros((p.num_pix, p.num_pix)), ra_at_xy_0=ra0, dec_at_xy_0=dec0,
                         transform_pix2angle=pix2angle)
        psf = PSF(psf_type="GAUSSIAN", fwhm=p.psf_fwhm, pixel_size=p.pixel_scale, truncation=3)
        self.sim = None
        self.image_model = ImageModel(data, psf, lens_model_class=LensModel(self.lens_models),
                                      source_model_class=LightModel(["SERSIC_ELLIPSE"]),
                                      kwargs_numerics=_NUMERICS)

    def prepare(self, params: tuple, meta: dict) -> tuple:
        """(kwargs_lens, source) -> (kwargs_lens, lenstronomy kwargs_source); completes meta.

        SimAPI presets turn the source magnitude into an amplitude and record it and the exposure.
        """
        kwargs_lens, source = params
        if self.grouped:
            kwargs_lens = group_point_masses(kwargs_lens)
        elif len(kwargs_lens) != len(self.lens_models):  # one POINT_MASS each, and this image's count differs
            self._build(self.geometry, ["SIE", "SHEAR"] + ["POINT_MASS"] * (len(kwargs_lens) - 2))
        if self.sim is None:
            return kwargs_lens, [source]
        _, kwargs_source, _ = self.sim.magnitude2amplitude(None, [source])
        meta["source_amp"] = float(kwargs_source[0]["amp"])
        meta["exposure_s"] = float(self.sim.exposure_time)
        return kwargs_lens, kwargs_source

    def render(self, params: tuple, meta: dict, rng: np.random.Generator, noise: str) -> np.ndarray:
        """The stored float32 image of prepared params."""
        return self.observe(self.model(*params), meta, rng, noise)

    def model(self, kwargs_lens: list[dict], kwargs_source: list[dict]) -> np.ndarray:
        """Noiseless image: e-/s for the SimAPI presets, flux per unit exposure otherwise.

        The lensed source alone: ``image_model.image`` would add the lens light and point
        sources these presets do not have, after convolving an image of zeros with the PSF.
        """
        return self.image_model.source_surface_brightness(kwargs_source, kwargs_lens)

    def observe(self, model: np.ndarray, meta: dict, rng: np.random.Generator, noise: str) -> np.ndarray:
        """The stored image (float32) for a noise mode: "on", "off" or "published"."""
        if self.sim is not None:
            if noise == "published":  # DeepLenseSim returns model + model; its noise is never added
                image = 2.0 * model
            elif noise == "off":
                image = model
            else:  # lenstronomy's own noise model (background + Gaussian-approximated Poisson), our RNG
                shape = model.shape
                image = (model + rng.standard_normal(shape) * self.sim.background_noise
                         + rng.standard_normal(shape) * self.sim.flux_noise(model))
            return image.astype(np.float32)
        exposure, sigma = meta["exposure_s"], self.preset.background_rms
        if noise == "off":  # expected counts
            return (exposure * model).astype(np.float32)
        background = rng.standard_normal(model.shape) * sigma
        expected = model + background
        if noise == "published":  # DeepLenseSim adds a Gaussian Poisson term before drawing counts
            expected = expected + rng.standard_normal(model.shape) * np.sqrt(np.abs(model) / exposure)
        return rng.poisson(np.clip(exposure * expected, 0, None)).astype(np.float32)
