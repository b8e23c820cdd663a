"""The MCU cycle model without TensorFlow: op classes, number formats, board tables, uncertainty."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edgecore.flatbuffer import read_ops
from edgecore.model_info import inspect_model
from targets.cost_model import COST_CLASSES, cycle_breakdown, dominant_class, estimate_cycles, model_work
from targets.mcu.target import McuTarget
from targets.profiles import load_profiles, shared

pytestmark = pytest.mark.fast

TINY_INT8 = Path(__file__).resolve().parents[1] / "data" / "tiny_int8.tflite"


def _as_int16(ops):
    """The same graph with int16 activations (16x8 quantization): weights stay int8."""
    def widen(tensor):
        return tensor if tensor.constant or tensor.dtype != "int8" else dataclasses.replace(tensor, dtype="int16",
                                                                                            itemsize=2)
    return [dataclasses.replace(op, inputs=tuple(map(widen, op.inputs)), outputs=tuple(map(widen, op.outputs)))
            for op in ops]


def test_each_op_class_is_priced_by_what_dominates_it():
    ops = read_ops(TINY_INT8.read_bytes())
    work = model_work(ops)
    assert [op.name for op in ops] == ["CONV_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    assert work.ops == 3  # RESHAPE is free
    conv, fc = ops[0], ops[2]
    parts = work.parts["int8"]
    out = conv.outputs[0].shape
    assert parts["conv"]["taps"] == out[1] * out[2] * conv.inputs[1].shape[1] * conv.inputs[1].shape[2]
    assert parts["fully_connected"]["weight_bytes"] == fc.inputs[1].bytes == fc.macs
    assert parts["softmax"] == {**parts["softmax"], "elements": 10, "nodes": 1}
    table, _ = load_profiles()["cortex-m4"].cycle_model()
    by_class = cycle_breakdown(work, table)
    assert set(by_class) == set(COST_CLASSES)
    assert by_class["fully_connected"] == pytest.approx(
        table["cycles_per_weight_byte"]["fully_connected"] * fc.macs + table["cycles_per_fc_output"] * 10)
    assert by_class["overhead"] == table["op_overhead_cycles"] * 3 + table["invoke_cycles"]
    assert estimate_cycles(work, table) == pytest.approx(sum(by_class.values()))


def test_int16_ops_cost_more_than_int8_ones():
    ops = read_ops(TINY_INT8.read_bytes())
    wide = model_work(_as_int16(ops))
    narrow = model_work(ops)
    assert wide.quantity("macs", fmt="int16") == narrow.total_macs and wide.quantity("macs", fmt="int8") == 0
    for board in ("cortex-m4", "cortex-m33", "cortex-m55"):
        table, _ = load_profiles()[board].cycle_model()
        int16, int8 = cycle_breakdown(wide, table), cycle_breakdown(narrow, table)
        multipliers = table["format_multipliers"]["int16"]
        assert estimate_cycles(wide, table) > estimate_cycles(narrow, table), board
        for kind in ("conv", "fully_connected"):
            assert int16[kind] == pytest.approx(multipliers[kind] * int8[kind]) and multipliers[kind] > 1
        assert int16["overhead"] == int8["overhead"]
    constants = shared("cycle_constants")["int16"]
    assert constants["dsp"]["conv"]["value"] == 1.2 and constants["dsp"]["fully_connected"]["value"] == 1.5
    assert constants["dsp"]["depthwise"]["value"] == 1.0 and constants["dsp"]["elementwise"]["value"] == 0.9
    # CMSIS-NN runs int16 1x1 convolutions as k x k ones: priced at the int16 conv cost per MAC.
    table, _ = load_profiles()["cortex-m4"].cycle_model()
    int16 = table["format_multipliers"]["int16"]
    assert int16["pointwise"] * table["cycles_per_mac"]["pointwise"] == pytest.approx(
        int16["conv"] * table["cycles_per_mac"]["conv"])


def test_the_uncertainty_depends_on_the_op_mix():
    profile = load_profiles()["cortex-m4"]
    bands = shared("cycles_fitted")["band"]
    conv, fc = profile.latency_uncertainty("conv", 0.9), profile.latency_uncertainty("fully_connected", 0.9)
    assert conv["validated"] and fc["validated"]
    assert conv["loo_max_abs_error_pct"] == bands["conv"]["max_abs_error_pct"]
    assert fc["loo_max_abs_error_pct"] == bands["fully_connected"]["max_abs_error_pct"]
    assert conv["loo_error_pct"] != fc["loo_error_pct"]
    for kind in ("depthwise", "recurrent", "transpose_conv", "elementwise", "overhead"):
        unknown = profile.latency_uncertainty(kind, 0.6)
        assert unknown["validated"] is False and unknown["loo_max_abs_error_pct"] is None
        assert unknown["method"].startswith("not validated") and kind in unknown["summary"]
    mostly_int16 = profile.latency_uncertainty("conv", 0.9, int8_share=0.2)
    assert mostly_int16["validated"] is False and "int16" in mostly_int16["method"]
    scaled = load_profiles()["rp2040"].latency_uncertainty("conv", 0.9)
    assert scaled["scaled"] and not scaled["validated"] and "not validated" in scaled["method"]


def test_the_mcu_estimate_names_its_dominant_class_and_band():
    blob = TINY_INT8.read_bytes()
    target = McuTarget(load_profiles()["cortex-m4"])
    details = target.estimates(blob, read_ops(blob), inspect_model(blob))
    by_class = details["estimated_cycles_by_class"]
    assert details["estimated_cycles"] == pytest.approx(sum(by_class.values()), abs=len(by_class))
    kind = details["latency_uncertainty"]["dominant_class"]
    assert kind == max(by_class, key=by_class.get)
    table, _ = target.profile.cycle_model()
    assert (kind, details["latency_uncertainty"]["dominant_share"]) == (
        dominant_class(model_work(read_ops(blob)), table)[0], pytest.approx(by_class[kind] / sum(by_class.values()),
                                                                            abs=1e-3))


def test_scaled_boards_divide_the_kernel_work_only():
    profiles = load_profiles()
    base, _ = profiles["cortex-m4"].cycle_model()
    for name in ("cortex-m7", "cortex-m55", "esp32-s3", "rp2040"):
        spec = profiles[name].data["cycle_model"]
        table, method = profiles[name].cycle_model()
        speedup = spec["mac_speedup"]
        assert method.startswith(f"scaled from {spec['base']}")
        for kind, value in base["cycles_per_mac"].items():
            assert table["cycles_per_mac"][kind] == pytest.approx(value / speedup)
        assert table["cycles_per_weight_byte"]["fully_connected"] == pytest.approx(
            base["cycles_per_weight_byte"]["fully_connected"] / speedup)
        assert table["op_overhead_cycles"] == base["op_overhead_cycles"]
    m55, _ = profiles["cortex-m55"].cycle_model()
    assert m55["format_multipliers"]["int16"]["conv"] == shared("cycle_constants")["int16"]["mve"]["conv"]["value"]


def test_the_fit_systems_are_within_25_percent_held_out():
    """The stored leave-one-out (tests/targets/test_mcu.py recomputes it from the models)."""
    rows = shared("cycles_fitted")["loo"]
    fit = [row for row in rows if row["role"] == "fit"]
    assert len(fit) == 20 and all(abs(row["error_pct"]) <= 25 for row in fit)
    systems = {s["id"]: s for s in shared("mlperf_tiny")["system"]}
    assert {systems[row["system"]]["core"] for row in fit} == {"cortex-m4", "cortex-m33"}
    assert {row["system"] for row in rows if row["role"] == "validation"} == {
        "l4r5-onnc-cmsis", "m467-onnc-cmsis", "ra8d1-tflm-mve"}
