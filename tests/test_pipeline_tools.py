"""The pipeline benchmark (``--smoke``, as CI-sized as the issue asks) and the profiler trace."""

import json
import math
import time

import pytest

from pipelines import benchmark, profile


def test_benchmark_smoke_writes_every_rate(tmp_path):
    out = tmp_path / "bench.json"
    before = (benchmark.ROOT / "BENCHMARKS.md").read_text()
    assert benchmark.main(["--smoke", "--json", str(out)]) in (0, None)
    result = json.loads(out.read_text())
    for key in ("naive_images_per_s", "per_file_images_per_s", "packed_images_per_s", "shards_images_per_s",
                "step_synthetic_s", "step_real_s"):
        assert math.isfinite(result[key]) and result[key] > 0, key
    assert (benchmark.ROOT / "BENCHMARKS.md").read_text() == before  # a smoke run records nothing


def test_profile_records_a_trace_and_the_input_wait(tmp_path):
    logdir = tmp_path / "prof"
    assert profile.main(["--arch", "mobilenet_v3_small", "--n", "256", "--size", "32", "--batch-size", "16",
                         "--warmup", "2", "--steps", "2", "--logdir", str(logdir)]) in (0, None)
    assert list(logdir.glob("**/plugins/profile/*/*.xplane.pb"))
    summary = json.loads((logdir / "input_summary.json").read_text())
    assert summary["trace"].endswith(".xplane.pb")
    assert any("wait" in key or "input" in key for key in summary), sorted(summary)


def test_sim_speed_times_every_mode_and_rebuilds_per_image(monkeypatch, capsys):
    """Both modes run and give positive rates; the baseline really builds its objects again per image."""
    from deeplense_tf.sim import render as sim_render
    from pipelines import sim_speed

    built = []
    original = sim_render.Renderer.__init__
    monkeypatch.setattr(sim_render.Renderer, "__init__",
                        lambda self, *a, **k: (built.append(k), original(self, *a, **k))[1])
    assert sim_speed.rebuilt_rate("model_ii", 4) > 0
    assert len(built) == 5  # the untimed warm-up image and each of the 4 timed ones
    assert built[1:] == [{"grouped": False}] * 4  # timed: one POINT_MASS per point, as the published scripts
    assert all(type(r) is sim_speed._PublishedRenderer for r in sim_render._RENDERERS.values())
    assert sim_speed.main(["--preset", "model_ii", "--workers", "1", "--n", "2", "--baseline-n", "2", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| model_ii |" in out and "1 worker(s)" in out
    row = {"preset": "x", "rebuilt": 10.0, 1: 20.0, 2: 55.0, "load": 1.0}
    assert "| x | 20.0 | 55.0 | 10.0 | 5.5x | - | - | 1.0 |" in sim_speed.markdown([row], [1, 2])
    row["published"] = sim_speed.published_rate(10.0, 0.9)  # 0.1 s rebuilt + 0.9 s pyHalo: 1 image/s
    assert "| x | 20.0 | 55.0 | 10.0 | 5.5x | 1.00 | 55.0x | 1.0 |" in sim_speed.markdown([row], [1, 2])


def test_sim_speed_published_way_adds_the_pyhalo_realisation(monkeypatch, capsys):
    """The published scripts draw CDM(0.5, 1.0, cone_opening_angle_arcsec=10) per image: timed where
    pyHalo imports, said and left out where it does not; lens finding has no published script."""
    import sys
    import types

    from pipelines import sim_speed

    calls = []
    fake = types.ModuleType("pyHalo.preset_models")
    fake.CDM = lambda *a, **k: (calls.append((a, k)), time.sleep(0.05))
    monkeypatch.setitem(sys.modules, "pyHalo", types.ModuleType("pyHalo"))
    monkeypatch.setitem(sys.modules, "pyHalo.preset_models", fake)
    seconds, why = sim_speed.pyhalo_seconds(2)
    assert calls == [((0.5, 1.0), {"cone_opening_angle_arcsec": 10})] * 3  # one untimed, two timed
    assert 0.05 <= seconds < 1.0 and why.startswith("pyHalo ")
    monkeypatch.setattr(sim_speed, "rebuilt_rate", lambda preset, n: 20.0)
    monkeypatch.setattr(sim_speed, "workers_rate", lambda preset, n, k: 100.0)
    rows = sim_speed.measure(["model_ii", "lens_finding"], [1], 1, baseline_n=1, pyhalo_n=1)
    assert 1.0 / rows[0]["published"] == pytest.approx(1 / 20.0 + 0.05, rel=0.5)
    assert rows[1]["published"] is None
    assert "pyHalo CDM realisation per image" in capsys.readouterr().out

    monkeypatch.setitem(sys.modules, "pyHalo", None)  # import fails
    monkeypatch.setitem(sys.modules, "pyHalo.preset_models", None)
    monkeypatch.setitem(sys.modules, "pyHalo.PresetModels.cdm", None)
    seconds, why = sim_speed.pyhalo_seconds(1)
    assert seconds is None and "pyHalo not importable" in why
    rows = sim_speed.measure(["model_ii"], [1], 1, baseline_n=1, pyhalo_n=1)
    assert rows[0]["published"] is None and "pyHalo not importable" in capsys.readouterr().out
