"""Survey-like lens finding (issue #20): confusers, lensed quasars, per-image seeing and depth,
metrics per kind; the older lens-finding presets unchanged."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from deeplense_tf.evaluation import metrics
from deeplense_tf.evaluation.report import evaluate_predictions
from deeplense_tf.sim import generate as sim
from deeplense_tf.sim import lens_survey
from deeplense_tf.sim.generate import get_preset, image_rng, simulate_one

SPACE, GROUND = get_preset("lens_finding_survey"), get_preset("lens_finding_ground_survey")
# sha256 of images 0-2 of each class, seed 7, noise on, computed before the survey presets existed
LENS_FINDING_SHA256 = {
    "lens_finding": "ef112f9baaf1aecf4e4d7708e3f0600f796fdf35814b3205893f245b19d8c80b",
    "lens_finding_ground": "95e6e63e356ade57f0c7458e5c3c9c95cbe4cce2a77f309855e37dafa7294d21",
}


def drawn_metadata(preset, cls, n, seed=3):
    """Metadata of images 0..n-1 from the draws alone (no lenstronomy): fast enough for proportions."""
    position = preset.classes.index(cls)
    return pd.DataFrame([lens_survey.draw(preset, cls, "deeplensesim", image_rng(seed, position, i))[1]
                         for i in range(n)])


def indices_of(kind, n, preset=SPACE, seed=3):
    """Non-lenses of a confuser kind without field objects: their light is the confuser's alone."""
    meta = drawn_metadata(preset, "non_lens", 400, seed)
    return meta.index[(meta["confuser"] == kind) & (meta["field_objects"] == 0)][:n].tolist()


def stamp(kind_index, preset=SPACE, seed=3, noise="off"):
    return simulate_one(preset, "non_lens", kind_index, seed, noise=noise)


def axis_ratio(image):
    """sqrt of the ratio of the flux-weighted second moments' eigenvalues (1 round, 0 a line)."""
    y, x = np.indices(image.shape)
    w = image.ravel() / image.sum()
    cov = np.cov(np.stack([x.ravel(), y.ravel()]), aweights=w)
    low, high = np.linalg.eigvalsh(cov)
    return math.sqrt(low / high)


def annulus_mean(image, radius_px, centre=50):
    y, x = np.indices(image.shape)
    r = np.hypot(x - centre, y - centre)
    return image[(r > 0.85 * radius_px) & (r < 1.15 * radius_px)].mean()


def mirror_asymmetry(image):
    """Smallest |I - mirror(I)| / sum(I) over mirror axes every 3 degrees: 0 for elliptical isophotes."""
    best = np.inf
    for angle in range(0, 180, 3):
        r = ndimage.rotate(image, angle, reshape=False, order=1)
        best = min(best, np.abs(r - r[::-1]).sum() / r.sum())
    return best


def peaks(image, fraction):
    return int(((image == ndimage.maximum_filter(image, size=5)) & (image > fraction * image.max())).sum())


@pytest.mark.parametrize("preset", [SPACE, GROUND])
def test_each_kind_appears_in_the_stated_proportion(preset):
    for cls, column, fractions in (("non_lens", "confuser", lens_survey.CONFUSER_FRACTIONS),
                                   ("lens", "source_kind", lens_survey.SOURCE_KIND_FRACTIONS)):
        n = 600
        counts = drawn_metadata(preset, cls, n)[column].value_counts()
        assert set(counts.index) == set(fractions)
        for kind, p in fractions.items():
            assert abs(counts[kind] - n * p) < 4 * math.sqrt(n * p * (1 - p)), (kind, counts[kind], n * p)
    assert math.isclose(sum(lens_survey.CONFUSER_FRACTIONS.values()), 1.0)


@pytest.mark.parametrize("preset", [SPACE, GROUND])
def test_field_objects_are_as_common_in_lenses_as_in_non_lenses(preset):
    counts = [drawn_metadata(preset, cls, 600)["field_objects"] for cls in preset.classes]
    for count in counts:  # Poisson: mean and variance both FIELD_OBJECTS_MEAN
        assert abs(count.mean() - lens_survey.FIELD_OBJECTS_MEAN) < 4 * math.sqrt(lens_survey.FIELD_OBJECTS_MEAN / 600)
    assert abs(counts[0].mean() - counts[1].mean()) < 0.15


def test_field_objects_add_light_away_from_the_centre():
    meta = drawn_metadata(SPACE, "lens", 60)
    for i in meta.index[meta["field_objects"] > 0][:3]:
        survey, row = lens_survey.draw(SPACE, "lens", "deeplensesim", image_rng(3, 0, i))
        image, _ = simulate_one(SPACE, "lens", int(i), 3, noise="off")
        profiles = survey["stamp"].profiles["lens_light"]
        light = survey["stamp"].light["lens_light"][0]
        n = row["field_objects"]
        survey["stamp"].profiles["lens_light"], survey["stamp"].light["lens_light"] = (
            profiles[:-n], [band[:-n] for band in survey["stamp"].light["lens_light"]])
        renderer = lens_survey.get_renderer(SPACE, "lens", "deeplensesim")
        extra = image - renderer.prepare(survey, dict(row))[0][0]
        for component in light[-n:]:
            x = round(50 + component["center_x"] / SPACE.pixel_scale)
            y = round(50 + component["center_y"] / SPACE.pixel_scale)
            assert math.hypot(x - 50, y - 50) > 0.4 * 50
            assert extra[y - 3:y + 4, x - 3:x + 4].mean() > 10 * extra.mean(), (i, x, y)  # its light is there


def test_a_plain_survey_galaxy_is_the_lens_finding_non_lens():
    """Same draws, same light: the survey renderer (own PSF convolution) equals lenstronomy's SimAPI."""
    for i in indices_of("none", 2):
        ours, meta = stamp(i)
        theirs, _ = simulate_one("lens_finding", "non_lens", i, 3, noise="off")
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6 * theirs.max())
        assert meta["seeing_arcsec"] == 0.18


def test_ring_galaxies_have_a_ring():
    for i in indices_of("ring", 4):
        image, meta = stamp(i)
        radius = meta["confuser_radius_arcsec"] / SPACE.pixel_scale
        assert annulus_mean(image, radius) > annulus_mean(image, radius / 2), i


def test_edge_on_disks_are_elongated_and_plain_galaxies_are_not():
    assert all(axis_ratio(stamp(i)[0]) < 0.45 for i in indices_of("edge_on", 4))
    assert all(axis_ratio(stamp(i)[0]) > 0.45 for i in indices_of("none", 4))


def test_spiral_arms_break_mirror_symmetry():
    assert all(mirror_asymmetry(stamp(i)[0]) > 0.05 for i in indices_of("spiral", 4))
    assert all(mirror_asymmetry(stamp(i)[0]) < 0.05 for i in indices_of("none", 3))


@pytest.mark.parametrize("kind", ["merger", "stars"])
def test_companions_add_peaks_where_recorded(kind):
    """The companion (merger) or star is the light the plain galaxy of the same draws lacks."""
    for i in indices_of(kind, 3):
        image, meta = stamp(i)
        extra = image - simulate_one("lens_finding", "non_lens", i, 3, noise="off")[0]
        assert peaks(image, 1e-3) >= 2 and peaks(extra, 0.05) >= 1
        y, x = np.unravel_index(np.argmax(ndimage.gaussian_filter(extra, 1)), extra.shape)
        distance = math.hypot(x - 50, y - 50) * SPACE.pixel_scale
        assert distance >= 0.9 * meta["confuser_radius_arcsec"] - 0.1, (i, distance)


def test_unlensed_arcs_are_thin_blue_and_off_centre():
    for i in indices_of("blue_arc", 3):
        image, meta = stamp(i)
        arc = np.clip(image - simulate_one("lens_finding", "non_lens", i, 3, noise="off")[0], 0, None)
        assert axis_ratio(arc) < 0.55
    index = indices_of("blue_arc", 1, GROUND)[0]
    survey, _ = lens_survey.draw(GROUND, "non_lens", "deeplensesim", image_rng(3, 1, index))
    light = survey["stamp"].light["lens_light"]  # bands r i g u; component 0 the galaxy, the rest the arc
    g_minus_r = [light[2][k]["magnitude"] - light[0][k]["magnitude"] for k in (0, 1)]
    assert g_minus_r[1] < g_minus_r[0]


def test_lensed_quasars_show_several_point_images():
    meta = drawn_metadata(SPACE, "lens", 200)
    renderer = lens_survey.get_renderer(SPACE, "lens", "deeplensesim")
    checked = 0
    for i in meta.index[meta["source_kind"] == "quasar"][:6]:
        survey, meta_i = lens_survey.draw(SPACE, "lens", "deeplensesim", image_rng(3, 0, i))
        with_points = renderer.prepare(survey, dict(meta_i))[0][0]
        survey["stamp"].points = None
        points_only = with_points - renderer.prepare(survey, dict(meta_i))[0][0]
        image, row = simulate_one(SPACE, "lens", int(i), 3, noise="off")
        np.testing.assert_allclose(image, with_points.astype(np.float32))
        if row["n_point_images"] >= 2:
            assert peaks(points_only, 0.02) >= 2
            checked += 1
    assert checked >= 2 and all(meta.loc[meta["source_kind"] != "quasar", "quasar_mag"].isna())


def test_ground_seeing_and_depth_vary_per_image_and_are_recorded(tmp_path):
    out = sim.simulate("lens_finding_ground_survey", 4, 1, tmp_path / "g", workers=1, progress=False)
    meta = pd.read_csv(out / "metadata.csv")
    assert meta["seeing_arcsec"].nunique() == len(meta) and meta["seeing_arcsec"].between(0.5, 1.2).all()
    assert meta["depth_mag"].nunique() == len(meta)
    # deeper (larger depth_mag) means a lower sky sigma at equal seeing; here: rank correlation
    assert meta["sky_sigma"].corr(meta["exposure_s"], method="spearman") < -0.9
    assert set(meta["confuser"]) <= set(lens_survey.CONFUSER_FRACTIONS) and "none" in set(meta["confuser"])
    assert (meta.loc[meta["is_lens"] == 1, "lensed_snr"] > 0).all()
    space = pd.DataFrame([simulate_one(SPACE, "non_lens", i, 1, render=False)[1] for i in range(3)])
    assert space["seeing_arcsec"].eq(0.18).all() and space["sky_sigma"].nunique() == 1


def test_metrics_by_kind_on_a_hand_made_table():
    y = [1, 1, 1, 1, 0, 0, 0, 0]
    score = [0.6, 0.7, 0.8, 0.9, 0.1, 0.2, 0.65, 0.95]
    confuser = ["none"] * 4 + ["spiral", "spiral", "ring", "ring"]
    by = metrics.lens_finding_metrics_by_kind(y, score, confuser, "negative")
    assert by["spiral"]["auc"] == 1.0 and by["spiral"]["tpr0"] == 1.0 and by["spiral"]["n_pos"] == 4
    assert by["ring"]["auc"] == pytest.approx(3 / 8) and by["ring"]["tpr0"] == 0.0 and set(by) == {"spiral", "ring"}
    source = ["quasar", "quasar", "extended", "extended"] + ["none"] * 4
    by = metrics.lens_finding_metrics_by_kind(y, [0.3, 0.2, 0.9, 0.8, 0.5, 0.1, 0.15, 0.05], source, "positive")
    assert by["extended"]["auc"] == 1.0 and by["quasar"]["auc"] == pytest.approx(6 / 8) and by["quasar"]["n_neg"] == 4
    with pytest.raises(ValueError, match="side"):
        metrics.lens_finding_metrics_by_kind(y, score, confuser, "lenses")


def test_evaluate_reports_per_kind_and_bins_in_predictions(tmp_path):
    from deeplense_tf.data.sources import load_data

    out = sim.simulate("lens_finding_survey", 6, 2, tmp_path / "s", workers=1, progress=False)
    table = load_data(str(out)).table  # metadata.csv columns travel with the data index
    y = table["is_lens"].to_numpy(np.int32)
    scores = np.where(y == 1, 0.6, 0.4) + np.random.default_rng(0).normal(0, 0.1, len(y))
    document = evaluate_predictions("lens_finding", y, scores[:, None], {"class_names": ["non_lens", "lens"]},
                                    table, tmp_path / "eval", {"n": len(y)})
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert set(saved["by_confuser"]) == set(table.loc[y == 0, "confuser"])
    assert set(saved["by_source_kind"]) == set(table.loc[y == 1, "source_kind"])
    assert saved["by_confuser"] == document["metrics"]["by_confuser"]
    frame = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    for column in ("theta_e_arcsec", "source_mag", "lensed_snr", "confuser", "source_kind", "seeing_arcsec"):
        assert column in frame, column
    assert frame["confuser"].tolist() == table["confuser"].tolist() and "none" in set(frame["confuser"])


@pytest.mark.parametrize("preset", sorted(LENS_FINDING_SHA256))
def test_existing_lens_finding_presets_unchanged(preset):
    digest = hashlib.sha256()
    for cls in ("lens", "non_lens"):
        for i in range(3):
            digest.update(np.ascontiguousarray(simulate_one(preset, cls, i, 7)[0]).tobytes())
    assert digest.hexdigest() == LENS_FINDING_SHA256[preset]
