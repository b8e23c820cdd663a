"""Models built the stock Keras way, not designed for edgepipe, for claims that must hold beyond the
samples: a GPT-style causal LM with a softmax head, a depthwise-separable CNN and a model of Dense
layers. Fixed seeds; trained briefly on data that ships with CPython or the repository."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _text_ids(vocabulary: list[str]) -> np.ndarray:
    from pydoc_data.topics import topics  # CPython's own documentation text (PSF licence)

    index = {c: i for i, c in enumerate(vocabulary)}
    text = "\n\n".join(topics[key] for key in sorted(topics))
    return np.array([index.get(c, 0) for c in text], dtype=np.int32)


def stock_gpt(folder: Path, *, epochs: int = 3, holdout: int = 600) -> Path:
    """A GPT-style causal LM as a Keras tutorial writes it: 2 blocks, 4 heads, width 64, 32 tokens, the
    sample's 96-character vocabulary; Embedding plus learnt positions, MultiHeadAttention with a causal
    mask, LayerNormalization, a ReLU MLP and a softmax head. Writes gpt.keras, calib.npz (300 windows),
    holdout.npz (``holdout`` windows) and eval.npz (300 windows) into ``folder``; returns the model path."""
    from pipeline import api
    from pipeline.frontend.keras_compat import keras3

    keras = keras3()
    keras.utils.set_random_seed(11)
    layers, ops = keras.layers, keras.ops
    vocabulary = json.loads(api.sample_path("char_gpt.json").read_text(encoding="utf-8"))["vocabulary"]
    ids = _text_ids(vocabulary)
    context, size, width = 32, len(vocabulary), 64
    inputs = keras.Input((context,), dtype="int32")
    x = layers.Embedding(size, width, name="tokens")(inputs)
    x = x + layers.Embedding(context, width, name="places")(ops.arange(context)[None, :])
    for block in range(2):
        h = layers.LayerNormalization(name=f"ln{block}a")(x)
        x = x + layers.MultiHeadAttention(4, width // 4, name=f"attention{block}")(h, h, use_causal_mask=True)
        h = layers.LayerNormalization(name=f"ln{block}b")(x)
        x = x + layers.Dense(width, name=f"mlp{block}_out")(layers.Dense(4 * width, activation="relu",
                                                                         name=f"mlp{block}_in")(h))
    outputs = layers.Dense(size, activation="softmax", name="head")(layers.LayerNormalization(name="final")(x))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(11)
    train_end = int(len(ids) * 0.85)
    starts = rng.integers(0, train_end - context - 1, 12000)
    model.fit(np.stack([ids[s:s + context] for s in starts]), np.stack([ids[s + 1:s + context + 1] for s in starts]),
              batch_size=64, epochs=epochs, verbose=0)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "gpt.keras")
    for name, begin, count in (("calib", 0.85, 300), ("holdout", 0.90, holdout), ("eval", 0.95, 300)):
        starts = np.linspace(int(len(ids) * begin), int(len(ids) * (begin + 0.05)) - context - 2, count).astype(int)
        np.savez(folder / f"{name}.npz", x=np.stack([ids[s:s + context] for s in starts]),
                 y=np.stack([ids[s + 1:s + context + 1] for s in starts]))
    return folder / "gpt.keras"


def small_models(seed: int = 5) -> dict:
    """Untrained Keras models of four shapes an int16 island must handle (fixed seeds): a depthwise-
    separable CNN, a residual CNN, a model of Dense layers with a softmax, and a 1-D sequence model
    (Conv1D, GlobalAveragePooling). Returns {name: (model, inputs)} with 64 inputs each."""
    from pipeline.frontend.keras_compat import keras3

    keras = keras3()
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    rng = np.random.default_rng(seed)
    found = {}
    x = keras.Input((16, 16, 3))
    h = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu6")(x)
    h = layers.DepthwiseConv2D(3, padding="same", activation="relu6")(h)
    h = layers.Conv2D(16, 1, activation="relu6")(h)
    h = layers.AveragePooling2D(2)(h)
    found["depthwise"] = (keras.Model(x, layers.Dense(5, activation="softmax")(layers.Flatten()(h))),
                          rng.uniform(0, 1, (64, 16, 16, 3)).astype(np.float32))
    x = keras.Input((12, 12, 4))
    h = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    h = layers.Add()([h, layers.Conv2D(8, 3, padding="same")(h)])
    h = layers.MaxPooling2D(2)(layers.ReLU()(h))
    found["residual"] = (keras.Model(x, layers.Dense(6)(layers.GlobalAveragePooling2D()(h))),
                         rng.normal(0, 1, (64, 12, 12, 4)).astype(np.float32))
    x = keras.Input((40,))
    h = layers.Dense(64, activation="relu")(x)
    h = layers.Dense(32, activation="tanh")(h)
    found["dense"] = (keras.Model(x, layers.Dense(10, activation="softmax")(h)),
                      rng.normal(0, 1, (64, 40)).astype(np.float32))
    x = keras.Input((50, 6))
    h = layers.Conv1D(12, 5, activation="relu")(x)
    h = layers.Conv1D(12, 3, activation="sigmoid")(h)
    found["sequence"] = (keras.Model(x, layers.Dense(4)(layers.GlobalAveragePooling1D()(h))),
                         rng.normal(0, 1, (64, 50, 6)).astype(np.float32))
    return found
