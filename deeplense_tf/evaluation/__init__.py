"""Evaluation: metrics, plots, and the report of one evaluation (metrics.json, predictions.csv, plots).
Reads models/ (the autoencoders' reconstructions), never data/: callers hand it arrays."""
