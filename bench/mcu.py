"""Microcontroller benchmarks: TFLM evaluation in parallel worker processes vs one worker."""

from __future__ import annotations

import contextlib
import io

import numpy as np

from calibration_data.mlperf_tiny import int8_tflite
from edgecore.model_info import inspect_model
from targets.mcu import tflm

SAMPLES = 300


def tflm_parallel(interleaved, ratio) -> dict:
    """ResNet-8 (MLPerf Tiny image classification, built in code) over 300 samples in TFLM, with
    one worker process and with one per core; the outputs must be identical."""
    with contextlib.redirect_stdout(io.StringIO()):
        blob = int8_tflite("resnet8")
    info = inspect_model(blob)
    x = np.random.default_rng(0).uniform(0, 1, size=(SAMPLES, *info.inputs[0].shape[1:])).astype(np.float32)
    workers = tflm.default_workers()
    outputs = {}

    def run(count: int):
        outputs[count] = tflm.run_isolated(blob, info, x, workers=count)[1][0]

    timed = interleaved({"one_worker": lambda: run(1), "parallel": lambda: run(workers)}, repeats=3)
    return {"speedup": ratio(timed["one_worker"], timed["parallel"]), "workers": workers, "samples": SAMPLES,
            "model": "resnet8 (MLPerf Tiny IC, int8)", "identical_outputs": bool(np.array_equal(outputs[1], outputs[workers])),
            "goal": 1.7}
