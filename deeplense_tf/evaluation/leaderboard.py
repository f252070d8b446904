"""The leaderboard of a study folder: ``leaderboard.csv``, ``leaderboard.md`` and ``leaderboard.png``.

Reads ``<study>/<run>/seed<k>/<run dir>`` (what ``python -m deeplense_tf.study`` writes) through
``runs.run_summary``; each run name gets the mean and spread (sample standard deviation) of its
headline test metric over the seeds that finished, its training time (the sum of history.csv's
``epoch_seconds``) and training images/s, and beside it the published figures of the same task
and data set (``references.py``), marked comparable only where our data follow the released
sets' recipe (``sim:<preset>:noise=published``).

``val_disagreed`` counts the seeds whose ``fit`` logged validation values that the saved weights do
not reproduce afterwards (``training/revalidate.py``); the markdown marks those runs with a dagger, since
their learning curves come from that same in-fit validation.

``learning_curves.csv`` / ``.png`` hold each run's validation metric against the training images
it has seen (history.csv by epoch x the training split's size): where the curves still fall or
rise at the end is where more images or epochs (a GPU, the ``literature`` study) would take a task.

A study split over machines or sessions (one job per run, folders that did not travel) is put
back together with ``merge``: the rows of other ``leaderboard.csv`` files fill the runs this
folder has no finished seed of; their ``source`` column names the file, and the markdown marks them.
Their learning curves come along from the ``learning_curves.csv`` beside each merged file, so the
curves of a study done over several sessions stay whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deeplense_tf import runs
from deeplense_tf.errors import ConfigError
from deeplense_tf.evaluation.plots import learning_curves as plot_learning_curves
from deeplense_tf.evaluation.plots import metric_against_time
from deeplense_tf.evaluation.references import PRESET_DATASETS, references_for

COLUMNS = ["run", "task", "arch", "data", "samples", "epochs", "seeds", "metric", "mean", "std", "ci95_low",
           "ci95_high", "train_seconds", "images_per_second", "failed_or_unfinished", "val_disagreed", "source"]
# Columns a leaderboard.csv written by an older version may lack (merge fills them).
OPTIONAL_COLUMNS = {"val_disagreed": 0, "source": ""}


def seed_rows(folder: Path) -> pd.DataFrame:
    """One row per run directory under the study folder, named by its run."""
    rows = []
    for run_dir in runs.find_runs(folder):
        row = runs.run_summary(run_dir)
        row["name"] = run_dir.relative_to(folder).parts[0]
        counts = runs.read_json(run_dir / runs.DATA_INFO).get("counts", {}) if (run_dir / runs.DATA_INFO).is_file() else {}
        done = int(str(row["epochs"]).split("/")[0])
        seconds = row["train_seconds"]
        row["n_train"] = counts.get("train", 0)
        row["images_per_second"] = (row["n_train"] * done / seconds) if seconds else None
        rows.append(row)
    return pd.DataFrame(rows)


CURVE_METRIC = {"regression": "val_mae", "classification": "val_accuracy", "lens_finding": "val_auc",
                "anomaly": "val_loss"}  # what history.csv holds of each task by epoch
CURVE_COLUMNS = ["name", "seed", "task", "arch", "epoch", "images_seen", "metric", "value"]


def learning_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """Every run's validation metric by epoch against training images seen (one row per epoch), for
    the run directories of ``seed_rows``."""
    curves = []
    for row in rows.to_dict("records"):
        history_csv = Path(row["run"]) / "history.csv"  # empty for a run stopped in its first epoch
        if not row["n_train"] or not history_csv.is_file() or not history_csv.stat().st_size:
            continue
        history = pd.read_csv(history_csv)
        metric = CURVE_METRIC[row["task"]]
        if metric not in history:
            continue
        for epoch, value in zip(history["epoch"] + 1, history[metric]):
            curves.append({"name": row["name"], "seed": row["seed"], "task": row["task"], "arch": row["arch"],
                           "epoch": int(epoch), "images_seen": row["n_train"] * int(epoch), "metric": metric,
                           "value": float(value)})
    return pd.DataFrame(curves, columns=CURVE_COLUMNS)


def dataset_of(data: str) -> tuple[str | None, bool]:
    """The published data set a ``--data`` value stands for, and whether it follows their recipe."""
    if not str(data).startswith("sim:"):
        return None, False
    preset, *options = str(data)[4:].split(":")
    comparable = preset.startswith("lens_finding") or "noise=published" in options
    return PRESET_DATASETS.get(preset), comparable


def leaderboard(rows: pd.DataFrame) -> pd.DataFrame:
    table = []
    for name, group in rows.groupby("name", sort=False):
        finished = group[group["status"] == "finished"]
        values = finished["value"].astype(float)
        first = group.iloc[0]
        table.append({
            "run": name, "task": first["task"], "arch": first["arch"], "data": first["data"],
            "samples": first["samples"], "epochs": first["epochs"].split("/")[1], "seeds": len(finished),
            "metric": first["metric"], "mean": values.mean() if len(values) else np.nan,
            "std": values.std(ddof=1) if len(values) > 1 else np.nan,
            **interval_over_seeds(finished),
            "train_seconds": finished["train_seconds"].astype(float).mean() if len(finished) else np.nan,
            "images_per_second": finished["images_per_second"].astype(float).mean() if len(finished) else np.nan,
            "failed_or_unfinished": len(group) - len(finished),
            "val_disagreed": int(finished["val_disagreed"].astype(bool).sum()),  # run_summary always has it
            "source": "",
        })
    return pd.DataFrame(table, columns=COLUMNS)


def merge(table: pd.DataFrame, others: list[Path]) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Fill the runs ``table`` has no finished seed of with the rows of other leaderboards.

    A run finished here always wins; among the files, the first that has the run finished. The
    folder's own leaderboard.csv may be one of them: it is read before it is rewritten, so rows
    merged into it earlier stay.
    Returns the table in its own run order, new runs appended in file order, and the file each
    merged run was taken from.
    """
    records = table.to_dict("records")  # rows as dicts: a merged row may bring other dtypes than ours
    taken = {}
    for path in others:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"--merge {path}: no such file (give the leaderboard.csv of another study folder)")
        other = pd.read_csv(path)
        missing = [c for c in COLUMNS if c not in other.columns and c not in OPTIONAL_COLUMNS]
        if missing:
            raise ConfigError(f"--merge {path}: not a study leaderboard.csv (missing columns {', '.join(missing)})")
        for row in other.to_dict("records"):
            if not row["seeds"] > 0:  # unfinished there (0, or empty: NaN)
                continue
            have = [i for i, r in enumerate(records) if r["run"] == row["run"]]
            if have and records[have[0]]["seeds"] > 0:
                continue
            source = row.get("source")  # a row merged before keeps where it came from
            row = {**{c: row.get(c, OPTIONAL_COLUMNS.get(c)) for c in COLUMNS},
                   "source": source if isinstance(source, str) and source else str(path)}
            if have:
                records[have[0]] = row
            else:
                records.append(row)
            taken[row["run"]] = path
    return pd.DataFrame(records, columns=COLUMNS), taken


def merged_curves(taken: dict[str, Path]) -> pd.DataFrame:
    """The learning curves of merged runs, from the ``learning_curves.csv`` beside the file each came
    from (none where that file has no such neighbour: a leaderboard written before curves existed)."""
    by_file: dict[Path, list[str]] = {}
    for name, path in taken.items():
        by_file.setdefault(path, []).append(name)
    parts = []
    for path, names in by_file.items():
        curves_csv = path.with_name("learning_curves.csv")
        if not curves_csv.is_file() or not curves_csv.stat().st_size:
            continue
        curves = pd.read_csv(curves_csv)
        missing = [c for c in CURVE_COLUMNS if c not in curves.columns]
        if missing:
            raise ConfigError(f"--merge {path}: {curves_csv} is not a study's learning_curves.csv "
                              f"(missing columns {', '.join(missing)})")
        parts.append(curves[curves["name"].isin(names)][CURVE_COLUMNS])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=CURVE_COLUMNS)


def with_planned(table: pd.DataFrame, planned: list[dict]) -> pd.DataFrame:
    """``table`` plus a 0-seed row for each planned run it has no row of."""
    listed = set(table["run"])
    missing = [{**{c: np.nan for c in COLUMNS}, **OPTIONAL_COLUMNS, **row, "seeds": 0, "failed_or_unfinished": 0}
               for row in planned if row["run"] not in listed]
    if not missing:
        return table
    return pd.DataFrame(table.to_dict("records") + missing, columns=COLUMNS)


def in_run_order(table: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """The table sorted by the study file's run order; runs it does not name keep theirs, at the end."""
    rank = {name: i for i, name in enumerate(order)}
    position = table["run"].map(lambda name: rank.get(name, len(rank)))
    return table.iloc[position.argsort(kind="stable")].reset_index(drop=True)


def merged_points(table: pd.DataFrame) -> pd.DataFrame:
    """Merged rows as plot points (their seeds are not here: one point at the mean)."""
    merged = table[table["source"] != ""]
    return pd.DataFrame({"name": merged["run"], "status": "finished", "metric": merged["metric"],
                         "train_seconds": merged["train_seconds"], "value": merged["mean"]})


def interval_over_seeds(finished: pd.DataFrame) -> dict:
    """The 95 % bootstrap interval over test images (``metrics.json``), widened to hold every seed's."""
    bounds = [b for b in finished.get("ci95", pd.Series(dtype=object)) if isinstance(b, (list, tuple))
              and None not in b]
    if not bounds:
        return {"ci95_low": np.nan, "ci95_high": np.nan}
    return {"ci95_low": min(b[0] for b in bounds), "ci95_high": max(b[1] for b in bounds)}


def markdown(table: pd.DataFrame, title: str) -> str:
    lines = [f"# {title}", "", "95 % interval: bootstrap over the test images (the widest over seeds).", "",
             "| run | task | arch | data | epochs | seeds | metric | mean | 95 % interval | std | train s | img/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    sources, disagreed = [], False
    for r in table.itertuples():
        interval = f"[{_num(r.ci95_low)}, {_num(r.ci95_high)}]" if r.ci95_low == r.ci95_low else ""
        mark = ""
        if isinstance(r.source, str) and r.source:
            if r.source not in sources:
                sources.append(r.source)
            mark = " " + "*" * (sources.index(r.source) + 1)
        if r.val_disagreed == r.val_disagreed and r.val_disagreed:  # not NaN, not 0
            mark += " †"
            disagreed = True
        mean = _num(r.mean) or ("unfinished" if r.failed_or_unfinished else "not run")
        lines.append(f"| {r.run}{mark} | {r.task} | {r.arch} | {r.data} | {r.epochs} | {r.seeds} | {r.metric} | "
                     f"{mean} | {interval} | {_num(r.std)} | {_num(r.train_seconds, 0)} | "
                     f"{_num(r.images_per_second, 0)} |")
    if sources:
        lines.append("")
        lines += [f"{'*' * (i + 1)} from `{src}` (run elsewhere; its run folders are not in this one)."
                  for i, src in enumerate(sources)]
    if disagreed:
        lines += ["", "† in at least one seed the validation loss `fit` logged disagreed with the weights it saved "
                  "(`metrics.json`, \"revalidation\"): the run reports the checkpoint that measures best on the "
                  "validation split afterwards, but its learning curve (fit's own validation) is not to be trusted."]
    seen = set()
    for r in table.itertuples():
        dataset, comparable = dataset_of(r.data)
        refs = references_for(r.task, dataset)
        if not refs or (r.task, dataset) in seen:
            continue
        seen.add((r.task, dataset))
        note = "comparable: our data follow the released recipe" if comparable else \
            "not comparable: our data are not the released recipe (use sim:<preset>:noise=published)"
        lines += ["", f"Published, {r.task} on {dataset} ({note}):", "", "| model | recipe | metric | value | source |",
                  "|---|---|---|---|---|"]
        lines += [f"| {f.model} | {f.recipe} | {f.metric} | {f.value} | {f.source} |" for f in refs]
    return "\n".join(lines) + "\n"


def _num(value, digits: int = 4) -> str:
    return "" if value is None or value != value else f"{value:.{digits}f}"


def write_leaderboard(folder: str | Path, title: str | None = None, others: list[Path] = (),
                      order: list[str] = (), planned: list[dict] = ()) -> Path:
    """Write the leaderboard and learning-curve files into the study folder; returns the markdown's path.

    ``others``: leaderboard.csv files of the same study run elsewhere (``merge``); ``order``: the
    study file's run names, the order of the table's rows; ``planned``: the study's runs (``run``,
    ``task``, ``arch``, ``data``, ``samples``, ``epochs``, ``metric``), listed with 0 seeds where neither this
    folder nor a merged file has them, so a leaderboard shows what is still to run.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = seed_rows(folder)
    curves = learning_curves(rows) if len(rows) else pd.DataFrame(columns=CURVE_COLUMNS)
    table = leaderboard(rows) if len(rows) else pd.DataFrame(columns=COLUMNS)
    if others:
        table, taken = merge(table, [Path(o) for o in others])
        rows = pd.concat([rows, merged_points(table)], ignore_index=True) if len(rows) else merged_points(table)
        curves = curves[~curves["name"].isin(list(taken))]  # a merged row's curve is the merged file's
        extra = merged_curves(taken)
        curves = pd.concat([curves, extra], ignore_index=True) if len(extra) else curves
    table = with_planned(table, planned)
    table = in_run_order(table, list(order))
    runs.atomic_write_text(folder / "leaderboard.csv", table.to_csv(index=False))
    path = folder / "leaderboard.md"
    runs.atomic_write_text(path, markdown(table, title or f"Study {folder.name}"))
    if len(rows):
        metric_against_time(rows, folder / "leaderboard.png")
    runs.atomic_write_text(folder / "learning_curves.csv", curves.to_csv(index=False))
    if len(curves):
        plot_learning_curves(curves, folder / "learning_curves.png")
    return path
