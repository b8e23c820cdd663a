"""Train the small reference CNN shipped as calibration_data/reference_cnn.keras.

The demo and the tests use the committed model so that they never need to train. This script is
how it was made: a Keras 3 CNN (about 57 k parameters) trained on ``mnist/train.npz`` with fixed
seeds, inputs scaled to [0, 1]. Re-run it with ``python calibration_data/train_reference.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 7


def build() -> keras.Model:
    """Conv-pool-conv-pool-dense: ops every TFLite and TFLM target supports."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((28, 28, 1), name="image"),
            layers.Conv2D(16, 3, activation="relu", name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(32, 3, activation="relu", name="conv2"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dropout(0.3, name="dropout"),
            layers.Dense(64, activation="relu", name="hidden"),
            layers.Dense(10, activation="softmax", name="digits"),
        ],
        name="reference_cnn",
    )


def main() -> None:
    keras.utils.set_random_seed(SEED)
    train = np.load(HERE / "mnist" / "train.npz")
    evaluation = np.load(HERE / "mnist" / "eval.npz")
    x, y = train["x"].astype("float32") / 255.0, train["y"]
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=15, batch_size=32, validation_split=0.1, verbose=2)
    _, accuracy = model.evaluate(evaluation["x"].astype("float32") / 255.0, evaluation["y"], verbose=0)
    print(f"eval accuracy {accuracy:.4f}, parameters {model.count_params()}")
    model.save(HERE / "reference_cnn.keras")


if __name__ == "__main__":
    main()
