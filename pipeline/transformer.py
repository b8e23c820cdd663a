"""The lint-and-rewrite stage: find what in the float graph breaks quantization or TFLite Micro,
rewrite stock transformer layers into equivalents that quantize, check the float outputs still
match, and hand the rewritten model to the stages that convert.

The float32 ``.tflite`` the lint reads is kept as the run's float baseline, so a model with
nothing to rewrite (a CNN) pays no extra conversion.
"""

from __future__ import annotations

import logging

import numpy as np

from targets import Capability, get_target

from .context import Context
from .convert import convert_model
from .errors import ConversionError
from .lint import lint
from .rewrite import (
    CHECK_SAMPLES,
    MAX_RELATIVE_DIFFERENCE,
    output_difference,
    rewritable_layers,
    rewrite_kind,
    swap_layers,
)
from .stages import load_float_model
from .vocab import Recipe

log = logging.getLogger("edgepipe")


def _layer_names(model) -> list[str]:
    keras_model = model.keras_model
    if keras_model is None:
        return []
    return [layer.name for layer in keras_model._flatten_layers(include_self=True)]


def _check_samples(ctx: Context) -> np.ndarray:
    """Samples to compare the rewritten model with the original on: calibration data, else eval."""
    data = ctx.calib if ctx.calib is not None else ctx.eval
    if data is not None:
        return data.x[:CHECK_SAMPLES]
    shape = ctx.model.input_shape[1:]
    return np.zeros((CHECK_SAMPLES, *shape), dtype=np.dtype(ctx.model.input_dtype))


def lint_and_rewrite(ctx: Context) -> None:
    """Lint the float graph; unless ``--no-rewrite``, rewrite what a rewrite fixes, verify, lint again."""
    config = ctx.config
    names = _layer_names(ctx.model)
    float_model = convert_model(ctx.model, Recipe.FLOAT32, dynamic_batch=config.dynamic_batch)
    findings = lint(float_model, names)
    kinds = {f.rewrite for f in findings if f.rewrite}
    fixable = [layer for layer in rewritable_layers(ctx.model.keras_model)
               if rewrite_kind(layer) in kinds] if config.rewrite and config.qat is None else []
    if fixable:
        rewritten = load_float_model(config)  # a fresh copy: the original stays the float reference
        wanted = {layer.name for layer in fixable}
        applied = swap_layers(rewritten.keras_model, only=wanted)
        samples = _check_samples(ctx)
        difference = output_difference(ctx.model.predict(samples), rewritten.predict(samples))
        log.info("rewrote %d layers (%s); float outputs differ by at most %.3g (%.3g relative) on %d samples",
                 len(applied), ", ".join(sorted({a["rewrite"] for a in applied})),
                 difference["max_abs_difference"], difference["max_relative_difference"], len(samples))
        if difference["max_relative_difference"] > MAX_RELATIVE_DIFFERENCE:
            raise ConversionError(
                f"the edge-friendly rewrite of {', '.join(a['layer'] for a in applied)} changes the float outputs by "
                f"{difference['max_relative_difference']:.3g} of their largest value (more than "
                f"{MAX_RELATIVE_DIFFERENCE:g}); convert without it with --no-rewrite.")
        ctx.rewrite = {"applied": applied, **difference, "samples": len(samples),
                       "lint_before": [f.to_dict() for f in findings]}
        ctx.source_model, ctx.model = ctx.model, rewritten
        float_model = convert_model(rewritten, Recipe.FLOAT32, dynamic_batch=config.dynamic_batch)
        findings = lint(float_model, names)
    ctx.float_artifact = float_model
    ctx.lint = [f.to_dict() for f in findings]
    recipes = {spec.made.recipe for spec in ctx.plan.candidates} or {config.recipe}
    tflm = any(Capability.ARENA in get_target(name).capabilities for name in config.targets)
    for finding in findings:
        if finding.matters(recipes, tflm):
            hint = " (--no-rewrite is set)" if finding.rewrite and not config.rewrite else ""
            log.warning("lint: %s%s", finding.message, hint)

