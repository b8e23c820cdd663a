"""Pre-flight for TensorFlow Lite Micro: the checks that would kill the process, predicted.

TFLM's ``TFLITE_CHECK`` family calls ``abort()``: no Python code can catch it, and the user reads
nothing useful. These checks read only the model's quantization parameters and storage and name
the layer and what to do, before TFLM is started. Each mirrors a check in TFLM's kernel sources
(github.com/tensorflow/tflite-micro, ``tensorflow/lite/micro/kernels`` and
``tensorflow/lite/kernels/internal/quantization_util.cc``), confirmed against the installed build:

* ``QuantizeMultiplierGreaterThanOne(m)`` aborts unless ``m > 1``; ``QuantizeMultiplierSmaller
  ThanOneExp(m)`` aborts unless ``0 < m < 1`` and the rounded shift stays <= 0.
* SOFTMAX (int8 input): ``min(beta * s_in * 2^26, 2^31 - 1)`` must exceed 1 (softmax_common.cc).
* LOG_SOFTMAX (int8): the same with beta 1 (log_softmax.cc).
* ADD, SUB (int8/int16), ADD_N, CUMSUM: input scales must be positive, and
  ``2 max(s_in) / (2^L s_out) < 1`` with L = 20 for int8, 15 for int16 (add_common.cc).
* SQUARED_DIFFERENCE: input scales must be positive (squared_difference.cc).
* EQUAL ... LESS_EQUAL (int8): each input scale must lie in (0, 1) (comparisons.cc).

And those that do not abort but make TFLM fail or, worse, compute garbage:

* DEQUANTIZE of float16 weights (the float16 recipe): TFLM's takes int8, int16 and uint8 inputs
  only (dequantize_common.cc) and fails to prepare.
* FULLY_CONNECTED, CONV_2D and DEPTHWISE_CONV_2D with float input and int8 weights (the dynamic
  recipe): "Hybrid models are not supported on TFLite Micro" (conv_common.cc and the others).
* FULLY_CONNECTED with per-tensor weights checks ``|s_in s_w - s_bias| / s_out <= 0.02``
  (kernel_util.cc ``GetQuantizedConvolutionMultipler``) and fails to prepare otherwise.
* Buffers stored after the flatbuffer (``Buffer.offset``/``size``) are not read by TFLM's
  allocator (micro_allocator.cc reads ``buffer->data()`` only): the weights become uninitialised
  arena memory and the model runs, silently wrong.

int8 SOFTMAX with int8 output over 512 or more classes can also abort *during* invoke when a
row's logits are flat (reference/softmax.h); that depends on the data, so it is a warning.
"""

from __future__ import annotations

import math

import numpy as np

from edgecore.flatbuffer import OpUse

_NORMAL = float(np.finfo(np.float32).tiny)  # the smallest normal float32: a smaller beta was edited in
_COMPARISONS = {"EQUAL", "NOT_EQUAL", "GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL"}
_QUANTIZED = {"int8", "int16"}
_HYBRID = {"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"}  # TFLM refuses float input x int8 weights in each


def _scale(tensor) -> float:
    """The scale TFLM sees: the first entry, as float32, or 0 when either vector is missing."""
    if not tensor.scales or not tensor.zero_points:
        return 0.0
    return float(np.float32(tensor.scales[0]))


def _quantize_multiplier_shift(m: float) -> int:
    """The shift ``QuantizeMultiplier`` computes (TFLM's double-rounding build)."""
    if m == 0:
        return 0
    fraction, exponent = math.frexp(m)
    fixed = math.floor(fraction * 2**31 + 0.5)
    if fixed == 2**31:
        exponent += 1
    return 0 if exponent < -31 else exponent


def smaller_than_one_aborts(m: float) -> bool:
    """Whether ``QuantizeMultiplierSmallerThanOneExp(m)`` aborts."""
    return not (0.0 < m < 1.0) or _quantize_multiplier_shift(m) > 0


def _range(tensor) -> str:
    bits = 8 if tensor.dtype == "int8" else 16
    return f"{_scale(tensor) * (2**bits - 1):.3g}"


def _add_like(op: OpUse, first_only: bool) -> str | None:
    inputs = [t for t in op.inputs if not t.constant or t.scales][: 1 if first_only else 2]
    if not inputs:
        return None
    scales = [_scale(t) for t in inputs]
    out = op.outputs[0]
    if not all(s > 0 and math.isfinite(s) for s in scales):
        return (f"layer {op.layer} ({op.name}) has an input with quantization scale {min(scales):g}, which makes "
                "TFLM abort; the calibration gave that tensor no range: check the calibration data")
    bits = 20 if out.dtype == "int8" else 15
    twice_max = 2 * max(scales)
    if first_only:
        ratios = [twice_max / (2**bits * _scale(out))] if _scale(out) > 0 else [math.inf]
    else:
        ratios = [s / twice_max for s in scales] + [twice_max / (2**bits * _scale(out)) if _scale(out) > 0 else math.inf]
    if any(smaller_than_one_aborts(r) for r in ratios):
        return (f"layer {op.layer} ({op.name}) adds inputs of range {' and '.join(_range(t) for t in inputs)} into an "
                f"output of range only {_range(out)}, a ratio TFLM cannot represent (it aborts); is the calibration "
                "data what the model expects?")
    return None


def _softmax(op: OpUse) -> str | None:
    source = op.inputs[0]
    beta = op.options.get("beta", 1.0) if op.name == "SOFTMAX" else 1.0
    if not (math.isfinite(beta) and beta >= _NORMAL):
        return (f"layer {op.layer} (SOFTMAX) has beta {beta:g} (its options are missing or were edited), which makes "
                "TFLM abort; convert the model again (e.g. with `edgepipe convert`)")
    product = min(beta * _scale(source) * 2.0**26, 2.0**31 - 1)
    if not product > 1.0:
        return (f"layer {op.layer} ({op.name}): its input spans only {_range(source)} on the calibration data "
                f"(scale {_scale(source):.3g}), too little for TFLM, which aborts on it; is the model trained, and "
                "is the calibration data what the model expects?")
    return None


def _fully_connected_bias(op: OpUse) -> str | None:
    if len(op.inputs) < 3 or len(op.inputs[1].scales) != 1 or not op.inputs[2].scales:
        return None  # per-channel weights, or no bias: TFLM does not check
    s_in, s_w, s_bias, s_out = (_scale(op.inputs[0]), _scale(op.inputs[1]), _scale(op.inputs[2]), _scale(op.outputs[0]))
    if s_out <= 0 or abs(s_in * s_w - s_bias) / s_out > 0.02:
        return (f"layer {op.layer} (FULLY_CONNECTED): its bias scale {s_bias:.3g} is not input scale x weight scale "
                f"({s_in * s_w:.3g}), which TFLM refuses; re-quantize the model with a converter that sets the bias "
                "scale that way (edgepipe's converter does)")
    return None


def _layers(names: list[str]) -> str:
    names = list(dict.fromkeys(names))
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"layer{'s' if len(names) > 1 else ''} {', '.join(names[:3])}{more}"


def _float_kernels(ops: list[OpUse]) -> list[str]:
    """float16 weights and hybrid (float x int8) ops, which TFLM has no kernels for: one sentence each,
    since a float16 or dynamic-range model has them in nearly every layer."""
    problems = []
    expanded = {(op.subgraph, op.outputs[0].index) for op in ops
                if op.name == "DEQUANTIZE" and op.inputs and op.outputs and op.inputs[0].dtype == "float16"}
    float16 = [op.layer for op in ops if any((op.subgraph, t.index) in expanded for t in op.inputs)]
    if expanded:
        problems.append(f"the float16 weights of {_layers(float16 or ['?'])} need DEQUANTIZE from float16, which "
                        "TensorFlow Lite Micro does not have (it dequantizes int8, int16 and uint8); use --recipe "
                        "int8 or int16x8 for microcontrollers")
    hybrid = [op for op in ops if op.name in _HYBRID and len(op.inputs) > 1 and op.inputs[0].dtype == "float32"
              and op.inputs[1].constant and op.inputs[1].dtype in ("int8", "int4")]
    if hybrid:
        kinds = ", ".join(dict.fromkeys(op.name for op in hybrid))
        problems.append(f"the int8 weights of {_layers([op.layer for op in hybrid])} ({kinds}) meet float "
                        "activations (dynamic-range quantization), and TensorFlow Lite Micro has no such hybrid "
                        "kernels; use --recipe int8 or int16x8 for microcontrollers")
    return problems


def preflight(ops: list[OpUse]) -> tuple[list[str], list[str]]:
    """``(problems, warnings)``: what would make TFLM abort, fail or misread the model (each a
    sentence naming the layer and what to do), and what might abort it on some inputs."""
    problems: list[str] = []
    warnings: list[str] = []
    offset_layers = dict.fromkeys(op.layer for op in ops for t in op.inputs if t.constant and t.offset_buffer)
    if offset_layers:
        problems.append(f"the weights of {', '.join(offset_layers)} are stored after the flatbuffer (Buffer.offset), "
                        "which TensorFlow Lite Micro does not read (it would run on uninitialised memory); convert the "
                        "model with its buffers inline, e.g. with `edgepipe convert`")
    problems += _float_kernels(ops)
    for op in ops:
        if not op.inputs or not op.outputs or op.inputs[0].dtype not in _QUANTIZED:
            continue
        found = None
        if op.name in ("SOFTMAX", "LOG_SOFTMAX") and op.inputs[0].dtype == "int8":
            found = _softmax(op)
            classes = op.inputs[0].shape[-1] if op.inputs[0].shape else 1
            if op.name == "SOFTMAX" and op.outputs[0].dtype == "int8" and classes >= 512:
                warnings.append(f"layer {op.layer} (SOFTMAX) has int8 output over {classes} classes: "
                                "TFLM aborts when 512 or more logits of a sample sit near its maximum")
        elif op.name in ("ADD", "SUB"):
            found = _add_like(op, first_only=False)
        elif op.name in ("ADD_N", "CUMSUM"):
            found = _add_like(op, first_only=True)
        elif op.name == "SQUARED_DIFFERENCE" and not all(_scale(t) > 0 for t in op.inputs[:2]):
            found = (f"layer {op.layer} (SQUARED_DIFFERENCE) has an input without a positive scale, which makes "
                     "TFLM abort; check the calibration data")
        elif op.name in _COMPARISONS and op.inputs[0].dtype == "int8" and not all(0 < _scale(t) < 1 for t in op.inputs[:2]):
            found = (f"layer {op.layer} ({op.name}) compares int8 inputs of range "
                     f"{' and '.join(_range(t) for t in op.inputs[:2])}; TFLM aborts on int8 comparisons of ranges "
                     "above 255: keep the compared values smaller or compare in another form")
        elif op.name == "FULLY_CONNECTED" and op.inputs[0].dtype == "int8":
            found = _fully_connected_bias(op)
        if found:
            problems.append(found)
    return problems, warnings
