"""The study runner on a tiny study: runs, leaderboard, skip of finished runs, resume, restart."""

import json
import shutil

import pandas as pd
import pytest

from deeplense_tf import runs, study
from deeplense_tf.config import RunConfig
from deeplense_tf.errors import ConfigError
from deeplense_tf.evaluation import leaderboard
from deeplense_tf.sim.generate import parse_recipe

TINY = {
    "description": "tiny",
    "defaults": {"data": "sim:model_ii", "samples": 12, "epochs": 1, "batch_size": 4, "workers": 2,
                 "arch": "mobilenet_v3_small"},
    "seeds": [0, 1],
    "runs": [{"name": "reg", "task": "regression"},
             {"name": "cls", "task": "classification", "seeds": []}],  # checked by name, never run here
}


def write_study(path, raw=TINY):
    path.write_text(json.dumps(raw))
    return path


def test_builtin_studies_load(capsys):
    assert {"cpu", "literature", "zoo", "physics"} <= set(study.builtin_studies())
    for name in study.builtin_studies():
        assert study.load_study(name).runs
    assert study.main(["--list"]) == 0
    assert "literature" in capsys.readouterr().out


@pytest.mark.parametrize("change, message", [
    ({"defaults": {"epoch": 3}}, "epoch (closest: epochs)"),
    ({"runs": [{"name": "a"}, {"name": "a"}]}, "unique name"),
    ({"colour": 1}, "unknown key"),
])
def test_study_files_are_checked_by_name(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        study.load_study(write_study(tmp_path / "s.json", {**TINY, **change}))


def test_sim_recipe_options():
    assert parse_recipe("model_ii:noise=published") == {"preset": "model_ii", "noise": "published",
                                                        "geometry": "deeplensesim"}
    with pytest.raises(ConfigError, match="noise=on|off|published"):
        parse_recipe("model_ii:noise=loud")


def test_tiny_study_runs_then_skips_resumes_and_restarts(tmp_path, sim_cache, capsys):
    path = write_study(tmp_path / "tiny.json")
    out = tmp_path / "studies"
    assert study.main([str(path), "--out", str(out)]) == 0
    folder = out / "tiny"
    board = pd.read_csv(folder / "leaderboard.csv").set_index("run")
    assert board.loc["reg", "seeds"] == 2 and board.loc["reg", "std"] >= 0
    assert board.loc["cls", "seeds"] == 0 and board.loc["cls", "metric"] == "roc_auc_macro_ovr"  # listed, not run
    assert "| cls | classification | mobilenet_v3_small | sim:model_ii | 1 | 0 | roc_auc_macro_ovr | not run |" \
        in (folder / "leaderboard.md").read_text()
    assert board.loc["reg", "metric"] == "mae" and board.loc["reg", "train_seconds"] > 0
    assert board.loc["reg", "ci95_low"] < board.loc["reg", "mean"] < board.loc["reg", "ci95_high"]  # every seed's
    assert "Published, regression on model_ii (not comparable" in (folder / "leaderboard.md").read_text()
    assert (folder / "leaderboard.png").is_file() and (folder / "learning_curves.png").is_file()
    curves = pd.read_csv(folder / "learning_curves.csv")
    assert set(curves["seed"]) == {0, 1} and set(curves["metric"]) == {"val_mae"}
    train_count = runs.read_json(runs.find_runs(folder / "reg" / "seed0")[0] / runs.DATA_INFO)["counts"]["train"]
    assert (curves["images_seen"] == train_count * curves["epoch"]).all() and (curves["value"] > 0).all()

    (reg1,) = runs.find_runs(folder / "reg" / "seed1")
    (reg1 / "metrics.json").unlink()  # a run stopped after its last epoch, before the evaluation
    stale = folder / "reg" / "seed0" / "mobilenet_v3_small-regression-stale"
    (stale / "checkpoints").mkdir(parents=True)
    shutil.copy(reg1 / "config.json", stale / "config.json")  # killed before its first checkpoint
    capsys.readouterr()
    assert study.main([str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "reg seed 0: done" in printed and "reg seed 1: resumed" in printed
    assert (reg1 / "metrics.json").is_file() and not stale.exists()
    assert len(runs.find_runs(folder)) == 2

    table = runs.run_table(folder)
    assert set(table["status"]) == {"finished"} and (table["train_seconds"] > 0).all()

    other = tmp_path / "elsewhere.csv"  # the same study run on another machine: a finished run here wins
    pd.DataFrame([{**board.reset_index().iloc[0].to_dict(), "mean": 99.0}]).to_csv(other, index=False)
    study.main([str(path), "--out", str(out), "--leaderboard", "--merge", str(other)])
    assert pd.read_csv(folder / "leaderboard.csv").set_index("run").loc["reg", "mean"] < 99

    write_study(path, {**TINY, "defaults": {**TINY["defaults"], "epochs": 2}})
    assert study.main([str(path), "--out", str(out), "--only", "reg"]) == 0
    assert "was started with other settings" in capsys.readouterr().err


def test_run_stopped_in_its_first_epoch_is_listed(tmp_path):
    """Its history.csv is still empty: the runs table and the leaderboard list it as not started."""
    run = tmp_path / "study" / "reg" / "seed0" / "resnet18-regression-x"
    (run / "checkpoints").mkdir(parents=True)
    RunConfig().save(run / "config.json")
    (run / "history.csv").write_text("")
    (row,) = runs.run_table(tmp_path / "study").to_dict("records")
    assert row["status"] == "not started" and row["train_seconds"] is None


def board_row(run, seeds=1, mean=0.5, **extra):
    return {"run": run, "task": "regression", "arch": "resnet18", "data": "sim:model_ii:noise=published",
            "samples": 100, "epochs": 2, "seeds": seeds, "metric": "mae", "mean": mean, "std": None,
            "ci95_low": mean - 0.1, "ci95_high": mean + 0.1, "train_seconds": 60.0, "images_per_second": 9.0,
            "failed_or_unfinished": 1 - min(seeds, 1), **extra}


def curve_rows(name, values, n_train=100):
    return [{"name": name, "seed": 0, "task": "regression", "arch": "resnet18", "epoch": e + 1,
             "images_seen": n_train * (e + 1), "metric": "val_mae", "value": v} for e, v in enumerate(values)]


def test_leaderboard_merges_runs_done_elsewhere(tmp_path):
    """Rows of another machine's leaderboard fill the runs this folder lacks, say where they came from,
    bring their learning curves along and stand in the study file's run order."""
    (tmp_path / "node2").mkdir()
    other = tmp_path / "node2" / "leaderboard.csv"
    pd.DataFrame([board_row("reg", mean=0.25), board_row("half", seeds=0, mean=float("nan")),
                  board_row("cls", mean=0.4)]).to_csv(other, index=False)
    pd.DataFrame(curve_rows("reg", [0.5, 0.3]) + curve_rows("half", [0.6]) + curve_rows("cls", [0.7, 0.5])).to_csv(
        other.with_name("learning_curves.csv"), index=False)
    folder = tmp_path / "studies" / "s"
    local = folder / "reg" / "seed0" / "resnet18-regression-x"  # still training here: the merged row wins
    (local / "checkpoints").mkdir(parents=True)
    RunConfig().save(local / "config.json")
    (local / runs.DATA_INFO).write_text(json.dumps({"counts": {"train": 100}}))
    (local / "history.csv").write_text("epoch,val_mae,epoch_seconds\n0,0.9,1.0\n")
    leaderboard.write_leaderboard(folder, "s", [other], order=["cls", "half", "reg"])
    board = pd.read_csv(folder / "leaderboard.csv").set_index("run")
    assert list(board.index) == ["cls", "reg"]  # the study's order; a run unfinished there is left out
    assert board.loc["reg", "mean"] == 0.25 and board.loc["reg", "source"] == str(other)
    assert board.loc["reg", "val_disagreed"] == 0  # a leaderboard.csv written before that column
    text = (folder / "leaderboard.md").read_text()
    assert "| reg * |" in text and f"* from `{other}`" in text
    assert (folder / "leaderboard.png").is_file() and (folder / "learning_curves.png").is_file()
    curves = pd.read_csv(folder / "learning_curves.csv")
    assert sorted(set(curves["name"])) == ["cls", "reg"]  # the unfinished run's curve stays behind
    assert list(curves[curves["name"] == "reg"]["value"]) == [0.5, 0.3]  # not the local partial curve

    # rewritten with its own csv merged in, a row keeps where it first came from, and its curve
    leaderboard.write_leaderboard(folder, "s", [folder / "leaderboard.csv"])
    assert pd.read_csv(folder / "leaderboard.csv").set_index("run").loc["reg", "source"] == str(other)
    assert len(pd.read_csv(folder / "learning_curves.csv")) == 4

    # the study's runs that ran nowhere are listed as not run; a run merged or found here keeps its row
    planned = [{"run": name, "task": "regression", "arch": "resnet18", "data": "sim:model_ii", "samples": 10,
                "epochs": 2, "metric": "mae"} for name in ("cls", "half", "reg")]
    leaderboard.write_leaderboard(folder, "s", [folder / "leaderboard.csv"], ["cls", "half", "reg"], planned)
    board = pd.read_csv(folder / "leaderboard.csv").set_index("run")
    assert list(board.index) == ["cls", "half", "reg"] and board.loc["cls", "mean"] == 0.4
    assert board.loc["half", "seeds"] == 0 and board.loc["half", "mean"] != board.loc["half", "mean"]
    assert "| half | regression | resnet18 | sim:model_ii | 2 | 0 | mae | not run |" in \
        (folder / "leaderboard.md").read_text()


def test_leaderboard_merge_refuses_what_is_not_a_leaderboard(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        leaderboard.write_leaderboard(tmp_path / "s", "s", [tmp_path / "none.csv"])
    bad = tmp_path / "bad.csv"
    bad.write_text("run,mean\nreg,0.1\n")
    with pytest.raises(ConfigError, match=r"--merge .*bad.csv: not a study leaderboard.csv"):
        leaderboard.write_leaderboard(tmp_path / "s", "s", [bad])
    good = tmp_path / "node2" / "leaderboard.csv"
    good.parent.mkdir()
    pd.DataFrame([board_row("reg")]).to_csv(good, index=False)
    good.with_name("learning_curves.csv").write_text("run,mae\nreg,0.1\n")
    with pytest.raises(ConfigError, match=r"--merge .*leaderboard.csv: .*learning_curves.csv is not a study's"):
        leaderboard.write_leaderboard(tmp_path / "s", "s", [good])


def test_leaderboard_marks_a_run_whose_fit_validation_disagreed(tmp_path):
    """A seed whose revalidation found fit's logged validation off from its saved weights is counted
    and marked: its learning curve is fit's validation, not to be trusted."""
    folder = tmp_path / "s"
    for name, disagreement in (("bad", True), ("good", False)):
        run = folder / name / "seed0" / f"resnet18-regression-{name}"
        (run / "checkpoints").mkdir(parents=True)
        RunConfig().save(run / "config.json")
        (run / runs.DATA_INFO).write_text(json.dumps({"counts": {"train": 100}}))
        (run / "history.csv").write_text("epoch,val_mae,epoch_seconds\n0,0.9,1.0\n")
        (run / "metrics.json").write_text(json.dumps({
            "n": 10, "metrics": {"mae": 0.1, "ci95": {"mae": [0.09, 0.11]}},
            "revalidation": {"monitor": "val_loss", "kept": 1, "disagreement": disagreement}}))
    assert runs.run_table(folder).set_index("run")["val_disagreed"].sum() == 1
    leaderboard.write_leaderboard(folder, "s")
    board = pd.read_csv(folder / "leaderboard.csv").set_index("run")
    assert board.loc["bad", "val_disagreed"] == 1 and board.loc["good", "val_disagreed"] == 0
    text = (folder / "leaderboard.md").read_text()
    assert "| bad † |" in text and "| good |" in text and "† in at least one seed" in text
