"""Publishing a model as an artifact the service loads: the ONNX export with its manifest, the
item-content graph, and new catalogue items added to a published model."""
