"""Per-layer diagnosis: which layer loses what when quantized, measured one layer at a time.

A debug model (``mlir_quantize(..., enable_numeric_verify=True)``) runs each float op on the
dequantized output of the previous quantized op, so errors do not accumulate, and TensorFlow's
``QuantizationDebugger`` compares every quantized output with its float twin. Layers are ranked by
SNR: the TF guide's RMSE/scale does not flag a layer whose huge range hides everything else.
"""

from __future__ import annotations

import numpy as np

from edgecore.flatbuffer import read_graph
from pipeline.frontend import keras_compat

from .calibration import _quiet, ranges_by_name

PREFIX = "NumericVerify/"


def _snr(floats, quantized, scale, zero_point) -> float:
    reference = np.concatenate([a.ravel() for a in floats]).astype(np.float64)
    restored = (np.concatenate([a.ravel() for a in quantized]).astype(np.float64) - zero_point) * scale
    noise = float(np.mean((reference - restored) ** 2))
    return float(10 * np.log10(max(float(np.mean(reference**2)), 1e-30) / max(noise, 1e-30)))


def _channel_snr(floats, quantized, scale, zero_point) -> float:
    """The median over channels (last axis) of each channel's SNR: a layer whose range is taken
    by one hot channel crushes the others, which the whole-tensor SNR (dominated by the hot
    channel's power) does not show."""
    reference = np.concatenate([a.reshape(-1, a.shape[-1]) for a in floats]).astype(np.float64)
    restored = (np.concatenate([a.reshape(-1, a.shape[-1]) for a in quantized]).astype(np.float64) - zero_point) * scale
    signal = np.mean(reference**2, axis=0)
    noise = np.mean((reference - restored) ** 2, axis=0)
    live = signal > 0
    if not live.any():
        return 300.0
    return float(np.median(10 * np.log10(signal[live] / np.maximum(noise[live], 1e-30))))


def _rmse(floats, quantized, scale, zero_point) -> float:
    reference = np.concatenate([a.ravel() for a in floats]).astype(np.float64)
    restored = (np.concatenate([a.ravel() for a in quantized]).astype(np.float64) - zero_point) * scale
    return float(np.sqrt(np.mean((reference - restored) ** 2)))


def layer_table(calibrated: bytes, samples: np.ndarray) -> list[dict]:
    """One row per quantized op output: layer, op, range, scale, RMSE, RMSE/scale, SNR and median
    per-channel SNR; worst first."""
    tf = keras_compat.tensorflow()
    from tensorflow.lite.python.convert import mlir_quantize

    with _quiet("the per-layer debug model"):
        debug = mlir_quantize(calibrated, enable_numeric_verify=True, input_data_type=tf.float32,
                              output_data_type=tf.float32)
        options = tf.lite.experimental.QuantizationDebugOptions(
            layer_direct_compare_metrics={"snr_db": _snr, "channel_snr_db": _channel_snr, "rmse": _rmse})
        debugger = tf.lite.experimental.QuantizationDebugger(
            quant_debug_model_content=debug, debug_options=options,
            debug_dataset=lambda: ([samples[i:i + 1]] for i in range(len(samples))))
        debugger.run()
    ranges = ranges_by_name(calibrated)
    ops = [op for op in read_graph(bytes(calibrated)).ops if op.subgraph == 0 and op.outputs]
    rows = []
    for key, stats in debugger.layer_statistics.items():
        tensor = key[len(PREFIX):] if key.startswith(PREFIX) else key
        matches = [op for op in ops if tensor.startswith(op.outputs[0].name)]
        if not matches:
            continue
        op = max(matches, key=lambda o: len(o.outputs[0].name))
        low, high = ranges.get(op.outputs[0].name, (None, None))
        scale = (high - low) / 255 if low is not None else None
        rows.append({"layer": op.layer, "op": op.name, "tensor": op.outputs[0].name,
                     "range": None if low is None else [round(low, 6), round(high, 6)],
                     "scale": scale, "rmse": stats["rmse"],
                     "rmse_over_scale": None if not scale else stats["rmse"] / scale,
                     "snr_db": round(min(stats["snr_db"], 300.0), 2),
                     "channel_snr_db": round(min(stats["channel_snr_db"], 300.0), 2)})
    return sorted(rows, key=severity)


BOUNDED = {"SOFTMAX", "LOGISTIC", "TANH", "LOG_SOFTMAX"}


def severity(row: dict) -> float:
    """How much a layer loses, in dB (lower is worse): the lower of the whole-tensor and median
    per-channel SNR, except for ops with a fixed output range (softmax, sigmoid), whose many
    near-zero channels make per-channel SNR meaningless."""
    return row["snr_db"] if row["op"] in BOUNDED else min(row["snr_db"], row["channel_snr_db"])


def worst_layer(rows: list[dict]) -> dict | None:
    """The layer that loses most, among ops that compute (not ones that only move data)."""
    from .islands import PASSTHROUGH

    computing = [row for row in rows if row["op"] not in PASSTHROUGH and row["op"] not in BOUNDED]
    return computing[0] if computing else None
