"""The one place that decides what a run does: which stages, in which order, making which
candidates, and which candidate the report's top-level keys describe."""

from __future__ import annotations

from dataclasses import replace

from . import qat_stages
from .candidates import CandidateSpec, Made
from .config import ConvertConfig
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
from .vocab import Recipe


def plan(config: ConvertConfig) -> RunPlan:
    """The stages and candidates of a run, decided once from the config."""
    recipe = config.recipe
    calibrating = config.int8_options_changed or config.selects or config.diagnose
    prepare = (Stage("calibrate", calibrate),) if calibrating else ()
    if config.max_accuracy_drop is not None:
        specs, chosen, middle = RUNGS, None, (*prepare, Stage("ladder", ladder))
    elif config.qat is None:
        made = replace(Made.for_recipe(recipe), percentile=config.percentile)
        if recipe is Recipe.INT8:
            made = replace(made, calibration=config.calibration, weights=config.weights,
                           activations=config.activations, float_layers=config.float_layers)
        specs = (CandidateSpec(str(recipe), f"model_{recipe}.tflite", made),)
        chosen, middle = specs[0].name, (*prepare, Stage("convert", convert))
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
              Stage("targets", run_targets), Stage("choose", choose), Stage("emit", emit))
    return RunPlan(stages=stages, candidates=specs, chosen=chosen,
                   baseline_file=None if recipe is Recipe.FLOAT32 else BASELINE_FILE)
