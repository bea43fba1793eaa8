"""hydrarec's offline half: data -> network -> fit -> evaluation -> publish, driven by the
pipeline and the studies, run as `python -m training COMMAND` (training/commands/).

Imports run one way: commands -> studies -> pipeline -> fit, evaluation, publish -> network,
data -> config (tests/contract/test_layers.py holds it)."""
