"""Issue #19: a requeued run with an unreadable checkpoint, --resume --epochs N, two runs started in the
same second, what trials.csv records, plots for a paper, HParams and --ema.

    python -m pytest -q tests/test_requeue_and_plots.py
"""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.helpers import write_class_folders
from deeplense_tf import runs, train


def _train(tmp, arch, *flags):
    """A finished 1-epoch classification run (24 images of 32 px, batch 4) under ``tmp``."""
    data = write_class_folders(tmp / "data", per_class=8)
    assert train.main(["--arch", arch, "--task", "classification", "--data", str(data), "--epochs", "1",
                       "--batch-size", "4", "--out", str(tmp / "runs"), *flags]) == 0
    (run,) = (tmp / "runs").iterdir()
    return run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_deeplens):
    """One finished run, copied by each test that changes it."""
    return _train(tmp_path_factory.mktemp("tiny"), tiny_deeplens)


def _copy(run, tmp_path):
    return shutil.copytree(run, tmp_path / run.name)


def _history(run) -> pd.DataFrame:
    return pd.read_csv(run / "history.csv")


def test_resume_sets_an_unreadable_last_checkpoint_aside_and_continues_from_best(tiny_run, tmp_path, capsys):
    """As if epoch 2 had ended with a damaged last.keras (best.keras is epoch 1's): epoch 2 is trained again."""
    run = _copy(tiny_run, tmp_path)
    history = _history(run)
    pd.concat([history, history.assign(epoch=1)]).to_csv(run / "history.csv", index=False)
    runs.write_json(run / runs.STATE, {**runs.read_json(run / runs.STATE), "epochs_done": 2})
    last = run / runs.LAST
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # truncated: a full disk, a failed copy
    assert train.main(["--resume", str(run), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "checkpoints/last.keras is unreadable" in out and "set aside as last.keras.corrupt" in out
    assert f"after epoch 1 of 2 from {runs.BEST}" in out
    assert (run / "checkpoints/last.keras.corrupt").is_file() and runs.checkpoint_problem(last) is None
    assert _history(run)["epoch"].tolist() == [0, 1]  # the set-aside epoch's row is gone, the new one logged


def test_resume_with_no_loadable_checkpoint_starts_over(tiny_run, tmp_path, capsys):
    run = _copy(tiny_run, tmp_path)
    for name in (runs.LAST, runs.BEST):
        (run / name).write_bytes(b"")
    assert train.main(["--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "empty, 0 bytes" in out and "starting it over from its saved config" in out
    assert _history(run)["epoch"].tolist() == [0]
    assert runs.read_json(run / runs.STATE)["epochs_done"] == 1 and runs.checkpoint_problem(run / runs.BEST) is None


def test_resume_with_more_epochs_continues_the_stretched_cosine_down_to_its_floor(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    assert train.main(["--resume", str(run), "--epochs", "3"]) == 0
    lr = _history(run)["learning_rate"].to_numpy()
    floor = 0.01 * json.loads((run / runs.CONFIG).read_text())["train"]["lr"]
    assert lr[0] == pytest.approx(floor, rel=1e-3)  # where the 1-epoch run ended
    assert lr[1] > 10 * floor  # the first resumed epoch: well above the floor (the 3-epoch cosine at 2/3)
    assert lr[2] == pytest.approx(floor, rel=1e-3)


def test_two_runs_started_in_the_same_second_get_two_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(runs.time, "strftime", lambda fmt: "20260101-120000")
    first, second = (runs.new_run_dir(tmp_path, "resnet18", "regression") for _ in range(2))
    assert first != second and second.name == f"{first.name}-1"
    assert (first / "checkpoints").is_dir() and (second / "checkpoints").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, second.name])


def test_trials_csv_records_the_batch_size_a_trial_trained_with(tmp_path):
    from deeplense_tf.config import RunConfig
    from tuning.report import trials_table
    from tuning.space import to_config

    trial = tmp_path / "trials" / "trial_0"
    trial.mkdir(parents=True)
    values = {"arch": "resnet18", "optimizer": "adam", "lr": 1e-3, "weight_decay": None, "batch_size": 64}
    (trial / "trial.json").write_text(json.dumps({"trial_id": "0", "status": "COMPLETED", "score": 0.5,
                                                  "best_step": 0, "hyperparameters": {"values": values}}))
    to_config(RunConfig(), values, epochs=2, max_batch=22).save(trial / runs.CONFIG)  # as the tuner cuts it
    row = trials_table(tmp_path, "val_mae").iloc[0]
    assert row["batch_size"] == 22 and row["epochs"] == 2 and row["lr"] == 1e-3
    assert pd.isna(row["weight_decay"])  # Adam: no weight decay was used, none is recorded


# ---- plots --------------------------------------------------------------------------------------

@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions draw, kept open for the test instead of saved (closed after it)."""
    import matplotlib.pyplot as plt

    from deeplense_tf.evaluation import plots

    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, out_dir, name, fmt=None: figures.append(fig) or out_dir / name)
    yield figures
    for fig in figures:
        plt.close(fig)


def _history_csv(path, epochs=3):
    rows = [f"{e},{1e-3 / (e + 1)},{1 / (e + 1)},{1.2 / (e + 1)}" for e in range(epochs)]
    path.write_text("epoch,learning_rate,loss,val_loss\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("fmt, magic", [("pdf", b"%PDF"), ("svg", b"<svg")])
def test_plot_functions_write_the_format_asked_for(tmp_path, fmt, magic):
    from deeplense_tf.evaluation import plots

    y = np.linspace(-24, -22, 40)
    paths = [*plots.regression_plots(y, y + 0.1 * np.sin(7 * y), tmp_path, label="log10_axion_mass", fmt=fmt),
             *plots.training_curves(_history_csv(tmp_path / "history.csv"), tmp_path, fmt=fmt),
             *plots.plots_for_task("lens_finding", [0, 1, 1, 0], [0.2, 0.9, 0.6, 0.4], tmp_path, fmt=fmt)]
    assert len(paths) == 7 and {p.suffix for p in paths} == {f".{fmt}"}
    assert all(magic in p.read_bytes()[:400] for p in paths)
    with pytest.raises(ValueError, match="plot format must be one of"):
        plots.training_curves(tmp_path / "history.csv", tmp_path, fmt="jpg")


def test_training_curves_label_epochs_with_whole_numbers(tmp_path, drawn):
    from deeplense_tf.evaluation import plot_style, plots

    plots.training_curves(_history_csv(tmp_path / "history.csv", epochs=3), tmp_path)
    (fig,) = drawn
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert fig.get_figwidth() <= plot_style.DOUBLE


def test_regression_plots_label_units_and_keep_the_worst_predictions_in_sight(tmp_path, drawn):
    from deeplense_tf.evaluation import plot_style, plots

    assert "[eV]" in plot_style.target_label("log10_axion_mass") and plot_style.target_label("source_x") == "source_x"
    assert plot_style.target_label("theta_e_effective_arcsec") == "theta e effective [arcsec]"
    y = np.linspace(-24, -22, 200)
    p = y.copy()
    p[17] += 1.5  # one far outlier
    plots.regression_plots(y, p, tmp_path, label="log10_axion_mass")
    scatter, residuals, hist = drawn
    for fig in drawn:
        assert fig.get_figwidth() == plot_style.SINGLE
    ax = scatter.axes[0]
    assert "[eV]" in ax.get_xlabel() and "[eV]" in ax.get_ylabel() and "[dex]" in residuals.axes[0].get_ylabel()
    assert ax.get_legend() is None and scatter.legends  # the legend sits under the axes, on no data
    marked = [c for c in ax.collections if c.get_label().endswith("largest |residual|")]
    assert marked and [y[17], p[17]] in marked[0].get_offsets().tolist()
    assert ax.get_ylim()[1] >= p[17]



# ---- tracking -----------------------------------------------------------------------------------

def test_every_training_run_writes_a_tensorboard_hparams_session(tiny_run):
    import tensorflow as tf
    from tensorboard.plugins.hparams import metadata

    sessions = []
    for path in (tiny_run / "logs").rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == metadata.SESSION_START_INFO_TAG:
                    sessions.append(metadata.parse_session_start_info_plugin_data(value.metadata.plugin_data.content))
    (session,) = sessions
    assert session.hparams["arch"].string_value.startswith("test_tiny") and session.hparams["epochs"].number_value == 1
    assert session.group_name == tiny_run.name and "ema" not in session.hparams  # None: left out


def test_ema_run_trains_round_trips_and_keeps_the_average_in_best_keras(tmp_path, tiny_deeplens):
    import keras

    from deeplense_tf.config import RunConfig

    run = _train(tmp_path, tiny_deeplens, "--ema", "0.9", "--plot-format", "pdf")
    config = RunConfig.load(run / runs.CONFIG)
    assert config.train.ema == 0.9 and config.train.plot_format == "pdf"
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert (run / "plots/training_curves.pdf").is_file() and (run / "plots/classification_roc.pdf").is_file()
    best, last = (keras.models.load_model(run / name) for name in (runs.BEST, runs.LAST))
    for model, holds_average in ((best, True), (last, False)):
        averages = [a.numpy() for a in model.optimizer._model_variables_moving_average]
        same = all(np.array_equal(v.numpy(), a) for v, a in zip(model.optimizer._trainable_variables, averages))
        assert same is holds_average  # best.keras: the averaged weights that scored; last.keras: the raw ones
