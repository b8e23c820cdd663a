"""Latency and energy estimates for microcontrollers from a model's per-op work.

Cycle model: each op class is priced by what dominates it on a Cortex-M with CMSIS-NN kernels.

* k x k convolutions (and transposed ones): cycles per MAC, per output (requantization) and per
  conv pixel-tap (output pixels x kernel taps: the im2col work, independent of channels).
* 1x1 (pointwise) and depthwise convolutions: cycles per MAC and per output.
* fully connected layers (and recurrent cells): cycles per weight byte streamed (from flash, once
  per input row) and per output.
* elementwise, pooling, softmax and data movement: memory-bound, cycles per element touched.
* the TFLM interpreter: cycles per op node, per softmax node and per invoke.

Ops whose activations are int16 (16x8 quantization) cost their class's int8 cycles times the
int16 multiplier of the kernel path (CMSIS-NN s16 kernels are slower than s8 for convolutions and
fully connected layers); float ops cost the float multiplier. The constants come from a board's
cycle table (``BoardProfile.cycle_model``, built from the data files under ``targets/boards`` with
their sources); ``calibration_data/calibrate_mcu.py`` fits the per-system speed to published
MLPerf Tiny figures and measures the leave-one-out error per dominant op class.

Op-energy model: MACs x (multiply + add energy for the number format) + bytes moved x energy
per byte of SRAM access (Horowitz, ISSCC 2014, 45 nm), constants in ``boards/energy.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgecore.flatbuffer import OpUse

MAC_CLASSES = ("conv", "pointwise", "depthwise", "transpose_conv", "fully_connected", "recurrent")
ELEMENT_CLASSES = ("elementwise", "pool", "softmax", "movement")
# Every class a cycle is booked to; "overhead" is the interpreter's per-node and per-invoke cost.
COST_CLASSES = (*MAC_CLASSES, *ELEMENT_CLASSES, "overhead")
FORMATS = ("int8", "int16", "float")
# What is counted per class and number format (Work.parts).
QUANTITIES = ("macs", "outputs", "elements", "taps", "weight_bytes", "nodes")

_ELEMENTWISE = {"ADD", "SUB", "MUL", "DIV", "RELU", "RELU6", "LEAKY_RELU", "LOGISTIC", "TANH",
                "HARD_SWISH", "QUANTIZE", "DEQUANTIZE", "PRELU", "MAXIMUM", "MINIMUM", "SQUARE",
                "SQUARED_DIFFERENCE", "ABS", "NEG", "EXP", "RSQRT", "SQRT", "ELU", "GELU"}
_POOL = {"MAX_POOL_2D", "AVERAGE_POOL_2D", "L2_POOL_2D", "MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"}
_SOFTMAX = {"SOFTMAX", "LOG_SOFTMAX"}
_RECURRENT = {"UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "LSTM", "SVDF",
              "UNIDIRECTIONAL_SEQUENCE_RNN", "BIDIRECTIONAL_SEQUENCE_RNN", "RNN"}
_FREE = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}


def op_class(op: OpUse) -> str | None:
    """The cost class of an op; None for ops that cost (almost) nothing, like RESHAPE."""
    if op.name == "CONV_2D":
        weight = op.inputs[1].shape if len(op.inputs) > 1 else ()
        return "pointwise" if len(weight) == 4 and weight[1] == weight[2] == 1 else "conv"
    if op.name == "TRANSPOSE_CONV":
        return "transpose_conv"
    if op.name == "DEPTHWISE_CONV_2D":
        return "depthwise"
    if op.name in ("FULLY_CONNECTED", "BATCH_MATMUL"):
        return "fully_connected"
    if op.name in _RECURRENT:
        return "recurrent"
    if op.name in _FREE:
        return None
    if op.name in _ELEMENTWISE:
        return "elementwise"
    if op.name in _POOL:
        return "pool"
    if op.name in _SOFTMAX:
        return "softmax"
    return "movement"


def op_format(op: OpUse) -> str:
    """The number format the op's kernel computes in: ``float`` when an activation or output is
    floating point, ``int16`` when one is int16 (16x8 quantization), else ``int8``."""
    dtypes = [t.dtype for t in (*op.activations, *op.outputs)]
    if any(d.startswith("float") for d in dtypes):
        return "float"
    if "int16" in dtypes:
        return "int16"
    return "int8"


def _op_quantities(op: OpUse, kind: str) -> dict[str, int]:
    """What the cycle model prices for one op of class ``kind``."""
    outputs = sum(t.elements for t in op.outputs)
    if kind in ("conv", "pointwise", "depthwise", "transpose_conv"):
        counts = {"macs": op.macs, "outputs": outputs}
        weight, out = (op.inputs[1].shape if len(op.inputs) > 1 else ()), (op.outputs[0].shape if op.outputs else ())
        if kind in ("conv", "transpose_conv") and len(weight) == 4 and len(out) == 4:
            counts["taps"] = out[1] * out[2] * weight[1] * weight[2]
        return counts
    if kind == "fully_connected":
        # The weights are streamed once per input row: bytes streamed = MACs x weight item size.
        itemsize = op.inputs[1].itemsize if len(op.inputs) > 1 else 1
        return {"macs": op.macs, "outputs": outputs, "weight_bytes": op.macs * itemsize}
    if kind == "recurrent":
        # Each step multiplies the (2-D) weight matrices once: streamed like fully connected weights.
        matrices = [t for t in op.weights if len(t.shape) == 2]
        steps = 1
        if op.activations and op.activations[0].shape:
            steps = max(1, op.activations[0].elements // max(1, op.activations[0].shape[-1]))
        return {"macs": steps * sum(t.elements for t in matrices), "outputs": outputs,
                "weight_bytes": steps * sum(t.bytes for t in matrices)}
    if kind == "pool":
        # Pooling and reductions read their whole window.
        return {"elements": max(sum(t.elements for t in op.activations), outputs)}
    if kind == "movement":
        return {"elements": max(sum(t.elements for t in op.activations), outputs)}
    counts = {"elements": outputs}  # elementwise and softmax: one result per output element
    if kind == "softmax":
        counts["nodes"] = 1
    return counts


@dataclass(frozen=True)
class Work:
    """What a model asks of a core, summed per cost class (and, in ``parts``, per number format)."""

    macs: dict[str, int]
    outputs: dict[str, int]  # output elements of MAC ops, per class
    elements: dict[str, int]  # elements priced for non-MAC ops, per class
    ops: int
    bytes_moved: int
    total_macs: int
    float_macs: int
    # parts[format][class][quantity]: macs, outputs, elements, taps (k x k conv output pixels x
    # kernel taps), weight_bytes (fully connected / recurrent weights streamed), nodes (softmax ops)
    parts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    def quantity(self, quantity: str, kind: str | None = None, fmt: str | None = None) -> int:
        """One quantity summed over formats (or one format) and classes (or one class)."""
        return sum(counts.get(quantity, 0) for f, classes in self.parts.items() if fmt in (None, f)
                   for k, counts in classes.items() if kind in (None, k))

    def to_dict(self) -> dict:
        formats = {f: {k: {q: n for q, n in v.items() if n} for k, v in classes.items() if any(v.values())}
                   for f, classes in self.parts.items()}
        return {"macs": self.macs, "mac_outputs": self.outputs, "elements": self.elements,
                "ops": self.ops, "bytes_moved": self.bytes_moved,
                "conv_taps": self.quantity("taps"), "weight_bytes_streamed": self.quantity("weight_bytes"),
                "by_format": {f: v for f, v in formats.items() if v}}


def model_work(ops: list[OpUse]) -> Work:
    """MACs, elements, taps and weight bytes per op class and number format, summed over the model."""
    parts = {f: {k: dict.fromkeys(QUANTITIES, 0) for k in (*MAC_CLASSES, *ELEMENT_CLASSES)} for f in FORMATS}
    counted = moved = float_macs = 0
    for op in ops:
        kind = op_class(op)
        moved += op.bytes_moved
        if kind is None:
            continue
        counted += 1
        counts = _op_quantities(op, kind)
        for quantity, count in counts.items():
            parts[op_format(op)][kind][quantity] += count
        if kind in MAC_CLASSES and op.outputs and op.outputs[0].dtype.startswith("float"):
            float_macs += counts["macs"]
    total = {k: sum(parts[f][k]["macs"] for f in FORMATS) for k in MAC_CLASSES}
    return Work(macs=total, outputs={k: sum(parts[f][k]["outputs"] for f in FORMATS) for k in MAC_CLASSES},
                elements={k: sum(parts[f][k]["elements"] for f in FORMATS) for k in ELEMENT_CLASSES},
                ops=counted, bytes_moved=moved, total_macs=sum(total.values()), float_macs=float_macs,
                parts=parts)


def _class_cycles(kind: str, counts: dict[str, int], table: dict) -> float:
    """int8 cycles of one class's work under ``table``."""
    if kind in ("conv", "pointwise", "depthwise", "transpose_conv"):
        return (table["cycles_per_mac"][kind] * counts.get("macs", 0)
                + table["cycles_per_mac_output"] * counts.get("outputs", 0)
                + table["cycles_per_conv_tap"] * counts.get("taps", 0))
    if kind in ("fully_connected", "recurrent"):
        return (table["cycles_per_weight_byte"][kind] * counts.get("weight_bytes", 0)
                + table["cycles_per_fc_output"] * counts.get("outputs", 0))
    cycles = table["cycles_per_element"][kind] * counts.get("elements", 0)
    if kind == "softmax":
        cycles += table["cycles_per_softmax_node"] * counts.get("nodes", 0)
    return cycles


def cycle_breakdown(work: Work, table: dict, formats: tuple[str, ...] = FORMATS) -> dict[str, float]:
    """Cycles per cost class (``COST_CLASSES``) for ``work`` under a board's cycle table; with
    ``formats``, only the ops computing in those number formats (the overhead stays)."""
    out = dict.fromkeys(COST_CLASSES, 0.0)
    for fmt, classes in work.parts.items():
        if fmt not in formats:
            continue
        multipliers = table.get("format_multipliers", {}).get(fmt, {})
        for kind, counts in classes.items():
            if any(counts.values()):
                out[kind] += multipliers.get(kind, 1.0) * _class_cycles(kind, counts, table)
    out["overhead"] = table["op_overhead_cycles"] * work.ops + table.get("invoke_cycles", 0.0)
    return out


def estimate_cycles(work: Work, model: dict) -> float:
    """Cycles on one core for ``work`` under a profile's ``cycle_model`` table."""
    return sum(cycle_breakdown(work, model).values())


def dominant_class(work: Work, table: dict) -> tuple[str, float]:
    """The cost class with the most cycles, and its share of the estimate."""
    parts = cycle_breakdown(work, table)
    total = sum(parts.values())
    kind = max(parts, key=parts.get)
    return kind, (parts[kind] / total if total else 0.0)


def int8_share(work: Work, table: dict) -> float:
    """The share of the estimated cycles in int8 ops and interpreter overhead (what the published
    figures validate); the rest is in int16 or float ops."""
    total = estimate_cycles(work, table)
    return sum(cycle_breakdown(work, table, ("int8",)).values()) / total if total else 1.0


def op_energy_mj(work: Work, energy: dict, int8: bool) -> float:
    """Compute plus data-movement energy in millijoules (no static or board power)."""
    fmt = energy["int8" if int8 else "fp32"]
    picojoules = work.total_macs * (fmt["mult_pj"]["value"] + fmt["add_pj"]["value"])
    picojoules += work.bytes_moved * energy["sram_pj_per_byte"]["value"]
    return picojoules * 1e-9
