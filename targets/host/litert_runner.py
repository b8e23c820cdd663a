"""The LiteRT evaluation and timing loops for in-process targets.

The loops themselves are :mod:`targets.host.device_runner`'s (shared with devices and the emulator);
this module quantizes inputs once with the model's own scale and zero point and dequantizes the
outputs.
"""

from __future__ import annotations

import logging

import numpy as np

from edgecore.errors import TargetError, first_line
from edgecore.metrics import latency_summary
from edgecore.model_info import ModelInfo, dequantize, quantize
from edgecore.progress import progress

from . import device_runner
from .runtime import delegation, make_interpreter

log = logging.getLogger(__name__)


def evaluate(model: bytes, info: ModelInfo, x: np.ndarray, *, kernels: str, threads: int | None,
             batch_size: int, label: str | None = None) -> tuple[np.ndarray, int]:
    """Dequantized first outputs for every row of ``x``, and the batch used (``batch_size``
    samples per invoke when the batch dimension is dynamic, else 1). ``label`` names the
    progress shown on stderr for a long evaluation."""
    raw, batch = evaluate_raw(model, info, quantize(x, info.inputs[0]), kernels=kernels, threads=threads,
                              batch_size=batch_size, label=label)
    return dequantize(raw, info.outputs[0]), batch


def evaluate_raw(model: bytes, info: ModelInfo, q: np.ndarray, *, kernels: str, threads: int | None,
                 batch_size: int, label: str | None = None) -> tuple[np.ndarray, int]:
    """Raw outputs for inputs already in the model's input type."""
    batch = max(1, min(batch_size, len(q))) if info.inputs[0].dynamic_batch else 1
    interpreter = make_interpreter(model, kernels=kernels, threads=threads)
    with progress(len(q) if label else 0, label or "", log) as advance:
        try:
            return device_runner.run_batches(interpreter, q, batch, report=advance if label else None), batch
        except (RuntimeError, ValueError) as exc:  # a kernel refused the data (an id beyond an embedding table),
            # or a damaged model's tensors do not fit what they are given ("Cannot set tensor: Dimension mismatch")
            raise TargetError(f"LiteRT could not run the model on these inputs ({first_line(exc)}); check that the "
                              "data is what the model takes (shape, range, token ids within the vocabulary).") from exc


def time_invocations(model: bytes, info: ModelInfo, sample: np.ndarray, *, kernels: str,
                     threads: int | None, warmup: int, runs: int) -> tuple[dict, dict]:
    """Latency of single-sample inference after warm-up, and what the delegate took."""
    interpreter = make_interpreter(model, kernels=kernels, threads=threads)
    try:
        samples = device_runner.time_invokes(interpreter, quantize(sample[:1], info.inputs[0]), warmup, runs)
    except (RuntimeError, ValueError) as exc:  # "Input tensor 3 lacks data": a constant without its buffer
        raise TargetError(f"LiteRT could not run the model ({first_line(exc)}); the file may be damaged: convert "
                          "the model again (e.g. with `edgepipe convert`) or copy it again.") from exc
    return latency_summary(samples), delegation(interpreter)
