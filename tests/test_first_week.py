"""A researcher's first week (issue #19): one flag name per idea and every default in --help,
--version and console scripts, the release files, a quiet start, predict's summary and one-line
shape errors, ImageNet weights refused before any data work, a benchmark that records only when asked."""

from __future__ import annotations

import argparse
import configparser
import hashlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deeplense_tf.cli import filter_log_lines, has_nvidia_driver
from deeplense_tf.version import __version__

ROOT = Path(__file__).resolve().parents[1]
# md5 of the Apache License 2.0 as apache.org serves it (LICENSE-2.0.txt, 11358 bytes)
APACHE_2_MD5 = "3b83ef96387f14655fc854ddc3c6bd57"


def tuner_parser(module):
    from tuning import common

    name = module.__name__.rsplit(".", 1)[1]
    parser = common.build_parser(name, module.__doc__, None if name == "hyperband" else 10)
    if hasattr(module, "add_arguments"):
        module.add_arguments(parser)
    return parser


def all_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser, by command."""
    from deeplense_tf import ensemble, evaluate, lr_find, predict, runs, study, train
    from deeplense_tf.data import pack, simulate
    from pipelines import benchmark, profile, sim_speed, stream_speed, timm_compare, train_speed
    from tuning import bayes, hyperband, random

    commands = {"train": train, "evaluate": evaluate, "predict": predict, "ensemble": ensemble, "lr_find": lr_find,
                "study": study, "runs": runs, "simulate": simulate, "pack": pack, "benchmark": benchmark,
                "profile": profile, "sim_speed": sim_speed, "stream_speed": stream_speed,
                "timm_compare": timm_compare, "train_speed": train_speed}
    parsers = {name: module.build_parser() for name, module in commands.items()}
    parsers.update({f"tuning.{m.__name__[7:]}": tuner_parser(m) for m in (bayes, hyperband, random)})
    return parsers


PARSERS = all_parsers()


def shown_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    return parser._get_formatter()._expand_help(action)


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_default_is_in_the_help_once(name):
    parser = PARSERS[name]
    for action in parser._actions:
        if action.default in (None, argparse.SUPPRESS) or isinstance(action.default, bool) \
                or action.help == argparse.SUPPRESS:
            continue
        text = shown_help(parser, action)
        assert str(action.default) in text, f"{name} {action.option_strings or action.dest}: {text!r}"
        assert text.count("(default") <= 1, f"{name} {action.option_strings}: default shown twice: {text!r}"
    assert "default" in parser.format_help()


def test_train_flags_state_their_config_default():
    """Train flags default to None on the parser (cli.config_from_args); their help says the config's default."""
    from deeplense_tf.config import RunConfig

    config = RunConfig()
    defaults = {k: v for section in ("data", "model", "train") for k, v in vars(getattr(config, section)).items()}
    for action in PARSERS["train"]._actions:
        default = defaults.get(action.dest)
        if action.option_strings and default is not None and not isinstance(default, bool):
            assert "default" in action.help, action.option_strings


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_version(name, capsys):
    with pytest.raises(SystemExit) as stop:
        PARSERS[name].parse_args(["--version"])
    assert stop.value.code == 0 and __version__ in capsys.readouterr().out


@pytest.mark.parametrize("name, old, new, rest", [
    ("simulate", "--n", "--samples", ["--preset", "model_ii", "--out", "x"]),
    ("sim_speed", "--n", "--samples", []),
    ("profile", "--n", "--samples", []),
])
def test_old_spellings_parse_to_the_same_flag(name, old, new, rest):
    parser = PARSERS[name]
    assert vars(parser.parse_args([old, "7", *rest])) == vars(parser.parse_args([new, "7", *rest]))
    assert parser.parse_args([new, "7", *rest]).samples == 7


def test_one_name_per_idea():
    """--samples and --batch-size everywhere; no command still offers --batch."""
    for name, parser in PARSERS.items():
        flags = {flag for action in parser._actions for flag in action.option_strings}
        assert "--batch" not in flags, name
        assert "--n" not in flags or "--samples" in flags, name


def test_train_flags_and_verbose_are_shared():
    for name in ("train", "lr_find", "tuning.bayes", "evaluate", "predict", "ensemble", "study"):
        assert PARSERS[name].parse_args([*REQUIRED.get(name, []), "--verbose"]).verbose, name


REQUIRED = {"evaluate": ["RUN"], "predict": ["--model", "RUN", "x.npy"], "ensemble": ["A", "B"]}


# ---- release basics ------------------------------------------------------------------------

def setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def console_scripts() -> dict[str, str]:
    lines = setup_cfg()["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=")) for line in lines)


def test_console_scripts_resolve_to_mains():
    import importlib.metadata as metadata

    listed = console_scripts()
    assert {"deeplense-train", "deeplense-evaluate", "deeplense-predict", "deeplense-ensemble", "deeplense-simulate",
            "deeplense-pack", "deeplense-lr-find", "deeplense-study", "deeplense-runs"} == set(listed)
    installed = {ep.name: ep for ep in metadata.entry_points(group="console_scripts") if ep.name in listed}
    if not installed:
        pytest.skip("deeplense_tf is not installed with its console scripts (pip install -e .)")
    assert {name: ep.value for name, ep in installed.items()} == listed
    assert all(callable(ep.load()) for ep in installed.values())


def test_one_version_everywhere():
    import yaml

    assert setup_cfg()["metadata"]["version"] == "attr: deeplense_tf.version.__version__"
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["version"] == __version__ and citation["cff-version"] == "1.2.0"
    assert citation["license"] == setup_cfg()["metadata"]["license"] == "Apache-2.0"
    assert citation["authors"] == [{"name": "deeplense_tf developers"}]


def test_license_is_the_unmodified_apache_2_text():
    assert hashlib.md5((ROOT / "LICENSE").read_bytes()).hexdigest() == APACHE_2_MD5


def test_readme_defines_its_terms_and_links_nowhere():
    text = (ROOT / "README.md").read_text()
    assert "http" not in text
    for term in ("TPR0 and TPR10: the share", "test-time augmentation (TTA)", "**Model I** (", "`--config FILE.json`",
                 "`--arch fusion:", "## Cite", "CITATION.cff"):
        assert term in text, term


# ---- a quiet start -------------------------------------------------------------------------

def test_load_time_log_lines_are_filtered_by_level():
    text = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            "I0000 00:00:1796083595.148323   28092 port.cc:153] oneDNN custom operations are on.\n"
            "To enable the following instructions: AVX2, in other operations, rebuild TensorFlow\n"
            "/x/y.py:3: UserWarning: a Python warning\n"
            "E0000 00:00:1796083598.956942   28092 cuda_platform.cc:52] failed call to cuInit\n"
            "F0000 00:00:1796083598.956942   28092 x.cc:1] fatal\n")
    assert filter_log_lines(text, 3).splitlines() == ["/x/y.py:3: UserWarning: a Python warning",
                                                      "F0000 00:00:1796083598.956942   28092 x.cc:1] fatal"]
    assert "cuInit" in filter_log_lines(text, 2) and "oneDNN" not in filter_log_lines(text, 2)
    assert filter_log_lines(text, 0) == text


@pytest.mark.skipif(has_nvidia_driver(), reason="the quiet start is for machines without an NVIDIA GPU")
def test_tensorflow_starts_quietly_on_a_cpu_machine():
    code = ("from deeplense_tf.cli import prepare_environment; prepare_environment(); "
            "import tensorflow as tf; print(int(tf.reduce_sum(tf.ones((4, 4)))))")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "16", result.stderr[-2000:]
    for noise in ("cuInit", "oneDNN", "cuda drivers", "absl::InitializeLog"):
        assert noise not in result.stderr, result.stderr[-2000:]


# ---- predict: a summary for --out, a capped table without, one-line shape errors -----------

CLASS_INFO = {"task": "classification", "class_names": ["axion", "cdm", "no_sub"], "input_shape": [64, 64, 1]}


def classified(n: int) -> pd.DataFrame:
    names = np.array(CLASS_INFO["class_names"])[np.arange(n) % 2]
    return pd.DataFrame({"file": [f"x{i}.npy" for i in range(n)], "predicted": names})


@pytest.mark.parametrize("info, frame, expected", [
    (CLASS_INFO, classified(5), "predicted: axion 3, cdm 2, no_sub 0"),
    ({"task": "regression", "target": "log10_axion_mass"},
     pd.DataFrame({"pred_log10_axion_mass": [-23.0, -22.0]}),
     "log10_axion_mass [log10(m_a / eV)]: mean -22.5, range -23 .. -22"),
    ({"task": "lens_finding"}, pd.DataFrame({"lens_probability": [0.9, 0.7, 0.2]}),
     "lens probability above 0.5: 2 (highest 0.900)"),
])
def test_predict_summary(info, frame, expected):
    from deeplense_tf.predict import summary

    lines = summary(frame, info)
    assert lines[0] == f"{len(frame)} images" and expected in lines


def test_predict_writes_out_and_prints_a_summary_not_rows(tmp_path, monkeypatch, capsys):
    from deeplense_tf import predict, runs

    run = tmp_path / "run"
    run.mkdir()
    runs.write_json(run / runs.DATA_INFO, CLASS_INFO)
    monkeypatch.setattr(predict, "prepare_environment", lambda verbose=False: None)
    monkeypatch.setattr(predict, "predict_inputs", lambda *args: (classified(100), None))
    assert predict.main(["--model", str(run), "x.npy", "--out", str(tmp_path / "new" / "p.csv")]) == 0
    out = capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "new" / "p.csv")) == 100
    assert "x17.npy" not in out and "predicted: axion 50, cdm 50, no_sub 0" in out and "100 predictions" in out
    assert predict.main(["--model", str(run), "x.npy"]) == 0
    out = capsys.readouterr().out
    assert "x19.npy" in out and "x20.npy" not in out and "... 80 more rows; use --out FILE" in out


@pytest.mark.parametrize("array, expected", [
    (np.ones((32, 32), np.float32), "shape (32, 32, 1) (height, width, channels), the run's model takes (64, 64, 1): "
                                    "resize them to 64x64"),
    (np.ones((64, 64, 3), np.float32), "the run's model takes (64, 64, 1): pass 1-channel images"),
    (np.full((64, 64), "a"), "not numeric (the model takes numeric arrays of shape (64, 64, 1))"),
])
def test_predict_names_file_and_shape_in_one_line(tmp_path, array, expected):
    from deeplense_tf.errors import DataError
    from deeplense_tf.predict import read_inputs

    np.save(tmp_path / "bad.npy", array)
    np.save(tmp_path / "good.npy", np.ones((64, 64), np.float32))
    with pytest.raises(DataError) as err:
        read_inputs([tmp_path], False, (64, 64, 1))
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "bad.npy") in message and expected in message


# ---- ImageNet weights: README's example, and refused before any data work ------------------

def test_readme_fine_tuning_example_parses_and_has_imagenet_weights():
    from deeplense_tf import train
    from deeplense_tf.cli import config_from_args
    from deeplense_tf.models.registry import check_weights

    readme = (ROOT / "README.md").read_text().splitlines()
    (line,) = [ln for ln in readme if "deeplense_tf.train" in ln and "--weights imagenet" in ln]
    words = shlex.split(line.split("#")[0])
    assert words[:3] == ["python", "-m", "deeplense_tf.train"]
    config = config_from_args(train.build_parser().parse_args(words[3:]))
    assert check_weights(config.model.arch, config.model.weights) == "imagenet" and config.model.freeze_backbone


def test_imagenet_for_an_arch_without_is_refused_before_data(tmp_path, monkeypatch, capsys):
    from deeplense_tf import train
    from deeplense_tf.training import trainer

    def no_data(*args, **kwargs):
        raise AssertionError("data were prepared")

    monkeypatch.setattr(trainer, "prepare_data", no_data)
    assert train.main(["--arch", "resnet18", "--weights", "imagenet", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "resnet18 has no ImageNet weights" in err and "--list-archs" in err and len(err.splitlines()) == 1


# ---- the benchmark records only when asked ------------------------------------------------

def test_benchmark_leaves_benchmarks_md_alone_unless_asked(capsys):
    from pipelines import benchmark

    tracked = [benchmark.ROOT / "BENCHMARKS.md", benchmark.TRACKED_CSV]
    before = [p.read_bytes() for p in tracked]
    args = benchmark.build_parser().parse_args([])
    assert not args.write_benchmarks
    args.samples, args.arch, args.steps, args.repeats = 30, "resnet18", 2, 1
    benchmark.write_outputs({"naive_images_per_s": 100.0, "step_ms_synthetic": 12.0}, args, [64])
    assert [p.read_bytes() for p in tracked] == before
    out = capsys.readouterr().out
    assert benchmark.SECTION in out and "not recorded: --write-benchmarks" in out
    assert re.search(r"Command: `python -m pipelines\.benchmark", out)
