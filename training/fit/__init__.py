"""Fitting a network: the epoch loop, the losses and their weighting, the learning-rate
schedule, head tuning, calibration, the refit on all of the data, resumable runs, and the
training report (several processes: training.distributed)."""
