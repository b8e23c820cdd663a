"""The accuracy-budget ladder: try cheaper models first, stop at the first within the budget.

A rung meets the budget when a one-sided 95% upper confidence bound on its drop on the held-out data
is within it (Clopper-Pearson on the paired flips for accuracy and agreement, a bootstrap for perplexity
and relative error; see :func:`pipeline.quantize.selection.drop_bound`), so a lucky draw of few samples
does not pick it. A held-out set too small to certify the budget is said before the search.

int8 with the default calibration, int8 with the best calibration, int8 with float islands (only
where every requested target allows float ops), int8 with int16 islands (the fewest ops, by measured
effect), int16x8, float16, float32, in the order the requested targets' costs put them (:data:`ORDERS`).
Each rung is judged by its drop on held-out calibration data (never ``--eval``); a rung a requested
target cannot run is skipped with the reason (the op and the kernel it lacks).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from edgecore.metrics import are_probabilities, binomial_upper, samples_to_certify
from pipeline.core.candidates import CandidateSpec, Made
from pipeline.quantize.selection import measure_of, score
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
    CandidateSpec("int8/int16-islands", "model_int8_int16_islands.tflite",
                  replace(_INT8, calibration=Calibration.AUTO, int16_layers=("auto",))),
    CandidateSpec("int16x8", "model_int16x8.tflite", Made.for_recipe(Recipe.INT16X8)),
    CandidateSpec("float16", "model_float16.tflite", Made.for_recipe(Recipe.FLOAT16)),
    CandidateSpec("float32", "model_float32.tflite", Made.for_recipe(Recipe.FLOAT32)),
)
# The order rungs are tried in, by what the requested targets value. On a host or a Pi (LiteRT with
# XNNPACK), latency before bytes: XNNPACK runs int8 and float kernels but never int16 ones
# (tensorflow/lite/delegates/xnnpack/xnnpack_delegate.cc; targets/kernels.toml [xnnpack]), so a whole
# int16x8 model runs on LiteRT's reference kernels (15x slower than float on the sample GPT, 1.94 vs
# 0.13 ms) and comes after float16 and float32; an int16 island leaves only its own ops off the delegate.
# On a microcontroller (TFLM), fit, then latency, then flash: int8 kernels are the fastest (CMSIS-NN
# s8), int16 ones slower (CMSIS-NN s16, priced by targets/cost_model.py), float slowest and 4x the
# bytes, so islands of int16 come before the whole model in int16, and float last.
ORDERS = {
    "latency, then bytes (LiteRT with XNNPACK)": ("int8", "int8/calibrated", "int8/float-islands",
                                                  "int8/int16-islands", "float16", "float32", "int16x8"),
    "fit, then latency, then flash (TensorFlow Lite Micro)": ("int8", "int8/calibrated", "int8/int16-islands",
                                                              "int16x8", "int8/float-islands", "float16",
                                                              "float32"),
}


def rung_order(targets: tuple[str, ...]) -> tuple[str, tuple[CandidateSpec, ...]]:
    """The rungs in the order the requested targets' costs put them, and why: a microcontroller or NPU
    among the targets decides (what fits and runs there is the harder constraint)."""
    small = any(get_target(name).kernel_runtime != "litert" for name in targets)
    why = list(ORDERS)[1 if small else 0]
    by_name = {spec.name: spec for spec in RUNGS}
    return why, tuple(by_name[name] for name in ORDERS[why])


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


def certifiable(work, budget: float) -> dict:
    """Whether the held-out set can certify ``budget`` at all, said before the search: with accuracy or
    agreement, even a rung with no flip is bounded at 1 - 0.05^(1/n), about 300/n points."""
    softmax = are_probabilities(work.select_float)  # a softmax head gives probabilities
    measure = measure_of(work.select_float, work.select.y, softmax_head=softmax)
    samples = work.select.samples
    if measure not in ("accuracy", "agreement"):
        return {"measure": measure, "samples": samples, "certifiable": None,
                "note": "a bootstrap bound; whether it can meet the budget shows only once a rung is measured"}
    needed = samples_to_certify(budget / 100)
    floor = 100 * binomial_upper(0, samples)
    return {"measure": measure, "samples": samples, "certifiable": samples >= needed, "samples_needed": needed,
            "best_possible_bound": round(floor, 4)}


def ladder(ctx: Context) -> None:
    """Make rungs in order until one's drop on the held-out data is, with 95% confidence, within the
    budget; without one, the rung with the smallest bound, marked not certified."""
    budget, work = ctx.config.max_accuracy_drop, ctx.calibration
    tried, chosen = [], None
    power = certifiable(work, budget)
    if power["certifiable"] is False:
        log.warning("ladder: %d held-out samples cannot certify a %.2f-point budget: even with no %s lost the "
                    "95%% bound is %.2f points; it takes %d samples (a larger --calib, or --holdout DATA). "
                    "The closest rung is still chosen, marked not certified.", power["samples"], budget,
                    "sample" if power["measure"] == "accuracy" else "top-1 match", power["best_possible_bound"],
                    power["samples_needed"])
    order, rungs = rung_order(ctx.config.targets)
    log.info("ladder: rungs ordered by %s: %s", order, ", ".join(spec.name for spec in rungs))
    for spec in rungs:
        reason = _float_refusal(ctx, spec)
        if reason:
            tried.append({"candidate": spec.name, "skipped": reason})
            log.info("ladder: %s skipped: %s", spec.name, reason)
            continue
        candidate = make_candidate(ctx, spec)
        made = candidate.made
        if spec.made.int16_layers and not made.int16_layers:
            ctx.candidates.remove(candidate)  # the search promoted nothing: int8 needs no island, or none helps
            search = ctx.notes.get(spec.name, {}).get("int16_islands", {}).get("search") or {}
            tried.append({"candidate": spec.name, "skipped": search.get("note") or "no op's int16 island lowers the "
                          "drop"})
            continue
        if (spec.made.calibration is Calibration.AUTO and not spec.made.float_layers and not spec.made.int16_layers
                and made.converter_default):
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
        log.info("ladder: %s %s drop %.2f (95%% bound %.2f; budget %.2f): %s", spec.name, found.measure,
                 found.drop, found.drop_upper, budget, "met" if met else "not met")
        if met:
            chosen = spec.name
            break
    measured = [row for row in tried if "drop" in row]
    if chosen is None and measured:
        chosen = min(measured, key=lambda row: (row["drop_upper"], row["drop"]))["candidate"]
        log.warning("ladder: no rung is certified within the %.2f budget (95%% bound); choosing %s, the closest, "
                    "marked not certified", budget, chosen)
    if chosen is None:
        raise_no_rung(tried)
    met = any(row.get("met") for row in tried)
    ctx.ladder = {"budget": budget, "held_out_samples": work.select.samples, "order": order,
                  "tried": tried, "chosen": chosen,
                  "met": met, "certified": met, "confidence": 0.95, "power": power}
    make_baseline(ctx)


def raise_no_rung(tried: list[dict]) -> None:
    from pipeline.errors import TargetError

    reasons = "; ".join(f"{row['candidate']}: {row['skipped']}" for row in tried)
    raise TargetError(f"no rung of the ladder can run on the requested targets ({reasons}).")
