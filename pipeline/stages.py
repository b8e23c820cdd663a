"""The shared stages of a run: plain functions over one typed context (ordered by :mod:`pipeline.plan`).

load -> data -> make candidates -> verify each on the host -> run each on the targets -> choose
-> emit. Nothing is written before ``emit``, so a failure in any stage leaves ``--out`` as it was.
"""

from __future__ import annotations

import logging
import time

from edgecore.metrics import output_error, top1_accuracy
from edgecore.model_info import inspect_model
from targets import get_target

from .artifacts import atomic_write_bytes, atomic_write_json
from .candidates import Candidate, CandidateSpec, Evaluation, FloatBaseline
from .context import BASELINE_FILE, Context
from .convert import convert_model
from .data import load_dataset
from .errors import TargetError, sentence
from .loading import load_model
from .verify import check_integer_only, compare
from .vocab import Preprocess, Recipe

log = logging.getLogger("edgepipe")


def load(ctx: Context) -> None:
    """Load the float model and derive the preprocessing spec from its input shape."""
    ctx.model = load_model(ctx.config.model, unsafe=ctx.config.unsafe)
    overrides = ctx.config.preprocess
    ctx.preprocess = Preprocess.from_input_shape(
        ctx.model.input_shape, scale=overrides.scale, offset=overrides.offset, color_mode=overrides.color_mode
    )
    log.info("model %s: %s, %d parameters, input %s", ctx.model.path.name, ctx.model.format,
             ctx.model.params, list(ctx.model.input_shape))


def data(ctx: Context) -> None:
    """Calibration first: the spec it resolves (e.g. scale 1/255 for uint8) is used for eval too."""
    spec = ctx.preprocess
    if ctx.config.calib is not None:
        ctx.calib = load_dataset(ctx.config.calib, spec, role="--calib")
        spec = ctx.calib.preprocess
    if ctx.config.eval is not None:
        ctx.eval = load_dataset(ctx.config.eval, spec, role="--eval")
        spec = ctx.eval.preprocess
    ctx.preprocess = spec


def make_candidate(ctx: Context, spec: CandidateSpec, model=None) -> Candidate:
    """Convert ``model`` (the loaded float model by default) as ``spec`` says, check the recipe's
    promise, and add the candidate to the run."""
    config = ctx.config
    source = model or ctx.model
    artifact = convert_model(source, spec.made.recipe, ctx.calib, float_io=config.float_io,
                             calib_samples=config.calib_samples, dynamic_batch=config.dynamic_batch)
    info = inspect_model(artifact)
    check_integer_only(info, spec.made.recipe)
    candidate = Candidate.from_spec(spec, artifact, info, ctx.model.format)
    ctx.candidates.append(candidate)
    log.info("%s: %d bytes", spec.filename, len(artifact))
    return candidate


def convert(ctx: Context) -> None:
    """The float32 baseline, then every post-training candidate the plan asks for."""
    for spec in ctx.plan.candidates:
        if not spec.made.qat:
            make_candidate(ctx, spec)
    float32 = [c for c in ctx.candidates if c.made.recipe is Recipe.FLOAT32]
    if float32:
        baseline = float32[0].artifact
    else:
        baseline = convert_model(ctx.model, Recipe.FLOAT32, dynamic_batch=ctx.config.dynamic_batch)
        log.info("%s: %d bytes (float32 baseline)", BASELINE_FILE, len(baseline))
    ctx.baseline = FloatBaseline(artifact=baseline, info=inspect_model(baseline))


def verify(ctx: Context) -> None:
    """Float Keras vs the float32 .tflite vs every candidate, on the host target and the eval data."""
    options, host = ctx.config.run, get_target("host")
    x, y = ctx.eval_xy
    for candidate in ctx.candidates:
        ctx.evaluations.append(Evaluation(candidate.name, "host", host.run(candidate.artifact, x, y, options)))
    same = next((c for c in ctx.candidates if c.artifact == ctx.baseline.artifact), None)
    baseline_run = ctx.results(same.name)["host"] if same else host.run(ctx.baseline.artifact, x, y, options)
    ctx.baseline.host_latency_ms = baseline_run.latency_ms
    if ctx.eval is None:
        log.info("no --eval data: accuracy and agreement are not measured")
        return
    ctx.float_outputs = ctx.model.predict(ctx.eval.x)
    for candidate in ctx.candidates:
        ctx.verifications[candidate.name] = compare(ctx.float_outputs, ctx.results(candidate.name)["host"].outputs, y,
                                                    softmax_head=candidate.info.ends_in_softmax)
    # The float TFLite must reproduce Keras before any quantization error means anything.
    ctx.baseline.tflite_accuracy = top1_accuracy(baseline_run.outputs, y)
    ctx.baseline.tflite_vs_keras = output_error(ctx.float_outputs, baseline_run.outputs)


def run_targets(ctx: Context) -> None:
    """Every candidate on every requested target besides the host (which ``verify`` ran)."""
    x, y = ctx.eval_xy
    for name in ctx.config.targets:
        if name == "host":
            continue
        target = get_target(name)
        for candidate in ctx.candidates:
            problems = target.check(candidate.artifact)
            if problems:
                raise TargetError(sentence(f"target {name} cannot run {candidate.filename}: {'; '.join(problems)}"))
            ctx.evaluations.append(Evaluation(candidate.name, name, target.run(candidate.artifact, x, y, ctx.config.run)))


def choose(ctx: Context) -> None:
    """The candidate the report's top-level keys describe: the plan's pick."""
    ctx.chosen = ctx.plan.chosen
    log.info("chosen: %s (%s)", ctx.chosen, ctx.candidate(ctx.chosen).filename)


def emit(ctx: Context) -> None:
    """Write the artifacts, then report.json and report.md, each atomically."""
    from .markdown import render_markdown
    from .report import build_conversion_report

    out = ctx.config.out
    if ctx.plan.baseline_file:
        atomic_write_bytes(out / ctx.plan.baseline_file, ctx.baseline.artifact)
    for candidate in ctx.candidates:
        atomic_write_bytes(out / candidate.filename, candidate.artifact)
    ctx.report = build_conversion_report(ctx)
    atomic_write_json(out / "report.json", ctx.report)
    atomic_write_bytes(out / "report.md", render_markdown(ctx.report).encode())
    for action in ctx.after_emit:
        action()
    log.info("wrote %s", ", ".join(str(out / n) for n in ctx.plan.outputs))


def run_pipeline(ctx: Context) -> Context:
    """Run the plan's stages in order, with one progress line per stage."""
    stages = ctx.plan.stages
    for number, stage in enumerate(stages, start=1):
        started = time.perf_counter()
        log.info("[%d/%d] %s", number, len(stages), stage.name)
        stage.run(ctx)
        log.debug("%s took %.2fs", stage.name, time.perf_counter() - started)
    return ctx
