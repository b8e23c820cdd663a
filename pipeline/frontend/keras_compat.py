"""The one module that knows about TensorFlow's two Kerases.

TensorFlow 2.21 ships Keras 3 as ``tf.keras``; legacy Keras 2 lives on as the ``tf_keras``
package, which older ``.h5`` files (and tfmot) need. Nothing else in edgepipe imports
``tf_keras`` or touches ``TF_USE_LEGACY_KERAS``: both Kerases are imported by name, side by side,
so one process can serve either kind of model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

# TensorFlow's C++ start-up chatter would drown our progress lines on stderr.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_log = logging.getLogger(__name__)
# Set by pipeline.train.distribute.prepared before TensorFlow starts; acted on at its start-up (at_startup).
CPU_REPLICAS = "EDGEPIPE_CPU_REPLICAS"
MULTI_WORKER = "EDGEPIPE_MULTI_WORKER"
_STARTED: dict = {}  # the MultiWorkerMirroredStrategy made at TensorFlow's start-up


def at_startup(tf) -> None:
    """Called right after TensorFlow is imported: what ``distribute.prepared`` asked for."""
    split_cpu(tf)
    if os.environ.get(MULTI_WORKER) == "1" and "strategy" not in _STARTED:
        _STARTED["strategy"] = tf.distribute.MultiWorkerMirroredStrategy()


def split_cpu(tf) -> None:
    """The logical CPUs ``distribute.prepared`` asked for, when no GPU is there (too late once TensorFlow
    has started: then one device, and a warning)."""
    count = int(os.environ.get(CPU_REPLICAS, "0") or 0)
    if count < 2 or tf.config.list_physical_devices("GPU"):
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        logging.getLogger("edgepipe").warning("TensorFlow had started before the CPU could be split into %d devices; mirroring on one", count)


def started_strategy():
    """The MultiWorkerMirroredStrategy made at TensorFlow's start-up, or None."""
    return _STARTED.get("strategy")


def tensorflow():
    """Import TensorFlow quietly (conversion stages only).

    Its C++ start-up lines (oneDNN, CUDA probing, absl) go to file descriptor 2 before any
    Python setting can stop them; they are captured and logged at debug level instead.
    """
    if "tensorflow" not in sys.modules:
        from edgecore.cstderr import CapturedStderr

        said = CapturedStderr()
        try:
            with said:
                import tensorflow as tf

                tf.config.list_physical_devices()  # the CUDA probe reports here, not mid-pipeline
                at_startup(tf)  # --strategy mirrored on a CPU, or multi-worker: set up at start-up only
        except BaseException:
            sys.stderr.write(said.text)  # a failed import keeps its diagnostics
            raise
        _log.debug("TensorFlow start-up: %s", said.text.strip())
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    return tf


def keras3():
    """Keras 3, the default Keras of TensorFlow 2.16 and later."""
    tensorflow()
    import keras

    return keras


def legacy_keras():
    """Keras 2 (the ``tf_keras`` package), for legacy H5 files and tfmot."""
    tensorflow()
    import tf_keras

    return tf_keras


def is_legacy_model(model) -> bool:
    """True when ``model`` is a tf_keras (Keras 2) model rather than a Keras 3 one."""
    return type(model).__module__.startswith("tf_keras")


@contextlib.contextmanager
def keras3_kept():
    """Import a library that sets ``TF_USE_LEGACY_KERAS=1`` when imported (tfmot 0.8, onnx2tf) without
    letting it flip the process to Keras 2: ``tf.keras`` is resolved first, and the variable restored."""
    tf = tensorflow()
    _ = tf.keras.layers  # resolve tf.keras under the current setting before the import changes it
    previous = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = previous


def tfmot():
    """Import tensorflow-model-optimization keeping ``tf.keras`` and the converter on Keras 3 for the
    PTQ path (tfmot itself uses ``tf_keras``)."""
    try:
        with keras3_kept():
            import tensorflow_model_optimization as module
    except ImportError as exc:
        from pipeline.errors import UsageError

        raise UsageError(
            f"quantization-aware training needs tensorflow-model-optimization ({exc}); "
            "run `pip install tensorflow-model-optimization==0.8.1` (or `pip install edgepipe[qat]`)."
        ) from exc
    return module


# Config keys whose Keras 3 serialisation tf_keras cannot read; the weights are copied afterwards,
# so initializers do not matter, and regularizers and constraints are carried over when possible.
_DROPPED_KEYS = {"kernel_initializer", "bias_initializer", "depthwise_initializer", "pointwise_initializer",
                 "beta_initializer", "gamma_initializer", "moving_mean_initializer",
                 "moving_variance_initializer", "embeddings_initializer", "recurrent_initializer"}
_BASE_LAYER_KEYS = {"name", "trainable", "dtype", "input_shape", "batch_input_shape", "batch_size"}


def _legacy_object(value):
    """A Keras 3 serialised object (``{"module", "class_name", "config"}``) in tf_keras' form."""
    if isinstance(value, dict) and "class_name" in value:
        if value.get("class_name") == "DTypePolicy":
            return value["config"]["name"]
        return {"class_name": value["class_name"], "config": value.get("config", {})}
    return value


def _legacy_layer(layer, kit):
    """A tf_keras layer with the same class and configuration as a Keras 3 ``layer``."""
    import inspect

    name = type(layer).__name__
    legacy_class = getattr(kit.layers, name, None)
    if legacy_class is None or type(layer).__module__.split(".")[0] != "keras":
        from pipeline.errors import ModelLoadError

        raise ModelLoadError(
            f"layer {layer.name!r} ({name}) has no tf_keras equivalent, so the Keras 3 model cannot be "
            "rebuilt for tfmot; replace the layer or save the model with tf_keras."
        )
    accepted = set(inspect.signature(legacy_class.__init__).parameters) | _BASE_LAYER_KEYS
    config = {key: _legacy_object(value) for key, value in layer.get_config().items()
              if key in accepted and key not in _DROPPED_KEYS}
    return legacy_class.from_config(config)


def to_legacy(model):
    """Rebuild a Keras 3 Sequential or Functional model as an equivalent tf_keras model.

    Architecture from each layer's config, graph by replaying the Keras 3 graph with the new
    layers, then the weights copied layer by layer. Callers check the outputs match.
    """
    if is_legacy_model(model):
        return model
    kit = legacy_keras()
    graph = getattr(model, "_functional", None) or model
    if not hasattr(graph, "_run_through_graph"):
        from pipeline.errors import ModelLoadError

        raise ModelLoadError(
            f"{type(model).__name__} is a subclassed model; tfmot can only quantize Sequential or Functional "
            "models, so rebuild it with the Functional API."
        )
    new_layers = {}
    for layer in graph.layers:
        if type(layer).__name__ != "InputLayer":
            new_layers[id(layer)] = _legacy_layer(layer, kit)
    inputs = [kit.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=t.name.split(":")[0]) for t in graph.inputs]
    outputs = graph._run_through_graph(inputs if len(inputs) > 1 else inputs[0],
                                       operation_fn=lambda op: new_layers[id(op)])
    legacy = kit.Model(inputs if len(inputs) > 1 else inputs[0], outputs, name=model.name)
    for layer in graph.layers:
        if id(layer) in new_layers:
            new_layers[id(layer)].set_weights(layer.get_weights())
    return legacy
