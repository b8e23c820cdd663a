"""The conversion pipeline: plain stage functions over one typed context, in one ordered list.

load -> data -> convert -> verify -> targets -> emit. Nothing is written before ``emit``, so a
failure in any stage leaves ``--out`` as it was.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from targets import TargetResult, get_target
from targets.graph import ModelInfo, inspect_model
from targets.metrics import output_error, top1_accuracy

from .artifacts import atomic_write_bytes, atomic_write_json, sha256_bytes
from .config import ConvertConfig
from .convert import convert_model
from .data import Dataset, load_dataset
from .errors import TargetError, UsageError
from .loading import LoadedModel, load_model, wrap_keras
from .verify import check_integer_only, compare
from .vocab import Preprocess, Recipe

log = logging.getLogger("edgepipe")


@dataclass
class Context:
    config: ConvertConfig
    model: LoadedModel | None = None
    preprocess: Preprocess | None = None
    calib: Dataset | None = None
    eval: Dataset | None = None
    artifacts: dict[str, bytes] = field(default_factory=dict)
    info: ModelInfo | None = None
    baseline_info: ModelInfo | None = None
    float_outputs: np.ndarray | None = None
    verification: dict = field(default_factory=dict)
    baseline: dict = field(default_factory=dict)
    targets: dict[str, TargetResult] = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    train: Dataset | None = None
    ptq: dict = field(default_factory=dict)
    qat: dict = field(default_factory=dict)
    legacy_model: object = None

    @property
    def artifact(self) -> bytes:
        return self.artifacts[self.config.artifact_name]


def load(ctx: Context) -> None:
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
    if ctx.config.qat is not None:
        if ctx.eval is None:
            raise UsageError("QAT stops early on the eval split and reports on it; pass --eval DATA.")
        ctx.train = load_dataset(ctx.config.qat.train, spec, role="--train")
        if ctx.train.y is None or ctx.eval.y is None:
            raise UsageError("QAT fine-tunes on labelled data: --train and --eval need labels "
                             "('y' in the .npz, or class folders).")
        if ctx.calib is None:
            ctx.calib = ctx.train
    ctx.preprocess = spec


def convert(ctx: Context) -> None:
    config = ctx.config
    name = config.ptq_name if config.qat else config.artifact_name
    artifact = convert_model(ctx.model, config.recipe, ctx.calib, float_io=config.float_io,
                             calib_samples=config.calib_samples, dynamic_batch=config.dynamic_batch)
    ctx.artifacts[name] = artifact
    ctx.info = inspect_model(artifact)
    check_integer_only(ctx.info, config.recipe)
    if config.recipe is Recipe.FLOAT32:
        ctx.baseline_info = ctx.info
    else:
        baseline = convert_model(ctx.model, Recipe.FLOAT32, dynamic_batch=config.dynamic_batch)
        ctx.artifacts["model_float32.tflite"] = baseline
        ctx.baseline_info = inspect_model(baseline)
    log.info("%s: %d bytes (float32 baseline %d bytes)", name, len(artifact), len(ctx.artifacts["model_float32.tflite"]))


def qat_scan(ctx: Context) -> None:
    """Before any expensive work: rebuild the model for tfmot and classify every layer."""
    from . import qat

    if ctx.model.keras_model is None:
        raise UsageError("QAT needs a Keras model (.keras or .h5); a SavedModel folder has no layers to annotate.")
    legacy, difference = qat.rebuild_for_tfmot(ctx.model.keras_model, ctx.eval.x[:64])
    scan = qat.scan_layers(legacy)
    qat.refuse_unsupported(scan)
    counts = {status: sum(row["status"] == status for row in scan) for status in ("quantized", "custom", "float")}
    log.info("layers: %d quantized, %d with a custom config, %d left to calibration", *counts.values())
    ctx.legacy_model = legacy
    ctx.qat = {"rebuild_max_abs_difference": difference, "layers": scan, "layer_counts": counts}


def quantization_aware_training(ctx: Context) -> None:
    """Fine-tune with fake quantization and convert the QAT model to full int8."""
    from . import qat

    config, legacy, scan = ctx.config, ctx.legacy_model, ctx.qat["layers"]
    float_outputs = ctx.baseline_info.outputs[0]
    classifier = len(float_outputs.shape) == 2 and float_outputs.shape[1] > 1
    outcome = qat.train(legacy, scan, ctx.train, ctx.eval, config.qat, config.out, ctx.model.sha256,
                        classifier=classifier, softmax_head=ctx.baseline_info.ends_in_softmax)
    trained = wrap_keras(outcome.model, ctx.model.path, "qat", sha256=ctx.model.sha256)
    artifact = convert_model(trained, Recipe.INT8, ctx.calib, float_io=config.float_io,
                             calib_samples=config.calib_samples, dynamic_batch=config.dynamic_batch)
    ctx.artifacts[config.artifact_name] = artifact
    ctx.info = inspect_model(artifact)
    check_integer_only(ctx.info, Recipe.INT8)
    ctx.qat.update({
        "epochs_run": outcome.epochs_run, "resumed_from_epoch": outcome.resumed_from_epoch,
        "stopped_early": outcome.stopped_early, "history": outcome.history,
        "keras_accuracy": top1_accuracy(trained.predict(ctx.eval.x), ctx.eval.y) if classifier else None,
    })
    log.info("%s: %d bytes", config.artifact_name, len(artifact))


def verify(ctx: Context) -> None:
    """Float Keras vs float TFLite vs the artifact on the host target, on the eval data."""
    options = ctx.config.run
    host = get_target("host")
    x = ctx.eval.x if ctx.eval is not None else None
    y = ctx.eval.y if ctx.eval is not None else None
    ctx.targets["host"] = host.run(ctx.artifact, x, y, options)
    baseline = ctx.artifacts["model_float32.tflite"]
    baseline_run = (ctx.targets["host"] if ctx.config.recipe is Recipe.FLOAT32
                    else host.run(baseline, x, y, options))
    ctx.baseline = {"host_latency_ms": baseline_run.latency_ms}
    if ctx.eval is None:
        log.info("no --eval data: accuracy and agreement are not measured")
        return
    ctx.float_outputs = ctx.model.predict(ctx.eval.x)
    ctx.verification = compare(ctx.float_outputs, ctx.targets["host"].outputs, y,
                               softmax_head=ctx.info.ends_in_softmax)
    # The float TFLite must reproduce Keras before any quantization error means anything.
    ctx.baseline["tflite_accuracy"] = top1_accuracy(baseline_run.outputs, y)
    ctx.baseline["tflite_vs_keras"] = output_error(ctx.float_outputs, baseline_run.outputs)
    if ctx.config.qat is not None:
        verify_qat(ctx, host)


def verify_qat(ctx: Context, host) -> None:
    """PTQ on the same data for the side-by-side, and the Keras-vs-TFLite parity gate."""
    config, y = ctx.config, ctx.eval.y
    ptq_blob = ctx.artifacts[config.ptq_name]
    ptq_run = host.run(ptq_blob, ctx.eval.x, y, config.run)
    ptq = compare(ctx.float_outputs, ptq_run.outputs, y, softmax_head=ctx.info.ends_in_softmax)
    ctx.ptq = {"path": str(config.out / config.ptq_name), "sha256": sha256_bytes(ptq_blob), "bytes": len(ptq_blob),
               "accuracy": ptq["quantized_accuracy"], "agreement": ptq["agreement"],
               "output_error": ptq["output_error"], "host_latency_ms": ptq_run.latency_ms}
    keras_accuracy, tflite_accuracy = ctx.qat["keras_accuracy"], ctx.verification["quantized_accuracy"]
    if keras_accuracy is not None and tflite_accuracy is not None:
        gap = abs(keras_accuracy - tflite_accuracy)
        ok = gap <= config.qat.parity_tolerance
        ctx.qat["parity"] = {"keras_accuracy": keras_accuracy, "tflite_accuracy": tflite_accuracy,
                             "difference": gap, "tolerance": config.qat.parity_tolerance, "ok": ok}
        if not ok:
            log.warning("QAT parity: the Keras QAT model scores %.2f%% but its .tflite %.2f%% (tolerance %.2f points)",
                        100 * keras_accuracy, 100 * tflite_accuracy, 100 * config.qat.parity_tolerance)


def run_targets(ctx: Context) -> None:
    for name in ctx.config.targets:
        if name in ctx.targets:
            continue
        target = get_target(name)
        problems = target.check(ctx.artifact)
        if problems:
            raise TargetError(f"target {name} cannot run this model: {'; '.join(problems)}.")
        x = ctx.eval.x if ctx.eval is not None else None
        y = ctx.eval.y if ctx.eval is not None else None
        ctx.targets[name] = target.run(ctx.artifact, x, y, ctx.config.run)


def emit(ctx: Context) -> None:
    from .report import build_conversion_report, render_markdown

    out = ctx.config.out
    for name, blob in ctx.artifacts.items():
        atomic_write_bytes(out / name, blob)
    ctx.report = build_conversion_report(ctx)
    atomic_write_json(out / "report.json", ctx.report)
    atomic_write_bytes(out / "report.md", render_markdown(ctx.report).encode())
    if ctx.config.qat is not None:
        from .qat import discard_checkpoint

        discard_checkpoint(out)
    log.info("wrote %s", ", ".join(str(out / n) for n in ctx.config.output_names))


Stage = tuple[str, Callable[[Context], None]]
STAGES: tuple[Stage, ...] = (
    ("load", load), ("data", data), ("convert", convert), ("verify", verify),
    ("targets", run_targets), ("emit", emit),
)
QAT_STAGES: tuple[Stage, ...] = (
    ("load", load), ("data", data), ("qat layer scan", qat_scan), ("convert (PTQ)", convert),
    ("qat", quantization_aware_training),
    ("verify", verify), ("targets", run_targets), ("emit", emit),
)


def run_pipeline(ctx: Context, stages: tuple[Stage, ...] = STAGES) -> Context:
    for number, (name, stage) in enumerate(stages, start=1):
        started = time.perf_counter()
        log.info("[%d/%d] %s", number, len(stages), name)
        stage(ctx)
        log.debug("%s took %.2fs", name, time.perf_counter() - started)
    return ctx

