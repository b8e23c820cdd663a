"""The LiteRT evaluation and timing loops, shared by every target that runs LiteRT.

Kept tight on purpose: inputs are quantized once for the whole set, each batch is one
``set_tensor`` / ``invoke`` / ``get_tensor``, and nothing else happens per inference.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from .graph import ModelInfo, dequantize, quantize
from .metrics import latency_summary
from .runtime import delegation, make_interpreter

log = logging.getLogger(__name__)


def evaluate(model: bytes, info: ModelInfo, x: np.ndarray, *, kernels: str, threads: int | None,
             batch_size: int) -> tuple[np.ndarray, int]:
    """Outputs (dequantized float32, first output) for every row of ``x``, and the batch used.

    Models with a dynamic batch dimension run ``batch_size`` samples per invoke; the last batch is
    padded so the interpreter is resized once. Others run one sample at a time.
    """
    source, target = info.inputs[0], info.outputs[0]
    batch = max(1, min(batch_size, len(x))) if source.dynamic_batch else 1
    interpreter = make_interpreter(model, kernels=kernels, threads=threads)
    if batch != 1:
        interpreter.resize_tensor_input(source.index, [batch, *source.shape[1:]])
    interpreter.allocate_tensors()
    out_index = interpreter.get_output_details()[0]["index"]
    q = quantize(x, source)
    padding = (-len(q)) % batch
    if padding:
        q = np.concatenate([q, np.repeat(q[-1:], padding, axis=0)])
    results = []
    for start in range(0, len(q), batch):
        interpreter.set_tensor(source.index, q[start:start + batch])
        interpreter.invoke()
        results.append(interpreter.get_tensor(out_index))
    outputs = np.concatenate(results)[: len(x)]
    return dequantize(outputs, target), batch


def time_invocations(model: bytes, info: ModelInfo, sample: np.ndarray, *, kernels: str,
                     threads: int | None, warmup: int, runs: int) -> tuple[dict, dict]:
    """Latency of single-sample inference after warm-up, and what the delegate took."""
    interpreter = make_interpreter(model, kernels=kernels, threads=threads)
    interpreter.allocate_tensors()
    source = info.inputs[0]
    interpreter.set_tensor(source.index, quantize(sample[:1], source))
    for _ in range(warmup):
        interpreter.invoke()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(runs):
        start = clock()
        interpreter.invoke()
        samples.append(clock() - start)
    return latency_summary(samples), delegation(interpreter)
