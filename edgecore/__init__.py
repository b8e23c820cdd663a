"""edgepipe's neutral bottom layer: what both the target layer and the pipeline need.

The error classes, the shared vocabulary (recipes, capabilities, kernels, ...), the ``.tflite``
model description read straight from the flatbuffer, the numpy metrics and the capture of
C-level stderr. Only numpy (and the flatbuffer schema that ships with LiteRT) is needed here:
nothing in this package imports ``targets`` or ``pipeline``.
"""
