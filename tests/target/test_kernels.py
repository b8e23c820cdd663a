"""The kernel table (targets/kernels.toml): every entry sourced, and what it says holds in the
installed runtimes for the cases the pipeline relies on (the int16 islands' ops)."""

from __future__ import annotations

import pytest

from targets import get_target, int16_refusal
from targets.kernels import supports, table

pytestmark = pytest.mark.fast


def test_every_entry_names_its_source_and_types():
    data = table()
    assert set(data) >= {"tflm", "litert", "xnnpack"}
    for runtime in ("tflm", "litert", "xnnpack"):
        assert data[runtime]["source"].startswith("https://github.com/")
        for op, entry in data[runtime]["ops"].items():
            assert entry["source"], (runtime, op)
            assert isinstance(entry["types"], list), (runtime, op)


def test_what_the_islands_and_the_ladder_rely_on():
    # TFLM has no int16 GATHER (the embedding stays int8); both runtimes have int16 SOFTMAX and
    # FULLY_CONNECTED; XNNPACK never takes int16 (why int16x8 comes last on a host).
    assert supports("tflm", "GATHER", "int16") is False and supports("litert", "GATHER", "int16") is True
    for op in ("SOFTMAX", "FULLY_CONNECTED", "BATCH_MATMUL", "ADD", "MUL", "MEAN", "RSQRT", "MINIMUM"):
        assert supports("tflm", op, "int16") and supports("litert", op, "int16"), op
    assert not any("int16" in entry["types"] for entry in table()["xnnpack"]["ops"].values())
    assert supports("litert", "SQUARED_DIFFERENCE", "int16") is False  # TFLM has it, LiteRT does not
    refusal = int16_refusal(["host", "cortex-m4"], "GATHER")
    assert refusal.startswith("TensorFlow Lite Micro has no int16 kernel for GATHER") and "gather.cc" in refusal
    assert int16_refusal(["host"], "GATHER") is None
    assert get_target("cortex-m4").kernel_runtime == "tflm" and get_target("host").kernel_runtime == "litert"
