"""Microcontroller answers on trained models of several shapes: the arena is verified at exactly
its figure (and one byte less fails), the fit verdict never depends on TFLM surviving, and the
ADD/FULLY_CONNECTED pre-flight checks match what TFLM does."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import tflite_edit  # noqa: E402
from click.testing import CliRunner

from edgecore.errors import TargetError
from edgecore.flatbuffer import read_ops
from edgecore.model_info import inspect_model, quantize
from pipeline import api
from pipeline.cli.commands import main
from pipeline.frontend.keras_compat import keras3, tensorflow
from targets import get_target
from targets.mcu import tflm
from targets.mcu.tflm_checks import preflight
from targets.profiles import shared
from targets.worker import call_isolated


def _mnist(count: int) -> tuple[np.ndarray, np.ndarray]:
    with np.load(api.sample_path("mnist", "train.npz")) as data:
        return data["x"][:count].astype("float32") / 255.0, data["y"][:count]


def _int8(model, x: np.ndarray, per_tensor: bool = False) -> bytes:
    tf = tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[i:i + 1]] for i in range(200))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    if per_tensor:  # per-tensor weights, as some other tools write them
        converter._experimental_disable_per_channel = True
    with contextlib.redirect_stdout(io.StringIO()):
        return bytes(converter.convert())


def _build(kind: str):
    keras = keras3()
    keras.utils.set_random_seed(3)
    layers = keras.layers
    image = keras.Input((28, 28, 1))
    if kind == "conv":
        h = layers.Conv2D(8, 3, activation="relu")(image)
        h = layers.Conv2D(16, 3, strides=2, activation="relu")(h)
        out = layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling2D()(h))
        return keras.Model(image, out)
    if kind == "depthwise":
        h = layers.Conv2D(8, 3, strides=2, activation="relu")(image)
        h = layers.DepthwiseConv2D(3, padding="same", activation="relu")(h)
        h = layers.Conv2D(16, 1, activation="relu")(h)
        out = layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling2D()(h))
        return keras.Model(image, out)
    if kind == "residual":
        h = layers.Conv2D(8, 3, padding="same", activation="relu")(image)
        skip = h
        h = layers.Conv2D(8, 3, padding="same", activation="relu")(h)
        h = layers.Conv2D(8, 3, padding="same")(h)
        h = layers.ReLU()(layers.Add()([h, skip]))
        h = layers.MaxPooling2D(2)(h)
        out = layers.Dense(10, activation="softmax")(layers.Flatten()(h))
        return keras.Model(image, out)
    if kind == "sequence":  # 28 time steps of 28 features, 1-D convolutions over time
        steps = keras.Input((28, 28))
        h = layers.Conv1D(16, 3, activation="relu")(steps)
        h = layers.Conv1D(16, 3, strides=2, activation="relu")(h)
        out = layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling1D()(h))
        return keras.Model(steps, out)
    vector = keras.Input((640,))  # the FC-heavy autoencoder of the issue: 640 -> 128 x4 -> 8 -> 128 x4 -> 640
    h = vector
    for units in [128] * 4 + [8] + [128] * 4:
        h = layers.ReLU()(layers.BatchNormalization()(layers.Dense(units)(h)))
    return keras.Model(vector, layers.Dense(640)(h))


@pytest.fixture(scope="session")
def shaped_models(tmp_path_factory) -> dict[str, tuple[Path, np.ndarray]]:
    """Briefly trained int8 models of several shapes, with 80 eval samples each."""
    x, y = _mnist(2000)
    folder = tmp_path_factory.mktemp("shapes")
    made = {}
    for kind in ("conv", "depthwise", "residual", "sequence", "fc"):
        model = _build(kind)
        if kind == "fc":
            data, target, loss = x.reshape(len(x), -1)[:, :640], x.reshape(len(x), -1)[:, :640], "mse"
        else:
            data = x[..., 0] if kind == "sequence" else x
            target, loss = y, "sparse_categorical_crossentropy"
        model.compile("adam", loss)
        model.fit(data, target, epochs=1, batch_size=64, verbose=0)
        variants = {"fc_per_channel": False, "fc_per_tensor": True} if kind == "fc" else {kind: False}
        for name, per_tensor in variants.items():
            path = folder / f"{name}.tflite"
            path.write_bytes(_int8(model, data, per_tensor))
            made[name] = (path, data[-80:])
    return made


def _arena_checks(blob: bytes, sample: np.ndarray, arena: int) -> tuple[bool, bool, bool]:
    info = inspect_model(blob)
    works = [tflm.survives(lambda size=size: tflm.arena_works(blob, info, size, sample))
             for size in (arena, arena - 1, arena - 16)]
    return tuple(works)


@pytest.mark.quick
@pytest.mark.parametrize("name", ["conv", "depthwise", "residual", "sequence", "fc_per_channel", "fc_per_tensor"])
def test_the_arena_is_the_smallest_that_allocates_and_invokes(shaped_models, name, tmp_path):
    path, x = shaped_models[name]
    blob = path.read_bytes()
    np.savez(tmp_path / "eval.npz", x=x)
    mcu = api.run_on_target(path, "cortex-m4", tmp_path / "eval.npz")["targets"]["cortex-m4"]
    arena = mcu["arena_bytes"]
    sample = quantize(x[:1], inspect_model(blob).inputs[0])
    works_at, works_one_below, works_aligned_below = call_isolated(_arena_checks, blob, sample, arena, what="check")
    assert works_at and not works_one_below and not works_aligned_below, (name, arena, mcu["arena_recorded_bytes"])
    assert mcu["ram_lower_bound_bytes"] <= mcu["ram_bytes"] and mcu["fits"] is True
    assert mcu["samples"] == 80
    bundle = get_target("cortex-m4").deploy(blob, tool_version="test")
    assert bundle.manifest["arena_measured_bytes"] == arena <= bundle.manifest["tensor_arena_bytes"]


def test_the_recorded_figure_is_too_small_for_fc_heavy_models(shaped_models):
    # The bug this guards: RecordingMicroAllocator's total misses temporary allocations of prepare.
    for name in ("fc_per_channel", "fc_per_tensor"):
        path, x = shaped_models[name]
        info = inspect_model(path.read_bytes())
        arena, _ = tflm.run_isolated(path.read_bytes(), info, x[:8])
        assert arena.total > arena.recorded, (name, arena.total, arena.recorded)


def test_a_too_small_add_output_scale_is_predicted_and_tflm_aborts(shaped_models):
    path, x = shaped_models["residual"]
    blob = tflite_edit.set_scale(path.read_bytes(), "ADD", "outputs", 0, 1e-9)
    problems, _ = preflight(read_ops(blob))
    assert len(problems) == 1 and "(ADD) adds inputs of range" in problems[0]
    info = inspect_model(blob)
    with pytest.raises(TargetError, match="SIGABRT"):
        call_isolated(tflm.evaluate, blob, info, x[:1], tflm.PROBE_ARENA_BYTES, what="TFLM")


def test_a_per_tensor_fc_bias_scale_tflm_refuses_is_named(shaped_models):
    path, x = shaped_models["fc_per_tensor"]
    original = path.read_bytes()
    assert preflight(read_ops(original)) == ([], [])
    bias = tflite_edit.scale_of(original, "FULLY_CONNECTED", "inputs", 2)
    output = tflite_edit.scale_of(original, "FULLY_CONNECTED", "outputs", 0)
    # TFLM's rule: |s_in s_w - s_bias| <= 0.02 s_out; 0.05 s_out off is refused.
    blob = tflite_edit.set_scale(original, "FULLY_CONNECTED", "inputs", 2, bias + 0.05 * output)
    problems, _ = preflight(read_ops(blob))
    assert problems and "(FULLY_CONNECTED): its bias scale" in problems[0]
    with pytest.raises(TargetError, match="TFLM could not set up the model"):
        call_isolated(tflm.evaluate, blob, inspect_model(blob), x[:1], tflm.PROBE_ARENA_BYTES, what="TFLM")


@pytest.fixture(scope="module")
def too_big(tmp_path_factory) -> Path:
    """An int8 model of 2.4 MB (more than an RP2040's 2 MiB flash)."""
    keras = keras3()
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((1600,)), keras.layers.Dense(1500, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    x = np.random.default_rng(0).uniform(size=(200, 1600)).astype(np.float32)
    path = tmp_path_factory.mktemp("big") / "big.tflite"
    path.write_bytes(_int8(model, x))
    return path


@pytest.mark.quick
def test_a_model_too_big_for_the_board_gets_a_verdict_with_the_reason(too_big):
    mcu = api.run_on_target(too_big, "rp2040")["targets"]["rp2040"]
    assert mcu["fits"] is False
    assert mcu["fit_reasons"][0].startswith("flash: the model and TFLM code need 2.3")
    assert "the board has 2.00 MiB (over by" in mcu["fit_reasons"][0]
    assert get_target("cortex-m7").run(too_big.read_bytes(), None, None, api.RunOptions()).details["fits"] is False


def test_the_verdict_stands_when_tflm_cannot_run(too_big, monkeypatch):
    def crash(*args, **kwargs):
        raise TargetError("TensorFlow Lite Micro crashed while loading or running this model: killed by SIGSEGV.")

    monkeypatch.setattr(tflm, "run_isolated", crash)
    result = get_target("rp2040").run(too_big.read_bytes(), None, None, api.RunOptions())
    assert result.details["fits"] is False and result.details["fit_reasons"][0].startswith("flash:")
    assert "SIGSEGV" in result.details["tflm_error"] and "arena_bytes" not in result.details
    assert result.details["estimated_latency_ms"] > 0


def test_a_pre_flight_problem_does_not_pre_empt_the_fit_verdict(too_big, tmp_path):
    # The issue: a model too big for the rp2040 got the degenerate-SOFTMAX refusal instead of the verdict.
    planted = tmp_path / "big_flat_softmax.tflite"
    planted.write_bytes(tflite_edit.set_scale(too_big.read_bytes(), "SOFTMAX", "inputs", 0, 1e-9))
    eval_npz = tmp_path / "eval.npz"
    np.savez(eval_npz, x=np.random.default_rng(1).uniform(size=(8, 1600)).astype(np.float32))
    outcome = CliRunner().invoke(main, ["run", str(planted), "--target", "rp2040", "--eval", str(eval_npz), "--json"])
    assert outcome.exit_code == 0, outcome.stderr
    mcu = json.loads(outcome.stdout)["targets"]["rp2040"]
    assert mcu["fits"] is False and mcu["fit_reasons"][0].startswith("flash: the model and TFLM code need 2.3")
    assert mcu["flash_bytes"] > mcu["board_flash_bytes"] and "(SOFTMAX)" in mcu["tflm_error"]
    assert "arena_bytes" not in mcu and mcu["estimated_latency_ms"] > 0
    # A board that holds the model still refuses it, with the pre-flight sentence; deploy too.
    roomy = CliRunner().invoke(main, ["run", str(planted), "--target", "cortex-m55"])
    assert roomy.exit_code == 1 and "(SOFTMAX): its input spans only" in roomy.stderr.strip().splitlines()[-1]
    deploy = CliRunner().invoke(main, ["deploy", str(planted), "--target", "rp2040", "--out", str(tmp_path / "d")])
    assert deploy.exit_code == 1 and "(SOFTMAX)" in deploy.stderr and not (tmp_path / "d").exists()


def test_convert_to_a_board_too_small_gives_the_verdict_despite_a_flat_softmax(tmp_path):
    """An untrained Dense-heavy model calibrated on zeros: its SOFTMAX input spans nothing, as in the issue."""
    keras = keras3()
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((1600,)), keras.layers.Dense(1500, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.save(tmp_path / "big.keras")
    np.savez(tmp_path / "zeros.npz", x=np.zeros((20, 1600), np.float32))
    out = tmp_path / "out"
    outcome = CliRunner().invoke(main, ["convert", str(tmp_path / "big.keras"), "--calib", str(tmp_path / "zeros.npz"),
                                        "--target", "rp2040", "--runs", "2", "--out", str(out), "--json"])
    assert outcome.exit_code == 0, outcome.stderr
    mcu = json.loads(outcome.stdout)["targets"]["rp2040"]
    assert mcu["fits"] is False and mcu["fit_reasons"][0].startswith("flash:") and "(SOFTMAX)" in mcu["tflm_error"]
    assert (out / "report.json").exists()


def test_the_latency_estimate_carries_its_leave_one_out_error(demo_run):
    _, report = demo_run
    mcu = report["targets"]["cortex-m4"]
    uncertainty = mcu["latency_uncertainty"]
    # The demo CNN is mostly k x k convolution: its band is ResNet-8's held-out error (5 systems).
    assert uncertainty["dominant_class"] == "conv" and uncertainty["dominant_share"] > 0.5
    assert uncertainty["validated"] and not uncertainty["scaled"]
    band = shared("cycles_fitted")["band"]["conv"]
    assert uncertainty["loo_max_abs_error_pct"] == band["max_abs_error_pct"] <= 25
    assert len(uncertainty["loo_error_pct"]) == 5 and all(k.endswith("/resnet8") for k in uncertainty["loo_error_pct"])
    assert max(mcu["estimated_cycles_by_class"], key=mcu["estimated_cycles_by_class"].get) == "conv"
