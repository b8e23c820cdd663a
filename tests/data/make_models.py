"""Maintainers only: rebuild the tiny committed .tflite files the fast test tier runs.

    .venv/bin/python tests/data/make_models.py

A small CNN (conv stride 2 -> dense) trained for two epochs on the shipped MNIST sample, saved as a
full-int8 .tflite (int8 I/O) and as float32. The fast tier needs them because it must not import
TensorFlow; their bytes are committed, so this runs only when they should change.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from pipeline import api
from pipeline.core.config import ConvertConfig  # noqa: E402
from pipeline.frontend.keras_compat import keras3  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    keras = keras3()
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    with np.load(api.sample_path("mnist", "train.npz")) as data:
        x, y = data["x"][:2000].astype("float32") / 255.0, data["y"][:2000]
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    work = Path(tempfile.mkdtemp(prefix="edgepipe-tiny-"))
    model.save(work / "tiny.keras")
    result = api.convert(ConvertConfig(model=work / "tiny.keras", calib=api.sample_path("mnist", "calib.npz"),
                                       out=work / "out", overwrite=True))
    (HERE / "tiny_int8.tflite").write_bytes(result.artifact.read_bytes())
    (HERE / "tiny_float32.tflite").write_bytes((work / "out" / "model_float32.tflite").read_bytes())
    shutil.rmtree(work)
    print("wrote", HERE / "tiny_int8.tflite", HERE / "tiny_float32.tflite")


if __name__ == "__main__":
    main()
