"""edgepipe's target layer: run a ``.tflite`` model somewhere and report what happened.

Needs only numpy and one LiteRT interpreter (``ai_edge_litert``, else ``tflite_runtime``, else
``tf.lite``), never TensorFlow's converter, so the runners work on a device without TensorFlow.
This module is the layer's public surface: the pipeline uses these names and nothing else.
"""

from edgecore.vocab import Capability

from .base import MAX_THREADS, DeployBundle, RunOptions, SshOptions, Target, TargetResult
from .mcu.memory import live_peak
from .registry import (
                       available_targets,
                       check_options,
                       get_target,
                       int16_refusal,
                       register_target,
                       require,
                       targets_with,
                       unregister_target,
)
from .worker import breadcrumb, call_isolated, in_worker, retried_after

__all__ = ["MAX_THREADS", "Capability", "DeployBundle", "RunOptions", "SshOptions", "Target", "TargetResult",
           "available_targets", "breadcrumb", "call_isolated", "check_options", "get_target", "in_worker", "int16_refusal", "live_peak",
           "register_target", "require", "retried_after", "targets_with", "unregister_target"]
