"""Data: readers of every on-disk layout with their checks (index, sources, readers_*, shards, npy),
splits, the labelled data of a run (prepare), the tf.data pipeline and the simulated stream.
Never imports models/: the trainer hands the pipeline its augmentation map."""
