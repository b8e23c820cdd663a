"""Quantization benchmarks: what --calibration auto costs over a plain conversion."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pipeline import api
from pipeline.core.config import ConvertConfig
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


def compare_cost(interleaved, ratio) -> dict:
    """compare with 3 recipes x 2 targets (host, cortex-m4) on the demo, against the 3 equivalent
    single conversions run back to back in the same process (so start-up is paid once by both)."""
    recipes = ("int8", "int16x8", "float16")
    base = dict(model=api.sample_path("reference_cnn.keras"), calib=api.sample_path("mnist", "calib.npz"),
                eval=api.sample_path("mnist", "eval.npz"), overwrite=True, targets=("host", "cortex-m4"),
                run=RunOptions(runs=20))
    with tempfile.TemporaryDirectory() as work:
        out = Path(work)
        api.convert(ConvertConfig(out=out / "warm", **base))

        def singles():
            for recipe in recipes:
                try:
                    api.convert(ConvertConfig(out=out / recipe, recipe=recipe, **base))
                except Exception:  # float16 cannot run in TFLM: the single run fails there, as a user's would
                    api.convert(ConvertConfig(out=out / recipe, recipe=recipe, **{**base, "targets": ("host",)}))

        timed = interleaved({"compare": lambda: api.convert(ConvertConfig(out=out / "compare", recipes=recipes, **base)),
                             "singles": singles}, repeats=3)
    return {"compare_over_singles": ratio(timed["compare"], timed["singles"]), "goal": 1.5,
            "what": "compare 3 recipes x 2 targets / the 3 single conversions"}
