"""The shared stages of a run: plain functions over one typed context (ordered by :mod:`pipeline.run.plan`).

load -> data -> make candidates -> verify each on the host -> run each on the targets -> choose
-> emit. Nothing is written before ``emit``, so a failure in any stage leaves ``--out`` as it was.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

from edgecore.flatbuffer import read_graph
from edgecore.metrics import output_error, top1_accuracy
from edgecore.model_info import inspect_model
from edgecore.progress import progress
from pipeline.core.artifacts import atomic_write_bytes, check_writable, locked_output
from pipeline.core.candidates import Candidate, CandidateSpec, Evaluation, FloatBaseline, Made
from pipeline.core.config import ConvertConfig
from pipeline.core.data import compare_sets, fit_to_model, load_dataset
from pipeline.errors import TargetError, UsageError, sentence
from pipeline.frontend.loading import LoadedModel, load_model, refuse_recurrent
from pipeline.quantize.calibration import CalibrationWork, ranges_by_name, split_for_selection
from pipeline.quantize.convert import convert_model
from pipeline.quantize.diagnosis import layer_table, severity, worst_layer
from pipeline.quantize.int16_islands import promote, resolve, search
from pipeline.quantize.islands import island_nodes
from pipeline.quantize.ranges import DEFAULT_PERCENTILE
from pipeline.quantize.selection import choose_calibration, score
from pipeline.quantize.verify import check_integer_only, compare
from pipeline.vocab import Activations, Calibration, Recipe, Weights
from targets import breadcrumb, get_target, int16_refusal

from .context import BASELINE_FILE, CONFIG_FILE, Context

log = logging.getLogger("edgepipe")
DIAGNOSIS_SAMPLES = 200


def load_float_model(config: ConvertConfig) -> LoadedModel:
    """The float model of a run (or of an ``InspectConfig``: any config with ``model``, ``unsafe``
    and ``input_shape``), with its open input dimensions fixed by ``--input-shape``."""
    model = load_model(config.model, unsafe=config.unsafe)
    if config.input_shape:
        return model.with_input_shape(config.input_shape)
    if model.dynamic_dims:
        raise UsageError(f"the model's input {list(model.input_shape)} has open dimensions (None); give their sizes "
                         "with --input-shape, e.g. --input-shape 96,96,3 (height, width, channels).")
    return model


def load(ctx: Context) -> None:
    """Load the float model and derive the preprocessing spec from its input shape."""
    if ctx.config.qat is not None and Path(ctx.config.model).suffix.lower() == ".onnx":
        raise UsageError(f"{ctx.config.model}: QAT fine-tunes Keras layers with tfmot, and an ONNX model has none; "
                         "quantize it with `edgepipe convert` (post-training), or do QAT in PyTorch and export "
                         "the float model.")
    ctx.model = load_float_model(ctx.config)
    ctx.preprocess = ctx.model.preprocess(ctx.config.preprocess)
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
    if ctx.config.holdout is not None:
        ctx.holdout = load_dataset(ctx.config.holdout, spec, role="--holdout")
    for role, name in (("--calib", "calib"), ("--eval", "eval"), ("--holdout", "holdout")):
        found = getattr(ctx, name)
        if found is not None:
            setattr(ctx, name, fit_to_model(found, ctx.model.output_shape, ctx.model.id_limit, role))
    if ctx.calib is not None and ctx.eval is not None:
        ctx.calib = replace(ctx.calib, warnings=(*ctx.calib.warnings, *compare_sets(ctx.calib, ctx.eval)))
    ctx.preprocess = spec


def calibrate(ctx: Context) -> None:
    """Set up the calibration work int8 candidates share (computed lazily, once): split off
    held-out data when the run chooses on it."""
    config = ctx.config
    if ctx.calib is None:
        raise UsageError("int8 calibration needs representative data; pass --calib DATA.")
    if config.selects and ctx.holdout is not None:
        fit, select = ctx.calib.head(config.calib_samples), ctx.holdout
        log.info("calibration data: %d samples to calibrate; --holdout: %d samples to choose on", fit.samples,
                 select.samples)
    elif config.selects:
        fit, select = split_for_selection(ctx.calib, config.calib_samples)
        log.info("calibration data: %d samples to calibrate, %d held out to choose on", fit.samples, select.samples)
    else:
        fit, select = ctx.calib.head(config.calib_samples), None
    ctx.calibration = CalibrationWork(ctx.model, fit, select, dynamic_batch=config.dynamic_batch)


def _int8_by_quantizer(ctx: Context, made: Made) -> tuple[bytes, Made, dict]:
    """An int8 artifact made by the quantizer from the shared calibration work, as ``made`` says;
    ``auto`` is resolved to the method chosen on held-out data. Notes go to the report."""
    work, config = ctx.calibration, ctx.config
    symmetric, per_tensor = made.activations is Activations.SYMMETRIC, made.weights is Weights.PER_TENSOR
    notes: dict = {"requested": str(made.calibration)}
    nodes: tuple[str, ...] = ()
    if made.float_layers:
        layers = made.float_layers
        if layers == ("auto",):
            worst = worst_layer(layer_table(work.calibrated, work.fit.x[:DIAGNOSIS_SAMPLES]))
            layers = (worst["layer"],) if worst else ()
            made = replace(made, float_layers=layers)
        nodes, ops = island_nodes(work.calibrated, layers)
        notes["float_islands"] = {"layers": list(layers), "ops": ops}
    if made.calibration is Calibration.AUTO:  # scored with the islands in place, if any
        chosen, strength, scores = choose_calibration(work, percentile=made.percentile, symmetric=symmetric,
                                                      per_tensor=per_tensor, float_io=config.float_io, float_nodes=nodes)
        made = replace(made, calibration=chosen, percentile=strength)
        notes.update(scores=scores, held_out_samples=work.select.samples)
    percentile = made.percentile if made.percentile is not None else DEFAULT_PERCENTILE.get(str(made.calibration))
    artifact = work.int8(str(made.calibration), percentile=percentile, symmetric_activations=symmetric,
                         per_tensor=per_tensor, float_io=config.float_io, float_nodes=nodes)
    plain = work.int8("minmax", per_tensor=per_tensor, float_io=config.float_io)
    same_islands = work.int8("minmax", per_tensor=per_tensor, float_io=config.float_io, float_nodes=nodes)
    notes.update(method=str(made.calibration), params={"percentile": percentile} if percentile else {},
                 tensors_changed=_tensors_changed(same_islands, artifact), calibration_samples=work.fit.samples)
    if nodes:
        notes["float_islands"]["bytes_cost"] = len(artifact) - len(plain)
        notes["float_islands"]["full_int8"] = plain
    if made.int16_layers:
        artifact, made, notes["int16_islands"] = _int16_islands(ctx, artifact, made)
    return artifact, replace(made, percentile=percentile), notes


def _int16_islands(ctx: Context, int8: bytes, made: Made) -> tuple[bytes, Made, dict]:
    """``int8`` with the ops ``made.int16_layers`` names computing in int16 (``auto``: the search by
    measured effect on the held-out data, within the budget and the requested targets' kernels)."""
    groups = made.int16_layers
    record: dict = {}
    ranges = ranges_by_name(ctx.calibration.calibrated)
    refusal = partial(int16_refusal, ctx.config.targets)
    if groups == ("auto",):
        chosen, found = search(int8, partial(score, ctx.calibration), ctx.config.max_accuracy_drop, refusal, ranges)
        groups, record = tuple(chosen), {"search": found}
    ops, keys = resolve(int8, groups, refusal) if groups else ([], [])
    artifact = promote(int8, ops, ranges) if ops else int8
    record.update(groups=keys, ops=len(ops), bytes_cost=len(artifact) - len(int8), full_int8=int8)
    log.info("int16 islands: %s (%d ops, %+d bytes)", ", ".join(keys) or "none", len(ops), len(artifact) - len(int8))
    return artifact, replace(made, int16_layers=tuple(keys)), record


def _tensors_changed(reference: bytes, artifact: bytes) -> int:
    """How many activation tensors got another scale or zero point than the min/max model's."""
    before = {t.name: (t.scales, t.zero_points) for t in read_graph(reference).tensors if not t.constant}
    return sum(1 for t in read_graph(artifact).tensors
               if not t.constant and t.name in before and before[t.name] != (t.scales, t.zero_points))


def make_candidate(ctx: Context, spec: CandidateSpec, model=None) -> Candidate:
    """Convert ``model`` (the loaded float model by default) as ``spec`` says, check the recipe's
    promise, and add the candidate to the run."""
    config, made = ctx.config, spec.made
    source = model or ctx.model
    by_quantizer = (made.recipe is Recipe.INT8 and model is None and ctx.calibration is not None
                    and (not made.converter_default or config.selects))
    if made.recipe.needs_calibration:
        refuse_recurrent(source, made.recipe)
    breadcrumb(f"converting candidate {spec.name} ({made.recipe}{', calibrating' if made.recipe.needs_calibration else ''})")
    if by_quantizer:
        artifact, made, ctx.notes[spec.name] = _int8_by_quantizer(ctx, made)
    elif made.recipe is Recipe.FLOAT32 and model is None and ctx.float_artifact is not None:
        artifact = ctx.float_artifact  # the lint already converted ctx.model to float32, the same way
    else:
        artifact = convert_model(source, made.recipe, ctx.calib, float_io=config.float_io,
                                 calib_samples=config.calib_samples, dynamic_batch=config.dynamic_batch)
    info = inspect_model(artifact)
    check_integer_only(info, made.recipe, islands=bool(made.float_layers))
    candidate = Candidate.from_spec(replace(spec, made=made), artifact, info, ctx.model.format)
    ctx.candidates.append(candidate)
    log.info("%s: %d bytes", spec.filename, len(artifact))
    return candidate


def make_baseline(ctx: Context) -> None:
    """The float32 .tflite every candidate is compared with (a float32 candidate is reused)."""
    float32 = [c for c in ctx.candidates if c.made.recipe is Recipe.FLOAT32]
    if float32:
        baseline = float32[0].artifact
    elif ctx.float_artifact is not None:  # the lint's float graph, of the model the candidates came from
        baseline = ctx.float_artifact
    else:
        baseline = convert_model(ctx.model, Recipe.FLOAT32, dynamic_batch=ctx.config.dynamic_batch)
        log.info("%s: %d bytes (float32 baseline)", BASELINE_FILE, len(baseline))
    ctx.baseline = FloatBaseline(artifact=baseline, info=inspect_model(baseline))


def convert(ctx: Context) -> None:
    """Every post-training candidate the plan asks for, then the float32 baseline."""
    for spec in ctx.plan.candidates:
        if not spec.made.qat:
            make_candidate(ctx, spec)
    make_baseline(ctx)


def verify(ctx: Context) -> None:
    """Float Keras vs the float32 .tflite vs every candidate, on the host target and the eval data."""
    options, host = ctx.config.run, get_target("host")
    x, y = ctx.eval_xy
    for candidate in ctx.candidates:
        ctx.evaluations.append(Evaluation(candidate.name, "host", host.run(candidate.artifact, x, y, options)))
        for kind in ("float_islands", "int16_islands"):
            islands = ctx.notes.get(candidate.name, {}).get(kind)
            if islands and "full_int8" in islands:  # what the islands cost in host latency
                twin = host.run(islands.pop("full_int8"), None, None, options).latency_ms["p50"]
                islands["host_latency_cost_ms"] = round(ctx.results(candidate.name)["host"].latency_ms["p50"] - twin,
                                                        4)
    same = next((c for c in ctx.candidates if c.artifact == ctx.baseline.artifact), None)
    baseline_run = ctx.results(same.name)["host"] if same else host.run(ctx.baseline.artifact, x, y, options)
    ctx.baseline.host_latency_ms = baseline_run.latency_ms
    if ctx.eval is None:
        log.info("no --eval data: accuracy and agreement are not measured")
        return
    ctx.float_outputs = (ctx.source_model or ctx.model).predict(ctx.eval.x)  # the user's model, not a rewrite
    for candidate in ctx.candidates:
        ctx.verifications[candidate.name] = compare(ctx.float_outputs, ctx.results(candidate.name)["host"].outputs, y,
                                                    softmax_head=candidate.info.ends_in_softmax)
    # The float TFLite must reproduce Keras before any quantization error means anything.
    ctx.baseline.tflite_accuracy = top1_accuracy(baseline_run.outputs, y)
    ctx.baseline.tflite_vs_keras = output_error(ctx.float_outputs, baseline_run.outputs)


def run_targets(ctx: Context) -> None:
    """Every candidate on every requested target besides the host (which ``verify`` ran)."""
    x, y = ctx.eval_xy
    others = [name for name in ctx.config.targets if name != "host"]
    cells = len(others) * len(ctx.candidates) if len(ctx.candidates) > 1 else 0
    with progress(cells, "candidates on targets", log) as advance:
        for name in others:
            _run_on(ctx, get_target(name), x, y, advance)


def _run_on(ctx: Context, target, x, y, advance) -> None:
    """Each candidate on ``target``; in a comparison, a target that cannot is a cell with the reason."""
    for candidate in ctx.candidates:
        try:
            problems = target.check(candidate.artifact)
            if problems:
                raise TargetError(sentence(f"target {target.name} cannot run {candidate.filename}: "
                                           f"{'; '.join(problems)}"))
            evaluation = Evaluation(candidate.name, target.name, target.run(candidate.artifact, x, y, ctx.config.run))
        except TargetError as exc:
            if not ctx.plan.tolerant_targets:
                raise
            evaluation = Evaluation(candidate.name, target.name, problem=str(exc))
            log.warning("%s on %s: %s", candidate.name, target.name, exc)
        ctx.evaluations.append(evaluation)
        advance(1)


def diagnose(ctx: Context) -> None:
    """The per-layer table of the min/max int8 model (eval data if given, else calibration data)."""
    samples = (ctx.eval.x if ctx.eval is not None else ctx.calibration.fit.x)[:DIAGNOSIS_SAMPLES]
    ctx.diagnosis = layer_table(ctx.calibration.calibrated, samples)
    worst = ctx.diagnosis[0] if ctx.diagnosis else None
    if worst:
        log.info("diagnosis: worst layer %s (%s), %.1f dB", worst["layer"], worst["op"], severity(worst))


def choose(ctx: Context) -> None:
    """The candidate the report's top-level keys describe: the ladder's, else the plan's pick."""
    ctx.chosen = ctx.chosen or (ctx.ladder or {}).get("chosen") or ctx.plan.chosen
    log.info("chosen: %s (%s)", ctx.chosen, ctx.candidate(ctx.chosen).filename)


def emit(ctx: Context) -> None:
    """Write the artifacts, then report.json and report.md, each atomically."""
    from pipeline.report.reports import config_toml, write_reports

    from .conversion_report import build_conversion_report

    out = ctx.config.out
    files = {candidate.filename: candidate.artifact for candidate in ctx.candidates}
    if ctx.plan.baseline_file:
        files = {ctx.plan.baseline_file: ctx.baseline.artifact, **files}
    ctx.report = build_conversion_report(ctx)
    with locked_output(out):
        # Again, under the lock: another run may have written here since this one started.
        check_writable(out, [*files, "report.json"], ctx.config.overwrite)
        for name, blob in files.items():
            atomic_write_bytes(out / name, blob)
        atomic_write_bytes(out / CONFIG_FILE, config_toml(ctx.config.to_dict()).encode())
        written = write_reports(out, ctx.report)  # report.json last: the record of a complete run
    for action in ctx.after_emit:
        action()
    log.info("wrote %s", ", ".join(str(out / n) for n in [*files, *written, CONFIG_FILE]))


# A test hook, never set in normal use: with EDGEPIPE_TEST_HOLD_STAGE=<stage name>, the run writes the
# file named by EDGEPIPE_TEST_HOLD_MARKER when it enters that stage and then waits (at most HOLD_SECONDS),
# so a test can signal a run that is certainly inside the stage instead of guessing with a time.
HOLD_STAGE, HOLD_MARKER, HOLD_SECONDS = "EDGEPIPE_TEST_HOLD_STAGE", "EDGEPIPE_TEST_HOLD_MARKER", 300.0


def _hold_for_test(stage: str) -> None:
    if os.environ.get(HOLD_STAGE) != stage or not os.environ.get(HOLD_MARKER):
        return
    Path(os.environ[HOLD_MARKER]).write_text(f"in stage {stage}, process {os.getpid()}\n")
    deadline = time.monotonic() + HOLD_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.1)


def run_pipeline(ctx: Context) -> Context:
    """Run the plan's stages in order, with one progress line per stage."""
    stages = ctx.plan.stages
    for number, stage in enumerate(stages, start=1):
        started = time.perf_counter()
        log.info("[%d/%d] %s", number, len(stages), stage.name)
        breadcrumb(f"running stage {stage.name}")
        _hold_for_test(stage.name)
        stage.run(ctx)
        log.debug("%s took %.2fs", stage.name, time.perf_counter() - started)
    return ctx
