"""Bad input: one clear sentence with the fix, a non-zero exit, and nothing written to --out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli.commands import main


def _convert_fails(tmp_path, *args, expect: str, code: int | None = None):
    out = tmp_path / "out"
    outcome = CliRunner().invoke(main, ["convert", *map(str, args), "--out", str(out)])
    assert outcome.exit_code != 0
    if code is not None:
        assert outcome.exit_code == code
    assert expect in outcome.stderr, outcome.stderr
    assert "Traceback" not in outcome.stderr + outcome.stdout
    assert not out.exists() or not any(out.iterdir())
    return outcome


@pytest.mark.quick
def test_missing_model(tmp_path, small_npz):
    _convert_fails(tmp_path, tmp_path / "nope.keras", "--calib", small_npz, expect="does not exist")


@pytest.mark.parametrize("name, expect", [("broken.keras", "not a readable .keras file"),
                                          ("broken.h5", "not a readable HDF5 file")])
@pytest.mark.quick
def test_corrupt_model_file(tmp_path, small_npz, name, expect):
    bad = tmp_path / name
    bad.write_bytes(b"\x89HDF this is neither a zip archive nor HDF5")
    _convert_fails(tmp_path, bad, "--calib", small_npz, expect=expect)


def test_unknown_model_extension(tmp_path, small_npz):
    bad = tmp_path / "model.pb"
    bad.write_bytes(b"x")
    _convert_fails(tmp_path, bad, "--calib", small_npz, expect="unknown extension")


def test_damaged_onnx_file(tmp_path, small_npz):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"x")
    _convert_fails(tmp_path, bad, "--calib", small_npz, expect="not a readable ONNX model")


def test_empty_calibration_folder(tmp_path, tiny_keras):
    empty = tmp_path / "empty"
    (empty / "cats").mkdir(parents=True)
    _convert_fails(tmp_path, tiny_keras, "--calib", empty, expect="holds no images")


def test_unreadable_image_in_folder(tmp_path, tiny_keras):
    folder = tmp_path / "calib" / "a"
    folder.mkdir(parents=True)
    (folder / "bad.png").write_bytes(b"not a png")
    _convert_fails(tmp_path, tiny_keras, "--calib", tmp_path / "calib", expect="cannot read image")


@pytest.mark.quick
def test_missing_calibration_for_int8(tmp_path, tiny_keras):
    _convert_fails(tmp_path, tiny_keras, expect="pass --calib DATA", code=2)


def test_data_shape_mismatch(tmp_path, tiny_keras):
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((4, 32, 32, 3), np.uint8))
    _convert_fails(tmp_path, tiny_keras, "--calib", wrong, expect="the model takes (28, 28, 1)")


def test_npz_without_x(tmp_path, tiny_keras):
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, images=np.zeros((4, 28, 28, 1), np.uint8))
    _convert_fails(tmp_path, tiny_keras, "--calib", wrong, expect="has no array 'x'")


def test_unknown_recipe(tmp_path, tiny_keras, small_npz):
    _convert_fails(tmp_path, tiny_keras, "--calib", small_npz, "--recipe", "int4", expect="'int4' is not one of", code=2)


def test_unknown_target(tmp_path, tiny_keras, small_npz):
    _convert_fails(tmp_path, tiny_keras, "--calib", small_npz, "--target", "pdp11", expect="Invalid value for '--target'", code=2)


def test_run_on_a_file_that_is_not_tflite(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"garbage" * 10)
    outcome = CliRunner().invoke(main, ["run", str(bad), "--target", "host"])
    assert outcome.exit_code == 1
    assert "cannot load this model" in outcome.stderr


def test_run_missing_model(tmp_path):
    outcome = CliRunner().invoke(main, ["run", str(tmp_path / "none.tflite"), "--target", "host"])
    assert outcome.exit_code == 2
    assert "does not exist" in outcome.stderr


@pytest.mark.parametrize("flag", ["--overwrite"])
def test_existing_outputs_need_overwrite(tmp_path, tiny_keras, small_npz, flag):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")
    outcome = CliRunner().invoke(main, ["convert", str(tiny_keras), "--calib", str(small_npz), "--out", str(out)])
    assert outcome.exit_code == 2 and flag in outcome.stderr
    assert (out / "report.json").read_text() == "{}"


def test_a_converter_abort_in_the_lint_is_retried_once_in_a_fresh_worker(tmp_path, tiny_keras, small_npz, monkeypatch):
    # TensorFlow's converter aborts now and then on a model it converts fine: the first worker is
    # made to abort where the did (stage lint), the run goes on in a fresh one.
    monkeypatch.setenv("EDGEPIPE_TEST_ABORT", "running stage lint")
    monkeypatch.setenv("EDGEPIPE_TEST_ABORT_ONCE", str(tmp_path / "aborted"))
    outcome = CliRunner().invoke(main, ["convert", str(tiny_keras), "--calib", str(small_npz), "--recipe", "float16",
                                        "--out", str(tmp_path / "o"), "--runs", "2"])
    assert outcome.exit_code == 0, outcome.stderr
    assert (tmp_path / "aborted").exists() and (tmp_path / "o" / "model_float16.tflite").exists()
    assert "while running stage lint: the worker process was killed by SIGABRT" in outcome.stderr
    assert "Check failed: EDGEPIPE_TEST_ABORT" in outcome.stderr and "retrying in a fresh worker" in outcome.stderr
    retried = json.loads((tmp_path / "o" / "report.json").read_text())["retried"]
    assert "killed by SIGABRT" in retried["after"] and "retry" in retried["note"]


def test_a_converter_that_aborts_twice_is_one_sentence(tmp_path, tiny_keras, small_npz, monkeypatch):
    monkeypatch.setenv("EDGEPIPE_TEST_ABORT", "running stage lint")
    outcome = _convert_fails(tmp_path, tiny_keras, "--calib", small_npz, "--recipe", "float16",
                             expect="killed by SIGABRT", code=1)
    assert "a fresh worker died the same way" in outcome.stderr
