"""MLPerf Tiny reference architectures, built in code, for calibrating the MCU cycle model.

Latency depends on the graph (op types and their MACs and sizes), not on trained weights, so the
models get seeded random weights and random calibration data. The architectures follow the
MLPerf Tiny v0.5 reference training scripts:

* ``resnet8``  image classification, CIFAR-10 32x32x3, about 12.5 M MACs
* ``ds_cnn``   keyword spotting, 49x10x1 MFCC, about 2.7 M MACs
* ``mobilenet_vww``  visual wake words, MobileNetV1 alpha 0.25 at 96x96x3, about 7.5 M MACs
* ``fc_autoencoder`` anomaly detection, 640 inputs, about 0.26 M MACs
"""

from __future__ import annotations

import numpy as np

from pipeline.frontend.keras_compat import keras3, tensorflow

SEED = 2021


def resnet8():
    keras = keras3()
    layers = keras.layers
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(16, 3, padding="same")(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        y = layers.Conv2D(filters, 3, strides=stride, padding="same")(x)
        y = layers.ReLU()(layers.BatchNormalization()(y))
        y = layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same")(y))
        if stride != 1:
            x = layers.Conv2D(filters, 1, strides=stride, padding="same")(x)
        x = layers.ReLU()(layers.Add()([x, y]))
    x = layers.Flatten()(layers.AveragePooling2D(8)(x))
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x), name="resnet8")


def ds_cnn():
    keras = keras3()
    layers = keras.layers
    inputs = keras.Input((49, 10, 1))
    x = layers.Conv2D(64, (10, 4), strides=2, padding="same")(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    for _ in range(4):
        x = layers.ReLU()(layers.BatchNormalization()(layers.DepthwiseConv2D(3, padding="same")(x)))
        x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(64, 1)(x)))
    x = layers.Flatten()(layers.AveragePooling2D((25, 5))(x))
    return keras.Model(inputs, layers.Dense(12, activation="softmax")(x), name="ds_cnn")


def mobilenet_vww():
    keras = keras3()
    layers = keras.layers
    inputs = keras.Input((96, 96, 3))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, strides=2, padding="same")(inputs)))
    plan = ((16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (128, 1), (128, 1),
            (128, 1), (128, 1), (256, 2), (256, 1))
    for filters, stride in plan:
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same")(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(filters, 1)(x)))
    x = layers.Flatten()(layers.AveragePooling2D(3)(x))
    return keras.Model(inputs, layers.Dense(2, activation="softmax")(x), name="mobilenet_vww")


def fc_autoencoder():
    keras = keras3()
    layers = keras.layers
    inputs = keras.Input((640,))
    x = inputs
    for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        x = layers.ReLU()(layers.BatchNormalization()(layers.Dense(units)(x)))
    return keras.Model(inputs, layers.Dense(640)(x), name="fc_autoencoder")


BUILDERS = {"resnet8": resnet8, "ds_cnn": ds_cnn, "mobilenet_vww": mobilenet_vww,
            "fc_autoencoder": fc_autoencoder}


def int8_tflite(name: str, calibration_samples: int = 16) -> bytes:
    """The named architecture as a full-int8 ``.tflite`` with int8 input and output."""
    return quantized_tflite(name, "int8", calibration_samples)


def quantized_tflite(name: str, activations: str = "int8", calibration_samples: int = 16) -> bytes:
    """The named architecture, weights int8, activations (and input and output) ``int8`` or
    ``int16`` (TFLite's 16x8 quantization)."""
    keras3().utils.set_random_seed(SEED)
    model = BUILDERS[name]()
    tf = tensorflow()
    rng = np.random.default_rng(SEED)
    shape = (1, *model.inputs[0].shape[1:])

    def representative():
        for _ in range(calibration_samples):
            yield [rng.uniform(-1, 1, size=shape).astype(np.float32)]

    inputs = keras3().Input(shape[1:], batch_size=1, name="input")
    converter = tf.lite.TFLiteConverter.from_keras_model(keras3().Model(inputs, model(inputs)))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    if activations == "int16":
        sixteen_by_eight = tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        converter.target_spec.supported_ops = [sixteen_by_eight]
        converter.inference_input_type = converter.inference_output_type = tf.int16
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    return bytes(converter.convert())
