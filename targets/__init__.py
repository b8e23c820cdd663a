"""edgepipe's target layer: run a ``.tflite`` model somewhere and report what happened.

Needs only numpy and one LiteRT interpreter (``ai_edge_litert``, else ``tflite_runtime``, else
``tf.lite``), never TensorFlow's converter, so the runners work on a device without TensorFlow.
"""

from .base import RunOptions, Target, TargetResult
from .registry import available_targets, get_target

__all__ = ["RunOptions", "Target", "TargetResult", "available_targets", "get_target"]
