"""Quantization-aware training with tensorflow-model-optimization (tfmot), default 8-bit scheme.

The float model is rebuilt as tf_keras (``keras_compat.to_legacy``) and checked to give the same
outputs, every layer is classified (quantizable, custom config, not supported), the annotated
model is fine-tuned under a ``tf.distribute`` strategy with early stopping on the eval split and a
checkpoint per epoch in ``--out``, and an interrupted run resumes from that checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecore.progress import progress
from pipeline.core.artifacts import atomic_write_json
from pipeline.core.config import QatOptions
from pipeline.core.data import Dataset
from pipeline.errors import ConversionError, UsageError
from pipeline.frontend import keras_compat
from pipeline.vocab import LayerStatus

from . import distribute

log = logging.getLogger(__name__)

CHECKPOINT_DIR = ".qat-checkpoint"
REBUILD_TOLERANCE = 1e-4

# Weightless layers tfmot's default registry lacks but TFLite quantizes to int8: they get a
# custom config that only quantizes their output.
OUTPUT_ONLY_LAYERS = {"Rescaling", "Cropping1D", "Cropping2D", "Permute", "RepeatVector", "Resizing",
                      "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
                      "ActivityRegularization"}
RECURRENT_LAYERS = {"LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "ConvLSTM1D", "ConvLSTM2D",
                    "ConvLSTM3D", "TimeDistributed"}


@dataclass(frozen=True)
class LayerRow:
    """One layer of the scan: its name, class, what QAT does with it and why."""

    layer: str
    kind: str
    status: LayerStatus
    reason: str

    def to_dict(self) -> dict:
        return {"layer": self.layer, "class": self.kind, "status": str(self.status), "reason": self.reason}


def scan_layers(model) -> list[LayerRow]:
    """Classify every layer: ``quantized`` (tfmot default registry), ``custom`` (output-only
    config), ``float`` (weightless, left to the converter's calibration) or ``unsupported``."""
    keras_compat.tfmot()  # imports tfmot without letting it switch the process to Keras 2
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry_module,
    )

    registry = registry_module.Default8BitQuantizeRegistry()
    rows = []
    for layer in model.layers:
        kind = type(layer).__name__
        custom_class = not type(layer).__module__.startswith(("tf_keras", "keras"))
        if kind == "InputLayer":
            continue
        if kind == "Lambda":
            status, reason = LayerStatus.UNSUPPORTED, "Lambda layers run arbitrary Python that tfmot cannot quantize"
        elif custom_class:
            status, reason = LayerStatus.UNSUPPORTED, "custom layer class: give it a QuantizeConfig or replace it"
        elif kind in RECURRENT_LAYERS:
            status, reason = LayerStatus.UNSUPPORTED, "recurrent layers are not supported by tfmot's default 8-bit scheme"
        elif registry.supports(layer):
            status, reason = LayerStatus.QUANTIZED, "tfmot default 8-bit registry"
        elif kind in OUTPUT_ONLY_LAYERS:
            status, reason = LayerStatus.CUSTOM, "weightless; edgepipe's output-only quantize config"
        elif not layer.weights:
            status, reason = LayerStatus.FLOAT, "weightless and unknown to tfmot; quantized by calibration at conversion"
        else:
            status, reason = LayerStatus.UNSUPPORTED, f"{kind} has weights and no tfmot quantize config"
        rows.append(LayerRow(layer=layer.name, kind=kind, status=status, reason=reason))
    return rows


def refuse_unsupported(scan: list[LayerRow]) -> None:
    """Stop before any work when a layer cannot be trained with fake quantization."""
    bad = [row for row in scan if row.status is LayerStatus.UNSUPPORTED]
    if bad:
        details = "; ".join(f"{row.layer} ({row.kind}): {row.reason}" for row in bad)
        raise UsageError(f"quantization-aware training cannot handle these layers: {details}.")


def _output_only_config():
    tfmot = keras_compat.tfmot()
    quantizers = tfmot.quantization.keras.quantizers

    class OutputOnlyConfig(tfmot.quantization.keras.QuantizeConfig):
        """Quantize a weightless layer's output with a moving-average 8-bit quantizer."""

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return [quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                      narrow_range=False)]

        def get_config(self):
            return {}

    return OutputOnlyConfig


def quantize(model, scan: list[LayerRow]):
    """Annotate supported layers (and custom-config ones) and apply tfmot's quantization."""
    tfmot = keras_compat.tfmot()
    kit = keras_compat.legacy_keras()
    annotate = tfmot.quantization.keras.quantize_annotate_layer
    status = {row.layer: row.status for row in scan}
    config_class = _output_only_config()

    def clone(layer):
        if status.get(layer.name) is LayerStatus.QUANTIZED:
            return annotate(layer)
        if status.get(layer.name) is LayerStatus.CUSTOM:
            return annotate(layer, quantize_config=config_class())
        return layer

    annotated = kit.models.clone_model(model, clone_function=clone)
    annotated.set_weights(model.get_weights())
    with tfmot.quantization.keras.quantize_scope({"OutputOnlyConfig": config_class}):
        return tfmot.quantization.keras.quantize_apply(annotated)


def rebuild_for_tfmot(model, sample: np.ndarray):
    """The float model as tf_keras, checked to match the original on ``sample``."""
    legacy = keras_compat.to_legacy(model)
    if legacy is not model:
        original = np.asarray(model(sample, training=False))
        rebuilt = np.asarray(legacy(sample, training=False))
        difference = float(np.max(np.abs(original - rebuilt)))
        if difference > REBUILD_TOLERANCE:
            raise ConversionError(
                f"the tf_keras rebuild of the Keras 3 model differs from it by {difference:.3g} on sample data; "
                "save the model with tf_keras (model.save('model.h5')) and run qat on that."
            )
        log.info("rebuilt the Keras 3 model as tf_keras; outputs match within %.1e", difference)
        return legacy, difference
    return legacy, 0.0


def _fingerprint(model_sha: str, train: Dataset, eval_data: Dataset, options: QatOptions) -> str:
    payload = {"model": model_sha, "train": train.sha256, "eval": eval_data.sha256,
               **{k: v for k, v in options.to_dict().items() if k not in ("resume", "parity_tolerance")}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass
class TrainingOutcome:
    """The fine-tuned model and how training went."""

    model: object
    epochs_run: int
    resumed_from_epoch: int
    stopped_early: bool
    history: list[dict]
    strategy: dict | None = None


def train(float_model, scan: list[LayerRow], train_data: Dataset, eval_data: Dataset, options: QatOptions,
          out: Path, model_sha: str, classifier: bool, softmax_head: bool) -> TrainingOutcome:
    """Fine-tune with fake quantization; checkpoint each epoch in ``out``; resume when possible."""
    tf = keras_compat.tensorflow()
    kit = keras_compat.legacy_keras()
    kit.utils.set_random_seed(options.seed)
    tf.config.experimental.enable_op_determinism()
    strategy = distribute.make_strategy(tf, options.strategy)
    log.info("QAT under %s with %d replica(s)", type(strategy).__name__, strategy.num_replicas_in_sync)
    with strategy.scope():
        model = quantize(float_model, scan)
        if classifier:
            loss = kit.losses.SparseCategoricalCrossentropy(from_logits=not softmax_head)
            metrics = ["accuracy"]
        else:
            loss, metrics = kit.losses.MeanSquaredError(), []
        model.compile(optimizer=kit.optimizers.Adam(options.learning_rate), loss=loss, metrics=metrics)

    folder = Path(out) / CHECKPOINT_DIR
    state_path = folder / "state.json"
    fingerprint = _fingerprint(model_sha, train_data, eval_data, options)
    start, history = 0, []
    if options.resume and state_path.exists():
        state = json.loads(state_path.read_text())
        if state.get("fingerprint") == fingerprint and state["epoch"] < options.epochs:
            model.load_weights(str(folder / state["checkpoint"]))
            start, history = state["epoch"], state["history"]
            log.info("resuming QAT from the checkpoint after epoch %d in %s", start, folder)
        elif state.get("fingerprint") != fingerprint:
            log.info("ignoring the checkpoint in %s: it was made from other inputs or options", folder)

    saves, real = distribute.checkpoint_folder(folder, options.strategy)
    with progress(options.epochs - start, "QAT epochs", log) as advance:
        callbacks = [_callback("_Progress")(options.epochs, advance),
                     _callback("_Checkpoint")(saves, fingerprint, history, write_state=real),
                     kit.callbacks.EarlyStopping(monitor="val_loss", patience=options.patience, restore_best_weights=True)]
        fit = model.fit(train_data.x, train_data.y, validation_data=(eval_data.x, eval_data.y), epochs=options.epochs,
                        initial_epoch=start, batch_size=options.batch_size, shuffle=True, verbose=0,
                        callbacks=callbacks)
    distribute.discard(saves, real)
    stopped = callbacks[2].stopped_epoch > 0
    epochs_run = start + len(fit.epoch)
    return TrainingOutcome(model=model, epochs_run=epochs_run, resumed_from_epoch=start, stopped_early=stopped,
                           history=history, strategy={"name": str(options.strategy), "engine": type(strategy).__name__,
                                                      "replicas": int(strategy.num_replicas_in_sync),
                                                      "global_batch": options.batch_size})


def discard_checkpoint(out: Path) -> None:
    """Training finished and the artifacts are written: the checkpoint has served its purpose."""
    shutil.rmtree(Path(out) / CHECKPOINT_DIR, ignore_errors=True)


def _make_callbacks() -> dict[str, type]:
    """The Keras callbacks, made on first use: their base class needs tf_keras, which must not be
    imported (it imports TensorFlow) just because this module is."""
    base = keras_compat.legacy_keras().callbacks.Callback

    class _Progress(base):
        """One line per epoch on stderr (through logging): loss and accuracy, train and eval."""

        def __init__(self, epochs: int, advance=None) -> None:
            super().__init__()
            self.epochs, self.advance = epochs, advance

        def on_epoch_end(self, epoch, logs=None):
            if self.advance is not None:
                self.advance(1)
            logs = {k: float(v) for k, v in (logs or {}).items()}
            parts = [f"{k} {v:.4f}" for k, v in logs.items()]
            log.info("QAT epoch %d/%d: %s", epoch + 1, self.epochs, ", ".join(parts))

    class _Checkpoint(base):
        """Weights after every epoch, then a state file pointing at them (written atomically last)."""

        def __init__(self, folder: Path, fingerprint: str, history: list[dict], write_state: bool = True) -> None:
            super().__init__()
            self.folder, self.fingerprint, self.history = folder, fingerprint, history
            self.write_state = write_state  # a non-chief worker saves (collectives need it) but records nothing

        def on_epoch_end(self, epoch, logs=None):
            self.folder.mkdir(parents=True, exist_ok=True)
            name = f"epoch-{epoch + 1:03d}"
            self.model.save_weights(str(self.folder / name))
            self.history.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}})
            if self.write_state:
                atomic_write_json(self.folder / "state.json", {"fingerprint": self.fingerprint, "epoch": epoch + 1,
                                                                "checkpoint": name, "history": self.history})

    return {"_Progress": _Progress, "_Checkpoint": _Checkpoint}


def _callback(name: str) -> type:
    if name not in globals():
        globals().update(_make_callbacks())
    return globals()[name]


def __getattr__(name: str):
    if name in ("_Progress", "_Checkpoint"):
        return _callback(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
