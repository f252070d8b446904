"""From a ``DataConfig`` and a task to labelled train / val / test arrays.

The same function rebuilds a run's split later (``evaluate``, ``--resume``): loading is
deterministic for a given config and seed, and the split indices written to ``split.csv``
are checked against the rebuilt ones.

Where the data says which image belongs to which split (``train/`` + ``test/`` folders, a
``split`` column, or ``--val-data`` / ``--test-data``), that split is kept and only a missing
part is cut off the training images (seeded, stratified); otherwise all of it is split.
``--data sim-stream:<preset>`` has no stored training split: ``prepare_stream`` returns its
fixed val/test set with ``stream`` (the training stream, ``data/stream.py``) set.
``load_other_data``: another labelled set read the way a run read its own (``evaluate --data``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from deeplense_tf.config import RunConfig
from deeplense_tf.data.index import SHOW_PER_PROBLEM, DataIndex
from deeplense_tf.data.sources import load_data, load_splits
from deeplense_tf.data.splits import SPLITS, stratified_split
from deeplense_tf.data.stream import PREFIX, STREAM_SEED_OFFSET, StreamPlan, is_stream
from deeplense_tf.errors import ConfigError, DataError, UserError
from deeplense_tf.sim.generate import get_preset
from deeplense_tf.tasks import get_task


@dataclass
class PreparedData:
    images: np.ndarray  # float32 (N, H, W, C), only rows that have a label for the task
    y: np.ndarray  # (N,)
    table: pd.DataFrame  # the rows of ``images``
    class_names: list[str]
    splits: dict[str, np.ndarray] = field(default_factory=dict)
    target_mean: float = 0.0
    target_std: float = 1.0
    source: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, problem) dropped by skip_bad
    stream: StreamPlan | None = None  # sim-stream: data trains from this stream; splits["train"] is empty

    def subset(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split == "train" and self.stream is not None:
            raise UserError(f"--data {self.stream.spec} trains from an endless stream and has no stored training "
                            "split; this command needs stored data (e.g. sim:<preset>)")
        idx = self.splits[split]
        return self.images[idx], self.y[idx]

    @property
    def n_train(self) -> int:
        """Training images an epoch: the train split, or a stream's images per epoch."""
        return self.stream.images_per_epoch if self.stream is not None else int(len(self.splits["train"]))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.images.shape[1:])

    def info(self, config: RunConfig) -> dict:
        """What ``data.json`` records: enough to label outputs and rebuild the model."""
        return {
            "source": self.source, "task": config.model.task, "target": config.data.target,
            "normal_class": config.data.normal_class,
            "class_names": self.class_names, "input_shape": list(self.input_shape),
            "target_mean": self.target_mean, "target_std": self.target_std,
            "counts": {s: int(len(i)) for s, i in self.splits.items()},
            "skipped_files": [{"file": f, "problem": p} for f, p in self.skipped],
            **({"stream": self.stream.info()} if self.stream is not None else {}),
        }


def label_index(index: DataIndex, task_name: str, target: str) -> tuple[PreparedData, np.ndarray]:
    """Keep the rows that carry a label for the task and attach labels."""
    labels = get_task(task_name).labels(index.table, target)
    table = index.table.loc[labels.keep].reset_index(drop=True)
    return PreparedData(index.images[labels.keep], labels.y, table, labels.class_names,
                        source=index.root), labels.strata


def load_index(config: RunConfig) -> DataIndex:
    """Read and check every data set the config names (``data``, ``val_data``, ``test_data``)."""
    d = config.data
    options = dict(samples=d.samples, seed=config.train.seed, allow_pickle=d.allow_pickle, workers=d.workers,
                   validate=d.validate, skip_bad=d.skip_bad, label_column=d.label_column, classes=d.classes)
    if d.val_data is None and d.test_data is None:
        index = load_data(d.data, **options)
    else:
        index = load_splits(d.data, d.val_data, d.test_data, **options)
    if d.classes is not None and "class" in index.table:  # class folders were checked by name already
        found = index.table["class"].astype(str)
        unknown = ~found.isin(d.classes)
        if unknown.any():
            files = index.table.loc[unknown, "file"].astype(str).tolist()
            raise DataError(f"{len(files)} image(s) in {index.root} have classes {sorted(set(found[unknown]))} that "
                            f"--classes {' '.join(d.classes)} does not list: {', '.join(files[:SHOW_PER_PROBLEM])}"
                            f"{' ...' if len(files) > SHOW_PER_PROBLEM else ''}")
    return index


def prepare_data(config: RunConfig) -> PreparedData:
    d = config.data
    if is_stream(d.data):  # sim-stream:<preset>: fixed val/test set, training from the stream
        return prepare_stream(config)
    index = load_index(config)
    print(f"data: {index.describe()}", flush=True)
    data, strata = label_index(index, config.model.task, d.target)
    data.skipped = list(index.skipped)
    data.splits = given_splits(data.table, strata, d.val_fraction, d.test_fraction, config.train.seed)
    if get_task(config.model.task).trains_on_normal_class_only:
        data.splits = normal_class_splits(data, d.normal_class)
    if config.model.task == "regression":
        train_y = data.y[data.splits["train"]]
        data.target_mean = float(np.mean(train_y))
        data.target_std = float(np.std(train_y)) or 1.0
    return data


def given_splits(table: pd.DataFrame, strata: np.ndarray, val_fraction: float, test_fraction: float,
                 seed: int) -> dict[str, np.ndarray]:
    """The data's own ``split`` column where it has one (missing parts cut off train), else a stratified split."""
    if "split" not in table:
        return stratified_split(strata, val_fraction, test_fraction, seed)
    split = table["split"].astype(str).to_numpy()
    unknown = sorted(set(split) - set(SPLITS))
    if unknown:
        raise DataError(f"the data's 'split' column holds {unknown}; expected only {list(SPLITS)} "
                        "(rename the column if it means something else)")
    parts = {name: np.flatnonzero(split == name) for name in SPLITS}
    train = parts["train"]
    missing = [name for name in ("val", "test") if len(parts[name]) == 0]
    if missing:
        if len(train) == 0:
            raise DataError("the data has no training images to cut a val/test split from")
        cut = stratified_split(strata[train], val_fraction, test_fraction, seed)
        for name in missing:
            parts[name] = train[cut[name]]
        back = [cut[name] for name in ("val", "test") if name not in missing]
        parts["train"] = train[np.concatenate([cut["train"], *back])]
    if len(parts["train"]) == 0:
        raise DataError("the data has no images in its train split (train/ folder or --data)")
    return {name: np.sort(idx) for name, idx in parts.items()}


def normal_class_splits(data: PreparedData, normal_class: str) -> dict[str, np.ndarray]:
    """Train and validate on the normal class only; test on its test part plus every other image."""
    if normal_class not in data.class_names:
        raise DataError(f"--normal-class {normal_class!r}: the data has no images of that class. "
                        f"Classes found: {data.class_names}")
    normal = data.y == data.class_names.index(normal_class)
    splits = {name: idx[normal[idx]] for name, idx in data.splits.items()}
    splits["test"] = np.sort(np.concatenate([splits["test"], np.flatnonzero(~normal)]))
    return splits


def split_table(data: PreparedData) -> pd.DataFrame:
    rows = [(int(i), split) for split in SPLITS for i in data.splits[split]]
    used = {row for row, _ in rows}
    rows += [(i, "unused") for i in range(len(data.y)) if i not in used]
    frame = pd.DataFrame(rows, columns=["row", "split"]).sort_values("row")
    cols = [c for c in ("file", "class") if c in data.table.columns]
    return pd.concat([frame.reset_index(drop=True), data.table.loc[frame["row"], cols].reset_index(drop=True)],
                     axis=1)


def check_split(data: PreparedData, split_csv: Path) -> None:
    """A rebuilt split must equal the saved one, or results would mix train and test images."""
    saved = pd.read_csv(split_csv)
    for split in SPLITS:
        rows = np.sort(saved.loc[saved["split"] == split, "row"].to_numpy())
        if not np.array_equal(rows, data.splits[split]):
            raise DataError(f"the data no longer matches the split saved in {split_csv} ({split} differs): "
                            "the files changed since the run was made")


def stream_preset(spec) -> str:
    """The preset of ``sim-stream:<preset>`` (checked); the stream must be the only ``--data``."""
    specs = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if len(specs) != 1:
        raise ConfigError(f"{PREFIX}<preset> trains from the stream alone; it cannot be joined with other --data. "
                          f"Received: --data {' '.join(map(str, specs))}")
    return get_preset(str(specs[0]).strip()[len(PREFIX):]).name


def prepare_stream(config):
    """The fixed val/test set as ``PreparedData`` (empty train split) plus the training ``StreamPlan``."""
    d, t, task = config.data, config.train, config.model.task
    preset = stream_preset(d.data)
    if d.val_data is not None or d.test_data is not None:
        raise ConfigError(f"{PREFIX}{preset} evaluates on its own fixed simulated set; --val-data / --test-data "
                          "are not supported with it (train on sim:<preset> or files instead)")
    if t.strategy == "multiworker":
        raise ConfigError(f"{PREFIX}{preset} runs on one machine (all its GPUs with --strategy mirrored); "
                          "--strategy multiworker is not supported with it")
    if not 0 <= t.seed < STREAM_SEED_OFFSET:
        raise ConfigError(f"--seed must be in [0, 2**32) with {PREFIX}. Received: seed={t.seed}")
    index = load_data(f"sim:{preset}", samples=d.samples, seed=t.seed, workers=d.workers, validate=d.validate,
                      skip_bad=d.skip_bad, label_column=d.label_column, classes=d.classes, stream=False)
    data, strata = label_index(index, task, d.target)
    data.source, data.skipped = d.data, list(index.skipped)
    data.splits = evaluation_splits(strata, d.val_fraction, d.test_fraction, t.seed)
    if get_task(task).trains_on_normal_class_only:
        data.splits = normal_class_splits(data, d.normal_class)
        classes = (d.normal_class,)
    else:
        simulated = data.table["file"].astype(str).str.split("/").str[0]  # <class>/<class>_<index>.npy
        classes = tuple(sorted(set(simulated), key=_preset_order(preset)))
    if task == "regression":
        val_y = data.y[data.splits["val"]]
        data.target_mean, data.target_std = float(np.mean(val_y)), float(np.std(val_y)) or 1.0
    steps = max(1, -(-d.samples * len(classes) // t.batch_size))
    data.stream = StreamPlan(d.data, preset, t.seed + STREAM_SEED_OFFSET, classes, task, d.target,
                             tuple(data.class_names), d.label_column, data.input_shape, t.batch_size, steps,
                             d.workers)
    print(f"data: training stream {d.data}: classes {', '.join(classes)}, {steps} steps of {t.batch_size} per "
          f"epoch, seed {data.stream.seed}; val/test: {index.describe()}", flush=True)
    return data


def _preset_order(preset: str):
    known = get_preset(preset).classes
    return lambda c: known.index(c) if c in known else len(known)


def evaluation_splits(strata: np.ndarray, val_fraction: float, test_fraction: float,
                      seed: int) -> dict[str, np.ndarray]:
    """Val and test cut from the fixed set (per stratum, seeded, in the ratio val:test); train empty."""
    rng = np.random.default_rng(seed)
    share = test_fraction / (val_fraction + test_fraction)
    val, test = [], []
    for value in sorted(set(strata.tolist()), key=str):
        idx = rng.permutation(np.flatnonzero(strata == value))
        n_test = min(len(idx) - 1, max(1, round(len(idx) * share))) if len(idx) >= 2 else 0
        test.append(idx[:n_test])
        val.append(idx[n_test:])
    splits = {"train": np.zeros(0, np.int64), "val": np.sort(np.concatenate(val)),
              "test": np.sort(np.concatenate(test))}
    if not len(splits["val"]) or not len(splits["test"]):
        raise DataError(f"too few images ({len(strata)}) for a validation and a test set; raise --samples")
    return splits


def evaluation_set(config: RunConfig, info: dict, run_dir: Path, data=None, allow_pickle: bool = False,
                   split: str = "test"):
    """(images, labels, table, split name) to evaluate a run on: its own test (or ``split``) split,
    rebuilt and checked against its ``split.csv``, or every labelled image of ``data``."""
    if data is not None:
        return (*load_other_data(config, info, data, allow_pickle), "all")
    prepared = prepare_data(config)
    check_split(prepared, Path(run_dir) / "split.csv")
    idx = prepared.splits[split]
    return prepared.images[idx], prepared.y[idx], prepared.table.loc[idx], split


# A simulated set named by evaluate / ensemble / shift_check --data is drawn with another seed than the
# run's: the simulator draws the same lenses for one seed whatever its noise or geometry options, so
# sim:model_ii evaluated on a run trained on sim:model_ii:noise=published would hold its training lenses.
OTHER_SIM_SEED_OFFSET = 2 << 32  # above the runs' seeds (< 2**32) and the streams' (STREAM_SEED_OFFSET + seed)


def other_data_seed(data: str, seed: int) -> int:
    """The simulation seed of ``--data`` read beside a run of ``seed`` (unchanged for files)."""
    return seed + OTHER_SIM_SEED_OFFSET if str(data).startswith("sim:") else seed


def load_other_data(config: RunConfig, info: dict, data: str, allow_pickle: bool):
    """Every labelled image of ``data`` as (images, labels in the run's class order, table); a
    simulated ``data`` comes from another seed than the run's (``other_data_seed``)."""
    d = config.data  # read the other set the way the run read its own (label column, checks)
    index = load_data(data, samples=d.samples, seed=other_data_seed(data, config.train.seed),
                      allow_pickle=allow_pickle,
                      workers=d.workers, validate=d.validate, label_column=d.label_column)
    prepared, _ = label_index(index, config.model.task, config.data.target)
    if prepared.input_shape != tuple(info["input_shape"]):
        raise DataError(f"{data}: images of shape {prepared.input_shape}, but the model takes {tuple(info['input_shape'])}")
    y = prepared.y
    if config.model.task in ("classification", "anomaly"):
        unknown = sorted(set(prepared.class_names) - set(info["class_names"]))
        if unknown:
            raise DataError(f"{data}: classes {unknown} are unknown to the model, which knows {info['class_names']}")
        y = np.searchsorted(info["class_names"], np.asarray(prepared.class_names)[y])
    return prepared.images, y, prepared.table
