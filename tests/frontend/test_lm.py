"""Transformer language models: token ids in, perplexity out, the lint that names what breaks
integer quantization, and the rewrites that fix it, checked on the shipped sample GPT and on a
second causal LM built here (other width, heads, context, a padding mask, a GELU MLP).

Figures asserted are what was measured on this machine, with a margin: the sample's float
perplexity is 3.2727, int8 3.3216 (+1.5%), int16x8 and float16 3.2727.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgecore.metrics import perplexity
from pipeline import api
from pipeline.cli.commands import main
from pipeline.core.data import load_dataset
from pipeline.errors import DataError
from pipeline.frontend.keras_compat import keras3
from pipeline.vocab import Preprocess

SAMPLE = json.loads(api.sample_path("char_gpt.json").read_text(encoding="utf-8"))


def _cli(*args: str):
    return CliRunner().invoke(main, [*map(str, args)])


@pytest.fixture(scope="session")
def lm_demo(tmp_path_factory):
    """``edgepipe demo --lm``: the sample GPT as int8, int16x8, float16 and float32 on the host."""
    out = tmp_path_factory.mktemp("lm") / "demo-lm-out"
    outcome = _cli("demo", "--lm", "--out", out, "--json")
    assert outcome.exit_code == 0, outcome.output
    return json.loads((out / "report.json").read_text())


def test_sample_lm_figures_side_by_side(lm_demo):
    rows = {row["name"]: row for row in lm_demo["candidates"]}
    assert set(rows) == {"int8", "int16x8", "float16", "float32"}
    float_ppl = lm_demo["float"]["perplexity"]
    # edgepipe's float figure is the one the training script measured in Keras.
    assert float_ppl == pytest.approx(SAMPLE["float_perplexity_keras"], abs=1e-3)
    assert rows["int8"]["float_ops"] == []  # full int8
    assert rows["int8"]["perplexity"] < float_ppl * 1.02  # measured +1.5%
    assert rows["int16x8"]["perplexity"] < float_ppl * 1.005
    assert rows["float16"]["perplexity"] < float_ppl * 1.001
    assert rows["int8"]["artifact"]["bytes"] < 0.4 * rows["float32"]["artifact"]["bytes"]
    assert all("latency_ms" in row["targets"]["host"] for row in rows.values())
    assert rows["int8"]["task"] == "sequence" and 0.6 < rows["int8"]["accuracy"] <= 1  # per token
    assert lm_demo["quantized"]["perplexity"] == rows[lm_demo["chosen"]]["perplexity"]


def test_sample_lm_rewrites_are_listed_and_verified(lm_demo):
    rewrite = lm_demo["rewrite"]
    kinds = [item["rewrite"] for item in rewrite["applied"]]
    assert kinds.count("attention-mask") == 2 and kinds.count("layer-norm") == 5 and kinds.count("embedding") == 2
    assert rewrite["max_relative_difference"] < 1e-4
    before = {(f["rule"], f["layer"]) for f in rewrite["lint_before"]}
    assert ("huge-mask", "block1_attention") in before and ("neg", "final_norm") in before
    assert ("select", "token_embedding") in before and ("int-input-16x8", "token_embedding") in before
    # What is left only matters elsewhere: TFLM has no int16 GATHER (int8 runs there, see below).
    assert [(f["rule"], f["layer"], f["breaks"]) for f in lm_demo["lint"]] == [
        ("gather-int16", "token_embedding", ["int16x8@tflm"])]


def test_without_rewrite_int8_is_refused_naming_the_layer(tmp_path):
    outcome = _cli("convert", api.sample_path("char_gpt.keras"), "--calib", api.sample_path("lm", "calib.npz"),
                   "--out", tmp_path / "out", "--no-rewrite")
    assert outcome.exit_code != 0
    assert "NEG" in outcome.output and "block1_norm1" in outcome.output and "--no-rewrite" in outcome.output
    assert not (tmp_path / "out" / "report.json").exists()


def test_lint_names_the_mask_without_rewrite(tmp_path):
    outcome = _cli("convert", api.sample_path("char_gpt.keras"), "--calib", api.sample_path("lm", "calib.npz"),
                   "--eval", api.sample_path("lm", "eval.npz"), "--recipe", "float16", "--no-rewrite",
                   "--out", tmp_path / "out", "--json")
    assert outcome.exit_code == 0, outcome.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    masks = [f for f in report["lint"] if f["rule"] == "huge-mask"]
    assert {f["layer"] for f in masks} == {"block1_attention", "block2_attention"}
    assert all("int8" in f["breaks"] and f["rewrite"] == "attention-mask" for f in masks)
    assert "rewrite" not in report


def test_sample_lm_runs_in_tflm(tmp_path):
    """With the rewrites (no SELECT) and a ReLU MLP, the int8 GPT runs in TFLite Micro."""
    outcome = _cli("convert", api.sample_path("char_gpt.keras"), "--calib", api.sample_path("lm", "calib.npz"),
                   "--eval", api.sample_path("lm", "eval.npz"), "--target", "cortex-m4", "--out", tmp_path / "out",
                   "--json")
    assert outcome.exit_code == 0, outcome.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    mcu = report["targets"]["cortex-m4"]
    assert mcu["fits"] and mcu["arena_bytes"] > 0
    assert mcu["perplexity"] < report["float"]["perplexity"] * 1.02  # measured 3.3209
    assert mcu["reference"]["top1_agreement"] > 0.9


@pytest.fixture(scope="session")
def other_lm(tmp_path_factory):
    """A causal LM unlike the sample: context 32, width 48, 3 heads, one block, Embedding with
    mask_zero (a padding mask combined with the causal one), a GELU MLP, a float input (Keras'
    default), the stock Keras way, briefly trained on the same CPython text."""
    from pydoc_data.topics import topics

    keras = keras3()
    keras.utils.set_random_seed(7)
    layers, ops = keras.layers, keras.ops
    vocabulary = SAMPLE["vocabulary"]
    index = {c: i for i, c in enumerate(vocabulary)}
    text = "\n\n".join(topics[key] for key in sorted(topics))
    ids = np.array([index.get(c, 0) for c in text], dtype=np.int32) + 1  # 0 is padding here
    context, size = 32, len(vocabulary) + 1
    inputs = keras.Input((context,))  # float32, the Keras default: edgepipe rebuilds it on int32 ids
    x = layers.Embedding(size, 48, mask_zero=True, name="tokens")(inputs)
    x = x + layers.Embedding(context, 48, name="places")(ops.cumsum(ops.ones_like(inputs), axis=1) - 1)
    h = layers.LayerNormalization(name="pre_attention")(x)
    x = x + layers.MultiHeadAttention(3, 16, name="attention")(h, h, use_causal_mask=True)
    h = layers.LayerNormalization(name="pre_mlp")(x)
    x = x + layers.Dense(48, name="mlp_out")(layers.Dense(128, activation="gelu", name="mlp_in")(h))
    model = keras.Model(inputs, layers.Dense(size, name="head")(layers.LayerNormalization(name="last")(x)))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(7)
    starts = rng.integers(0, int(len(ids) * 0.9) - context - 1, 6000)
    model.fit(np.stack([ids[s:s + context] for s in starts]), np.stack([ids[s + 1:s + context + 1] for s in starts]),
              batch_size=64, epochs=2, verbose=0)
    folder = tmp_path_factory.mktemp("other_lm")
    model.save(folder / "lm.keras")
    for name, begin, count in (("calib", 0.90, 200), ("eval", 0.95, 200)):
        starts = np.linspace(int(len(ids) * begin), int(len(ids) * (begin + 0.05)) - context - 2, count).astype(int)
        np.savez(folder / f"{name}.npz", x=np.stack([ids[s:s + context] for s in starts]),
                 y=np.stack([ids[s + 1:s + context + 1] for s in starts]))
    return folder


def test_other_lm_converts_to_full_int8_near_float(other_lm, tmp_path):
    outcome = _cli("convert", other_lm / "lm.keras", "--calib", other_lm / "calib.npz", "--eval",
                   other_lm / "eval.npz", "--out", tmp_path / "out", "--json")
    assert outcome.exit_code == 0, outcome.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["artifact"]["float_ops"] == []
    assert report["quantized"]["perplexity"] < report["float"]["perplexity"] * 1.02
    assert report["rewrite"]["max_relative_difference"] < 1e-4
    # Only what matters to an int8 host run is rewritten (the Embedding's SELECT only bothers TFLM).
    assert {item["layer"] for item in report["rewrite"]["applied"]} == {"pre_attention", "attention", "pre_mlp", "last"}
    # What is left matters elsewhere only, each named with its layer: GELU and SELECT for microcontrollers.
    left = {(f["rule"], f["layer"]) for f in report["lint"]}
    assert ("gelu", "mlp_in") in left and ("select", "tokens") in left
    assert not any("int8" in f["breaks"] for f in report["lint"])
    assert report["targets"]["host"]["delegate"] == "XNNPACK"
    assert report["model"]["input_dtype"] == "int32" and report["preprocess"]["dtype"] == "int32"


def test_token_data_is_checked(tmp_path):
    spec = Preprocess(shape=(4,), dtype="int32")
    np.savez(tmp_path / "neg.npz", x=np.array([[1, 2, -1, 3]]))
    with pytest.raises(DataError, match="negative id -1"):
        load_dataset(tmp_path / "neg.npz", spec, role="--eval")
    np.savez(tmp_path / "frac.npz", x=np.array([[1.0, 2.5, 3.0, 4.0]]))
    with pytest.raises(DataError, match="non-integer values"):
        load_dataset(tmp_path / "frac.npz", spec, role="--eval")
    np.savez(tmp_path / "ok.npz", x=np.array([[1.0, 2.0, 3.0, 200.0]]), y=np.array([[2, 3, 4, 5]]))
    found = load_dataset(tmp_path / "ok.npz", spec, role="--eval")
    assert found.x.dtype == np.int32 and found.x.tolist() == [[1, 2, 3, 200]]  # never scaled
    assert found.y.shape == (1, 4) and not found.warnings


@pytest.mark.quick
def test_sequence_labels_must_match_the_output(tmp_path):
    np.savez(tmp_path / "flat.npz", x=np.zeros((8, 64), dtype=np.int32), y=np.zeros(8, dtype=np.int32))
    outcome = _cli("convert", api.sample_path("char_gpt.keras"), "--calib", api.sample_path("lm", "calib.npz"),
                   "--eval", tmp_path / "flat.npz", "--out", tmp_path / "out")
    assert outcome.exit_code != 0 and "one label per position" in outcome.output


@pytest.mark.quick
def test_perplexity_of_logits_and_probabilities():
    labels = np.array([[0, 1, 2]])
    uniform = np.zeros((1, 3, 4))
    assert perplexity(uniform, labels) == pytest.approx(4.0)
    probabilities = np.full((1, 3, 4), 0.25)
    assert perplexity(probabilities, labels) == pytest.approx(4.0)
    sure = np.eye(4)[labels] * 50.0  # logits all on the label
    assert perplexity(sure, labels) == pytest.approx(1.0, abs=1e-6)
    assert perplexity(uniform, None) is None and perplexity(np.zeros((3, 4)), np.zeros(3)) is None


def _float_tflite(model) -> bytes:
    from pipeline.frontend.loading import wrap_keras
    from pipeline.quantize.convert import convert_model
    from pipeline.vocab import ModelFormat, Recipe

    return convert_model(wrap_keras(model, api.sample_path("char_gpt.keras"), ModelFormat.KERAS, sha256="-"),
                         Recipe.FLOAT32)


def test_lint_finds_squared_difference_and_float_ids_and_nothing_in_a_cnn():
    from pipeline.frontend.lint import lint

    keras = keras3()
    layers, ops = keras.layers, keras.ops
    ids = keras.Input((8,), name="ids")  # float, through another layer first: not rebuilt on an int32 input
    x = layers.Embedding(20, 16, name="table")(layers.Identity()(ids))
    centred = x - ops.mean(x, axis=-1, keepdims=True)
    x = centred / ops.sqrt(ops.mean(ops.square(centred), axis=-1, keepdims=True) + 1e-5)
    found = lint(_float_tflite(keras.Model(ids, layers.Dense(4, name="out")(x))), ["table", "out"])
    rules = {f.rule: f for f in found}
    assert "float-ids" in rules and "int8" in rules["float-ids"].breaks and "dtype='int32'" in rules["float-ids"].message
    assert "squared-difference" in rules and rules["squared-difference"].breaks == ("int16x8",)
    cnn = keras.saving.load_model(api.sample_path("reference_cnn.keras"))
    assert lint(_float_tflite(cnn), [layer.name for layer in cnn.layers]) == []


def test_a_rewrite_that_changes_the_outputs_is_refused(tmp_path, monkeypatch):
    from pipeline.frontend import rewrite

    monkeypatch.setenv("EDGEPIPE_IN_PROCESS", "1")
    monkeypatch.setattr(rewrite, "MASK_BOUND", -1.0)  # too weak a mask: attention leaks into the future
    outcome = _cli("convert", api.sample_path("char_gpt.keras"), "--calib", api.sample_path("lm", "calib.npz"),
                   "--out", tmp_path / "out")
    assert outcome.exit_code != 0
    assert "changes the float outputs" in outcome.output and "--no-rewrite" in outcome.output
    assert not (tmp_path / "out").exists()


def test_a_float_input_that_only_feeds_embeddings_takes_int32_ids():
    from pipeline.frontend.loading import wrap_keras
    from pipeline.vocab import ModelFormat

    keras = keras3()
    keras.utils.set_random_seed(3)
    layers, ops = keras.layers, keras.ops
    ids = keras.Input((8,))  # float32, the Keras default
    x = layers.Embedding(20, 16)(ids) + layers.Embedding(8, 16)(ops.cumsum(ops.ones_like(ids), axis=1) - 1)
    model = keras.Model(ids, layers.Dense(20)(layers.MultiHeadAttention(2, 8)(x, x, use_causal_mask=True)))
    loaded = wrap_keras(model, api.sample_path("char_gpt.keras"), ModelFormat.KERAS, sha256="-")
    assert loaded.input_dtype == "int32"
    sample = np.arange(16).reshape(2, 8) % 20
    assert np.array_equal(loaded.predict(sample.astype(np.int32)), np.asarray(model(sample.astype(np.float32))))


def _tiny_lm(keras, *, softmax: bool = False, sequential: bool = False):
    layers = keras.layers
    if sequential:
        return keras.Sequential([keras.Input((8,)), layers.Embedding(12, 8), layers.Dense(12)])
    ids = keras.Input((8,), dtype="int32")
    x = layers.Embedding(12, 16, name="table")(ids)
    x = x + layers.MultiHeadAttention(2, 8, name="attention")(x, x, use_causal_mask=True)
    out = layers.Dense(12, activation="softmax" if softmax else None, name="head")(layers.LayerNormalization()(x))
    return keras.Model(ids, out)


def test_a_softmax_head_gives_the_same_perplexity_everywhere(tmp_path, monkeypatch):
    """An int8 softmax's probabilities do not sum to exactly 1: targets read the head from the graph."""
    monkeypatch.setenv("EDGEPIPE_IN_PROCESS", "1")
    keras = keras3()
    keras.utils.set_random_seed(5)
    _tiny_lm(keras, softmax=True).save(tmp_path / "lm.keras")
    rng = np.random.default_rng(5)
    np.savez(tmp_path / "data.npz", x=rng.integers(0, 12, (120, 8)), y=rng.integers(0, 12, (120, 8)))
    outcome = _cli("convert", tmp_path / "lm.keras", "--calib", tmp_path / "data.npz", "--eval", tmp_path / "data.npz",
                   "--out", tmp_path / "out", "--runs", "2")
    assert outcome.exit_code == 0, outcome.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["targets"]["host"]["perplexity"] == pytest.approx(report["quantized"]["perplexity"])
    assert report["quantized"]["perplexity"] < report["float"]["perplexity"] * 1.05


def test_bad_ids_and_labels_are_refused_with_the_place(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 96, (8, 64)), rng.integers(0, 96, (8, 64))
    y[3, 7] = 100
    np.savez(tmp_path / "labels.npz", x=x, y=y)
    outcome = _cli("convert", api.sample_path("char_gpt.keras"), "--calib", tmp_path / "labels.npz",
                   "--out", tmp_path / "out")
    assert outcome.exit_code != 0 and "label 100 of sample 3 at position 7" in outcome.output
    x[5, 2], y[3, 7] = 200, 1
    np.savez(tmp_path / "ids.npz", x=x, y=y)
    outcome = _cli("convert", api.sample_path("char_gpt.keras"), "--calib", tmp_path / "ids.npz",
                   "--out", tmp_path / "out")
    assert outcome.exit_code != 0 and "sample 5 holds the id 200" in outcome.output and "96 rows" in outcome.output
    outcome = _cli("convert", api.sample_path("char_gpt.keras"), "--calib", api.sample_path("lm", "calib.npz"),
                   "--scale", "0.5", "--out", tmp_path / "out")
    assert outcome.exit_code == 2 and "drop --scale" in outcome.output


def test_rms_scaled_layer_norm_and_sequential_id_models():
    from pipeline.frontend import rewrite
    from pipeline.frontend.loading import wrap_keras
    from pipeline.vocab import ModelFormat

    keras = keras3()
    keras.utils.set_random_seed(9)
    inputs = keras.Input((6, 16))
    model = keras.Model(inputs, keras.layers.LayerNormalization(rms_scaling=True)(inputs * 3.0 + 1.0))
    sample = np.random.default_rng(9).normal(size=(4, 6, 16)).astype(np.float32)
    before = np.asarray(model(sample))
    assert rewrite.swap_layers(model)[0]["rewrite"] == "layer-norm"
    assert rewrite.output_difference(before, np.asarray(model(sample)))["max_relative_difference"] < 1e-5
    sequential = _tiny_lm(keras, sequential=True)
    loaded = wrap_keras(sequential, api.sample_path("char_gpt.keras"), ModelFormat.KERAS, sha256="-")
    assert loaded.input_dtype == "int32" and loaded.id_limit == 12


def test_label_shapes_follow_the_model_output(tmp_path):
    from pipeline.core.data import check_labels

    np.savez(tmp_path / "d.npz", x=np.zeros((4, 6), dtype=np.int32), y=np.array([1, 2, 3, 4]))
    data = load_dataset(tmp_path / "d.npz", Preprocess(shape=(6,), dtype="int32"), role="--eval")
    assert check_labels(data, (None, 1, 10), "--eval").y.shape == (4, 1)  # an [N, 1, C] classifier
    np.savez(tmp_path / "s.npz", x=np.zeros((4, 6), dtype=np.int32), y=np.ones((4, 6), dtype=np.int32))
    data = load_dataset(tmp_path / "s.npz", Preprocess(shape=(6,), dtype="int32"), role="--eval")
    assert check_labels(data, (None, None, 10), "--eval") is data  # open length: any T
    with pytest.raises(DataError, match="one label per position"):
        check_labels(data, (None, 5, 10), "--eval")


def test_run_checks_ids_against_the_artifact(tmp_path):
    """The int8 artifact of a host run keeps Keras' id wrap (LESS/ADD/SELECT before the GATHER):
    the table's rows are still found, and a bad id is a sentence, not a LiteRT traceback."""
    outcome = _cli("convert", api.sample_path("char_gpt.keras"), "--calib", api.sample_path("lm", "calib.npz"),
                   "--out", tmp_path / "out", "--runs", "2")
    assert outcome.exit_code == 0, outcome.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "SELECT" in report["artifact"]["ops"]  # the Embedding was not rewritten: nothing here needed it
    x = np.load(api.sample_path("lm", "eval.npz"))["x"][:4].astype(np.int64)
    x[2, 9] = 120
    np.savez(tmp_path / "bad.npz", x=x)
    outcome = _cli("run", tmp_path / "out" / "model_int8.tflite", "--target", "host", "--eval", tmp_path / "bad.npz")
    assert outcome.exit_code != 0 and "sample 2 holds the id 120" in outcome.output and "96 rows" in outcome.output
