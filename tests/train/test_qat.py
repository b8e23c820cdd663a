"""Quantization-aware training: PTQ vs QAT side by side, Keras 3 and legacy models, layer scan,
resume, determinism, and PTQ still working in the same process."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline import api
from pipeline.cli.commands import main
from pipeline.core.config import ConvertConfig, QatOptions
from pipeline.errors import ModelLoadError
from pipeline.frontend.keras_compat import keras3, to_legacy
from pipeline.train import qat


def _qat_config(model, train, eval_, out, **options) -> ConvertConfig:
    return ConvertConfig(model=model, calib=None, eval=eval_, out=out, run=api.RunOptions(runs=5),
                         targets=tuple(options.pop("targets", ("host",))), qat=QatOptions(train=train, **options))


@pytest.fixture(scope="session")
def reference_qat(tmp_path_factory):
    """QAT of the shipped reference CNN on the shipped sample, run on host and cortex-m4."""
    out = tmp_path_factory.mktemp("qat")
    config = _qat_config(api.sample_path("reference_cnn.keras"), api.sample_path("mnist", "train.npz"),
                         api.sample_path("mnist", "eval.npz"), out, epochs=2, targets=("host", "cortex-m4"))
    return api.convert(config).report, out


def test_qat_is_at_least_as_good_as_ptq_and_near_float(reference_qat):
    report, _ = reference_qat
    float_accuracy, ptq, quantized = report["float"]["accuracy"], report["ptq"]["accuracy"], report["quantized"]["accuracy"]
    assert quantized >= ptq - 0.005, (quantized, ptq)
    assert quantized >= float_accuracy - 0.005, (quantized, float_accuracy)
    assert report["ptq"]["bytes"] > 0 and report["ptq"]["host_latency_ms"]["p50"] > 0
    assert report["artifact"]["path"].endswith("model_int8_qat.tflite")


def test_ptq_and_qat_are_two_candidates_of_one_run(reference_qat):
    report, _ = reference_qat
    assert report["schema"] == 2 and report["chosen"] == "int8/qat"
    rows = {row["name"]: row for row in report["candidates"]}
    assert list(rows) == ["int8/ptq", "int8/qat"]
    assert rows["int8/qat"]["made"]["qat"] is True and rows["int8/ptq"]["made"]["qat"] is False
    assert rows["int8/ptq"]["made"]["calibration"] == "minmax" and rows["int8/ptq"]["made"]["source"] == "keras"
    assert rows["int8/ptq"]["accuracy"] == report["ptq"]["accuracy"]
    assert rows["int8/qat"]["artifact"]["sha256"] == report["artifact"]["sha256"]
    assert rows["int8/qat"]["accuracy"] == report["quantized"]["accuracy"]
    # Both candidates ran on every requested target.
    assert set(rows["int8/ptq"]["targets"]) == set(rows["int8/qat"]["targets"]) == {"host", "cortex-m4"}
    assert ConvertConfig.from_dict(report["config"]).qat.epochs == 2


def test_parity_gate_is_reported(reference_qat):
    report, _ = reference_qat
    parity = report["qat"]["parity"]
    assert parity["ok"] is True and parity["difference"] <= parity["tolerance"]
    assert parity["tflite_accuracy"] == report["quantized"]["accuracy"]


def test_qat_artifact_is_int8_and_runs_on_targets(reference_qat):
    report, out = reference_qat
    assert report["artifact"]["input"]["dtype"] == report["artifact"]["output"]["dtype"] == "int8"
    assert report["targets"]["host"]["accuracy"] == report["quantized"]["accuracy"]
    mcu = report["targets"]["cortex-m4"]
    assert abs(mcu["accuracy"] - report["targets"]["host"]["accuracy"]) <= 0.005
    assert not (out / qat.CHECKPOINT_DIR).exists()
    assert {p.name for p in out.iterdir()} == {"model_float32.tflite", "model_int8_ptq.tflite",
                                              "model_int8_qat.tflite", "report.json", "report.md", "report.html",
                                              "edgepipe.toml"}
    assert "QAT training curve" in (out / "report.html").read_text()
    assert "int8 QAT" in (out / "report.md").read_text()


def test_layer_scan_classifies_every_layer(reference_qat):
    report, _ = reference_qat
    layers = report["qat"]["layers"]
    assert [row["layer"] for row in layers][:2] == ["conv1", "pool1"]
    assert all(row["status"] == "quantized" for row in layers)
    assert report["qat"]["rebuild_max_abs_difference"] <= 1e-4


def test_legacy_h5_goes_through_qat(legacy_h5, small_npz, tmp_path):
    outcome = CliRunner().invoke(main, ["qat", str(legacy_h5), "--train", str(small_npz), "--eval", str(small_npz),
                                        "--epochs", "1", "--out", str(tmp_path), "--runs", "3", "--json"])
    assert outcome.exit_code == 0, outcome.stderr
    report = json.loads(outcome.stdout)
    assert report["model"]["format"] == "h5-tf_keras"
    assert report["qat"]["epochs_run"] == 1
    assert "QAT epoch 1/1: loss" in outcome.stderr


@pytest.mark.quick
def test_unsupported_layer_is_named_before_any_work(small_npz, tmp_path):
    keras = keras3()
    layers = keras.layers
    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Reshape((28, 28)), layers.LSTM(8, name="memory"),
                              layers.Dense(10, activation="softmax")])
    path = tmp_path / "rnn.keras"
    model.save(path)
    outcome = CliRunner().invoke(main, ["qat", str(path), "--train", str(small_npz), "--eval", str(small_npz),
                                        "--out", str(tmp_path / "out")])
    assert outcome.exit_code == 2
    assert "memory (LSTM): recurrent layers" in outcome.stderr
    assert "[4/" not in outcome.stderr  # stopped in the scan, before PTQ and training
    assert not (tmp_path / "out").exists()


@pytest.mark.quick
def test_subclassed_model_gets_a_clear_message():
    keras = keras3()

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 4), np.float32))
    with pytest.raises(ModelLoadError, match="subclassed model"):
        to_legacy(net)


def test_interrupted_run_resumes_from_its_checkpoint(tiny_keras, small_npz, tmp_path, monkeypatch, caplog):
    original = qat._Checkpoint.on_epoch_end

    def save_then_crash(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 0:
            raise RuntimeError("simulated interruption")

    config = _qat_config(tiny_keras, small_npz, small_npz, tmp_path, epochs=2, patience=5)
    monkeypatch.setenv("EDGEPIPE_IN_PROCESS", "1")  # the patched callback lives in this process
    monkeypatch.setattr(qat._Checkpoint, "on_epoch_end", save_then_crash)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        api.convert(config)
    assert (tmp_path / qat.CHECKPOINT_DIR / "state.json").exists()
    assert not (tmp_path / "report.json").exists()
    monkeypatch.setattr(qat._Checkpoint, "on_epoch_end", original)
    caplog.set_level("INFO")
    report = api.convert(config).report
    assert report["qat"]["resumed_from_epoch"] == 1
    assert report["qat"]["epochs_run"] == 2
    assert [row["epoch"] for row in report["qat"]["history"]] == [1, 2]
    assert "resuming QAT from the checkpoint after epoch 1" in caplog.text


def test_same_seed_same_model(tiny_keras, small_npz, tmp_path):
    blobs = []
    for run in ("a", "b"):
        result = api.convert(_qat_config(tiny_keras, small_npz, small_npz, tmp_path / run, epochs=1, seed=5))
        blobs.append(result.artifact.read_bytes())
    assert blobs[0] == blobs[1]


def test_ptq_still_works_after_qat_in_the_same_process(reference_qat, tiny_keras, small_npz, tmp_path):
    assert os.environ.get("TF_USE_LEGACY_KERAS") is None
    result = api.convert(ConvertConfig(model=tiny_keras, calib=small_npz, eval=small_npz, out=tmp_path,
                                       run=api.RunOptions(runs=2)))
    assert result.report["model"]["format"] == "keras"
    assert result.report["quantized"]["agreement"] > 0.9
