"""``edgepipe inspect``: why int8 loses what it loses, before choosing what to ship.

Per layer (SNR of each quantized op against its float twin, worst first), number formats side by
side, and how accuracy moves with the size of the calibration set.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.config import (
    DEFAULT_CALIB_SAMPLES,
    PreprocessOverrides,
    _from_dict,
    _number,
    _path,
    _set,
    parse_shape,
)
from pipeline.core.data import compare_sets, fit_to_model, load_dataset
from pipeline.core.environment import environment
from pipeline.errors import UsageError
from pipeline.quantize.calibration import CalibrationWork, ranges_by_name
from pipeline.quantize.convert import convert_model
from pipeline.quantize.diagnosis import layer_table
from pipeline.quantize.formats import formats_table, weight_sqnr
from pipeline.quantize.verify import compare
from pipeline.vocab import Recipe
from targets import RunOptions, get_target

from .stages import load_float_model
from .transformer import check_samples, edge_model

log = logging.getLogger("edgepipe")
LAYER_SAMPLES = 200


@dataclass(frozen=True)
class InspectConfig:
    """What ``inspect`` looks at: the model, calibration data, optional eval data, what to add."""

    model: Path
    calib: Path
    eval: Path | None = None
    unsafe: bool = False
    calib_samples: int | None = DEFAULT_CALIB_SAMPLES
    formats: bool = True
    calib_sweep: tuple[int, ...] = ()
    preprocess: PreprocessOverrides = field(default_factory=PreprocessOverrides)
    input_shape: tuple[int, ...] | None = None
    rewrite: bool = True  # inspect what convert would quantize: the model with its edge rewrites

    def __post_init__(self) -> None:
        _set(self, "model", _path(self.model, "model", optional=False))
        _set(self, "calib", _path(self.calib, "calib", optional=False))
        _set(self, "eval", _path(self.eval, "eval", optional=True))
        _number(self, "calib_samples", int, 1, optional=True)
        sweep = tuple(self.calib_sweep)
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sweep):
            raise UsageError(f"calib_sweep must be whole numbers of at least 1, not {self.calib_sweep!r}.")
        _set(self, "calib_sweep", sweep)
        if isinstance(self.preprocess, dict):
            _set(self, "preprocess", PreprocessOverrides.from_dict(self.preprocess))
        _set(self, "input_shape", parse_shape(self.input_shape))

    def to_dict(self) -> dict[str, Any]:
        return {"model": str(self.model), "calib": str(self.calib), "eval": None if self.eval is None else str(self.eval),
                "unsafe": self.unsafe, "calib_samples": self.calib_samples, "formats": self.formats,
                "calib_sweep": list(self.calib_sweep), "preprocess": self.preprocess.to_dict(),
                "input_shape": list(self.input_shape) if self.input_shape else None, "rewrite": self.rewrite}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "InspectConfig":
        return _from_dict(cls, data, "inspect config")


def inspect_model(config: InspectConfig) -> dict[str, Any]:
    """The inspection report (see the README for its keys)."""
    model = load_float_model(config)
    spec = model.preprocess(config.preprocess)
    calib = fit_to_model(load_dataset(config.calib, spec, role="--calib"), model.output_shape, model.id_limit, "--calib")
    data = fit_to_model(load_dataset(config.eval, calib.preprocess, role="--eval"), model.output_shape, model.id_limit,
                        "--eval") if config.eval else None
    # What convert would quantize: the model with its edge rewrites (the float reference is the same).
    edge = edge_model(model, lambda: load_float_model(config), check_samples(model, calib), rewrite=config.rewrite)
    source, model = model, edge.model
    warnings = [*calib.warnings, *(data.warnings if data else ()), *(compare_sets(calib, data) if data else ())]
    judged = data or calib.head(config.calib_samples)
    work = CalibrationWork(model, calib.head(config.calib_samples), None)
    log.info("per-layer SNR on %d samples", min(judged.samples, LAYER_SAMPLES))
    report: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": model.describe(), "config": config.to_dict(), "preprocess": calib.preprocess.to_dict(),
        "data": {"calib": calib.describe(), "eval": data.describe() if data else None, "judged_on": "eval" if data else "calib",
                 **({"warnings": warnings} if warnings else {})},
        "layers": layer_table(work.calibrated, judged.x[:LAYER_SAMPLES]),
        "lint": [f.to_dict() for f in edge.findings],
    }
    if edge.rewrite is not None:
        report["rewrite"] = edge.rewrite
    report["effects"] = _effects(work, judged, report["layers"])
    if config.formats or config.calib_sweep:
        float_outputs = source.predict(judged.x)  # the user's model, not its rewrite
    if config.formats:
        log.info("number formats side by side on %d samples", judged.samples)
        report["formats"] = formats_table(work, judged, float_outputs, float_io=False)
        if model.keras_model is not None:
            report["weights"] = weight_sqnr(model.keras_model)
    if config.calib_sweep:
        report["calib_sweep"] = _sweep(model, calib, judged, float_outputs, config.calib_sweep)
    report["environment"] = environment()
    return report


def _effects(work: CalibrationWork, judged, layers: list[dict]) -> dict[str, Any]:
    """Each op group's measured effect on the measure (accuracy, perplexity, error): how much of the
    int8 drop goes when that group alone computes in int16 (``--int16-layers LAYER:OP``). Also put
    beside the SNR in the per-layer rows, which rank by SNR alone."""
    from dataclasses import replace as _replace

    from pipeline.quantize.int16_islands import measure_effects
    from pipeline.quantize.selection import score

    judging = _replace(work, select=judged.head(LAYER_SAMPLES))
    int8 = judging.int8("minmax")
    base = score(judging, int8)
    log.info("effect of each op group in int16 on %s (%d samples)", base.measure, judging.select.samples)
    ranges = ranges_by_name(work.calibrated)
    rows = measure_effects(int8, lambda blob: score(judging, blob), base=base, ranges=ranges)
    by_group = {row["group"]: row["effect"] for row in rows}
    for layer in layers:
        layer["effect"] = by_group.get(f"{layer['layer']}:{layer['op']}")
    return {"measure": base.measure, "int8_drop": round(base.drop, 4), "samples": judging.select.samples,
            "method": "int8 drop minus the drop with that op group alone in int16 (the rest int8)", "groups": rows}


def _sweep(model, calib, judged, float_outputs, sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    """int8 (min/max) calibrated on the first N samples, for each N: how the figures move."""
    host, rows = get_target("host"), []
    for size in sizes:
        if size > calib.samples:
            rows.append({"samples": size, "skipped": f"--calib has only {calib.samples} samples"})
            continue
        log.info("calibration sweep: %d samples", size)
        artifact = convert_model(model, Recipe.INT8, calib, calib_samples=size)
        found = compare(float_outputs, host.run(artifact, judged.x, judged.y, RunOptions(warmup=0, runs=1)).outputs,
                        judged.y)
        rows.append({"samples": size, "accuracy": found.accuracy, "agreement": found.agreement,
                     "snr_db": found.output_error["snr_db"]})
    return rows
