"""Studies that train many models and write a report beside each: the multi-task and content
grids, cross-validation, SASRec as the ranking anchor, and the refit against the held-out model."""
