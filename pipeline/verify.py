"""Compare the float model with a converted artifact on the same evaluation data."""

from __future__ import annotations

import numpy as np

from edgecore.metrics import agreement, is_classifier, output_error, top1_accuracy
from edgecore.model_info import ModelInfo

from .candidates import Verification
from .errors import ConversionError
from .vocab import Recipe, Task


def check_integer_only(info: ModelInfo, recipe: Recipe, *, islands: bool = False) -> None:
    """Full-integer recipes promise no float compute besides QUANTIZE/DEQUANTIZE at the edges
    (and the float islands asked for, which the report lists as ``artifact.float_ops``)."""
    if recipe is not Recipe.INT8 or islands:
        return
    floats = info.float_ops()
    if floats:
        raise ConversionError(
            f"the int8 model still computes in float in: {', '.join(floats[:8])}; these layers have no "
            "int8 kernel, so replace them or use --recipe dynamic."
        )


def compare(float_outputs: np.ndarray, quantized_outputs: np.ndarray, labels: np.ndarray | None,
            *, softmax_head: bool = False) -> Verification:
    """Accuracy of both, top-1 agreement, and output error of the quantized vs the float model.

    A model is treated as a classifier when it ends in a softmax, or when class labels come with
    the data; otherwise accuracy and agreement are None and only the output error speaks.
    """
    classifier = is_classifier(float_outputs) and (softmax_head or labels is not None)
    return Verification(
        task=Task.CLASSIFICATION if classifier else Task.REGRESSION,
        float_accuracy=top1_accuracy(float_outputs, labels) if classifier else None,
        accuracy=top1_accuracy(quantized_outputs, labels) if classifier else None,
        agreement=agreement(float_outputs, quantized_outputs) if classifier else None,
        output_error=output_error(float_outputs, quantized_outputs),
    )
