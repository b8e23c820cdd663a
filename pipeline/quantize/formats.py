"""Number formats side by side: what each costs in accuracy, size and weight fidelity.

float32, float16, bfloat16, int8 with per-channel or per-tensor weights, int8 with asymmetric or
symmetric activations, int16x8. No TFLite path writes bfloat16 (the converter accepts
``supported_types=[tf.bfloat16]`` and silently writes float32), so bfloat16 is simulated: weights
rounded to bfloat16 and, through Keras' ``mixed_bfloat16`` policy, compute; it is labelled so.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pipeline.vocab import Recipe
from targets import RunOptions, get_target

from .calibration import CalibrationWork
from .convert import convert_model
from .verify import compare

log = logging.getLogger("edgepipe")

WEIGHTED = {"Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "DepthwiseConv1D", "SeparableConv2D", "Dense",
            "Conv2DTranspose", "EinsumDense"}


def bfloat16(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), back in float32."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def _sqnr(reference: np.ndarray, approximation: np.ndarray) -> float | None:
    noise = float(np.sum((reference.astype(np.float64) - approximation) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return None if noise == 0 else round(10 * np.log10(max(signal, 1e-30) / noise), 2)


def _int8(kernel: np.ndarray, per_channel: bool) -> np.ndarray:
    """TFLite's symmetric narrow-range int8 weights ([-127, 127]), per output channel or tensor."""
    flat = kernel.reshape(-1, kernel.shape[-1]) if per_channel else kernel.reshape(-1, 1)
    scale = np.maximum(np.abs(flat).max(axis=0), 1e-30) / 127
    return (np.clip(np.round(flat / scale), -127, 127) * scale).reshape(kernel.shape)


def weight_sqnr(keras_model) -> list[dict[str, Any]]:
    """Per weighted layer: the SQNR (dB) of its kernel stored in each format (None: exact)."""
    rows = []
    for layer in keras_model.layers:
        if type(layer).__name__ not in WEIGHTED or not layer.get_weights():
            continue
        kernel = np.asarray(layer.get_weights()[0], dtype=np.float32)
        if type(layer).__name__.startswith("Depthwise"):
            kernel = kernel.reshape(*kernel.shape[:-2], -1)  # channels = in x multiplier
        rows.append({"layer": layer.name, "class": type(layer).__name__, "weights": int(kernel.size),
                     "float16": _sqnr(kernel, kernel.astype(np.float16).astype(np.float32)),
                     "bfloat16": _sqnr(kernel, bfloat16(kernel)),
                     "int8_per_channel": _sqnr(kernel, _int8(kernel, True)),
                     "int8_per_tensor": _sqnr(kernel, _int8(kernel, False))})
    return rows


def _bfloat16_model(keras_model):
    """A clone computing under ``mixed_bfloat16`` with bfloat16-rounded weights, or None."""

    def policy(value):
        if isinstance(value, dict):
            if value.get("class_name") == "DTypePolicy":
                return {**value, "config": {**value.get("config", {}), "name": "mixed_bfloat16"}}
            return {key: policy(item) for key, item in value.items()}
        if isinstance(value, list):
            return [policy(item) for item in value]
        return value

    try:
        clone = type(keras_model).from_config(policy(keras_model.get_config()))
        clone.set_weights([bfloat16(np.asarray(w)) for w in keras_model.get_weights()])
        return clone
    except Exception as exc:  # a model whose config does not round-trip (custom or legacy layers)
        log.info("bfloat16 simulation unavailable: %s", exc)
        return None


def formats_table(work: CalibrationWork, data, float_outputs: np.ndarray, *, float_io: bool) -> list[dict]:
    """One row per format on ``data``: accuracy, agreement, output SNR, size; how it was made."""
    model = work.model
    made: list[tuple[str, bytes | None, str]] = [
        ("float32", convert_model(model, Recipe.FLOAT32), "TFLite float32"),
        ("float16", convert_model(model, Recipe.FLOAT16), "TFLite float16 weights"),
        ("int8 per-channel, asymmetric", work.int8("minmax", float_io=float_io), "TFLite int8 (the default)"),
        ("int8 per-tensor weights", work.int8("minmax", per_tensor=True, float_io=float_io), "TFLite int8"),
        ("int8 symmetric activations", work.int8("minmax", symmetric_activations=True, float_io=float_io),
         "TFLite int8, zero points 0"),
        ("int16x8", convert_model(model, Recipe.INT16X8, work.fit), "TFLite int16 activations, int8 weights"),
    ]
    host = get_target("host")
    rows = []
    for name, artifact, how in made:
        result = host.run(artifact, data.x, data.y, RunOptions(warmup=0, runs=1))
        found = compare(float_outputs, result.outputs, data.y)
        rows.append({"format": name, "how": how, "bytes": len(artifact), "accuracy": found.accuracy,
                     "agreement": found.agreement, "snr_db": found.output_error["snr_db"], "simulated": False})
    if model.keras_model is not None:
        clone = _bfloat16_model(model.keras_model)
        if clone is not None:
            outputs = np.concatenate([np.asarray(clone(data.x[i:i + 256], training=False), dtype=np.float32)
                                      for i in range(0, data.samples, 256)])
            found = compare(float_outputs, outputs, data.y)
            rows.insert(2, {"format": "bfloat16", "how": "simulated in Keras: bfloat16 weights, mixed_bfloat16 compute "
                            "(no TFLite path writes bfloat16)", "bytes": rows[0]["bytes"] // 2, "accuracy": found.accuracy,
                            "agreement": found.agreement, "snr_db": found.output_error["snr_db"], "simulated": True})
    return rows
