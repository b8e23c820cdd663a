"""The one place that decides what a run does: which stages, in which order, making which
candidates, and which candidate the report's top-level keys describe."""

from __future__ import annotations

from dataclasses import replace

from pipeline.core.candidates import CandidateSpec, Made
from pipeline.core.config import ConvertConfig
from pipeline.train import distribute
from pipeline.vocab import Calibration, Recipe

from . import qat_stages
from .compare import choose_recommended
from .context import BASELINE_FILE, RunPlan, Stage
from .ladder import RUNGS, ladder
from .stages import (
    calibrate,
    choose,
    convert,
    data,
    diagnose,
    emit,
    load,
    run_targets,
    verify,
)
from .transformer import lint_and_rewrite


def plan(config: ConvertConfig) -> RunPlan:
    """The stages and candidates of a run, decided once from the config."""
    recipe = config.recipe
    calibrating = config.int8_options_changed or config.selects or config.diagnose
    # The lint (and the edge rewrites, which calibration must see) comes before any calibration.
    prepare = (Stage("lint", lint_and_rewrite), *((Stage("calibrate", calibrate),) if calibrating else ()))
    choosing = Stage("choose", choose)
    if config.compares:
        specs, chosen, middle = _comparison_specs(config), None, (*prepare, Stage("convert", convert))
        choosing = Stage("recommend", choose_recommended)
    elif config.max_accuracy_drop is not None:
        specs, chosen, middle = RUNGS, None, (*prepare, Stage("ladder", ladder))
    elif config.qat is None:
        made = replace(Made.for_recipe(recipe), percentile=config.percentile)
        if recipe is Recipe.INT8:
            made = replace(made, calibration=config.calibration, weights=config.weights,
                           activations=config.activations, float_layers=config.float_layers,
                           int16_layers=config.int16_layers)
        specs = (CandidateSpec(str(recipe), f"model_{recipe}.tflite", made),)
        chosen, middle = specs[0].name, (*prepare, Stage("convert", convert))
    elif not distribute.is_chief(config.qat.strategy):
        # A non-chief worker of a multi-worker run: it trains with the others, then leaves; the chief
        # converts, verifies and writes.
        stages = (Stage("load", load), Stage("data", data), Stage("qat layer scan", qat_stages.qat_scan),
                  Stage("qat (worker)", qat_stages.train_only))
        return RunPlan(stages=stages, candidates=(), chosen=None, baseline_file=None, writes=False)
    else:
        specs = (CandidateSpec("int8/ptq", "model_int8_ptq.tflite", Made.for_recipe(Recipe.INT8)),
                 CandidateSpec("int8/qat", "model_int8_qat.tflite", Made.for_recipe(Recipe.INT8, qat=True)))
        chosen = specs[1].name
        middle = (Stage("qat layer scan", qat_stages.qat_scan), *prepare, Stage("convert (PTQ)", convert),
                  Stage("qat", qat_stages.quantization_aware_training))
    after_verify = (Stage("qat parity", qat_stages.parity),) if config.qat is not None else ()
    if config.diagnose:
        after_verify = (*after_verify, Stage("diagnose", diagnose))
    stages = (Stage("load", load), Stage("data", data), *middle, Stage("verify", verify), *after_verify,
              Stage("targets", run_targets), choosing, Stage("emit", emit))
    float32 = recipe is Recipe.FLOAT32 if not config.compares else Recipe.FLOAT32 in config.recipes
    return RunPlan(stages=stages, candidates=specs, chosen=chosen, baseline_file=None if float32 else BASELINE_FILE,
                   tolerant_targets=config.compares)


def _comparison_specs(config: ConvertConfig) -> tuple[CandidateSpec, ...]:
    """One candidate per recipe; int8 once per calibration method asked for."""
    specs = []
    for recipe in config.recipes:
        if recipe is not Recipe.INT8:
            specs.append(CandidateSpec(str(recipe), f"model_{recipe}.tflite", Made.for_recipe(recipe)))
            continue
        methods = config.calibrations or (config.calibration,)
        for method in methods:
            name = "int8" if methods == (Calibration.MINMAX,) else f"int8/{method}"
            made = replace(Made.for_recipe(recipe), calibration=method, weights=config.weights,
                           activations=config.activations, percentile=config.percentile)
            specs.append(CandidateSpec(name, f"model_{name.replace('/', '_')}.tflite", made))
        if config.int16_layers:  # one more: the first method's int8 model with int16 islands
            first = replace(Made.for_recipe(recipe), calibration=methods[0], weights=config.weights,
                            activations=config.activations, percentile=config.percentile,
                            int16_layers=config.int16_layers)
            specs.append(CandidateSpec("int8/int16-islands", "model_int8_int16_islands.tflite", first))
    return tuple(specs)
