"""Models in: loading Keras / SavedModel / ONNX, the one module that deals with the two Kerases and
TensorFlow start-up, the transformer lint of the float graph and its verified rewrites.
May import core (and targets, edgecore); never quantize, train, report or run."""
