"""Seeded, stratified train / val / test split; the indices are saved with every run."""

from __future__ import annotations

import numpy as np

from deeplense_tf.errors import DataError

SPLITS = ("train", "val", "test")


def stratified_split(strata: np.ndarray, val_fraction: float, test_fraction: float,
                     seed: int) -> dict[str, np.ndarray]:
    """Per stratum, shuffle with ``seed`` and cut val and test off; sorted indices per split.

    Each stratum with at least 3 items puts at least one in every split, so tiny sets still
    evaluate every class.
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for value in sorted(set(strata.tolist()), key=str):
        idx = rng.permutation(np.flatnonzero(strata == value))
        n = len(idx)
        n_test = max(1, round(n * test_fraction)) if n >= 3 else 0
        n_val = max(1, round(n * val_fraction)) if n >= 3 else 0
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test:n_test + n_val])
        parts["train"].append(idx[n_test + n_val:])
    split = {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}
    empty = [name for name, idx in split.items() if len(idx) == 0]
    if empty:
        raise DataError(f"too few images ({len(strata)}) to fill the {', '.join(empty)} split(s); "
                        "use more data (--samples for simulated data)")
    return split
