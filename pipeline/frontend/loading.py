"""Load a Keras model (.keras, .h5) or a SavedModel folder, safely by default.

Safe means no embedded Python runs: Keras' ``safe_mode`` stays on, and a model that contains a
``Lambda`` layer (whose code would run at load time) is refused before anything is deserialized
unless the caller passes ``unsafe=True`` (``--unsafe``).
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.core.artifacts import sha256_path
from pipeline.errors import ConversionError, ModelLoadError, UsageError, first_line
from pipeline.vocab import ModelFormat, Preprocess

from . import keras_compat

log = logging.getLogger(__name__)

UNSAFE_LAYERS = {"Lambda"}


@dataclass
class LoadedModel:
    """A float model, whatever it was saved as, with what the pipeline needs of it."""

    path: Path
    sha256: str
    format: ModelFormat
    input_shape: tuple[int | None, ...]
    params: int
    predict_batch: Callable[[np.ndarray], np.ndarray]
    make_converter: Callable[[int | None], Any]  # batch size (None keeps it dynamic) -> converter
    keras_model: Any = None
    output_shape: tuple[int | None, ...] = ()
    reshape: Callable[[tuple[int, ...]], "LoadedModel"] | None = None  # a copy with fixed sample dims
    data_layout: str = "NHWC"  # how .npz data for this model is laid out (NCHW for many ONNX models)
    input_dtype: str = "float32"  # int32 for token ids
    id_limit: int | None = None  # token ids must be below this (the smallest embedding the input feeds)

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model's signature insists on (e.g. 1), if any."""
        return self.input_shape[0] if self.input_shape and self.input_shape[0] else None

    @property
    def dynamic_dims(self) -> bool:
        """Whether a sample dimension (height, width, ...) is left open (None)."""
        return any(d is None for d in self.input_shape[1:])

    def with_input_shape(self, sample_shape: tuple[int, ...]) -> "LoadedModel":
        """This model with its open sample dimensions fixed (``--input-shape``)."""
        if len(sample_shape) != len(self.input_shape) - 1 or any(
                d is not None and d != s for d, s in zip(self.input_shape[1:], sample_shape)):
            raise UsageError(f"--input-shape {','.join(map(str, sample_shape))} does not fit the model's input "
                             f"{list(self.input_shape)}; give one size per dimension after the batch.")
        return replace(self.reshape(tuple(sample_shape)), path=self.path, sha256=self.sha256, format=self.format,
                       data_layout=self.data_layout, params=self.params, input_dtype=self.input_dtype,
                       id_limit=self.id_limit)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Float outputs (first output) for all rows of ``x``, in batches the model accepts."""
        step = self.fixed_batch or batch_size
        parts = []
        for start in range(0, len(x), step):
            chunk = x[start:start + step]
            short = step - len(chunk) if self.fixed_batch else 0
            if short:  # a fixed batch larger than what is left: pad, then drop the padding
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], short, axis=0)])
            parts.append(np.asarray(self.predict_batch(chunk))[:len(chunk) - short])
        return np.concatenate(parts).astype(np.float32)

    def preprocess(self, overrides) -> Preprocess:
        """The preprocessing spec for this model's input with the user's ``overrides`` (scale,
        offset, colour mode): token ids are taken as they are, and ids into an Embedding are never
        scaled even where the input stayed float."""
        ids_as_floats = self.id_limit is not None and not self.input_dtype.startswith(("int", "uint"))
        scale = 1.0 if overrides.scale is None and ids_as_floats else overrides.scale
        return Preprocess.from_input_shape(self.input_shape, scale=scale, offset=overrides.offset,
                                           color_mode=overrides.color_mode, layout=self.data_layout,
                                           dtype=self.input_dtype)

    def describe(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "format": str(self.format),
                "params": self.params, "input_shape": list(self.input_shape), "input_dtype": self.input_dtype}


def load_model(path: str | Path, *, unsafe: bool = False) -> LoadedModel:
    """Load ``path``; raise :class:`ModelLoadError` with the fix when it cannot be done."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model {path} does not exist; give a .keras file, an .h5 file or a SavedModel folder.")
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise ModelLoadError(f"{path} is a folder without saved_model.pb; give a SavedModel folder or a .keras/.h5 file.")
        return _load_saved_model(path)
    suffix = path.suffix.lower()
    if suffix == ".keras":
        config = _keras_zip_config(path)
    elif suffix in (".h5", ".hdf5"):
        config = _h5_config(path)
    elif suffix == ".onnx":
        from .onnx_import import translate_onnx

        folder, layout, params = translate_onnx(path)
        return replace(_load_saved_model(folder), path=path, sha256=sha256_path(path), format=ModelFormat.ONNX,
                       data_layout=layout, params=params)
    elif suffix == ".tflite":
        raise ModelLoadError(f"{path} is already a .tflite model; run it with `edgepipe run {path} --target TARGET`, "
                             "or convert the Keras or SavedModel model it came from.")
    else:
        raise ModelLoadError(f"{path} has an unknown extension {suffix!r}; give a .keras file, an .h5 file, a SavedModel folder or an .onnx file.")
    if not unsafe:
        _refuse_unsafe_layers(config, path)
    return _load_keras(path, suffix, unsafe)


def _keras_zip_config(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as exc:
        raise ModelLoadError(
            f"{path} is not a readable .keras file ({exc}); re-save the model with model.save('model.keras')."
        ) from exc


def _h5_config(path: Path) -> dict:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
    except OSError as exc:
        raise ModelLoadError(f"{path} is not a readable HDF5 file ({exc}); re-save the model with model.save('model.h5').") from exc
    if raw is None:
        raise ModelLoadError(
            f"{path} holds weights only, no architecture; save the whole model (model.save), not model.save_weights."
        )
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def _layer_classes(config: Any, found: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Every (class_name, layer name) in a nested Keras config."""
    if isinstance(config, dict):
        if "class_name" in config and isinstance(config.get("config"), dict):
            found.append((config["class_name"], str(config["config"].get("name", "?"))))
        for value in config.values():
            _layer_classes(value, found)
    elif isinstance(config, list):
        for value in config:
            _layer_classes(value, found)
    return found


def _refuse_unsafe_layers(config: dict, path: Path) -> None:
    unsafe = [name for cls, name in _layer_classes(config, []) if cls in UNSAFE_LAYERS]
    if unsafe:
        raise ModelLoadError(
            f"{path} contains Lambda layer(s) {', '.join(unsafe)}, whose embedded Python code would run "
            "when loaded; pass --unsafe only if you trust where this file came from."
        )


def _load_keras(path: Path, suffix: str, unsafe: bool) -> LoadedModel:
    keras = keras_compat.keras3()
    errors = []
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=not unsafe)
        fmt = ModelFormat.KERAS if suffix == ".keras" else ModelFormat.H5_KERAS3
    except Exception as exc:  # Keras raises many types for undecodable files
        errors.append(f"Keras 3: {first_line(exc)}")
        model = None
    if model is None and suffix != ".keras":
        # Keras 3 cannot rebuild some legacy H5 files (e.g. DepthwiseConv2D configs of Keras 2).
        try:
            model = keras_compat.legacy_keras().models.load_model(path, compile=False)
            fmt = ModelFormat.H5_TF_KERAS
            log.info("loaded %s with tf_keras (legacy H5)", path)
        except Exception as exc:
            errors.append(f"tf_keras: {first_line(exc)}")
    if model is None:
        raise ModelLoadError(
            f"cannot load {path} ({'; '.join(errors)}); if the model has custom layers, "
            "save it without them or as a SavedModel folder."
        )
    return wrap_keras(model, path, fmt)


def _single(count: int, what: str, path: Path) -> None:
    if count != 1:
        raise ModelLoadError(f"{path} has {count} {what}s; edgepipe handles models with exactly one input and one "
                             f"output (export a model that returns the {what} you want to quantize).")


def wrap_keras(model, path: Path, fmt: ModelFormat, sha256: str | None = None,
               sample_shape: tuple[int, ...] | None = None) -> LoadedModel:
    """A :class:`LoadedModel` around an in-memory Keras 3 or tf_keras model (``sample_shape``
    fixes open input dimensions)."""
    keras = keras_compat.keras3()
    _single(len(getattr(model, "inputs", None) or []), "input", path)
    _single(len(getattr(model, "outputs", None) or []), "output", path)
    model = _with_id_input(model)
    tf = keras_compat.tensorflow()
    shape = tuple(None if d is None else int(d) for d in model.inputs[0].shape)
    if sample_shape is not None:
        shape = (shape[0], *sample_shape)

    def predict_batch(x: np.ndarray) -> np.ndarray:
        out = model(tf.constant(x), training=False)
        return (out[0] if isinstance(out, (list, tuple)) else out).numpy()

    def make_converter(batch: int | None):
        if batch is None and sample_shape is None:
            return tf.lite.TFLiteConverter.from_keras_model(model)
        # Re-wrap with a fixed batch so the graph has static shapes (no SHAPE/PACK ops for
        # Flatten), which is what microcontrollers need and what XNNPACK delegates best.
        kit = keras_compat.legacy_keras() if keras_compat.is_legacy_model(model) else keras
        # Fixed names: Keras numbers auto-named layers per process, which would leak into the
        # flatbuffer and break "same inputs, same bytes".
        inputs = kit.Input(shape[1:], batch_size=batch, dtype=model.inputs[0].dtype, name="input")
        wrapped = kit.Model(inputs, model(inputs), name=f"{model.name}_batch{batch}")
        return tf.lite.TFLiteConverter.from_keras_model(wrapped)

    return LoadedModel(
        path=path, sha256=sha256 or sha256_path(path), format=fmt, input_shape=shape,
        params=int(model.count_params()), predict_batch=predict_batch,
        make_converter=make_converter, keras_model=model, input_dtype=_dtype_name(model.inputs[0].dtype),
        id_limit=min((layer.input_dim for layer in input_embeddings(model, ids_only=True)), default=None),
        output_shape=_output_shape(model, sample_shape),
        reshape=lambda fixed: wrap_keras(model, path, fmt, sha256, sample_shape=fixed),
    )


ID_PRESERVING_OPS = {"Cast", "Reshape", "ExpandDims", "Squeeze"}  # ops whose outputs are the ids themselves


def input_embeddings(model, *, ids_only: bool = False) -> list:
    """The Embedding layers a Keras 3 model's input reaches, directly or through ops (a cast,
    positions from ones_like), if it reaches no other layer; else an empty list. With
    ``ids_only``, only those that look up the ids themselves (through casts and reshapes), not
    values derived from them (positions)."""
    keras = keras_compat.keras3()
    if keras_compat.is_legacy_model(model):
        return []
    graph = getattr(model, "_functional", None) or model  # a Sequential model's graph
    reached, layers, pending = set(), [], [(graph.inputs[0], True)]
    while pending:
        tensor, same_ids = pending.pop()
        for op in getattr(graph, "operations", []):
            if isinstance(op, keras.layers.InputLayer) or id(op) in reached:
                continue
            nodes = [node for node in op._inbound_nodes if any(t is tensor for t in node.input_tensors)]
            if not nodes:
                continue
            reached.add(id(op))
            if isinstance(op, keras.layers.Layer):
                if same_ids or not ids_only:
                    layers.append(op)
                elif not isinstance(op, keras.layers.Embedding):
                    return []
            else:  # an op on the ids: follow its outputs
                keeps = same_ids and type(op).__name__ in ID_PRESERVING_OPS
                pending.extend((t, keeps) for node in nodes for t in node.output_tensors)
    return layers if layers and all(isinstance(layer, keras.layers.Embedding) for layer in layers) else []


def _with_id_input(model):
    """A Keras 3 model whose float input feeds Embedding layers (and ops on ids), never another
    layer, takes token ids: rebuilt on an int32 input with the same weights, so quantization never
    rounds the ids (a float input would be quantized like pixels). Kept as it is when that cannot
    be done exactly; the lint then names the float ids."""
    keras = keras_compat.keras3()
    layers = input_embeddings(model) if str(model.inputs[0].dtype).startswith("float") else []
    if not layers:
        return model
    source = model.inputs[0]
    try:
        ids = keras.Input(tuple(source.shape[1:]), batch_size=source.shape[0], dtype="int32", name=source.name)
        rebuilt = keras.models.clone_model(model, input_tensors=ids)
        rebuilt.set_weights(model.get_weights())
        sample = np.random.default_rng(0).integers(0, min(layer.input_dim for layer in layers),
                                                   (2, *[d or 1 for d in source.shape[1:]]))
        same = np.array_equal(np.asarray(model(sample.astype(np.float32))), np.asarray(rebuilt(sample.astype(np.int32))))
    except Exception as exc:  # Keras raises many types for models it cannot clone
        log.debug("kept the float input of %s: %s", model.name, first_line(exc))
        return model
    if same:
        log.info("%s: its float input feeds Embedding layers only, so it takes int32 token ids", model.name)
        return rebuilt
    return model


def _output_shape(model, sample_shape: tuple[int, ...] | None) -> tuple[int | None, ...]:
    """The first output's shape, with open dimensions filled for a fixed input (``--input-shape``)."""
    shape = tuple(None if d is None else int(d) for d in model.outputs[0].shape)
    if sample_shape is None or all(d is not None for d in shape[1:]):
        return shape
    try:
        found = model.compute_output_shape((None, *sample_shape))
    except Exception:  # Keras cannot always say; the open dimensions then stay open
        return shape
    found = found[0] if isinstance(found, (list, tuple)) and found and isinstance(found[0], (list, tuple)) else found
    return tuple(None if d is None else int(d) for d in found)


def _dtype_name(dtype) -> str:
    """'int32' from a Keras dtype string or a tf.DType."""
    return str(getattr(dtype, "name", dtype))


def _load_saved_model(path: Path, sample_shape: tuple[int, ...] | None = None, loaded=None) -> LoadedModel:
    tf = keras_compat.tensorflow()
    if loaded is None:
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as exc:
            raise ModelLoadError(f"cannot load SavedModel {path} ({first_line(exc)}); re-export it with model.export().") from exc
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise ModelLoadError(f"SavedModel {path} has no 'serving_default' signature; export it with model.export(path).")
    _, kwargs = signature.structured_input_signature
    _single(len(kwargs), "input", path)
    _single(len(signature.structured_outputs), "output", path)
    input_name, spec = next(iter(kwargs.items()))
    output_name = next(iter(signature.structured_outputs))
    params = int(sum(np.prod(v.shape) for v in getattr(loaded, "variables", [])))
    shape = tuple(None if d is None else int(d) for d in spec.shape)
    if sample_shape is not None:
        shape = (shape[0], *sample_shape)

    def predict_batch(x: np.ndarray) -> np.ndarray:
        return signature(**{input_name: tf.constant(x, dtype=spec.dtype)})[output_name].numpy()

    def make_converter(batch: int | None):
        if batch is None and sample_shape is None:
            return tf.lite.TFLiteConverter.from_saved_model(str(path))
        fixed = shape[0] or batch  # a signature with a fixed batch keeps it
        traced = tf.function(lambda t: {output_name: signature(**{input_name: t})[output_name]})
        concrete = traced.get_concrete_function(tf.TensorSpec([fixed, *shape[1:]], spec.dtype))
        return tf.lite.TFLiteConverter.from_concrete_functions([concrete], loaded)

    output = signature.structured_outputs[output_name]
    return LoadedModel(
        path=path, sha256=sha256_path(path), format=ModelFormat.SAVED_MODEL, input_shape=shape, params=params,
        predict_batch=predict_batch, make_converter=make_converter, input_dtype=spec.dtype.name,
        output_shape=tuple(None if d is None else int(d) for d in output.shape),
        reshape=lambda fixed: _load_saved_model(path, fixed, loaded),
    )


RECURRENT = {"LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D",
             "LSTMCell", "GRUCell", "SimpleRNNCell"}


def refuse_recurrent(model: LoadedModel, recipe) -> None:
    """TensorFlow's int8 and int16x8 calibration crash (SIGSEGV) on recurrent layers: say so before.
    (``EDGEPIPE_SKIP_KNOWN_CRASH_CHECKS=1`` lets the crash happen, for testing the isolation.)"""
    if model.keras_model is None or os.environ.get("EDGEPIPE_SKIP_KNOWN_CRASH_CHECKS") == "1":
        return
    found = []
    pending = list(getattr(model.keras_model, "layers", []))
    while pending:
        layer = pending.pop(0)
        if type(layer).__name__ in RECURRENT:
            found.append(f"{layer.name} ({type(layer).__name__})")
        pending.extend(getattr(layer, "layers", []))
    if found:
        raise ConversionError(f"recurrent layers ({', '.join(found)}) crash TensorFlow's {recipe} calibration; "
                              "use --recipe dynamic or float16 for this model, or replace them.")
