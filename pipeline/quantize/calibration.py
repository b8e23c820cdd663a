"""Calibration beyond min/max: TensorFlow's own quantizer, fed the ranges edgepipe chooses.

The TFLite converter calibrates with global min/max. Here the same converter is asked for the
*calibrated float model* (``_experimental_calibrate_only``: every activation tensor carries the
min/max it saw), the calibration samples are run through that model in LiteRT with every
intermediate tensor kept, :mod:`pipeline.quantize.ranges` picks each tensor's range, the ranges are
written back, and ``mlir_quantize`` makes the int8 model. With the ranges left alone this gives the
converter's own tensors (a test holds TensorFlow to that, since these are private APIs).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass, field

import numpy as np

from edgecore.cstderr import CapturedStderr
from edgecore.progress import progress
from pipeline.core.data import Dataset
from pipeline.errors import ConversionError, UsageError
from pipeline.frontend import keras_compat
from pipeline.frontend.loading import LoadedModel

from .ranges import BINS, CHOOSERS, DEFAULT_PERCENTILE, TensorStats, symmetric

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet(what: str):
    """Converter chatter (stdout, C-level stderr, Python warnings) goes to the debug log."""
    chatter, native = io.StringIO(), CapturedStderr()
    try:
        with contextlib.redirect_stdout(chatter), native, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except Exception as exc:  # TensorFlow raises many types here
        text = " ".join(str(exc).split())[:400]
        raise ConversionError(f"{what} failed: {text}.") from exc
    finally:
        said = (chatter.getvalue() + native.text).strip()
        if said:
            log.debug("%s: %s", what, said)


def calibrated_model(model: LoadedModel, samples: np.ndarray, *, dynamic_batch: bool = False) -> bytes:
    """The float model with every activation tensor's calibration min/max recorded in it."""
    tf = keras_compat.tensorflow()
    converter = model.make_converter(None if dynamic_batch else 1)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([samples[i:i + 1]] for i in range(len(samples)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter._experimental_calibrate_only = True
    with _quiet("calibration"):
        return bytes(converter.convert())


def recorded_ranges(calibrated: bytes) -> dict[int, tuple[str, float, float]]:
    """Tensor index -> (name, min, max) of every tensor the calibration recorded a range for."""
    from tensorflow.lite.tools import flatbuffer_utils

    keras_compat.tensorflow()
    found = {}
    for index, tensor in enumerate(flatbuffer_utils.convert_bytearray_to_object(calibrated).subgraphs[0].tensors):
        q = tensor.quantization
        if q is not None and q.min is not None and len(q.min) == 1:
            found[index] = (tensor.name.decode(), float(q.min[0]), float(q.max[0]))
    return found


def ranges_by_name(calibrated: bytes) -> dict[str, tuple[float, float]]:
    """Tensor name -> (min, max) the calibration recorded (names match the quantized model's)."""
    return {name: (low, high) for name, low, high in recorded_ranges(calibrated).values()}


def _interpreter(calibrated: bytes):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # XNNPACK would fuse ops and hide intermediate tensors; keep every tensor readable.
    interpreter = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    return interpreter


def collect_stats(calibrated: bytes, samples: np.ndarray) -> dict[int, TensorStats]:
    """Per-sample min/max and histograms of every calibrated activation tensor (two passes)."""
    tracked = recorded_ranges(calibrated)
    interpreter = _interpreter(calibrated)
    source, kind = (interpreter.get_input_details()[0][key] for key in ("index", "dtype"))
    lows = {i: np.empty(len(samples)) for i in tracked}
    highs = {i: np.empty(len(samples)) for i in tracked}

    def run(row: int) -> dict[int, np.ndarray]:
        interpreter.set_tensor(source, samples[row:row + 1].astype(kind))
        interpreter.invoke()
        return {i: interpreter.get_tensor(i) for i in tracked}

    with progress(2 * len(samples), "activation statistics", log) as advance:
        for row in range(len(samples)):
            for index, values in run(row).items():
                lows[index][row], highs[index][row] = float(values.min()), float(values.max())
            advance(1)
        stats = _histograms(tracked, lows, highs, samples, run, advance)
    return stats


def _histograms(tracked, lows, highs, samples, run, advance) -> dict[int, TensorStats]:
    stats = {i: TensorStats(i, tracked[i][0], lows[i], highs[i], np.zeros(BINS), np.zeros(BINS)) for i in tracked}
    for row in range(len(samples)):
        for index, values in run(row).items():
            s = stats[index]
            flat = values.ravel().astype(np.float64)
            if s.high > s.low:
                s.histogram += np.histogram(flat, BINS, (s.low, s.high))[0]
            top = max(abs(s.low), abs(s.high))
            if top > 0:
                s.magnitude += np.histogram(np.abs(flat), BINS, (0.0, top))[0]
        advance(1)
    return stats


def choose_ranges(stats: dict[int, TensorStats], method: str, percentile: float | None = None,
                  symmetric_activations: bool = False) -> dict[int, tuple[float, float]]:
    """Tensor index -> (low, high) by ``method`` (see :mod:`pipeline.quantize.ranges`)."""
    chooser = CHOOSERS[method]
    p = percentile if percentile is not None else DEFAULT_PERCENTILE.get(method, 0.0)
    ranges = {}
    for index, s in stats.items():
        low, high = chooser(s, p)
        if symmetric_activations:
            low, high = symmetric(low, high)
        elif np.isclose(low, s.low, rtol=1e-6, atol=0) and np.isclose(high, s.high, rtol=1e-6, atol=0):
            continue  # unchanged: keep the converter's own recorded range
        ranges[index] = (low, high)
    return ranges


def quantize(calibrated: bytes, ranges: dict[int, tuple[float, float]] | None = None, *, float_io: bool = False,
             per_tensor: bool = False, float_nodes: tuple[str, ...] = ()) -> bytes:
    """The int8 model from the calibrated one, with ``ranges`` written over the recorded ones."""
    tf = keras_compat.tensorflow()
    from tensorflow.lite.python.convert import mlir_quantize
    from tensorflow.lite.tools import flatbuffer_utils

    model = calibrated
    if ranges:
        obj = flatbuffer_utils.convert_bytearray_to_object(calibrated)
        tensors = obj.subgraphs[0].tensors
        for index, (low, high) in ranges.items():
            tensors[index].quantization.min = [float(low)]
            tensors[index].quantization.max = [float(high)]
        model = bytes(flatbuffer_utils.convert_object_to_bytearray(obj))
    io_type = tf.float32 if float_io else tf.int8
    with _quiet("int8 quantization"):
        return bytes(mlir_quantize(model, disable_per_channel=per_tensor, input_data_type=io_type,
                                   output_data_type=io_type, denylisted_nodes=list(float_nodes) or None))


HELD_OUT_FRACTION = 0.2
MIN_HELD_OUT = 16
MAX_HELD_OUT = 500


def split_for_selection(calib: Dataset, calib_samples: int | None) -> tuple[Dataset, Dataset]:
    """(fit, select): the last fifth of the calibration data (16 to 500 samples) is held out to
    choose on, so that ``--eval`` never takes part in a choice; the rest calibrates."""
    held_out = min(max(MIN_HELD_OUT, int(calib.samples * HELD_OUT_FRACTION)), MAX_HELD_OUT)
    if calib.samples - held_out < MIN_HELD_OUT:
        raise UsageError(f"choosing a calibration or a rung holds out part of the calibration data, and "
                         f"{calib.samples} samples are too few; give at least {2 * MIN_HELD_OUT} with --calib.")
    return calib.slice(0, calib.samples - held_out).head(calib_samples), calib.slice(calib.samples - held_out, None)


@dataclass
class CalibrationWork:
    """What every int8 candidate of a run shares, computed once and only when first needed: the
    calibrated float model, the activation statistics, and the float outputs on held-out data."""

    model: LoadedModel
    fit: Dataset
    select: Dataset | None
    dynamic_batch: bool = False
    _calibrated: bytes | None = field(default=None, repr=False)
    _stats: dict[int, TensorStats] | None = field(default=None, repr=False)
    _select_float: np.ndarray | None = field(default=None, repr=False)

    @property
    def calibrated(self) -> bytes:
        if self._calibrated is None:
            log.info("calibrating on %d samples", self.fit.samples)
            self._calibrated = calibrated_model(self.model, self.fit.x, dynamic_batch=self.dynamic_batch)
        return self._calibrated

    @property
    def stats(self) -> dict[int, TensorStats]:
        if self._stats is None:
            log.info("collecting activation statistics of %d tensors", len(recorded_ranges(self.calibrated)))
            self._stats = collect_stats(self.calibrated, self.fit.x)
        return self._stats

    @property
    def select_float(self) -> np.ndarray | None:
        if self._select_float is None and self.select is not None:
            self._select_float = self.model.predict(self.select.x)
        return self._select_float

    def int8(self, method: str, *, percentile: float | None = None, symmetric_activations: bool = False,
             per_tensor: bool = False, float_io: bool = False, float_nodes: tuple[str, ...] = ()) -> bytes:
        """An int8 model of the calibrated one, with ``method``'s ranges."""
        needs_ranges = method != "minmax" or symmetric_activations
        ranges = choose_ranges(self.stats, method, percentile, symmetric_activations) if needs_ranges else None
        return quantize(self.calibrated, ranges, float_io=float_io, per_tensor=per_tensor, float_nodes=float_nodes)
