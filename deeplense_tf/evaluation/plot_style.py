"""The look every deeplense_tf figure shares: a journal page's widths and fonts, axis labels with
units, and the few drawing helpers that plots.py and uncertainty_plots.py both use.

Figures are drawn for a journal page: one column (3.5 in) or two (7 in) wide, 7-9 pt text, units on
every axis (``target_label``), legends where they hide no data. ``save`` writes PNG (300 dpi), or PDF /
SVG with ``fmt=`` (``--plot-format``), and closes the figure, so long evaluation loops do not
accumulate memory. Matplotlib draws headless (Agg) once this module is imported.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # headless: before pyplot is imported

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = [
    "DPI", "FORMATS", "SINGLE", "DOUBLE", "STYLE", "TARGET_LABELS", "DEFAULT_TARGET_LABEL", "COLORS",
    "target_label", "journal", "ensure_dir", "save", "legend_below", "few_ticks", "format_number", "signed",
    "text_box", "scatter_style", "residual_unit",
]

DPI = 300  # PNG at print resolution; PDF and SVG are vector (scatter clouds inside them rasterised at DPI)
FORMATS = ("png", "pdf", "svg")
SINGLE, DOUBLE = 3.5, 7.0  # figure widths [in]: one journal column, two columns
# 8 pt text, 7 pt ticks and legends: what a figure printed at its column width needs. TrueType fonts
# embedded in PDFs (journals refuse Type 3); SVG text stays text.
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "figure.titlesize": 9, "legend.fontsize": 7,
         "legend.title_fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 1.2,
         "axes.linewidth": 0.6, "grid.linewidth": 0.4, "pdf.fonttype": 42, "svg.fonttype": "none"}
# Axis labels of the regression targets the simulator writes (metadata.csv); others: unit from the suffix.
TARGET_LABELS = {
    "log10_axion_mass": r"$\log_{10}\,m_a$ [eV]",
    "axion_mass_ev": r"$m_a$ [eV]",
    "vortex_half_length_arcsec": "vortex half-length [arcsec]",
    "vortex_angle_rad": "vortex angle [rad]",
    "vortex_mass_msun": r"vortex mass [$M_\odot$]",
    "subhalo_mass_total": r"total subhalo mass [$M_\odot$]",
    "n_subhalos": "number of subhaloes",
    "theta_e_arcsec": r"Einstein radius $\theta_E$ [arcsec]",
    "log10_halo_mass": r"$\log_{10}\,M_{\rm halo}$ [$M_\odot$]",
    "f_sub": r"subhalo mass fraction $f_{\rm sub}$ (inside $\theta_E$)",
    "subhalo_abundance": "subhalo abundance (x 25 subhaloes)",
    "log10_vortex_mass": r"$\log_{10}\,M_{\rm vortex}$ [$M_\odot$]",
    "vortex_linear_density_msun_per_arcsec": r"vortex linear density [$M_\odot$/arcsec]",
}
UNIT_SUFFIXES = {"_arcsec": "arcsec", "_ev": "eV", "_msun": r"$M_\odot$", "_rad": "rad", "_mag": "mag", "_s": "s"}
DEFAULT_TARGET_LABEL = TARGET_LABELS["log10_axion_mass"]
COLORS = plt.get_cmap("tab10").colors


# --------------------------------------------------------------------------- helpers
def target_label(target: str | None) -> str:
    """The axis label, with units, of a regression target column: ``log10_axion_mass`` ->
    log10 m_a [eV]; a name ending in a unit (``_arcsec``, ``_ev``, ``_msun``...) gets it in
    brackets; any other name (a label already written with units) is shown as given."""
    if not target:
        return DEFAULT_TARGET_LABEL
    if target in TARGET_LABELS:
        return TARGET_LABELS[target]
    for suffix, unit in UNIT_SUFFIXES.items():
        if target.endswith(suffix) and len(target) > len(suffix):
            return f"{target[: -len(suffix)].replace('_', ' ')} [{unit}]"
    return target


def journal(plot: Callable) -> Callable:
    """Draw inside ``STYLE`` (fonts for a printed column) without changing matplotlib's own settings."""

    @functools.wraps(plot)
    def styled(*args, **kwargs):
        with plt.rc_context(STYLE):
            return plot(*args, **kwargs)

    return styled


def ensure_dir(out_dir) -> Path:
    """``out_dir`` as a Path, created (with its parents) if missing."""
    p = Path(out_dir)
    p.mkdir(parents=True, exist_ok=True)
    return p


def save(fig, out_dir: Path, name: str, fmt: str | None = None) -> Path:
    """Write ``name`` under ``out_dir``, as ``fmt`` (png, pdf, svg: the suffix replaced) when given,
    and close the figure."""
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"plot format must be one of {FORMATS}. Received: {fmt!r}")
    path = out_dir / (name if fmt is None else f"{Path(name).stem}.{fmt}")
    try:
        fig.savefig(path, dpi=DPI)  # constrained layout: no second draw for a tight bbox
    finally:
        plt.close(fig)
    return path


def legend_below(fig, ax, ncol: int = 2) -> None:
    """The axes' legend under the figure, outside the data (constrained layout makes room): for
    clouds and histograms, whose patches ``loc="best"`` does not see as data."""
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=ncol, frameon=False)


def few_ticks() -> MaxNLocator:
    """About five ticks at round values: long labels (-23.5) fit a column-wide axis."""
    return MaxNLocator(5, steps=[1, 2, 2.5, 5, 10])


def format_number(x, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals; "n/a" for None (an undefined metric)."""
    return "n/a" if x is None else f"{x:.{digits}f}"


def signed(x: float, digits: int = 3) -> str:
    """``x`` with its sign always shown (a bias), never as "-0.000"."""
    s = f"{x:+.{digits}f}"
    return "+" + s[1:] if float(s) == 0 else s  # no "-0.000"


def text_box(ax, text: str, loc: str = "upper left") -> None:
    """``text`` in a boxed monospace note inside a corner of ``ax`` ("upper left", "lower right", ...)."""
    x, ha = (0.03, "left") if "left" in loc else (0.97, "right")
    y, va = (0.97, "top") if "upper" in loc else (0.03, "bottom")
    ax.text(
        x, y, text, transform=ax.transAxes, ha=ha, va=va, fontsize=7, family="monospace",
        bbox=dict(boxstyle="round", facecolor="white", alpha=0.85, edgecolor="0.7"),
    )


def scatter_style(n: int) -> dict:
    """Point size and alpha that keep dense scatter plots readable from 10 to 1e5 points (one column wide)."""
    n = max(n, 1)
    return dict(s=float(np.clip(2500.0 / n, 1.5, 12.0)), alpha=float(np.clip(800.0 / n, 0.2, 0.8)),
                linewidths=0, rasterized=True)


def residual_unit(label: str) -> str:
    """Units of pred - true: dex for a log10 target, else the bracketed unit of the label."""
    if "log" in label.split("[")[0].lower():
        return "dex"
    if "[" in label and "]" in label:
        return label[label.index("[") + 1 : label.rindex("]")]
    return ""
