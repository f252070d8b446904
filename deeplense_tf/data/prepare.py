"""From a ``DataConfig`` and a task to labelled train / val / test arrays.

The same function rebuilds a run's split later (``evaluate``, ``--resume``): loading is
deterministic for a given config and seed, and the split indices written to ``split.csv``
are checked against the rebuilt ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from deeplense_tf.config import RunConfig
from deeplense_tf.data.sources import DataIndex, load_data
from deeplense_tf.data.splits import SPLITS, stratified_split
from deeplense_tf.errors import DataError
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

    def subset(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        idx = self.splits[split]
        return self.images[idx], self.y[idx]

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
        }


def label_index(index: DataIndex, task_name: str, target: str) -> tuple[PreparedData, np.ndarray]:
    """Keep the rows that carry a label for the task and attach labels."""
    labels = get_task(task_name).labels(index.table, target)
    table = index.table.loc[labels.keep].reset_index(drop=True)
    return PreparedData(index.images[labels.keep], labels.y, table, labels.class_names,
                        source=index.root), labels.strata


def prepare_data(config: RunConfig) -> PreparedData:
    d = config.data
    index = load_data(d.data, samples=d.samples, seed=config.train.seed, allow_pickle=d.allow_pickle,
                      workers=d.workers)
    data, strata = label_index(index, config.model.task, d.target)
    data.splits = stratified_split(strata, d.val_fraction, d.test_fraction, config.train.seed)
    if get_task(config.model.task).trains_on_normal_class_only:
        data.splits = normal_class_splits(data, d.normal_class)
    if config.model.task == "regression":
        train_y = data.y[data.splits["train"]]
        data.target_mean = float(np.mean(train_y))
        data.target_std = float(np.std(train_y)) or 1.0
    return data


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
