"""Measuring a model: the metrics, the protocol's test and cold-item figures, the baselines and
anchors it is compared with, and bootstrap intervals over users."""
