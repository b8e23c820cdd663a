"""Compare the float model with a converted artifact on the same evaluation data."""

from __future__ import annotations

import numpy as np

from edgecore.metrics import (
    agreement,
    are_probabilities,
    is_classifier,
    is_sequence,
    output_error,
    perplexity,
    top1_accuracy,
)
from edgecore.model_info import ModelInfo
from pipeline.core.candidates import Verification
from pipeline.errors import ConversionError
from pipeline.vocab import Recipe, Task


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
            + (" NEG comes from Keras' LayerNormalization, which edgepipe rewrites unless --no-rewrite."
               if any(op.startswith("NEG") for op in floats) else "")
        )


def compare(float_outputs: np.ndarray, quantized_outputs: np.ndarray, labels: np.ndarray | None,
            *, softmax_head: bool = False) -> Verification:
    """Accuracy of both, top-1 agreement, and output error of the quantized vs the float model;
    for a sequence model (scores [N, T, V], labels [N, T]) accuracy is per token, plus perplexity.

    A model is treated as a classifier when it ends in a softmax, or when class labels come with
    the data; otherwise accuracy and agreement are None and only the output error speaks.
    """
    classifier = is_classifier(float_outputs) and (softmax_head or labels is not None)
    sequence = classifier and is_sequence(float_outputs) and labels is not None
    task = Task.SEQUENCE if sequence else Task.CLASSIFICATION if classifier else Task.REGRESSION
    return Verification(
        task=task,
        float_accuracy=top1_accuracy(float_outputs, labels) if classifier else None,
        accuracy=top1_accuracy(quantized_outputs, labels) if classifier else None,
        agreement=agreement(float_outputs, quantized_outputs) if classifier else None,
        output_error=output_error(float_outputs, quantized_outputs),
        float_perplexity=perplexity(float_outputs, labels) if sequence else None,
        perplexity=perplexity(quantized_outputs, labels, probabilities=are_probabilities(float_outputs))
        if sequence else None,
    )
