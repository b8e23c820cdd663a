"""LiteRT on this machine: the interpreter choice (ai_edge_litert, tflite_runtime, tf.lite), the
evaluation and timing runner, the host target, and the self-contained device runner that the ARM
targets copy to a Pi. May import the targets package's shared modules and edgecore."""
