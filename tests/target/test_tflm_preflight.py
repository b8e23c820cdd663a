"""TFLM pre-flight: quantization that would abort TensorFlow Lite Micro, and weights it would
misread, are refused with a sentence before TFLM starts; each prediction is checked against TFLM."""

from __future__ import annotations

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
from targets import get_target
from targets.mcu import tflm
from targets.mcu.tflm_checks import preflight
from targets.worker import call_isolated

pytestmark = pytest.mark.fast

TINY = (Path(__file__).resolve().parents[1] / "data" / "tiny_int8.tflite").read_bytes()
FLOAT32 = (Path(__file__).resolve().parents[1] / "data" / "tiny_float32.tflite").read_bytes()
EVAL = api.sample_path("mnist", "eval.npz")


def _tflm_outputs(blob: bytes, x: np.ndarray) -> np.ndarray:
    """TFLM's raw outputs in a worker (a planted abort kills the worker, not the tests)."""
    info = inspect_model(blob)
    return call_isolated(tflm.evaluate, blob, info, x, tflm.PROBE_ARENA_BYTES, what="TFLM")[0]


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    with np.load(EVAL) as data:
        return data["x"][:20].astype(np.float32) / 255.0


def test_the_committed_model_passes(digits):
    assert preflight(read_ops(TINY)) == ([], [])
    assert get_target("cortex-m4").check(TINY) == []


@pytest.mark.parametrize("scale, aborts", [(1.4e-8, True), (1e-9, True), (1.6e-8, False), (0.05, False)])
def test_a_degenerate_softmax_input_is_predicted_exactly(scale, aborts, digits):
    blob = tflite_edit.set_scale(TINY, "SOFTMAX", "inputs", 0, scale)
    problems, _ = preflight(read_ops(blob))
    assert bool(problems) is aborts
    if aborts:
        assert "layer dense (SOFTMAX): its input spans only" in problems[0]
        assert "is the model trained, and is the calibration data what the model expects?" in problems[0]
        with pytest.raises(TargetError, match="killed by SIGABRT"):
            _tflm_outputs(blob, quantize(digits, inspect_model(blob).inputs[0]))
    else:
        _tflm_outputs(blob, quantize(digits, inspect_model(blob).inputs[0]))  # runs


def test_the_cli_refuses_it_with_the_sentence_not_a_crash(tmp_path):
    path = tmp_path / "degenerate.tflite"
    path.write_bytes(tflite_edit.set_scale(TINY, "SOFTMAX", "inputs", 0, 1e-9))
    outcome = CliRunner().invoke(main, ["run", str(path), "--target", "cortex-m4", "--eval", str(EVAL)])
    assert outcome.exit_code == 1
    last = outcome.stderr.strip().splitlines()[-1]
    assert last.startswith("edgepipe: error: target cortex-m4 cannot run degenerate.tflite: layer dense (SOFTMAX)")
    assert "Traceback" not in outcome.output


def test_weights_stored_after_the_flatbuffer_are_refused_because_tflm_misreads_them(digits):
    moved = tflite_edit.move_buffer_after(TINY, "FULLY_CONNECTED", 1)
    problems, _ = preflight(read_ops(moved))
    assert problems and "stored after the flatbuffer (Buffer.offset)" in problems[0] and "dense" in problems[0]
    q = quantize(digits, inspect_model(TINY).inputs[0])
    host = get_target("host")
    # LiteRT reads the moved weights correctly; TFLM silently computes something else.
    assert np.array_equal(host.run(moved, digits, None, api.RunOptions(runs=1)).outputs,
                          host.run(TINY, digits, None, api.RunOptions(runs=1)).outputs)
    assert not np.array_equal(_tflm_outputs(moved, q), _tflm_outputs(TINY, q))


def test_fully_connected_bias_scale_that_tflm_refuses_is_named():
    # The committed model's FULLY_CONNECTED has per-channel weights: TFLM checks no bias scale there.
    blob = tflite_edit.set_scale(TINY, "FULLY_CONNECTED", "inputs", 2, 1.0)
    assert preflight(read_ops(blob)) == ([], [])


@pytest.mark.parametrize("edit, op, words, tflm_says", [
    ("float16_weights", "FULLY_CONNECTED", "the float16 weights of layer dense need DEQUANTIZE from float16",
     "dequantize_common.cc"),
    ("hybrid_weights", "FULLY_CONNECTED", "the int8 weights of layer dense (FULLY_CONNECTED) meet float activations",
     "FLOAT32 with filter type: INT8 not supported"),
    ("hybrid_weights", "CONV_2D", "the int8 weights of layer conv2d (CONV_2D) meet float activations",
     "Hybrid models are not supported"),
])
def test_float16_and_hybrid_weights_that_tflm_refuses_are_named(edit, op, words, tflm_says, digits):
    # The float16 and dynamic recipes' models: the check's sentence, not TFLM's allocation error, in a compare cell.
    assert preflight(read_ops(FLOAT32)) == ([], [])
    blob = getattr(tflite_edit, edit)(FLOAT32, op)
    problems, _ = preflight(read_ops(blob))
    assert len(problems) == 1 and problems[0].startswith(words), problems
    assert "use --recipe int8 or int16x8 for microcontrollers" in problems[0]
    assert get_target("cortex-m4").check(blob) == problems
    with pytest.raises(TargetError, match=tflm_says):
        _tflm_outputs(blob, digits)


def test_parallel_shards_give_the_same_outputs_as_one_worker(digits):
    info = inspect_model(TINY)
    with np.load(EVAL) as data:
        x = data["x"][:300].astype(np.float32) / 255.0
    one = tflm.run_isolated(TINY, info, x, workers=1)
    two = tflm.run_isolated(TINY, info, x, workers=2)
    assert one[0].total == two[0].total
    assert np.array_equal(one[1][0], two[1][0]) and len(two[1][0]) == 300
