"""Turn a loaded float model into a ``.tflite`` by one of the recipes.

int8 is full-integer post-training quantization: int8 weights (per channel) and activations,
int8 input and output (float I/O on request), calibrated on the representative dataset.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np

from edgecore.cstderr import CapturedStderr
from edgecore.progress import progress
from pipeline.core.config import DEFAULT_CALIB_SAMPLES
from pipeline.core.data import Dataset
from pipeline.errors import ConversionError, UsageError
from pipeline.frontend import keras_compat
from pipeline.frontend.loading import LoadedModel
from pipeline.vocab import Recipe

log = logging.getLogger(__name__)


def convert_model(model: LoadedModel, recipe: Recipe, calib: Dataset | None = None, *,
                  float_io: bool = False, calib_samples: int | None = DEFAULT_CALIB_SAMPLES,
                  dynamic_batch: bool = False) -> bytes:
    """The ``.tflite`` bytes for ``model`` under ``recipe`` (deterministic for the same inputs).

    The batch dimension is fixed to 1 unless ``dynamic_batch``: static shapes are what devices run.
    For a QAT model the fake-quant ranges learnt in training are kept; the converter still needs
    representative data for the int8 input and output and for layers QAT left unannotated.
    """
    tf = keras_compat.tensorflow()
    if recipe.needs_calibration and calib is None:
        raise UsageError(f"recipe {recipe.value} calibrates on representative data; pass --calib DATA.")
    converter = model.make_converter(None if dynamic_batch else 1)
    if recipe is not Recipe.FLOAT32:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if recipe is Recipe.FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    if recipe.needs_calibration:
        samples = calib.head(calib_samples).x
        log.info("calibrating %s on %d samples", recipe.value, len(samples))
        converter.representative_dataset = _representative(samples, log)
        if recipe is Recipe.INT8:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            io_type = tf.float32 if float_io else tf.int8
        else:
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
            io_type = tf.float32 if float_io else tf.int16
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
    chatter, native = io.StringIO(), CapturedStderr()
    try:
        # Keras' exporter prints the traced signature to stdout, which must stay clean for --json,
        # and the converter's C++ side prints its settings to stderr: both go to the debug log.
        with contextlib.redirect_stdout(chatter), native, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TensorFlow's Python warnings about its own internals
            return bytes(converter.convert())
    except Exception as exc:  # the converter raises ConverterError, RuntimeError, ValueError...
        text = " ".join(str(exc).split())[:400]
        hint = (" Some op has no int8 kernel; try --recipe int16x8 or dynamic, or replace the layer."
                if recipe.needs_calibration else "")
        raise ConversionError(f"the TFLite converter failed for recipe {recipe.value}: {text}.{hint}") from exc
    finally:
        said = (chatter.getvalue() + native.text).strip()
        if said:
            log.debug("converter output: %s", said)


def _representative(samples: np.ndarray, logger: logging.Logger):
    """The converter's representative dataset, one sample at a time, with progress on stderr."""
    def generate():
        with progress(len(samples), "calibrating", logger) as advance:
            for row in range(len(samples)):
                yield [samples[row:row + 1]]
                advance(1)

    return generate
