"""The one module that knows about TensorFlow's two Kerases.

TensorFlow 2.21 ships Keras 3 as ``tf.keras``; legacy Keras 2 lives on as the ``tf_keras``
package, which older ``.h5`` files (and tfmot) need. Nothing else in edgepipe imports
``tf_keras`` or touches ``TF_USE_LEGACY_KERAS``: both Kerases are imported by name, side by side,
so one process can serve either kind of model.
"""

from __future__ import annotations

import logging
import os

# TensorFlow's C++ start-up chatter would drown our progress lines on stderr.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def tensorflow():
    """Import TensorFlow quietly (conversion stages only)."""
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
