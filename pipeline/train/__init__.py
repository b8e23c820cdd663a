"""Training: quantization-aware training with tfmot on tf_keras, and its tf.distribute strategies.
May import frontend and core (and targets, edgecore); never quantize, report or run."""
