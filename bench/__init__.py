"""`make bench`: how close /predict over HTTP gets to the in-process onnxruntime limit."""
