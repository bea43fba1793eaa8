"""The steps from a data source to a published artifact, as callable functions: `prepare`
(data ready for a run), `run` (fit, evaluate, refit, export, report) and `checkpoint` (evaluate
or publish a saved checkpoint). The CLI, the studies and the tests call these."""
