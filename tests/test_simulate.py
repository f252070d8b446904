"""The lenstronomy simulator: layout, reproducibility, shards, cache, and the physics it must get right."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deeplense_tf.data.simulate import parse_shard
from deeplense_tf.sim import generate as sim
from deeplense_tf.errors import ConfigError

# The no_sub images of shared/reference/deeplensesim_model_ii_sample.npz (DeepLenseSim's own generator).
REFERENCE_NO_SUB = Path(__file__).resolve().parent / "data" / "deeplensesim_model_ii_no_sub.npz"
COLUMNS = ["file", "class", "seed", "axion_mass_ev", "log10_axion_mass", "vortex_half_length_arcsec",
           "n_subhalos", "subhalo_mass_total", "theta_e_arcsec", "source_x", "source_y", "source_mag",
           "source_amp", "source_r_sersic", "exposure_s"]
FLOATS = COLUMNS[3:]


def ring_radius(images):
    """Brightness-weighted radius of the top 20 % of the mean profile (as acceptance check 03)."""
    m = np.mean([i / i.max() for i in images], 0)
    n = m.shape[0]
    y, x = np.indices(m.shape)
    r = np.hypot(x - (n - 1) / 2, y - (n - 1) / 2).astype(int)
    prof = (np.bincount(r.ravel(), m.ravel()) / np.bincount(r.ravel()))[: n // 2]
    top = prof >= 0.8 * prof.max()
    rr = np.arange(len(prof))
    return float((rr[top] * prof[top]).sum() / prof[top].sum())


def load_set(root):
    meta = pd.read_csv(Path(root) / "metadata.csv")
    return meta, [np.load(Path(root) / f, allow_pickle=False) for f in meta["file"]]


def assert_same_set(a, b):
    meta_a, images_a = load_set(a)
    meta_b, images_b = load_set(b)
    pd.testing.assert_frame_equal(meta_a, meta_b)
    for x, y in zip(images_a, images_b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("preset, size", [("model_i", 150), ("model_ii", 64), ("model_iii", 64)])
def test_layout_shape_dtype_and_metadata(tmp_path, preset, size):
    out = sim.simulate(preset, 2, seed=1, out=tmp_path / preset, workers=1, progress=False)
    meta, images = load_set(out)
    assert len(meta) == 6 and list(meta["class"].unique()) == list(sim.CLASSES)
    assert set(COLUMNS) <= set(meta.columns)
    assert all(meta[c].dtype == np.float64 for c in FLOATS)
    for f, image in zip(meta["file"], images):
        assert f.startswith(f.split("/")[0] + "/") and (out / f).is_file()
        assert image.shape == (size, size) and image.dtype == np.float32 and np.isfinite(image).all()
    axion = meta[meta["class"] == "axion"]
    assert axion["log10_axion_mass"].between(-24, -22).all()
    assert meta.loc[meta["class"] != "axion", "axion_mass_ev"].isna().all()
    assert (meta.loc[meta["class"] == "cdm", "n_subhalos"] == 25).all()


def test_seed_reproducibility(tmp_path):
    a = sim.simulate("model_ii", 2, 5, tmp_path / "a", workers=1, progress=False)
    b = sim.simulate("model_ii", 2, 5, tmp_path / "b", workers=1, progress=False)
    c = sim.simulate("model_ii", 2, 6, tmp_path / "c", workers=1, progress=False)
    assert_same_set(a, b)
    assert not np.array_equal(load_set(a)[1][0], load_set(c)[1][0])


def test_worker_count_does_not_change_output(tmp_path):
    one = sim.simulate("model_ii", 4, 2, tmp_path / "one", workers=1, progress=False)
    two = sim.simulate("model_ii", 4, 2, tmp_path / "two", workers=2, progress=False)
    assert_same_set(one, two)


@pytest.mark.parametrize("n", [5, 2])  # n=2: shard 0 of 3 is empty
def test_shards_joined_equal_the_full_set(tmp_path, n):
    full = sim.simulate("model_ii", n, 4, tmp_path / "full", workers=1, progress=False)
    for k in (2, 0, 1):  # any finishing order
        sim.simulate("model_ii", n, 4, tmp_path / "sharded", workers=1, progress=False, shard=(k, 3))
    assert_same_set(full, tmp_path / "sharded")
    assert len(list((tmp_path / "sharded").glob("metadata-shard-*.csv"))) == 3


def test_resume_fills_in_missing_images_and_refuses_another_set(tmp_path):
    out = sim.simulate("model_ii", 3, 0, tmp_path / "run", workers=1, progress=False)
    before = np.load(out / "cdm" / "cdm_00001.npy")
    (out / "cdm" / "cdm_00001.npy").unlink()
    (out / "metadata.csv").unlink()
    sim.simulate("model_ii", 3, 0, out, workers=1, progress=False)
    np.testing.assert_array_equal(np.load(out / "cdm" / "cdm_00001.npy"), before)
    assert len(pd.read_csv(out / "metadata.csv")) == 9
    with pytest.raises(ConfigError, match="different simulation"):
        sim.simulate("model_ii", 3, 1, out, workers=1, progress=False)


def test_cached_simulation_generates_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPLENSE_TF_CACHE", str(tmp_path))
    first = sim.cached_simulation("model_ii", 2, 7, workers=1, progress=False)
    assert first == tmp_path / "sim" / "model_ii-n2-s7" and (first / "metadata.csv").exists()
    assert [p.name for p in (tmp_path / "sim").iterdir()] == ["model_ii-n2-s7"]  # no temp dir left

    def boom(*args, **kwargs):
        raise AssertionError("regenerated a cached set")

    monkeypatch.setattr(sim, "simulate", boom)
    assert sim.cached_simulation("model_ii", 2, 7, workers=1, progress=False) == first


def test_ring_radius_matches_deeplensesim_reference(tmp_path):
    out = sim.simulate("model_ii", 8, 0, tmp_path, workers=1, noise="off", progress=False)
    meta, images = load_set(out)
    ours = ring_radius([i for i, c in zip(images, meta["class"]) if c == "no_sub"])
    theirs = ring_radius(np.load(REFERENCE_NO_SUB)["images"].astype(float))
    assert abs(ours - theirs) <= 1.0
    # ... and where the preset's Einstein radius (at the true source redshift) puts it
    implied = meta["theta_e_effective_arcsec"].iloc[0] / sim.PRESETS["model_ii"].pixel_scale
    assert abs(ours - implied) <= 1.0


def test_published_noise_is_twice_the_noiseless_image():
    off, _ = sim.simulate_one("model_ii", "cdm", 3, 0, noise="off")
    published, _ = sim.simulate_one("model_ii", "cdm", 3, 0, noise="published")
    np.testing.assert_allclose(published, 2 * off, rtol=1e-6)


def test_empty_sky_noise_matches_instrument_background():
    from deeplense_tf.sim.render import get_renderer

    preset = sim.PRESETS["model_ii"]
    expected = get_renderer(preset, "no_sub", "deeplensesim").sim.background_noise
    residuals = [sim.simulate_one(preset, "no_sub", i, 0, noise="on")[0]
                 - sim.simulate_one(preset, "no_sub", i, 0, noise="off")[0] for i in range(4)]
    corners = np.concatenate([r[:12, :12].ravel() for r in residuals])  # > 3" from the lens
    assert abs(corners.std() / expected - 1) < 0.1 and abs(corners.mean()) < 0.1 * expected


def test_total_flux_follows_source_magnitude():
    base = sim.PRESETS["model_ii"]
    faint = dataclasses.replace(base, name="model_ii_faint", source_magnitude=base.source_magnitude + 1)
    bright_image, _ = sim.simulate_one(base, "no_sub", 0, 0, noise="off")
    faint_image, _ = sim.simulate_one(faint, "no_sub", 0, 0, noise="off")
    assert faint_image.sum() / bright_image.sum() == pytest.approx(10 ** -0.4, rel=1e-4)


def test_vortex_grows_as_axion_mass_falls():
    rows = [sim.simulate_one("model_ii", "axion", i, 0, render=False)[1] for i in range(20)]
    mass = np.array([r["axion_mass_ev"] for r in rows])
    half = np.array([r["vortex_half_length_arcsec"] for r in rows])
    np.testing.assert_allclose(half * mass, 0.03 * 1e-22)
    assert np.all(np.diff(half[np.argsort(mass)]) < 0)


def test_bad_input_gives_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="model_i, model_ii, model_iii"):
        sim.simulate("model_iv", 2, 0, tmp_path / "x")
    with pytest.raises(ConfigError, match="n_per_class"):
        sim.simulate("model_ii", 0, 0, tmp_path / "x")
    with pytest.raises(ConfigError, match="shard"):
        parse_shard("3/3")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot write"):
        sim.simulate("model_ii", 1, 0, blocker / "out", progress=False)
    assert not (tmp_path / "x").exists()


def test_cli_help_is_light_and_documents_published_noise(tmp_path):
    code = ("import sys; from deeplense_tf.data.simulate import build_parser; h = build_parser().format_help();"
            "heavy = [m for m in ('lenstronomy', 'astropy', 'tensorflow', 'keras') if m in sys.modules];"
            "print(heavy); assert not heavy; assert 'published' in h and 'twice the noiseless' in h")
    subprocess.run([sys.executable, "-c", code], check=True)
    rc = subprocess.run([sys.executable, "-m", "deeplense_tf.data.simulate", "--preset", "nope", "--n", "1",
                         "--out", str(tmp_path)], capture_output=True, text=True)
    assert rc.returncode == 2 and "valid presets" in rc.stderr and "Traceback" not in rc.stderr


def test_manifest_records_the_recipe(tmp_path):
    out = sim.simulate("model_iii", 1, 9, tmp_path, workers=1, noise="published", progress=False)
    assert json.loads((out / "simulation.json").read_text())["noise"] == "published"


@pytest.mark.parametrize("preset, shape", [("lens_finding", (101, 101)), ("lens_finding_ground", (101, 101, 4))])
def test_lens_finding_stamps(tmp_path, preset, shape):
    out = sim.simulate(preset, 2, 0, tmp_path, workers=1, progress=False)
    meta, images = load_set(out)
    assert list(meta["class"]) == ["lens", "lens", "non_lens", "non_lens"]
    assert list(meta["is_lens"]) == [1.0, 1.0, 0.0, 0.0]
    assert meta.loc[meta["is_lens"] == 0, "theta_e_arcsec"].isna().all()
    assert all(i.shape == shape and i.dtype == np.float32 for i in images)
    with pytest.raises(ConfigError, match="published"):
        sim.simulate(preset, 1, 0, tmp_path / "p", noise="published")


def test_stream_is_endless_balanced_and_worker_independent():
    from itertools import islice

    from deeplense_tf.sim.stream import stream

    one = list(islice(stream("model_ii", 11, workers=1, block=2), 7))
    two = list(islice(stream("model_ii", 11, workers=2, block=2), 7))
    assert [c for _, c, _ in one] == [0, 1, 2, 0, 1, 2, 0]
    for (a, ca, _), (b, cb, _) in zip(one, two):
        assert ca == cb and np.array_equal(a, b)
    np.testing.assert_array_equal(one[4][0], sim.simulate_one("model_ii", "cdm", 1, 11)[0])


@pytest.mark.parametrize("preset", ["model_i", "model_ii", "model_iii"])
@pytest.mark.parametrize("cls", ["cdm", "axion"])
def test_grouped_point_masses_render_what_one_profile_each_renders(preset, cls):
    """PointMasses (all subhalos / vortex points in one profile) against lenstronomy's own
    POINT_MASS per point, on the single-plane (Model I) and SimAPI multi-plane (II, III) paths."""
    from deeplense_tf.sim.physics import draw
    from deeplense_tf.sim.render import Renderer

    p = sim.get_preset(preset)
    fast, plain = Renderer(p, cls, "deeplensesim"), Renderer(p, cls, "deeplensesim", grouped=False)
    assert fast.grouped and fast.lens_models == ["SIE", "SHEAR", "POINT_MASS"]
    assert not plain.grouped and len(plain.lens_models) > 3
    params, meta = draw(p, cls, "deeplensesim", sim.image_rng(0, p.classes.index(cls), 5))
    want = plain.model(*plain.prepare(params, dict(meta)))
    got = fast.model(*fast.prepare(params, dict(meta)))
    assert want.max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * want.max())


@pytest.mark.parametrize("preset", ["model_i", "model_ii", "model_iii"])
@pytest.mark.parametrize("cls", ["no_sub", "axion"])
def test_model_image_is_lenstronomys_whole_image(preset, cls):
    """Renderer.model skips the lens light and point sources these presets lack: bit for bit
    lenstronomy's ImageModel.image."""
    from deeplense_tf.sim.physics import draw
    from deeplense_tf.sim.render import Renderer

    p = sim.get_preset(preset)
    renderer = Renderer(p, cls, "deeplensesim")
    params, meta = draw(p, cls, "deeplensesim", sim.image_rng(0, p.classes.index(cls), 3))
    kwargs_lens, kwargs_source = renderer.prepare(params, meta)
    got = renderer.model(kwargs_lens, kwargs_source)
    assert got.max() > 0
    np.testing.assert_array_equal(got, renderer.image_model.image(kwargs_lens, kwargs_source, None, None))


def test_point_on_a_pixel_deflects_it_by_nothing_as_lenstronomy_does():
    from deeplense_tf.sim.render import PointMasses

    fx, fy = PointMasses().derivatives(np.array([0.0, 1.0]), np.array([0.0, 0.0]),
                                       theta_E=np.array([0.1]), center_x=np.array([0.0]), center_y=np.array([0.0]))
    np.testing.assert_allclose(fx, [0.0, 0.01])
    np.testing.assert_allclose(fy, [0.0, 0.0])
