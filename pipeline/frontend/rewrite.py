"""Edge-friendly rewrites of stock Keras 3 transformer layers, verified against the original.

Each rewrite is a subclass of the stock layer that computes the same function with ops that
quantize (see :mod:`pipeline.frontend.lint` for what breaks and the figures):

- ``attention-mask``: MultiHeadAttention caps masked scores at a bounded constant before a plain
  softmax, ``minimum(scores, where(mask, SCORE_CAP, MASK_BOUND))`` (the cap is folded into one
  constant), instead of Keras' ``where(mask, scores, -0.7 x float32.max)``. A masked position then
  weighs at most exp(-30 - max score) (about 1e-13 of the largest weight), so the result is the same
  in float (an attended score above ``SCORE_CAP`` would not be, and the float check would refuse
  it), and the scores' int8 range stays that of real scores. Measured on the sample GPT (int8
  perplexity against float 3.2727): adding -30 to the raw scores moved the logits by 97% of their
  largest value (a causal model never trains the scores of future positions down);
  ``scores * keep + (1 - keep) * -30`` is exact in float but requantizes twice (+2.2%);
  ``where(mask, scores, -30)`` keeps the scale (+1.5%) but SELECT_V2 has no int16x8 kernel; the
  MINIMUM gives +1.5% and int16x8 too.
- ``layer-norm``: LayerNormalization as ``xc = x - mean; xc * rsqrt(mean(xc * xc) + eps) * gamma +
  beta``: no NEG (float in int8, refused in 16x8), and ``xc * xc`` rather than ``square(x -
  mean)``, which the converter fuses into SQUARED_DIFFERENCE (refused by LiteRT in 16x8).
- ``embedding``: Embedding as a plain GATHER, without the negative-id wrap (LESS/ADD/SELECT) that
  TFLite Micro cannot run; ids are checked to be >= 0 when the data is loaded.

The rewritten layers keep their variables: a fresh copy of the model is loaded, the class of each
stock layer is swapped for its subclass (it reaches layers nested in custom blocks too), and
:func:`pipeline.run.transformer.edge_model` compares the outputs of the two models before anything is
converted.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np

from . import keras_compat

log = logging.getLogger(__name__)

MASK_BOUND = -30.0
SCORE_CAP = 1000.0  # no attended score reaches it; the float check would catch one that did
MAX_RELATIVE_DIFFERENCE = 1e-4  # of the largest output magnitude: above it the rewrite is refused
CHECK_SAMPLES = 32


@functools.lru_cache(maxsize=1)
def edge_classes() -> dict[type, tuple[str, type]]:
    """Stock Keras layer class -> (rewrite name, edge-friendly subclass)."""
    keras = keras_compat.keras3()
    tf = keras_compat.tensorflow()
    ops, layers = keras.ops, keras.layers

    class EdgeLayerNormalization(layers.LayerNormalization):
        """LayerNormalization without NEG or SQUARED_DIFFERENCE in the converted graph."""

        def call(self, inputs):
            x = ops.cast(inputs, "float32")
            axes = list(self.axis) if isinstance(self.axis, (list, tuple)) else [self.axis]
            xc = x - ops.mean(x, axis=axes, keepdims=True)
            inv = ops.rsqrt(ops.mean(xc * xc, axis=axes, keepdims=True) + self.epsilon)
            if self.rms_scaling:  # Keras' (deprecated) rms_scaling: x, not xc, over the centred variance
                return ops.cast(x * inv * ops.cast(self.gamma, "float32"), self.compute_dtype)
            y = xc * inv
            if self.scale:
                y = y * ops.cast(self.gamma, "float32")
            if self.center:
                y = y + ops.cast(self.beta, "float32")
            return ops.cast(y, self.compute_dtype)

    class EdgeEmbedding(layers.Embedding):
        """Embedding as one GATHER: no negative-id wrap (LESS/ADD/SELECT)."""

        def call(self, inputs):
            if inputs.dtype not in ("int32", "int64"):
                inputs = ops.cast(inputs, "int32")
            return ops.cast(tf.gather(self.embeddings, inputs), self.compute_dtype)

    class EdgeMultiHeadAttention(layers.MultiHeadAttention):
        """Attention with a bounded additive mask and a plain softmax (inference only: no dropout)."""

        def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                               return_attention_scores=False, use_causal_mask=False):
            if use_causal_mask:
                causal = self._compute_causal_mask(query, value)
                attention_mask = causal if attention_mask is None else ops.logical_and(
                    ops.cast(attention_mask, "bool"), causal)
            query = ops.multiply(query, ops.cast(self._inverse_sqrt_key_dim, query.dtype))
            scores = ops.einsum(self._dot_product_equation, key, query)
            if attention_mask is not None:
                axis = -len(self._attention_axes) * 2 - 1
                for _ in range(len(scores.shape) - len(attention_mask.shape)):
                    attention_mask = ops.expand_dims(attention_mask, axis=axis)
                # A constant cap per position (folded by the converter): no cap where attended, the
                # bound where masked. One MINIMUM keeps the scores' scale in int8 and has a 16x8 kernel.
                cap = ops.where(ops.cast(attention_mask, "bool"), ops.cast(SCORE_CAP, scores.dtype),
                                ops.cast(MASK_BOUND, scores.dtype))
                scores = ops.minimum(scores, cap)
            weights = self._softmax(scores)
            return ops.einsum(self._combine_equation, weights, value), weights

    return {layers.LayerNormalization: ("layer-norm", EdgeLayerNormalization),
            layers.Embedding: ("embedding", EdgeEmbedding),
            layers.MultiHeadAttention: ("attention-mask", EdgeMultiHeadAttention)}


def _rewritable(layer) -> bool:
    """Stock layers only (a user's subclass may compute something else), not quantized or LoRA;
    a LayerNormalization only over the last axis (the one gamma and beta broadcast over as is)."""
    if type(layer) not in edge_classes() or getattr(layer, "quantization_mode", None) is not None \
            or getattr(layer, "lora_enabled", False):
        return False
    if isinstance(layer, keras_compat.keras3().layers.LayerNormalization):
        try:
            rank = len(layer.input.shape)
        except (AttributeError, ValueError):  # a layer called more than once, or not in a graph
            return False
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        return [a % rank for a in axes] == [rank - 1]
    return True


def rewritable_layers(keras_model) -> list[Any]:
    """The layers of ``keras_model`` (nested ones too) that have an edge-friendly rewrite."""
    if keras_model is None or keras_compat.is_legacy_model(keras_model):
        return []
    return [layer for layer in keras_model._flatten_layers(include_self=False) if _rewritable(layer)]


def rewrite_kind(layer) -> str:
    """The name of the rewrite a stock layer gets ('attention-mask', 'layer-norm', 'embedding')."""
    return edge_classes()[type(layer)][0]


def swap_layers(keras_model, only: set[str] | None = None) -> list[dict[str, str]]:
    """Rewrite ``keras_model`` in place (same variables), the layers named in ``only`` (default:
    all that can be); what was rewritten, layer by layer."""
    done = []
    for layer in rewritable_layers(keras_model):
        if only is not None and layer.name not in only:
            continue
        kind, edge = edge_classes()[type(layer)]
        done.append({"layer": layer.name, "rewrite": kind, "from": type(layer).__name__, "to": edge.__name__})
        layer.__class__ = edge
    return done


def output_difference(reference: np.ndarray, rewritten: np.ndarray) -> dict[str, float]:
    """Max absolute difference, and the same relative to the largest reference magnitude."""
    difference = float(np.max(np.abs(reference.astype(np.float64) - rewritten.astype(np.float64))))
    scale = float(np.max(np.abs(reference))) or 1.0
    return {"max_abs_difference": difference, "max_relative_difference": difference / scale}
