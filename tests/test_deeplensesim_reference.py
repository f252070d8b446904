"""pipelines.deeplensesim_reference: the file format on a fake generator, the shims on a fake checkout,
the argument errors, and (where a DeepLenseSim checkout is at hand) a few real images."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines import deeplensesim_reference as ref

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference" / "deeplensesim_model_ii_sample.npz"
CHECKOUT = Path(os.environ.get("DEEPLENSESIM", ROOT.parent / "refgen" / "DeepLenseSim"))
# A stand-in for deeplense/lens.py that needs every shim: the pyHalo import and both renamed keywords.
FAKE_LENS = '''
from pyHalo.preset_models import CDM
from lenstronomy.SimulationAPI.sim_api import SimAPI
from lenstronomy.Util import util
class DeepLens:
    def __init__(self, axion_mass=None):
        self.cosmo = CDM(0.5, 1.0, cone_opening_angle_arcsec=10).astropy_instance
    def probe(self):
        util.make_grid_with_coordtransform(numPix=4, deltapix=0.1, inverse=False)
        return SimAPI(numpix=4, kwargs_single_band={"pixel_scale": 0.1, "exposure_time": 1, "magnitude_zero_point": 25,
                      "read_noise": 1, "ccd_gain": 1, "sky_brightness": 22, "num_exposures": 1, "seeing": 0.1,
                      "psf_type": "GAUSSIAN"}, kwargs_model={})
'''


def fake_render(cls, mass):
    """A 4 px image that encodes its class and mass, and draws from NumPy's global state as DeepLens does."""
    return np.full((4, 4), ref.CLASSES.index(cls) + np.random.random() + (0 if mass is None else mass * 1e22))


def test_npz_has_the_reference_format(tmp_path):
    ref.write_npz(ref.generate(fake_render, ["axion", "no_sub"], 3, seed=1, progress=False), tmp_path / "f.npz")
    ours = np.load(tmp_path / "f.npz")
    assert list(ours) == ["images", "label", "axion_mass"] and ours["images"].dtype == np.float32
    assert ours["label"].tolist() == ["no_sub"] * 3 + ["axion"] * 3 and ours["label"].dtype == np.dtype("<U6")
    assert np.isnan(ours["axion_mass"][:3]).all() and ((ours["axion_mass"][3:] >= 1e-24)
                                                       & (ours["axion_mass"][3:] <= 1e-22)).all()
    if REFERENCE.exists():
        theirs = np.load(REFERENCE)
        assert list(theirs) == list(ours) and theirs["label"].dtype == ours["label"].dtype
        assert theirs["axion_mass"].dtype == ours["axion_mass"].dtype
    assert not list(tmp_path.glob("*.partial*"))


def test_each_class_has_its_own_stream():
    one = ref.generate(fake_render, ["axion"], 4, seed=3, progress=False)
    every = ref.generate(fake_render, list(ref.CLASSES), 4, seed=3, progress=False)
    np.testing.assert_array_equal(one["images"], every["images"][8:])
    np.testing.assert_array_equal(one["axion_mass"], every["axion_mass"][8:])
    assert not np.array_equal(one["images"], ref.generate(fake_render, ["axion"], 4, 4, progress=False)["images"])


def test_counts_beyond_the_integer_type_are_an_error():
    with pytest.raises(ValueError, match="beyond uint16"):
        ref.generate(lambda cls, mass: np.full((2, 2), 70000), ["cdm"], 1, 0, dtype="uint16", progress=False)


def test_shims_serve_the_old_names_and_are_undone(tmp_path):
    (tmp_path / "deeplense").mkdir()
    (tmp_path / "deeplense" / "lens.py").write_text(FAKE_LENS)
    with ref.deeplens_class(tmp_path) as deeplens:
        lens = deeplens(axion_mass=1e-23)
        assert (lens.cosmo.H0.value, lens.cosmo.Om0, lens.cosmo.Ob0) == (70, 0.3, 0.05)
        assert lens.probe().num_pix == 4
    from lenstronomy.SimulationAPI.sim_api import SimAPI

    assert "pyHalo" not in sys.modules and "deeplense" not in sys.modules and str(tmp_path) not in sys.path
    assert not hasattr(SimAPI, "__wrapped__")


@pytest.mark.parametrize("argv, message", [
    (["--per-class", "0"], "--per-class must be positive"),
    (["--out", "images.npy"], "--out must end in .npz"),
])
def test_argument_errors(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as err:
        ref.main(["--deeplensesim", str(tmp_path), "--out", str(tmp_path / "o.npz"), *argv])
    assert err.value.code == 2 and message in capsys.readouterr().err


def test_missing_checkout_and_missing_lenstronomy_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="no DeepLenseSim code at .*git clone https://github.com/mwt5345/DeepLenseSim"):
        ref.main(["--deeplensesim", str(tmp_path), "--out", str(tmp_path / "o.npz")])
    (tmp_path / "deeplense").mkdir()
    (tmp_path / "deeplense" / "lens.py").write_text(FAKE_LENS)
    real = ref.importlib.util.find_spec
    monkeypatch.setattr(ref.importlib.util, "find_spec", lambda name: None if name == "lenstronomy" else real(name))
    with pytest.raises(SystemExit, match="lenstronomy is not installed, and DeepLenseSim needs it: pip install"):
        ref.main(["--deeplensesim", str(tmp_path), "--out", str(tmp_path / "o.npz")])
    assert not (tmp_path / "o.npz").exists()


def test_real_generator_makes_model_ii_images(tmp_path):
    if not (CHECKOUT / "deeplense" / "lens.py").is_file():
        pytest.skip(f"no DeepLenseSim checkout at {CHECKOUT} (set DEEPLENSESIM)")
    ref.main(["--deeplensesim", str(CHECKOUT), "--per-class", "2", "--seed", "5", "--out", str(tmp_path / "r.npz")])
    ours = np.load(tmp_path / "r.npz")
    assert ours["images"].shape == (6, 64, 64) and ours["images"].dtype == np.float32
    peaks = ours["images"].max(axis=(1, 2))
    assert (ours["images"] >= 0).all() and ((peaks > 10) & (peaks < 40)).all()  # the sample's peaks: 17-23
