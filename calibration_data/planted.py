"""Three trained CNNs with planted quantization problems, for trying edgepipe's int8 tools.

    python -m calibration_data.planted planted/

Trains a small CNN on the bundled MNIST sample (3 epochs, fixed seed, about 20 s on a laptop CPU)
and writes, in the folder given:

* ``clean.keras``: the trained CNN.
* ``rare.keras``: the same function plus one hidden unit that fires on 2 % of inputs with values
  up to about 1,100 and feeds nothing (float outputs unchanged): it stretches its tensor's range.
* ``hot.keras``: the same function with conv1's channel 0 scaled by 1,000 and conv2's weights on
  it by 1/1,000: one hot channel that no activation range can serve alongside the others.
* ``calib.npz`` (300 images), ``calib500.npz`` (500), ``calib_bad.npz`` (the 300, three of them
  left unnormalised: x 255), ``eval.npz`` (1,500 labelled images), all float32 in 0..1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _cnn(keras, hidden: int = 64):
    layers = keras.layers
    image = keras.Input((28, 28, 1))
    h = layers.MaxPooling2D(2, name="pool1")(layers.Conv2D(16, 3, activation="relu", name="conv1")(image))
    h = layers.MaxPooling2D(2, name="pool2")(layers.Conv2D(32, 3, activation="relu", name="conv2")(h))
    h = layers.Dense(hidden, activation="relu", name="hidden")(layers.Flatten(name="flatten")(h))
    return keras.Model(image, layers.Dense(10, activation="softmax", name="digits")(h))


def _sample(name: str) -> tuple[np.ndarray, np.ndarray | None]:
    from pipeline import api

    with np.load(api.sample_path("mnist", name)) as data:
        return data["x"].astype("float32") / 255.0, data["y"] if "y" in data.files else None


def build(folder: str | Path) -> Path:
    """Write the models and data sets described above into ``folder``; return it."""
    from pipeline.frontend.keras_compat import keras3

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keras = keras3()
    keras.utils.set_random_seed(11)
    x, y = _sample("train.npz")
    calib, _ = _sample("calib.npz")
    eval_x, eval_y = _sample("eval.npz")
    clean = _cnn(keras)
    clean.compile("adam", "sparse_categorical_crossentropy")
    clean.fit(x, y, epochs=3, batch_size=64, verbose=0)
    clean.save(folder / "clean.keras")
    _rare(keras, clean, x).save(folder / "rare.keras")
    _hot(keras, clean).save(folder / "hot.keras")
    bad = calib[:300].copy()
    bad[[10, 150, 290]] *= 255.0
    np.savez(folder / "calib_bad.npz", x=bad)
    np.savez(folder / "calib.npz", x=calib[:300])
    np.savez(folder / "calib500.npz", x=calib)
    np.savez(folder / "eval.npz", x=eval_x, y=eval_y)
    np.savez(folder / "holdout.npz", x=x[:2000])  # enough held-out samples to certify a 1-point budget
    return folder


def _rare(keras, clean, x: np.ndarray):
    """One more hidden unit: fires on 2 % of inputs, up to ~1,100, with zero outgoing weights."""
    features = keras.Model(clean.input, clean.get_layer("flatten").output)(x).numpy()
    direction = np.random.default_rng(0).normal(size=features.shape[1]).astype("float32")
    z = features @ direction
    threshold = np.quantile(z, 0.98)
    gain = 1100.0 / (z.max() - threshold)
    rare = _cnn(keras, hidden=65)
    for name in ("conv1", "conv2"):
        rare.get_layer(name).set_weights(clean.get_layer(name).get_weights())
    kernel, bias = clean.get_layer("hidden").get_weights()
    rare.get_layer("hidden").set_weights([np.concatenate([kernel, (direction * gain)[:, None]], 1),
                                          np.concatenate([bias, [-threshold * gain]])])
    head, head_bias = clean.get_layer("digits").get_weights()
    rare.get_layer("digits").set_weights([np.concatenate([head, np.zeros((1, 10), "float32")]), head_bias])
    return rare


def _hot(keras, clean, factor: float = 1000.0):
    """conv1's channel 0 scaled by ``factor``, conv2's weights on it by 1/factor (ReLU and max
    pooling commute with positive scaling, so the function is unchanged)."""
    hot = _cnn(keras)
    hot.set_weights(clean.get_weights())
    kernel, bias = hot.get_layer("conv1").get_weights()
    kernel[..., 0] *= factor
    bias[0] *= factor
    hot.get_layer("conv1").set_weights([kernel, bias])
    kernel, bias = hot.get_layer("conv2").get_weights()
    kernel[:, :, 0, :] /= factor
    hot.get_layer("conv2").set_weights([kernel, bias])
    return hot


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else "planted"))
