"""Loading .keras, legacy .h5 and SavedModel files, and refusing embedded code by default."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pipeline.cli.commands import main
from pipeline.errors import ModelLoadError
from pipeline.frontend.keras_compat import keras3
from pipeline.frontend.loading import load_model


@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory):
    keras = keras3()
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(lambda t: t * 2.0, name="double"),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    path = tmp_path_factory.mktemp("lambda") / "lambda.keras"
    model.save(path)
    return path


def _convert(*args):
    return CliRunner().invoke(main, ["convert", *map(str, args)])


def test_legacy_h5_with_depthwise_falls_back_to_tf_keras(legacy_h5, small_npz, tmp_path):
    outcome = _convert(legacy_h5, "--calib", small_npz, "--eval", small_npz, "--out", tmp_path, "--runs", 3, "--json")
    assert outcome.exit_code == 0, outcome.stderr
    report = json.loads(outcome.stdout)
    assert report["model"]["format"] == "h5-tf_keras"
    assert report["artifact"]["ops"]["DEPTHWISE_CONV_2D"] == 1
    # Untrained weights: top-1 agreement is fragile, the output error is what to check.
    assert report["quantized"]["output_error"]["cosine"] > 0.99


@pytest.mark.quick
def test_saved_model_folder_converts(saved_model_dir, small_npz, tmp_path):
    outcome = _convert(saved_model_dir, "--calib", small_npz, "--eval", small_npz, "--out", tmp_path, "--runs", 3, "--json")
    assert outcome.exit_code == 0, outcome.stderr
    report = json.loads(outcome.stdout)
    assert report["model"]["format"] == "saved_model"
    assert report["artifact"]["input"]["shape"] == [1, 28, 28, 1]
    assert report["float"]["tflite_vs_keras"]["max_abs"] < 1e-4


def test_lambda_layer_is_refused_with_the_way_out(lambda_model):
    with pytest.raises(ModelLoadError, match="--unsafe") as caught:
        load_model(lambda_model)
    assert "double" in str(caught.value)


def test_unsafe_allows_lambda(lambda_model, small_npz, tmp_path):
    outcome = _convert(lambda_model, "--calib", small_npz, "--out", tmp_path, "--unsafe", "--runs", 2)
    assert outcome.exit_code == 0, outcome.stderr
    assert (tmp_path / "model_int8.tflite").exists()


@pytest.mark.quick
def test_keras3_model_reports_its_format(tiny_keras):
    model = load_model(tiny_keras)
    assert model.format == "keras"
    assert model.input_shape == (None, 28, 28, 1)
    assert model.params > 0
