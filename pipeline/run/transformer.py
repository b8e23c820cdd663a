"""The lint-and-rewrite step: find what in the float graph breaks quantization or TFLite Micro,
rewrite stock transformer layers into equivalents that quantize, check the float outputs still
match, and hand the rewritten model to the stages that convert (``convert``, ``compare``) or
measure (``inspect``).

The float32 ``.tflite`` the lint reads is kept as the run's float baseline, so a model with
nothing to rewrite (a CNN) pays no extra conversion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from pipeline.errors import ConversionError, first_line
from pipeline.frontend.lint import Finding, lint
from pipeline.frontend.loading import LoadedModel
from pipeline.frontend.rewrite import (
    CHECK_SAMPLES,
    MAX_RELATIVE_DIFFERENCE,
    output_difference,
    rewritable_layers,
    rewrite_kind,
    swap_layers,
)
from pipeline.quantize.convert import convert_model
from pipeline.vocab import Recipe
from targets import Capability, get_target

from .context import Context
from .stages import load_float_model

log = logging.getLogger("edgepipe")


@dataclass
class EdgeModel:
    """The model to convert (rewritten, or the one given), its float32 .tflite and lint, and
    what was rewritten (None when nothing was)."""

    model: LoadedModel
    float_artifact: bytes = field(repr=False)
    findings: list[Finding]
    rewrite: dict[str, Any] | None = None


def _layer_names(model: LoadedModel) -> list[str]:
    if model.keras_model is None:
        return []
    return [layer.name for layer in model.keras_model._flatten_layers(include_self=True)]


def edge_model(model: LoadedModel, reload: Callable[[], LoadedModel], samples: np.ndarray, *,
               rewrite: bool = True, dynamic_batch: bool = False,
               matters: Callable[[Finding], bool] = lambda finding: True) -> EdgeModel:
    """Lint ``model``'s float graph; with ``rewrite``, rewrite (in a fresh copy, ``reload()``)
    the stock layers of each kind whose rewrite removes a finding that ``matters`` to the run,
    refuse the rewrite if its float outputs on ``samples`` move by more than
    ``MAX_RELATIVE_DIFFERENCE``, and lint the rewritten graph."""
    names = _layer_names(model)
    float_model = convert_model(model, Recipe.FLOAT32, dynamic_batch=dynamic_batch)
    findings = lint(float_model, names)
    kinds = {f.rewrite for f in findings if f.rewrite and matters(f)}
    fixable = {layer.name for layer in rewritable_layers(model.keras_model) if rewrite_kind(layer) in kinds} \
        if rewrite else set()
    if not fixable:
        return EdgeModel(model, float_model, findings)
    rewritten = reload()  # a fresh copy: the original stays the float reference
    applied = swap_layers(rewritten.keras_model, only=fixable)
    try:
        difference = output_difference(model.predict(samples), rewritten.predict(samples))
    except Exception as exc:  # TensorFlow raises many types; the rewrite is then not for this model
        raise ConversionError(f"the edge-friendly rewrite of {', '.join(a['layer'] for a in applied)} does not run on "
                              f"this model ({first_line(exc)}); convert without it with --no-rewrite.") from exc
    log.info("rewrote %d layers (%s); float outputs differ by at most %.3g (%.3g relative) on %d samples",
             len(applied), ", ".join(sorted({a["rewrite"] for a in applied})), difference["max_abs_difference"],
             difference["max_relative_difference"], len(samples))
    if difference["max_relative_difference"] > MAX_RELATIVE_DIFFERENCE:
        raise ConversionError(
            f"the edge-friendly rewrite of {', '.join(a['layer'] for a in applied)} changes the float outputs by "
            f"{difference['max_relative_difference']:.3g} of their largest value (more than "
            f"{MAX_RELATIVE_DIFFERENCE:g}); convert without it with --no-rewrite.")
    record = {"applied": applied, **difference, "samples": len(samples),
              "lint_before": [f.to_dict() for f in findings]}
    float_model = convert_model(rewritten, Recipe.FLOAT32, dynamic_batch=dynamic_batch)
    return EdgeModel(rewritten, float_model, lint(float_model, names), record)


def check_samples(model: LoadedModel, *datasets) -> np.ndarray:
    """Samples to compare a rewritten model with the original on: the first data given, else zeros."""
    data = next((d for d in datasets if d is not None), None)
    if data is not None:
        return data.x[:CHECK_SAMPLES]
    return np.zeros((CHECK_SAMPLES, *model.input_shape[1:]), dtype=np.dtype(model.input_dtype))


def lint_and_rewrite(ctx: Context) -> None:
    """Stage: lint the float graph; unless ``--no-rewrite`` (or QAT, which trains the stock
    layers), rewrite what a rewrite fixes of what matters to this run's recipes and targets,
    verified; warn about what still matters."""
    config = ctx.config
    recipes = {spec.made.recipe for spec in ctx.plan.candidates} or {config.recipe}
    tflm = any(Capability.ARENA in get_target(name).capabilities for name in config.targets)
    found = edge_model(ctx.model, lambda: load_float_model(config), check_samples(ctx.model, ctx.calib, ctx.eval),
                       rewrite=config.rewrite and config.qat is None, dynamic_batch=config.dynamic_batch,
                       matters=lambda finding: finding.matters(recipes, tflm))
    if found.rewrite is not None:
        ctx.source_model, ctx.model, ctx.rewrite = ctx.model, found.model, found.rewrite
    ctx.float_artifact = found.float_artifact
    ctx.lint = [f.to_dict() for f in found.findings]
    for finding in found.findings:
        if finding.matters(recipes, tflm):
            hint = " (--no-rewrite is set)" if finding.rewrite and not config.rewrite else ""
            log.warning("lint: %s%s", finding.message, hint)
