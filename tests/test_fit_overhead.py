"""pipelines.fit_overhead: the report from known timings, and one tiny run end to end (slow)."""

from __future__ import annotations

import json
import math

import pytest

from pipelines import fit_overhead

ROW = {"bare_step_ms": 100.0, "fit_step_ms": 108.0, "steps_seconds": 8.0, "steps_per_epoch": 70,
       "recalibration_seconds": 2.0, "validation_seconds": 1.0, "between_epochs_seconds": 0.4}


def test_report_states_each_phase_against_the_training_loop():
    text = fit_overhead.report(ROW, markdown=True)
    assert "| step inside fit (median) | 108 ms | 1.08x the bare step |" in text
    assert "| BatchNorm recalibration per epoch | 2.0 s | 25% of the loop |" in text
    assert "| validation per epoch | 1.0 s | 12% of the loop |" in text
    assert "checkpoint and logging between epochs" in fit_overhead.report(ROW, markdown=False)


@pytest.mark.slow  # ~1 min: a 2-epoch training run and a bare-step child
def test_tiny_run_end_to_end(sim_cache, tmp_path, capsys):
    out = tmp_path / "row.json"
    assert fit_overhead.main(["--arch", "mobilenet_v3_small", "--data", "sim:model_ii", "--samples", "12",
                              "--epochs", "2", "--batch-size", "4", "--bare-steps", "2", "--json", str(out)]) == 0
    row = json.loads(out.read_text())
    for key in ("bare_step_ms", "fit_step_ms", *fit_overhead.PHASES):
        assert math.isfinite(row[key]) and row[key] >= 0, key
    assert row["fit_step_ms"] > 0 and row["steps_per_epoch"] == -(-row["train_images"] // 4)
    assert "step inside fit" in capsys.readouterr().out
