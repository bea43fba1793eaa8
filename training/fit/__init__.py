"""Fitting a network: the epoch loop, the losses and their weighting, the learning-rate
schedule, head tuning, calibration, the refit on all of the data, resumable and distributed runs,
and the training report."""
