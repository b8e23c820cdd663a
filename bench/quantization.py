"""Quantization benchmarks: what --calibration auto costs over a plain conversion."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pipeline import api
from pipeline.config import ConvertConfig
from targets import RunOptions


def auto_calibration_cost(interleaved, ratio) -> dict:
    """The demo conversion (500 calibration, 1,500 eval samples, host) with --calibration auto
    against the same conversion with the default min/max, interleaved in one process."""
    base = dict(model=api.sample_path("reference_cnn.keras"), calib=api.sample_path("mnist", "calib.npz"),
                eval=api.sample_path("mnist", "eval.npz"), overwrite=True, run=RunOptions(runs=20))
    with tempfile.TemporaryDirectory() as work:
        out = Path(work)
        api.convert(ConvertConfig(out=out / "warm", **base))  # TensorFlow's first use is not what is measured
        timed = interleaved({
            "plain": lambda: api.convert(ConvertConfig(out=out / "plain", **base)),
            "auto": lambda: api.convert(ConvertConfig(out=out / "auto", calibration="auto", **base)),
        })
    return {"auto_over_plain": ratio(timed["auto"], timed["plain"]), "goal": 3.0,
            "what": "demo conversion, --calibration auto / default min/max"}
