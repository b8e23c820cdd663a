"""Shared fixtures: tiny models built in code with fixed seeds, small real data, one demo run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Worker processes (targets.worker) unpickle functions by module: let them import the test modules
# (pytest imports each by its bare name from its room's folder) and the helpers beside this file.
# The project comes first, so that no folder of tests/ can shadow a package of the project.
_HERE = Path(__file__).resolve().parent
_ROOMS = sorted(str(d) for d in _HERE.iterdir() if d.is_dir() and any(d.glob("test_*.py")))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(_HERE.parent), str(_HERE), *_ROOMS,
                                                        os.environ.get("PYTHONPATH")) if p)

from pipeline import api  # noqa: E402
from pipeline.frontend.keras_compat import keras3, legacy_keras  # noqa: E402

SEED = 1234


@pytest.fixture(scope="session")
def mnist_eval() -> dict[str, np.ndarray]:
    with np.load(api.sample_path("mnist", "eval.npz")) as data:
        return {"x": data["x"], "y": data["y"]}


@pytest.fixture(scope="session")
def small_npz(tmp_path_factory, mnist_eval) -> Path:
    """200 real MNIST digits (uint8, labelled) from the shipped sample."""
    path = tmp_path_factory.mktemp("data") / "small.npz"
    np.savez(path, x=mnist_eval["x"][:200], y=mnist_eval["y"][:200])
    return path


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory, mnist_eval) -> Path:
    """The same kind of digits as PNG files in one sub-folder per class, at 32x32 to force resizing."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images") / "digits"
    for index in range(60):
        label = int(mnist_eval["y"][index])
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(mnist_eval["x"][index, :, :, 0]).resize((32, 32))
        image.save(folder / f"{index:04d}.png")
    return root


def _seeded():
    keras = keras3()
    keras.utils.set_random_seed(SEED)
    return keras


@pytest.fixture(scope="session")
def tiny_keras(tmp_path_factory) -> Path:
    """A small Keras 3 CNN for 28x28x1 inputs, briefly trained so that its top-1 means something."""
    keras = _seeded()
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(8, 3, strides=2, activation="relu"),
        layers.DepthwiseConv2D(3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ])
    with np.load(api.sample_path("mnist", "train.npz")) as data:
        x, y = data["x"][:1500].astype("float32") / 255.0, data["y"][:1500]
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def legacy_h5(tmp_path_factory) -> Path:
    """An .h5 saved by tf_keras with a DepthwiseConv2D layer, which Keras 3 cannot deserialize."""
    tf_keras = legacy_keras()
    tf_keras.utils.set_random_seed(SEED)
    layers = tf_keras.layers
    model = tf_keras.Sequential([
        tf_keras.Input((28, 28, 1)),
        layers.Conv2D(8, 3, activation="relu"),
        layers.DepthwiseConv2D(3, activation="relu"),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ])
    path = tmp_path_factory.mktemp("models") / "legacy_dw.h5"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def saved_model_dir(tmp_path_factory) -> Path:
    keras = _seeded()
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    path = tmp_path_factory.mktemp("models") / "saved_model"
    model.export(str(path), verbose=False)
    return path


@pytest.fixture(scope="session")
def regression_keras(tmp_path_factory) -> tuple[Path, Path]:
    """A non-classifier (16 features -> 3 values) and matching .npz data without labels."""
    keras = _seeded()
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(3)])
    folder = tmp_path_factory.mktemp("regression")
    model.save(folder / "regressor.keras")
    x = np.random.default_rng(SEED).normal(size=(128, 16)).astype(np.float32)
    np.savez(folder / "features.npz", x=x)
    return folder / "regressor.keras", folder / "features.npz"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """One full demo run, shared by every test that inspects its report and artifacts."""
    out = tmp_path_factory.mktemp("demo")
    result = api.demo(out, options=api.RunOptions(runs=20))
    return result, json.loads((out / "report.json").read_text())


@pytest.fixture(scope="session")
def planted_folder(tmp_path_factory) -> Path:
    """calibration_data/planted.py's models and data sets, built once per session."""
    from calibration_data.planted import build

    return build(tmp_path_factory.mktemp("planted"))
