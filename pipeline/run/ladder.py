"""The accuracy-budget ladder: try cheaper models first, stop at the first within the budget.

A rung meets the budget when its drop on the held-out data plus one standard error is within it
(see :class:`pipeline.quantize.selection.Score`), so a lucky draw of few samples does not pick it.

int8 with the default calibration, int8 with the best calibration, int8 with float islands (only
where every requested target allows float ops), int16x8, float16, float32. Each rung is judged by
its drop on held-out calibration data (never ``--eval``); a rung a requested target cannot run is
skipped with the reason.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from pipeline.core.candidates import CandidateSpec, Made
from pipeline.quantize.selection import score
from pipeline.vocab import Calibration, Recipe
from targets import Capability, get_target

from .context import Context
from .stages import make_baseline, make_candidate

log = logging.getLogger("edgepipe")

_INT8 = Made.for_recipe(Recipe.INT8)
RUNGS = (
    CandidateSpec("int8", "model_int8.tflite", _INT8),
    CandidateSpec("int8/calibrated", "model_int8_calibrated.tflite", replace(_INT8, calibration=Calibration.AUTO)),
    CandidateSpec("int8/float-islands", "model_int8_float_islands.tflite",
                  replace(_INT8, calibration=Calibration.AUTO, float_layers=("auto",))),
    CandidateSpec("int16x8", "model_int16x8.tflite", Made.for_recipe(Recipe.INT16X8)),
    CandidateSpec("float16", "model_float16.tflite", Made.for_recipe(Recipe.FLOAT16)),
    CandidateSpec("float32", "model_float32.tflite", Made.for_recipe(Recipe.FLOAT32)),
)


def _float_refusal(ctx: Context, spec: CandidateSpec) -> str | None:
    """Why a rung with float compute is skipped: microcontroller targets stay full int8."""
    floats = bool(spec.made.float_layers) or spec.made.recipe in (Recipe.FLOAT16, Recipe.FLOAT32)
    strict = [name for name in ctx.config.targets if Capability.FLOAT_OPS not in get_target(name).capabilities]
    if floats and strict and not ctx.config.allow_float_on_mcu:
        return f"computes in float, and {', '.join(strict)} stay full int8 (--allow-float-on-mcu allows it)"
    return None


def _target_refusal(ctx: Context, artifact: bytes) -> str | None:
    for name in ctx.config.targets:
        problems = get_target(name).check(artifact)
        if problems:
            return f"{name} cannot run it: {'; '.join(problems)}"
    return None


def ladder(ctx: Context) -> None:
    """Make rungs in order until one's drop on the held-out data is within the budget."""
    budget, work = ctx.config.max_accuracy_drop, ctx.calibration
    tried, chosen = [], None
    for spec in RUNGS:
        reason = _float_refusal(ctx, spec)
        if reason:
            tried.append({"candidate": spec.name, "skipped": reason})
            log.info("ladder: %s skipped: %s", spec.name, reason)
            continue
        candidate = make_candidate(ctx, spec)
        made = candidate.made
        if spec.made.calibration is Calibration.AUTO and not spec.made.float_layers and made.converter_default:
            ctx.candidates.remove(candidate)  # auto chose min/max: the rung before already was this model
            tried.append({"candidate": spec.name, "skipped": "the best calibration is min/max, the rung before"})
            continue
        reason = _target_refusal(ctx, candidate.artifact)
        if reason:
            ctx.candidates.remove(candidate)
            tried.append({"candidate": spec.name, "skipped": reason})
            log.info("ladder: %s skipped: %s", spec.name, reason)
            continue
        found = score(work, candidate.artifact)
        met = found.drop_upper <= budget + 1e-9
        tried.append({"candidate": spec.name, "made": made.to_dict(), "bytes": len(candidate.artifact),
                      **found.to_dict(), "met": met})
        log.info("ladder: %s %s drop %.2f points (+1 s.e. %.2f; budget %.2f): %s", spec.name, found.measure,
                 found.drop, found.drop_upper, budget, "met" if met else "not met")
        if met:
            chosen = spec.name
            break
    measured = [row for row in tried if "drop" in row]
    if chosen is None and measured:
        chosen = min(measured, key=lambda row: row["drop"])["candidate"]
        log.warning("ladder: no rung met the %.2f-point budget; choosing %s, the closest", budget, chosen)
    if chosen is None:
        raise_no_rung(tried)
    ctx.ladder = {"budget": budget, "held_out_samples": work.select.samples, "tried": tried, "chosen": chosen,
                  "met": any(row.get("met") for row in tried)}
    make_baseline(ctx)


def raise_no_rung(tried: list[dict]) -> None:
    from pipeline.errors import TargetError

    reasons = "; ".join(f"{row['candidate']}: {row['skipped']}" for row in tried)
    raise TargetError(f"no rung of the ladder can run on the requested targets ({reasons}).")
