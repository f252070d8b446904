"""Plots of uncertainty: regression intervals (predicted vs true with error bars, coverage against the
nominal level, residual / sigma against a unit normal) and the reliability diagram of a classifier.

Each public function writes its figures under ``out_dir`` (created if needed) in the house style
(plot_style.py) and returns what it wrote. The numbers come from intervals.py and calibration.py.
Used by evaluation/report.py; tests: tests/test_uncertainty.py.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from deeplense_tf.evaluation.calibration import reliability_table
from deeplense_tf.evaluation.intervals import (_calibrated_quantile, _regression_inputs, calibration_curve,
                                               conformal_interval, coverage, regression_uncertainty_metrics)
from deeplense_tf.evaluation.plot_style import (COLORS, DEFAULT_TARGET_LABEL, SINGLE, ensure_dir, few_ticks,
                                                format_number, journal, legend_below, residual_unit, save, signed,
                                                target_label, text_box)

__all__ = ["regression_uncertainty_plots", "reliability_diagram"]

_MAX_ERRORBARS = 1500  # more bars than this hide one another: a random subset is drawn


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _identity_axes(ax, lo: float, hi: float, label: str, title: str) -> None:
    """Square predicted-vs-true axes over [lo, hi] with the identity line (regression_plots could share it)."""
    ax.plot([lo, hi], [lo, hi], color="k", lw=1.2, label="identity (pred = true)")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.xaxis.set_major_locator(few_ticks())
    ax.yaxis.set_major_locator(few_ticks())
    ax.set_xlabel(f"true {label}")
    ax.set_ylabel(f"predicted {label}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")


def _errorbar_plot(y, mu, half, bar: str, met: dict, label: str) -> Any:
    n = len(y)
    show = np.arange(n)
    if n > _MAX_ERRORBARS:
        show = np.sort(np.random.default_rng(0).choice(n, _MAX_ERRORBARS, replace=False))
    fig, ax = plt.subplots(figsize=(SINGLE, SINGLE), layout="constrained")
    lo, hi = float(min(y.min(), mu.min())), float(max(y.max(), mu.max()))
    pad = 0.04 * (hi - lo or 1.0)
    ax.errorbar(y[show], mu[show], yerr=half[show], fmt="o", ms=2.5, color=COLORS[0], elinewidth=0.6,
                alpha=float(np.clip(300.0 / len(show), 0.25, 0.9)),
                label=f"{bar} ({len(show)} of {n} items)" if len(show) < n else bar)
    _identity_axes(ax, lo - pad, hi + pad, label, "Predicted vs true, with 68 % error bars")
    if met["nll"] is None:  # a point-estimate model: calibrated intervals only
        text_box(ax, f"N = {n}\ncoverage of the calibrated\n68 % interval {_pct(met['coverage_68_calibrated'])}\n"
                      f"95 % interval {_pct(met['coverage_95_calibrated'])}")
    else:
        text_box(ax, f"N = {n}   NLL = {format_number(met['nll'])}\ncoverage   raw      calibrated\n"
                      f"68 %     {_pct(met['coverage_68']):>7}  {_pct(met['coverage_68_calibrated']):>7}\n"
                      f"95 %     {_pct(met['coverage_95']):>7}  {_pct(met['coverage_95_calibrated']):>7}")
    return fig


def _coverage_plot(y, mu, s, calibration, met: dict) -> Any:
    fig, ax = plt.subplots(figsize=(SINGLE, SINGLE), layout="constrained")
    ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1, label="ideal (empirical = nominal)")
    if s is not None:
        nominal, empirical = calibration_curve(y, mu, s, np.linspace(0.01, 0.99, 99))
        ax.plot(nominal, empirical, color=COLORS[0], lw=1.8,
                label=f"Gaussian, predicted sigma (error {format_number(met['calibration_error'])})")
    if calibration is not None:
        levels = calibration["levels"]
        hits = [coverage(y, *conformal_interval(mu, s, calibration, v)) for v in levels]
        ax.plot(levels, hits, "o", ms=7, color=COLORS[3], label="conformal, calibrated on validation")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("nominal coverage of the central interval")
    ax.set_ylabel("empirical coverage (fraction of items inside)")
    ax.set_title(f"Interval coverage (N = {len(y)})")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return fig


def _normalised_residual_plot(y, mu, s) -> Any:
    z = (mu - y) / s
    lim = float(np.clip(np.percentile(np.abs(z), 99.5), 4.0, 10.0))
    fig, ax = plt.subplots(figsize=(SINGLE, 0.75 * SINGLE), layout="constrained")
    bins = np.linspace(-lim, lim, int(np.clip(np.sqrt(len(z)), 10, 60)) + 1)
    ax.hist(np.clip(z, -lim, lim), bins=bins, density=True, color=COLORS[0], alpha=0.75, edgecolor="white",
            linewidth=0.4, label=f"items (beyond ±{lim:.1f} piled at the edges)")
    xs = np.linspace(-lim, lim, 400)
    ax.plot(xs, np.exp(-0.5 * xs**2) / math.sqrt(2 * math.pi), color="k", lw=1.5, label="unit normal N(0, 1)")
    ax.set_xlabel("(predicted − true) / sigma")
    ax.set_ylabel("density")
    ax.set_title("Residual / sigma against a unit normal")
    legend_below(fig, ax)
    text_box(ax, f"mean = {signed(float(z.mean()))}\nstd  = {z.std():.3f}\n"
                  f"|z| <= 1: {_pct(float(np.mean(np.abs(z) <= 1)))} (68.3 % ideal)")
    return fig


@journal
def regression_uncertainty_plots(y, mean, sigma, out_dir, label: str = DEFAULT_TARGET_LABEL,
                                 calibration: dict | None = None, fmt: str = "png") -> list[Path]:
    """``pred_vs_true_errorbars.png`` (68 % error bars: the calibrated half-width when ``calibration``
    (intervals.fit_conformal) has the 0.68 level, else sigma), ``coverage.png`` (empirical vs nominal
    coverage) and ``residual_over_sigma.png`` (against a unit normal; drawn only with a sigma).

    ``sigma`` may be None for a plain model with an absolute calibration.
    """
    label = target_label(label)
    y, mu, s = _regression_inputs(y, mean, sigma)
    has68 = calibration is not None and _calibrated_quantile(calibration, 0.68) is not None
    if s is None and not has68:
        raise ValueError("regression_uncertainty_plots needs sigma or a calibration with the 0.68 level. "
                         "Received: sigma=None, calibration levels "
                         f"{None if calibration is None else calibration['levels']}")
    unit = residual_unit(label)
    if has68:
        lo, hi = conformal_interval(mu, s, calibration, 0.68)
        half, bar = (hi - lo) / 2, "calibrated 68 % interval"
    else:
        half, bar = s, f"±1 predicted sigma{f' [{unit}]' if unit else ''}"
    met = regression_uncertainty_metrics(y, mu, s, calibration)
    out = ensure_dir(out_dir)
    paths = [save(_errorbar_plot(y, mu, half, bar, met, label), out, "pred_vs_true_errorbars.png", fmt),
             save(_coverage_plot(y, mu, s, calibration, met), out, "coverage.png", fmt)]
    if s is not None:
        paths.append(save(_normalised_residual_plot(y, mu, s), out, "residual_over_sigma.png", fmt))
    return paths


@journal
def reliability_diagram(y, probs, out_dir, name: str = "reliability.png", probs_calibrated=None,
                        fmt: str = "png") -> Path:
    """Accuracy against top-label confidence per bin (ECE in the legend) over the item counts per bin;
    ``probs_calibrated`` (e.g. temperature-scaled) is drawn beside the raw probabilities."""
    series = [("raw", probs, COLORS[0])]
    if probs_calibrated is not None:
        series.append(("calibrated", probs_calibrated, COLORS[3]))
    fig, (ax, axc) = plt.subplots(2, 1, figsize=(SINGLE, 1.2 * SINGLE), height_ratios=[3, 1], sharex=True,
                                  layout="constrained")
    ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1, label="perfect calibration")
    for lab, P, color in series:
        t = reliability_table(y, P)
        conf = np.array([np.nan if v is None else v for v in t["confidence"]])
        acc = np.array([np.nan if v is None else v for v in t["accuracy"]])
        ax.plot(conf, acc, "o-", color=color, lw=1.6, ms=5, label=f"{lab}: ECE {t['ece']:.3f}")
        axc.stairs(t["count"], t["bin_edges"], color=color, lw=1.6, label=lab)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_title(f"Reliability (N = {t['n']}, {len(t['count'])} equal-width bins)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    axc.set_xlabel("confidence (top-label probability)")
    axc.set_ylabel("items")
    axc.grid(alpha=0.3)
    return save(fig, ensure_dir(out_dir), name, fmt)
