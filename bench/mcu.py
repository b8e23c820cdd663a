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


def mcu_latency_loo() -> dict:
    """The MCU cycle model against every published MLPerf Tiny figure it can be checked on: each
    figure predicted with the model refitted without it (calibration_data/calibrate_mcu.py), for
    the fit systems also with the model left out on every system; the bands per dominant class."""
    import time

    from calibration_data.calibrate_mcu import GOAL_PCT, leave_one_out, mlperf_works

    works = mlperf_works()
    started = time.perf_counter()
    result = leave_one_out(works)
    seconds = time.perf_counter() - started
    systems = result["systems"]
    rows = [{key: (round(value, 3) if isinstance(value, float) else value) for key, value in row.items()}
            for row in result["rows"]]
    return {
        "systems": {s: {key: systems[s][key] for key in ("title", "software", "role", "hardware", "core", "kernels",
                                                                     "clock_hz")}
                    | {"profile": systems[s].get("profile"), "cycles_per_pointwise_mac": round(f["g"], 3),
                       "cycles_per_fc_weight_byte": round(f["b"], 3)}
                    for s, f in result["fitted"].items()},
        "rows": rows, "conv_over_pointwise": round(result["fit"].r, 3), "conv_over_pointwise_prior": round(result["r_prior"], 3),
        "bands": {kind: {key: band[key] for key in ("models", "min_error_pct", "max_error_pct", "max_abs_error_pct")}
                  | {"model_unseen_note": band["model_unseen_note"]} for kind, band in result["bands"].items()},
        "goal_abs_pct": GOAL_PCT, "refit_seconds": round(seconds, 3),
    }
