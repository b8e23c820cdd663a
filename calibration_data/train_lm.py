"""Train the character-level GPT that ships as calibration_data/char_gpt.keras, and its data.

It is the sample for edgepipe's sequence-model path. The text is the Python Language Reference
topics that ship inside CPython itself (``pydoc_data.topics``, the text behind ``help('if')``), so
nothing is downloaded. The model is written the stock Keras 3 way, with no custom layers:
token and position ``Embedding``, two pre-LayerNorm blocks of ``MultiHeadAttention`` called
with ``use_causal_mask=True`` and a ReLU MLP (ReLU, not GELU: TFLite Micro has no GELU kernel),
and a ``Dense`` head giving logits over the characters. Exactly the graph that, converted as it
is, loses int8 (a -0.7 x float32.max attention mask, a NEG in LayerNorm): edgepipe's rewrites
are what make it quantize.

Writes, with fixed seeds:
  char_gpt.keras        the float model (input int32 [N, 64] ids, output logits [N, 64, V])
  char_gpt.json         the vocabulary, the split and what Keras measured (float perplexity)
  lm/calib.npz          x: ids [N, 64], y: the next character of each position [N, 64]
  lm/eval.npz           the same, from text the model never trained on

``python calibration_data/train_lm.py`` (a few minutes on two cores; ``make lm-sample``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 0
CONTEXT = 64
WIDTH = 64
HEADS = 4
BLOCKS = 2
STEPS = 3000
BATCH = 64
CALIB_SEQUENCES = 256
EVAL_SEQUENCES = 256
MIN_COUNT = 20  # rarer characters map to id 0 ("other")


def text_and_vocabulary() -> tuple[str, list[str]]:
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key] for key in sorted(topics))
    counts: dict[str, int] = {}
    for char in text:
        counts[char] = counts.get(char, 0) + 1
    kept = sorted(c for c, n in counts.items() if n >= MIN_COUNT)
    return text, ["<other>", *kept]


def encode(text: str, vocabulary: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(vocabulary)}
    return np.array([index.get(c, 0) for c in text], dtype=np.int32)


def windows(ids: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` non-overlapping windows, evenly spread, with their next-character labels."""
    starts = np.linspace(0, len(ids) - CONTEXT - 2, count).astype(np.int64)
    x = np.stack([ids[s:s + CONTEXT] for s in starts])
    y = np.stack([ids[s + 1:s + CONTEXT + 1] for s in starts])
    return x.astype(np.uint8), y.astype(np.uint8)


def build(vocabulary_size: int):
    import keras
    from keras import layers, ops

    ids = keras.Input((CONTEXT,), dtype="int32", name="ids")
    positions = ops.cumsum(ops.ones_like(ids), axis=1) - 1
    x = layers.Embedding(vocabulary_size, WIDTH, name="token_embedding")(ids)
    x = x + layers.Embedding(CONTEXT, WIDTH, name="position_embedding")(positions)
    for block in range(1, BLOCKS + 1):
        h = layers.LayerNormalization(epsilon=1e-5, name=f"block{block}_norm1")(x)
        h = layers.MultiHeadAttention(HEADS, WIDTH // HEADS, name=f"block{block}_attention")(h, h, use_causal_mask=True)
        x = x + h
        h = layers.LayerNormalization(epsilon=1e-5, name=f"block{block}_norm2")(x)
        h = layers.Dense(4 * WIDTH, activation="relu", name=f"block{block}_mlp_in")(h)
        x = x + layers.Dense(WIDTH, name=f"block{block}_mlp_out")(h)
    x = layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    logits = layers.Dense(vocabulary_size, name="logits")(x)
    return keras.Model(ids, logits, name="char_gpt")


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(SEED)
    text, vocabulary = text_and_vocabulary()
    ids = encode(text, vocabulary)
    # Train on the first 90% of the text; calibrate on the next 5%, evaluate on the last 5%.
    cut1, cut2 = int(len(ids) * 0.90), int(len(ids) * 0.95)
    train, calib, held = ids[:cut1], ids[cut1:cut2], ids[cut2:]
    model = build(len(vocabulary))
    model.compile(optimizer=keras.optimizers.AdamW(3e-3, weight_decay=0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(SEED)

    def batches():
        while True:
            starts = rng.integers(0, len(train) - CONTEXT - 1, BATCH)
            yield (np.stack([train[s:s + CONTEXT] for s in starts]),
                   np.stack([train[s + 1:s + CONTEXT + 1] for s in starts]))

    schedule = keras.optimizers.schedules.CosineDecay(3e-3, STEPS, alpha=0.05)
    model.optimizer.learning_rate = schedule
    model.fit(batches(), steps_per_epoch=STEPS // 10, epochs=10, verbose=2)
    cx, cy = windows(calib, CALIB_SEQUENCES)
    ex, ey = windows(held, EVAL_SEQUENCES)
    (HERE / "lm").mkdir(exist_ok=True)
    np.savez_compressed(HERE / "lm" / "calib.npz", x=cx, y=cy)
    np.savez_compressed(HERE / "lm" / "eval.npz", x=ex, y=ey)
    logits = model.predict(ex.astype(np.int32), verbose=0).astype(np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, ey[..., None].astype(np.int64), axis=-1).mean()
    accuracy = float((logits.argmax(-1) == ey).mean())
    shipped = build(len(vocabulary))  # uncompiled: no optimizer state in the file
    shipped.set_weights(model.get_weights())
    shipped.save(HERE / "char_gpt.keras")
    record = {
        "vocabulary": vocabulary, "context": CONTEXT, "params": int(model.count_params()),
        "float_perplexity_keras": round(float(np.exp(nll)), 4), "float_token_accuracy_keras": round(accuracy, 4),
        "text": f"pydoc_data.topics of CPython {sys.version.split()[0]}, {len(text)} characters, keys sorted, "
                "joined by blank lines", "split": "train 0-90%, calib 90-95%, eval 95-100% of the text",
        "steps": STEPS, "batch": BATCH, "seed": SEED, "keras": keras.__version__,
    }
    (HERE / "char_gpt.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in record.items() if k != "vocabulary"}, indent=2))


if __name__ == "__main__":
    main()
