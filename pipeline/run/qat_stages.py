"""The stages only a quantization-aware training run has: layer scan, training, parity gate.

The PTQ candidate of the same run is made by the shared ``convert`` stage; training adds the QAT
candidate, and :func:`parity` compares the fake-quantized Keras model with its ``.tflite``.
"""

from __future__ import annotations

import logging

from edgecore.metrics import top1_accuracy
from pipeline.core.data import fit_to_model, load_dataset
from pipeline.errors import UsageError
from pipeline.frontend.loading import wrap_keras
from pipeline.train import qat
from pipeline.vocab import ModelFormat

from .context import Context, QatRecord
from .stages import make_candidate

log = logging.getLogger("edgepipe")


def qat_scan(ctx: Context) -> None:
    """Before any expensive work: load the labelled training data, rebuild the model for tfmot
    and classify every layer."""
    options = ctx.config.qat
    ctx.train = load_dataset(options.train, ctx.preprocess, role="--train")
    ctx.train = fit_to_model(ctx.train, ctx.model.output_shape, ctx.model.id_limit, "--train")
    if ctx.train.y is None or ctx.eval.y is None:
        raise UsageError("QAT fine-tunes on labelled data: --train and --eval need labels "
                         "('y' in the .npz, or class folders).")
    if ctx.calib is None:
        ctx.calib = ctx.train
    if ctx.model.keras_model is None:
        raise UsageError("QAT needs a Keras model (.keras or .h5); a SavedModel folder has no layers to annotate.")
    legacy, difference = qat.rebuild_for_tfmot(ctx.model.keras_model, ctx.eval.x[:64])
    scan = qat.scan_layers(legacy)
    qat.refuse_unsupported(scan)
    ctx.qat = QatRecord(rebuild_max_abs_difference=difference, layers=scan, legacy_model=legacy)
    log.info("layers: %d quantized, %d with a custom config, %d left to calibration",
             *ctx.qat.to_dict()["layer_counts"].values())


def quantization_aware_training(ctx: Context) -> None:
    """Fine-tune with fake quantization and convert the QAT model to full int8 (the QAT candidate)."""
    config, record = ctx.config, ctx.qat
    spec = next(spec for spec in ctx.plan.candidates if spec.made.qat)
    outputs = ctx.baseline.info.outputs[0]
    classifier = len(outputs.shape) == 2 and outputs.shape[1] > 1
    outcome = qat.train(record.legacy_model, record.layers, ctx.train, ctx.eval, config.qat, config.out,
                        ctx.model.sha256, classifier=classifier, softmax_head=ctx.baseline.info.ends_in_softmax)
    trained = wrap_keras(outcome.model, ctx.model.path, ModelFormat.QAT, sha256=ctx.model.sha256)
    make_candidate(ctx, spec, model=trained)
    record.epochs_run, record.resumed_from_epoch = outcome.epochs_run, outcome.resumed_from_epoch
    record.stopped_early, record.history = outcome.stopped_early, outcome.history
    record.strategy = outcome.strategy
    record.keras_accuracy = top1_accuracy(trained.predict(ctx.eval.x), ctx.eval.y) if classifier else None
    ctx.after_emit.append(lambda: qat.discard_checkpoint(config.out))


def train_only(ctx: Context) -> None:
    """A non-chief worker: train with the cluster (the chief checkpoints, converts and writes)."""
    config, record = ctx.config, ctx.qat
    info_shape = ctx.model.output_shape
    classifier = len(info_shape) == 2 and (info_shape[-1] or 0) > 1
    softmax_head = classifier and _ends_in_softmax(ctx.model)
    outcome = qat.train(record.legacy_model, record.layers, ctx.train, ctx.eval, config.qat, config.out,
                        ctx.model.sha256, classifier=classifier, softmax_head=softmax_head)
    record.epochs_run, record.resumed_from_epoch = outcome.epochs_run, outcome.resumed_from_epoch
    ctx.report = {"worker": True, "epochs_run": outcome.epochs_run, "resumed_from_epoch": outcome.resumed_from_epoch}
    log.info("worker done after %d epochs; the chief writes the artifacts", outcome.epochs_run)


def _ends_in_softmax(model) -> bool:
    layer = model.keras_model.layers[-1] if model.keras_model is not None else None
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") == "softmax" or type(layer).__name__ == "Softmax"


def parity(ctx: Context) -> None:
    """The Keras QAT model and its ``.tflite`` should score alike; warn when they do not."""
    record, tolerance = ctx.qat, ctx.config.qat.parity_tolerance
    trained = next(c for c in ctx.candidates if c.made.qat)
    verification = ctx.verifications.get(trained.name)
    if record.keras_accuracy is None or verification is None or verification.accuracy is None:
        return
    gap = abs(record.keras_accuracy - verification.accuracy)
    record.parity = {"keras_accuracy": record.keras_accuracy, "tflite_accuracy": verification.accuracy,
                     "difference": gap, "tolerance": tolerance, "ok": gap <= tolerance}
    if gap > tolerance:
        log.warning("QAT parity: the Keras QAT model scores %.2f%% but its .tflite %.2f%% (tolerance %.2f points)",
                    100 * record.keras_accuracy, 100 * verification.accuracy, 100 * tolerance)
