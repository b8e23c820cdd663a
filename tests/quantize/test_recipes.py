"""Every recipe converts and runs on the host; int8 is integer-only; conversion is deterministic."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgecore.model_info import inspect_model
from pipeline import api
from pipeline.core.config import ConvertConfig
from pipeline.core.data import load_dataset
from pipeline.frontend.loading import load_model
from pipeline.quantize.convert import convert_model
from pipeline.vocab import Preprocess, Recipe

EXPECTED_INPUT = {"int8": "int8", "int16x8": "int16", "float16": "float32", "dynamic": "float32",
                  "float32": "float32"}


@pytest.fixture(scope="module")
def converted(tiny_keras, small_npz, tmp_path_factory):
    results = {}
    for recipe in Recipe:
        out = tmp_path_factory.mktemp(recipe.value)
        config = ConvertConfig(model=tiny_keras, calib=small_npz, eval=small_npz, recipe=recipe, out=out,
                               run=api.RunOptions(runs=5, warmup=1))
        results[recipe.value] = api.convert(config)
    return results


@pytest.mark.parametrize("recipe", Recipe.choices())
def test_recipe_produces_a_model_that_runs_on_host(converted, recipe):
    report = converted[recipe].report
    assert report["recipe"] == recipe
    assert converted[recipe].artifact.exists()
    assert report["artifact"]["input"]["dtype"] == EXPECTED_INPUT[recipe]
    host = report["targets"]["host"]
    assert host["samples"] == 200 and host["latency_ms"]["p50"] > 0
    assert report["quantized"]["agreement"] >= 0.9


def test_recipes_order_by_size(converted):
    size = {name: result.report["artifact"]["bytes"] for name, result in converted.items()}
    assert max(size["int8"], size["float16"], size["dynamic"]) < size["float32"]
    assert size["int8"] < size["int16x8"] < size["float32"]


def test_int8_is_integer_only(converted):
    info = inspect_model(converted["int8"].artifact.read_bytes())
    assert info.float_ops() == []
    assert {op.name for op in info.ops} >= {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


@pytest.mark.quick
def test_float_io_keeps_float_edges_only(tiny_keras, small_npz):
    model = load_model(tiny_keras)
    calib = load_dataset(small_npz, Preprocess.from_input_shape(model.input_shape))
    info = inspect_model(convert_model(model, Recipe.INT8, calib, float_io=True))
    assert info.inputs[0].dtype == info.outputs[0].dtype == "float32"
    assert info.float_ops() == []
    assert {"QUANTIZE", "DEQUANTIZE"} <= set(info.op_counts)


@pytest.mark.quick
def test_conversion_is_deterministic(tiny_keras, small_npz):
    model = load_model(tiny_keras)
    calib = load_dataset(small_npz, Preprocess.from_input_shape(model.input_shape))
    assert convert_model(model, Recipe.INT8, calib) == convert_model(model, Recipe.INT8, calib)


def test_dynamic_batch_evaluates_in_batches_with_the_same_outputs(tiny_keras, small_npz, tmp_path):
    fixed = api.convert(ConvertConfig(model=tiny_keras, calib=small_npz, eval=small_npz, out=tmp_path / "a",
                                      run=api.RunOptions(runs=2)))
    dynamic = api.convert(ConvertConfig(model=tiny_keras, calib=small_npz, eval=small_npz, out=tmp_path / "b",
                                        dynamic_batch=True, run=api.RunOptions(runs=2, batch_size=64)))
    assert fixed.report["targets"]["host"]["eval_batch"] == 1
    assert dynamic.report["targets"]["host"]["eval_batch"] == 64
    assert dynamic.report["artifact"]["input"]["dynamic_batch"] is True
    assert dynamic.report["quantized"]["accuracy"] == fixed.report["quantized"]["accuracy"]


def test_regression_model_reports_output_error_not_accuracy(regression_keras, tmp_path):
    model, data = regression_keras
    result = api.convert(ConvertConfig(model=model, calib=data, eval=data, out=tmp_path, run=api.RunOptions(runs=2)))
    quantized = result.report["quantized"]
    assert quantized["accuracy"] is None and quantized["agreement"] is None
    assert quantized["task"] == "regression"
    error = quantized["output_error"]
    assert error["rmse"] > 0 and error["snr_db"] > 20 and error["cosine"] > 0.99
    assert result.report["preprocess"]["scale"] == 1.0
    json.dumps(result.report)  # the whole report is plain JSON
    assert np.isfinite(error["rmse"])
