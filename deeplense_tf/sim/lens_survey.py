"""Lens-finding stamps as hard as a survey's: presets ``lens_finding_survey`` (space) and
``lens_finding_ground_survey`` (ground, r i g u).

They start from ``lens_finding``'s draws (the same deflector and extended source) and add:

- non-lenses that lens searches confuse with lenses (``CONFUSER_FRACTIONS``; metadata column
  ``confuser``, ``none`` for lenses and plain galaxies), drawn with lenstronomy light profiles:
  spirals (bulge, inclined exponential disk, two logarithmic arms of Gaussian knots), ring galaxies
  (a faint core and a ring made of the difference of two Sersics of equal central brightness),
  mergers / close pairs (a second galaxy plus tidal debris as shapelets), edge-on disks, blue arcs
  that are not lensed (a curved chain of elongated Gaussian knots, no counter-image), and stars
  or unlensed quasars beside a galaxy (the false positives of lensed-quasar searches);
- lensed quasars beside extended sources (``SOURCE_KIND_FRACTIONS``; column ``source_kind``): the
  lensed host plus the point images that lenstronomy's analytical SIE + shear solver finds;
- unrelated stars and faint galaxies in the field of every stamp, lens or not (``FIELD_OBJECTS_MEAN``;
  column ``field_objects``), so that a second object in a stamp does not by itself mean "non-lens";
- per-image seeing and depth around the preset's values on the ground (``OBSERVING_SCATTER``),
  recorded as ``seeing_arcsec``, ``sky_sigma``, ``depth_mag`` and ``exposure_s`` (first band);
  ``lensed_snr`` is the matched-filter signal-to-noise of the lensed light, all bands together.

Rendering (each image at its own seeing): ``survey_render``. The noiseless image is made in
``prepare`` (the SNR needs it), so metadata re-drawn without rendering (a resumed run) still has
every column.
"""

from __future__ import annotations

import math

import numpy as np

from deeplense_tf.sim import lens_finding
from deeplense_tf.sim.lens_finding import LENS_COLOUR, SOURCE_COLOUR, _ellipticity
from deeplense_tf.sim.physics import Preset
from deeplense_tf.sim.survey_render import SurveyRenderer

# shares of the non-lens stamps: our choice, not a census; the kinds lens searches report among their
# false positives (spiral arms, rings, companions, arcs, stars), and a third plain as in lens_finding
CONFUSER_FRACTIONS = {"none": 0.30, "spiral": 0.15, "ring": 0.10, "merger": 0.15, "edge_on": 0.10,
                      "blue_arc": 0.10, "stars": 0.10}
# shares of the lens stamps: lensed quasars are a few per cent of LSST's galaxy-scale lenses (OM10 against
# Collett 2015), a quarter here so that their metrics have examples
SOURCE_KIND_FRACTIONS = {"extended": 0.75, "quasar": 0.25}
# (lognormal sigma of the seeing, sigma in mag of the depth) per instrument; space is stable
OBSERVING_SCATTER = {"space": (0.0, 0.0), "ground": (0.15, 0.25)}
QUASAR_COLOUR = {"VIS": 0.0, "r": 0.0, "i": -0.1, "g": 0.2, "u": 0.4}
ARM_KNOTS, ARC_KNOTS, SHAPELET_N_MAX = 10, 10, 2
# Unrelated stars and faint galaxies in the field of every stamp, lens or not (Poisson mean per stamp,
# half stars): were companions and stars only in non-lenses (the confusers), "a second object" alone
# would mark a non-lens, a shortcut no survey offers. Column ``field_objects``.
FIELD_OBJECTS_MEAN, FIELD_STAR_SHARE = 0.6, 0.5


def _b_n(n: float) -> float:
    return 1.9992 * n - 0.3271  # lenstronomy's SersicUtil.b_n


def ring_scale(n: float, k: float) -> float:
    """Radius of the peak of Sersic(R) - Sersic(k R) (same n, same central brightness), in units of R."""
    return (math.log(1 / k) / (n * _b_n(n) * (k ** (-1 / n) - 1))) ** n


def _colours(preset: Preset, table: dict, rng: np.random.Generator, scatter: float = 0.1) -> np.ndarray:
    return np.array([table[b] for b in preset.bands]) + rng.normal(0, scatter, len(preset.bands))


def _blend(a: dict, b: dict, t: float) -> dict:
    return {band: t * a[band] + (1 - t) * b[band] for band in a}


class Stamp:
    """The light of one stamp, band by band: lens light, source, point sources; profiles named once."""

    def __init__(self, preset: Preset):
        self.preset, self.bands = preset, range(len(preset.bands))
        self.profiles = {"lens_light": [], "source": [], "point": []}
        self.light = {"lens_light": [[] for _ in self.bands], "source": [[] for _ in self.bands]}
        self.points: dict | None = None

    def add(self, part: str, profile: str, shape: dict, mags: np.ndarray, **extra) -> int:
        """One component of ``part``, magnitude ``mags[b]`` in band b; returns its index."""
        self.profiles[part].append(profile)
        for b in self.bands:
            self.light[part][b].append({**shape, "magnitude": float(mags[b]), **extra})
        return len(self.profiles[part]) - 1

    def add_points(self, profile: str, x, y, mags: np.ndarray) -> None:
        """Point sources (``mags`` (bands, points)); LENSED_POSITION ones are placed in ``prepare``."""
        self.profiles["point"].append(profile)
        self.points = {"x": np.atleast_1d(x).tolist(), "y": np.atleast_1d(y).tolist(), "mags": np.asarray(mags)}

    def models(self, is_lens: bool) -> dict:
        return {"lens_model_list": ["SIE", "SHEAR"] if is_lens else [],
                "lens_light_model_list": list(self.profiles["lens_light"]),
                "source_light_model_list": list(self.profiles["source"])}  # points: SurveyRenderer


def _deflector(params: dict, b: int) -> dict:
    return params["lens_light"][b]


def _plain(stamp, params):
    """The deflector of ``lens_finding``'s draw, as it is."""
    for b in stamp.bands:
        stamp.light["lens_light"][b].append(dict(_deflector(params, b)))
    stamp.profiles["lens_light"].append("SERSIC_ELLIPSE")


def _add_bulge(stamp, params, rng, r_range, fainter, phi=None, q=None):
    """The deflector's Sersic, smaller and fainter: the bulge of a disk or ring galaxy."""
    base = _deflector(params, 0)
    shrink, dm = rng.uniform(*r_range), rng.uniform(*fainter)
    shape = {**{k: v for k, v in base.items() if k != "magnitude"}, "R_sersic": base["R_sersic"] * shrink}
    if phi is not None:
        shape["e1"], shape["e2"] = _ellipticity(q, phi)
    mags = np.array([_deflector(params, b)["magnitude"] for b in stamp.bands]) + dm
    stamp.add("lens_light", "SERSIC_ELLIPSE", shape, mags)
    return dm


def _knot_chain(stamp, xs: np.ndarray, ys: np.ndarray, width: float, mags: np.ndarray) -> None:
    """Gaussian knots along a polyline, each stretched to its spacing: a thin, smooth band of light."""
    dx, dy = np.gradient(xs), np.gradient(ys)
    for x, y, ddx, ddy in zip(xs, ys, dx, dy):
        length = max(0.6 * math.hypot(ddx, ddy), width)
        e1, e2 = _ellipticity(width / length, math.atan2(ddy, ddx))
        stamp.add("lens_light", "GAUSSIAN_ELLIPSE", {"sigma": math.sqrt(width * length), "e1": e1, "e2": e2,
                                                    "center_x": float(x), "center_y": float(y)}, mags)


def _spiral(stamp, params, meta, rng, preset):
    u = rng.uniform
    _add_bulge(stamp, params, rng, (0.3, 0.6), (0.7, 1.8))
    r_disk, q, phi = u(0.6, 1.8), max(u(0.35, 1.0), 0.15), u(0, math.pi)
    disk_mag = meta["lens_mag"] + u(-0.3, 0.8)
    e1, e2 = _ellipticity(q, phi)
    stamp.add("lens_light", "SERSIC_ELLIPSE", {"R_sersic": r_disk, "n_sersic": 1.0, "e1": e1, "e2": e2,
                                               "center_x": 0.0, "center_y": 0.0},
              disk_mag + _colours(preset, _blend(LENS_COLOUR, SOURCE_COLOUR, 0.5), rng))
    pitch, start, turn, r0 = math.radians(u(10, 30)), u(0, 2 * math.pi), u(1.0, 1.5) * math.pi, r_disk * u(0.3, 0.5)
    arm_mag = disk_mag + u(0.3, 1.3)
    knot_mags = arm_mag + 2.5 * math.log10(2 * ARM_KNOTS) + _colours(preset, SOURCE_COLOUR, rng)
    width, t = u(0.04, 0.1), np.linspace(0, turn, ARM_KNOTS)
    r = r0 * np.exp(t * math.tan(pitch))  # a logarithmic spiral in the disk plane, then inclined and turned
    for arm in (0.0, math.pi):
        x, y = r * np.cos(start + arm + t), q * r * np.sin(start + arm + t)
        _knot_chain(stamp, x * math.cos(phi) - y * math.sin(phi), x * math.sin(phi) + y * math.cos(phi), width,
                    knot_mags)
    return arm_mag, float(r[-1])


def _ring(stamp, params, meta, rng, preset):
    u = rng.uniform
    core_dm = _add_bulge(stamp, params, rng, (0.2, 0.4), (1.0, 2.5))
    radius, k, n, q, phi = u(0.6, 2.5), u(0.7, 0.9), u(0.2, 0.35), u(0.5, 1.0), u(0, math.pi)  # n < 0.5: sharp edges
    off, off_angle = u(0, 0.2) * radius, u(0, 2 * math.pi)
    r_outer = radius / ring_scale(n, k)
    e1, e2 = _ellipticity(q, phi)
    shape = {"n_sersic": n, "e1": e1, "e2": e2, "center_x": off * math.cos(off_angle),
             "center_y": off * math.sin(off_angle)}
    ring_mag = meta["lens_mag"] + core_dm - u(0.5, 2.0)  # the ring outshines the core
    outer = stamp.add("lens_light", "SERSIC_ELLIPSE", {"R_sersic": r_outer, **shape},
                      ring_mag + 2.5 * math.log10(1 - k**2) + _colours(preset, SOURCE_COLOUR, rng))
    stamp.add("lens_light", "SERSIC_ELLIPSE", {"R_sersic": k * r_outer, **shape}, np.full(len(preset.bands), np.nan),
              negative_of=outer)  # same amplitude, subtracted: zero light in the centre, a ring at `radius`
    return ring_mag, radius


def _merger(stamp, params, meta, rng, preset):
    u = rng.uniform
    _plain(stamp, params)  # the deflector is the primary
    sep, angle = u(0.6, 3.0), u(0, 2 * math.pi)
    x, y = sep * math.cos(angle), sep * math.sin(angle)
    mag = meta["lens_mag"] + u(0.0, 2.0)
    e1, e2 = _ellipticity(u(0.4, 1.0), u(0, math.pi))
    stamp.add("lens_light", "SERSIC_ELLIPSE", {"R_sersic": u(0.2, 1.2), "n_sersic": u(0.8, 4.0), "e1": e1, "e2": e2,
                                               "center_x": x, "center_y": y},
              mag + _colours(preset, _blend(LENS_COLOUR, SOURCE_COLOUR, u()), rng))
    n_coeff = (SHAPELET_N_MAX + 1) * (SHAPELET_N_MAX + 2) // 2
    coeffs = np.concatenate([[1.0], rng.normal(0, 0.12, n_coeff - 1)])  # mostly positive (n_max 2)
    shift = rng.normal(0, 0.3 * sep, 2)
    debris_mag = meta["lens_mag"] + u(1.0, 2.5)
    stamp.add("lens_light", "SHAPELETS", {"amp": coeffs.tolist(), "beta": u(0.3, 0.8) * sep, "n_max": SHAPELET_N_MAX,
                                          "center_x": x / 2 + shift[0], "center_y": y / 2 + shift[1]},
              debris_mag + _colours(preset, SOURCE_COLOUR, rng))
    return mag, sep


def _edge_on(stamp, params, meta, rng, preset):
    u = rng.uniform
    r, q, phi, n = u(0.7, 2.0), u(0.08, 0.25), u(0, math.pi), u(0.7, 1.2)
    _add_bulge(stamp, params, rng, (0.3, 0.6), (1.0, 2.5), phi=phi, q=u(0.6, 1.0))
    e1, e2 = _ellipticity(q, phi)
    mag = meta["lens_mag"] + u(-0.5, 0.5)
    stamp.add("lens_light", "SERSIC_ELLIPSE", {"R_sersic": r, "n_sersic": n, "e1": e1, "e2": e2, "center_x": 0.0,
                                               "center_y": 0.0},
              mag + _colours(preset, _blend(LENS_COLOUR, SOURCE_COLOUR, 0.5), rng))
    return mag, r


def _blue_arc(stamp, params, meta, rng, preset):
    u = rng.uniform
    _plain(stamp, params)
    radius, off, off_angle = u(0.8, 3.0), u(0.0, 1.0), u(0, 2 * math.pi)
    cx, cy = off * radius * math.cos(off_angle), off * radius * math.sin(off_angle)  # centre of curvature
    middle, opening = u(0, 2 * math.pi), math.radians(u(30, 120))
    mag, width = u(20.5, 24.0), u(0.04, 0.12)
    a = middle + np.linspace(-opening / 2, opening / 2, ARC_KNOTS)
    _knot_chain(stamp, cx + radius * np.cos(a), cy + radius * np.sin(a), width,
                mag + 2.5 * math.log10(ARC_KNOTS) + _colours(preset, SOURCE_COLOUR, rng))
    return mag, radius


def _stars(stamp, params, meta, rng, preset):
    u = rng.uniform
    _plain(stamp, params)
    n = 1 + int(u() < 0.4)
    r, angle = rng.uniform(0.7, 3.5, n), rng.uniform(0, 2 * math.pi, n)
    mags = rng.uniform(19.0, 23.5, n)
    colours = np.stack([_colours(preset, _blend(QUASAR_COLOUR, LENS_COLOUR, u()), rng) for _ in range(n)], axis=1)
    stamp.add_points("UNLENSED", r * np.cos(angle), r * np.sin(angle), mags[None, :] + colours)
    return float(-2.5 * np.log10(np.sum(10 ** (-0.4 * mags)))), float(r.min())


def _field_objects(stamp, rng, preset) -> int:
    """Stars (compact Gaussians: after the seeing, the PSF) and small Sersic galaxies at 45-90 % of
    the stamp's half-width, unlensed, whatever the class; their number."""
    n = int(rng.poisson(FIELD_OBJECTS_MEAN))
    half = preset.num_pix * preset.pixel_scale / 2
    for _ in range(n):
        r, angle = rng.uniform(0.45, 0.9) * half, rng.uniform(0, 2 * math.pi)
        centre = {"center_x": r * math.cos(angle), "center_y": r * math.sin(angle)}
        if rng.uniform() < FIELD_STAR_SHARE:
            mags = rng.uniform(18.5, 23.5) + _colours(preset, _blend(QUASAR_COLOUR, LENS_COLOUR, rng.uniform()), rng)
            stamp.add("lens_light", "GAUSSIAN", {"sigma": preset.pixel_scale / 2, **centre}, mags)
        else:
            e1, e2 = _ellipticity(rng.uniform(0.4, 1.0), rng.uniform(0, math.pi))
            mags = rng.uniform(21.0, 24.5) + _colours(preset, _blend(LENS_COLOUR, SOURCE_COLOUR, rng.uniform()), rng)
            stamp.add("lens_light", "SERSIC_ELLIPSE", {"R_sersic": rng.uniform(0.15, 0.5), "n_sersic": rng.uniform(1, 4),
                                                       "e1": e1, "e2": e2, **centre}, mags)
    return n


CONFUSERS = {"spiral": _spiral, "ring": _ring, "merger": _merger, "edge_on": _edge_on, "blue_arc": _blue_arc,
             "stars": _stars}


def _choose(fractions: dict, rng: np.random.Generator) -> str:
    names = list(fractions)
    return names[int(rng.choice(len(names), p=list(fractions.values())))]


def _lens(stamp, params, meta, rng, preset) -> str:
    kind = _choose(SOURCE_KIND_FRACTIONS, rng)
    _plain(stamp, params)
    host_dm = rng.uniform(0.5, 2.0) if kind == "quasar" else 0.0
    for b in stamp.bands:
        source = params["source"][b]
        stamp.light["source"][b].append({**source, "magnitude": source["magnitude"] + host_dm})
    stamp.profiles["source"].append("SERSIC_ELLIPSE")
    if kind == "quasar":
        mag = rng.uniform(20.0, 24.0)
        stamp.add_points("LENSED_POSITION", meta["source_x"], meta["source_y"],
                         (mag + _colours(preset, QUASAR_COLOUR, rng))[:, None])
        meta.update(quasar_mag=float(mag), source_mag=float(meta["source_mag"] + host_dm))
    return kind


def draw(preset: Preset, cls: str, geometry: str, rng: np.random.Generator):
    """``lens_finding.draw``'s stamp, then its confuser or source kind and the observing conditions."""
    params, meta = lens_finding.draw(preset, cls, geometry, rng)
    seeing_sigma, depth_sigma = OBSERVING_SCATTER[preset.instrument]
    seeing = float(np.clip(math.exp(rng.normal(0, seeing_sigma)), 0.7, 1.6))
    depth = float(np.clip(rng.normal(0, depth_sigma), -0.6, 0.6))
    stamp, nan = Stamp(preset), float("nan")
    meta.update(confuser="none", source_kind="none", confuser_mag=nan, confuser_radius_arcsec=nan, quasar_mag=nan)
    if cls == "lens":
        meta["source_kind"] = _lens(stamp, params, meta, rng, preset)
    else:
        kind = _choose(CONFUSER_FRACTIONS, rng)
        meta["confuser"] = kind
        if kind == "none":
            _plain(stamp, params)
        else:
            mag, radius = CONFUSERS[kind](stamp, params, meta, rng, preset)
            meta.update(confuser_mag=float(mag), confuser_radius_arcsec=float(radius))
    meta["field_objects"] = _field_objects(stamp, rng, preset)  # last: the draws above stay as they were
    survey = {"stamp": stamp, "lens": params["lens"] if cls == "lens" else [], "seeing_factor": seeing,
              "exposure_factor": 10 ** (0.8 * depth)}  # sky-limited: 1 mag deeper = 10^0.8 longer
    return survey, meta


def get_renderer(preset: Preset, cls: str, geometry: str) -> SurveyRenderer:
    key = (preset, cls)  # lens_finding's cache, so pipelines.sim_speed empties both at once
    if key not in lens_finding._RENDERERS:
        lens_finding._RENDERERS[key] = SurveyRenderer(preset, cls)
    return lens_finding._RENDERERS[key]
