"""Evaluation: metrics; uncertainty numerics (intervals: regression NLL, coverage, conformal intervals,
ensembles; calibration: ECE, temperature scaling; bootstrap: confidence intervals of the metrics);
plots (plot_style: the shared look; plots; uncertainty_plots), and the report of one evaluation
(metrics.json, predictions.csv, plots). Reads models/ (the autoencoders' reconstructions), never data/:
callers hand it arrays."""
