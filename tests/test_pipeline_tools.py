"""The pipeline benchmark (``--smoke``, as CI-sized as the issue asks) and the profiler trace."""

import json
import math

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
    from deeplense_tf.data import sim_render
    from pipelines import sim_speed

    built = []
    original = sim_render.Renderer.__init__
    monkeypatch.setattr(sim_render.Renderer, "__init__",
                        lambda self, *a, **k: (built.append(k), original(self, *a, **k))[1])
    assert sim_speed.rebuilt_rate("model_ii", 4) > 0
    assert len(built) == 5  # the untimed warm-up image and each of the 4 timed ones
    assert built[1:] == [{"grouped": False}] * 4  # timed: one POINT_MASS per point, as the published scripts
    assert sim_speed.main(["--preset", "model_ii", "--workers", "1", "--n", "2", "--baseline-n", "2", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| model_ii |" in out and "1 worker(s)" in out
    row = {"preset": "x", "rebuilt": 10.0, 1: 20.0, 2: 55.0, "load": 1.0}
    assert "| x | 20.0 | 55.0 | 10.0 | 5.5x | 1.0 |" in sim_speed.markdown([row], [1, 2])
