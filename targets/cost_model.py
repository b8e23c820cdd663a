"""Latency and energy estimates for microcontrollers from a model's per-op work.

Cycle model (per op, summed): ``cycles_per_mac[class] * MACs + cycles_per_output * outputs``
for MAC ops, ``cycles_per_element[class] * elements`` for the rest, plus ``op_overhead`` per op.
Op classes separate what CMSIS-NN runs at different speeds: k x k convolutions, 1x1 (pointwise)
convolutions, depthwise convolutions and fully connected layers. The constants live in the
board profiles with their sources; ``calibration_data/calibrate_mcu.py`` fits them to the
published MLPerf Tiny figures.

Op-energy model: MACs x (multiply + add energy for the number format) + bytes moved x energy
per byte of SRAM access (Horowitz, ISSCC 2014, 45 nm), constants in ``boards/energy.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecore.flatbuffer import OpUse

MAC_CLASSES = ("conv", "pointwise", "depthwise", "fully_connected")
ELEMENT_CLASSES = ("elementwise", "pool", "softmax", "movement")

_ELEMENTWISE = {"ADD", "SUB", "MUL", "DIV", "RELU", "RELU6", "LEAKY_RELU", "LOGISTIC", "TANH",
                "HARD_SWISH", "QUANTIZE", "DEQUANTIZE", "PRELU", "MAXIMUM", "MINIMUM", "SQUARE",
                "SQUARED_DIFFERENCE", "ABS", "NEG", "EXP", "RSQRT", "SQRT", "ELU", "GELU"}
_POOL = {"MAX_POOL_2D", "AVERAGE_POOL_2D", "L2_POOL_2D", "MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"}
_SOFTMAX = {"SOFTMAX", "LOG_SOFTMAX"}
_FREE = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}


def op_class(op: OpUse) -> str | None:
    """The cost class of an op; None for ops that cost (almost) nothing, like RESHAPE."""
    if op.name == "CONV_2D":
        weight = op.inputs[1].shape if len(op.inputs) > 1 else ()
        return "pointwise" if len(weight) == 4 and weight[1] == weight[2] == 1 else "conv"
    if op.name == "TRANSPOSE_CONV":
        return "conv"
    if op.name == "DEPTHWISE_CONV_2D":
        return "depthwise"
    if op.name in ("FULLY_CONNECTED", "BATCH_MATMUL"):
        return "fully_connected"
    if op.name in _FREE:
        return None
    if op.name in _ELEMENTWISE:
        return "elementwise"
    if op.name in _POOL:
        return "pool"
    if op.name in _SOFTMAX:
        return "softmax"
    return "movement"


@dataclass(frozen=True)
class Work:
    """What a model asks of a core, summed per cost class."""

    macs: dict[str, int]
    outputs: dict[str, int]  # output elements of MAC ops, per class
    elements: dict[str, int]  # elements touched by non-MAC ops, per class
    ops: int
    bytes_moved: int
    total_macs: int
    float_macs: int

    def to_dict(self) -> dict:
        return {"macs": self.macs, "mac_outputs": self.outputs, "elements": self.elements,
                "ops": self.ops, "bytes_moved": self.bytes_moved}


def model_work(ops: list[OpUse]) -> Work:
    """MACs, elements and bytes moved per op class, summed over the model."""
    macs = dict.fromkeys(MAC_CLASSES, 0)
    outputs = dict.fromkeys(MAC_CLASSES, 0)
    elements = dict.fromkeys(ELEMENT_CLASSES, 0)
    counted = moved = float_macs = 0
    for op in ops:
        kind = op_class(op)
        moved += op.bytes_moved
        if kind is None:
            continue
        counted += 1
        if kind in macs:
            macs[kind] += op.macs
            outputs[kind] += sum(t.elements for t in op.outputs)
            if op.outputs and op.outputs[0].dtype.startswith("float"):
                float_macs += op.macs
        else:
            # Pooling reads its whole window; elementwise and softmax touch each input once.
            elements[kind] += max(sum(t.elements for t in op.activations), sum(t.elements for t in op.outputs))
    return Work(macs=macs, outputs=outputs, elements=elements, ops=counted, bytes_moved=moved,
                total_macs=sum(macs.values()), float_macs=float_macs)


def estimate_cycles(work: Work, model: dict) -> float:
    """Cycles on one core for ``work`` under a profile's ``cycle_model`` table."""
    per_mac, per_element = model["cycles_per_mac"], model["cycles_per_element"]
    cycles = sum(per_mac[k] * work.macs[k] for k in MAC_CLASSES)
    cycles += model["cycles_per_mac_output"] * sum(work.outputs.values())
    cycles += sum(per_element[k] * work.elements[k] for k in ELEMENT_CLASSES)
    cycles += model["op_overhead_cycles"] * work.ops
    if work.float_macs:
        cycles += (model.get("float_mac_penalty", 4.0) - 1.0) * per_mac["conv"] * work.float_macs
    return cycles


def op_energy_mj(work: Work, energy: dict, int8: bool) -> float:
    """Compute plus data-movement energy in millijoules (no static or board power)."""
    fmt = energy["int8" if int8 else "fp32"]
    picojoules = work.total_macs * (fmt["mult_pj"]["value"] + fmt["add_pj"]["value"])
    picojoules += work.bytes_moved * energy["sram_pj_per_byte"]["value"]
    return picojoules * 1e-9
