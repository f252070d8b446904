"""Training: the run (trainer), its callbacks, schedules, losses, SAM, BatchNorm recalibration,
reseeding, fine-tuning and the distributed loop. It composes data/ and models/, which never meet."""
