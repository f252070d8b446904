"""pipelines.train_speed: one tiny architecture end to end, rows and Markdown."""

from __future__ import annotations

import json
import math

from deeplense_tf.models.param_counts import format_count, load_table
from pipelines import train_speed


def test_one_tiny_arch_gives_finite_rates_and_params(tmp_path, capsys):
    out = tmp_path / "rows.json"
    argv = ["--arch", "mobilenet_v3_small", "--size", "32", "--steps", "2", "--warmup", "1", "--jit", "off",
            "--timeout", "120", "--markdown", "--json", str(out)]
    assert train_speed.main(argv) == 0
    [row] = json.loads(out.read_text())
    assert row["status"] == "ok", row.get("error")
    for key in ("train_images_per_s", "infer_images_per_s"):
        assert math.isfinite(row[key]) and row[key] > 0, row
    assert row["backbone_params"] == load_table()["mobilenet_v3_small"] > 0
    assert row["model_params"] > row["backbone_params"]  # + the 3-class head
    table = capsys.readouterr().out.split("| arch |", 1)[1]
    assert f"| mobilenet_v3_small | {format_count(row['backbone_params'])} | {row['train_images_per_s']:.1f} |" in table


def test_timeouts_and_errors_become_rows():
    rows = [{"arch": "a", "variant": "depthwise", "onednn": "on", "jit": False, "status": "timeout", "timeout_s": 180,
             "train_images_per_s": 12.5, "load": 5.1},
            {"arch": "b", "variant": "depthwise", "onednn": "on", "jit": False, "status": "error",
             "error": "ValueError: `x` too small"}]
    text = train_speed.markdown(rows, {"a": 1_500_000, "b": None})
    assert "| a | 1.5M | 12.5 | timeout (180 s) | 5.1 |" in text
    assert "| b | ? | error | error |  |" in text
    assert "- b (jit off) failed: ValueError: 'x' too small" in text
