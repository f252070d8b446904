"""What each task learns: label extraction, head, loss and training metrics.

| task | label | head | loss |
|---|---|---|---|
| regression | a numeric column (default log10 axion mass), standardised inside the head | Dense-ReLU-BN-Dropout x2, Dense(1), de-standardise | MSE in physical units |
| classification | class index, classes in alphabetical order (axion, cdm, no_sub) | Dropout, Dense(K) softmax | categorical cross-entropy |
| lens_finding | ``is_lens`` column, or two class folders (non-lens first) | Dropout, Dense(1) sigmoid | binary cross-entropy |
| anomaly | class index; trains on the normal class only | autoencoder, output = anomaly score | reconstruction error (+ KL) |

The regression head ends with a fixed affine layer (train mean/std of the target), so the
network learns a standardised target while every output, metric and export is in physical
units (dex for log10 masses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from deeplense_tf.errors import ConfigError, DataError

MASS_COLUMNS = ("axion_mass_ev", "axion_mass", "mass")
# log10 targets derived from a linear column when only that exists (sets simulated before the log10 column)
LOG10_SOURCES = {"log10_axion_mass": MASS_COLUMNS, "log10_halo_mass": ("main_halo_mass_msun",)}


@dataclass(frozen=True)
class TaskLabels:
    y: np.ndarray  # float32 (N,) targets or int (N,) class indices for the kept rows
    keep: np.ndarray  # bool (rows of the table that have a label)
    class_names: list[str]  # classification classes; [] for regression
    strata: np.ndarray  # what the split is stratified on (class per kept row)


@dataclass(frozen=True)
class Task:
    name: str
    labels: Callable[[pd.DataFrame, str], TaskLabels]
    loss: str | None
    metrics: tuple[str, ...]
    monitor: str  # validation quantity for the best checkpoint
    monitor_mode: str
    trains_on_normal_class_only: bool = False


def regression_labels(table: pd.DataFrame, target: str) -> TaskLabels:
    values = target_column(table, target)
    keep = np.isfinite(values)
    if not keep.any():
        rows = (f"classes {', '.join(sorted(set(table['class'].astype(str))))}" if "class" in table
                else f"{len(table)} images")
        raise DataError(f"regression target '{target}' is undefined (NaN) for every image it would train on "
                        f"({rows}); choose a --target these images carry, or data whose images carry it (the "
                        "simulator records f_sub for no_sub and cdm, log10_axion_mass for axion)")
    strata = table["class"].to_numpy()[keep] if "class" in table else np.zeros(int(keep.sum()), int)
    return TaskLabels(values[keep].astype(np.float32), keep, [], strata)


def target_column(table: pd.DataFrame, target: str) -> np.ndarray:
    """The named numeric column; ``log10_*`` is derived from the mass column when only that exists."""
    if target in table.columns:
        return pd.to_numeric(table[target], errors="coerce").to_numpy(np.float64)
    mass = next((c for c in LOG10_SOURCES.get(target, ()) if c in table.columns), None)
    if mass is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log10(pd.to_numeric(table[mass], errors="coerce").to_numpy(np.float64))
    numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
    raise DataError(f"regression target '{target}' is not in the data. Numeric columns: {numeric or 'none'} "
                    "(choose one with --target; a set simulated by an older version lacks the newer columns: "
                    "simulate it again)")


TARGET_UNITS = {"log10_axion_mass": "log10(m_a / eV)", "axion_mass_ev": "eV", "log10_halo_mass": "log10(M / Msun)",
                "einstein_radius": "arcsec", "theta_e_arcsec": "arcsec", "f_sub": "mass fraction",
                "log10_vortex_mass": "log10(M / Msun)"}


def target_units(target: str) -> str | None:
    """Units of a regression target, for metadata and plot labels (None when unknown)."""
    if target in TARGET_UNITS:
        return TARGET_UNITS[target]
    return "dex" if target.startswith("log10_") else None


def classification_labels(table: pd.DataFrame, target: str) -> TaskLabels:
    if "class" not in table.columns:
        raise DataError("classification needs class labels (class folders, or a labels array of names/indices)")
    classes = table["class"].astype(str).to_numpy()
    names = sorted(set(classes))
    if len(names) < 2:
        raise DataError(f"classification needs at least 2 classes; the data has only {names}")
    y = np.searchsorted(names, classes).astype(np.int32)
    return TaskLabels(y, np.ones(len(y), bool), names, classes)


def lens_finding_labels(table: pd.DataFrame, target: str) -> TaskLabels:
    if "is_lens" in table.columns:
        y = pd.to_numeric(table["is_lens"], errors="coerce").to_numpy(np.float64)
        keep = np.isfinite(y)
        y = y[keep].astype(np.int32)
    elif "class" in table.columns and table["class"].nunique() == 2:
        names = sorted(table["class"].astype(str).unique(), key=_non_lens_first)
        y = (table["class"].astype(str).to_numpy() == names[1]).astype(np.int32)
        keep = np.ones(len(y), bool)
    else:
        raise DataError("lens_finding needs an 'is_lens' column or exactly two class folders (e.g. lenses/ nonlenses/)")
    if set(np.unique(y)) - {0, 1}:
        raise DataError(f"is_lens must be 0 or 1; found values {sorted(set(np.unique(y)))[:10]}")
    return TaskLabels(y, keep, ["non_lens", "lens"], y)


def _non_lens_first(name: str) -> tuple[int, str]:
    lower = name.lower()
    return (0 if lower.startswith(("non", "no")) else 1, lower)


TASKS: dict[str, Task] = {
    "regression": Task("regression", regression_labels, "mse", ("mae", "rmse"), "val_loss", "min"),
    "classification": Task("classification", classification_labels, "sparse_categorical_crossentropy",
                           ("accuracy",), "val_loss", "min"),
    "lens_finding": Task("lens_finding", lens_finding_labels, "binary_crossentropy",
                         ("accuracy", "auc"), "val_loss", "min"),
    # The autoencoder adds its own loss (reconstruction error, + KL for the VAE): no target, no loss here.
    "anomaly": Task("anomaly", classification_labels, None, (), "val_loss", "min", trains_on_normal_class_only=True),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"unknown task '{name}'. Choose one of {sorted(TASKS)}")
    return TASKS[name]


def regression_columns(target: str, mean, sigma=None, bounds: dict | None = None) -> dict[str, np.ndarray]:
    """The regression columns of every predictions file (``evaluate``'s and ``predict``'s alike):
    ``pred_<target>``, ``sigma_<target>``, ``lower68_<target>`` ... ``upper95_<target>`` (``bounds``:
    ``{"lower68": ..., ...}``), and for ``log10_*`` targets the prediction and its interval in
    physical units (``pred_axion_mass``, ``lower68_axion_mass``, ... in eV)."""
    columns = {f"pred_{target}": np.asarray(mean)}
    if sigma is not None:
        columns[f"sigma_{target}"] = np.asarray(sigma)
    for key, values in (bounds or {}).items():
        columns[f"{key}_{target}"] = np.asarray(values)
    if target.startswith("log10_"):
        for key in ("pred", *(bounds or {})):
            columns[f"{key}_{target[6:]}"] = 10.0 ** columns[f"{key}_{target}"].astype(np.float64)
    return columns
