"""Ethos-U estimates against published measurements (BENCHMARKS.md, "NPU targets against published figures").

    python bench/npu_anchors.py        (about a minute; writes bench/npu_anchors.md, which
                                        bench/report.py puts at the end of BENCHMARKS.md)

The anchor models are rebuilt in Keras with random weights (latency does not depend on the values,
only Vela's weight compression does, a little), converted to full int8 and estimated by edgepipe's
NPU targets. The measured figures and their sources are in ANCHORS.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgecore.flatbuffer import read_ops  # noqa: E402
from pipeline.frontend.keras_compat import keras3, tensorflow  # noqa: E402
from targets import get_target  # noqa: E402

ANCHORS = [
    {"model": "mobilenet_v2_224", "target": "ethos-u55-128", "measured_ms": 91.2,
     "where": "a Cortex-M55 + Ethos-U55 board running TFLM, board, NPU size and clocks not stated "
              "(pytorch/executorch issue 17157, 2026-02-03: mean of 100 runs, 91.204 ms)"},
    {"model": "mobilenet_v2_224", "target": "ethos-u55-256", "measured_ms": 91.2,
     "where": "the same measurement, estimated on the faster Alif E7 HP configuration"},
    {"model": "ssd_mobilenet_v2_300", "target": "ethos-u65-256", "measured_ms": 11.605,
     "where": "Artila Matrix-800 (NXP i.MX 93, Ethos-U65-256), LiteRT with the Ethos-U delegate, "
              "ssd_mobilenet_v2_coco_quant_postprocess, average 11.605 ms (github.com/artilatw/docs, "
              "matrix800/npu_guide.md); includes TFLite_Detection_PostProcess on the Cortex-A55"},
]


def _int8(model, shape) -> bytes:
    tf = tensorflow()
    rng = np.random.default_rng(0)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([rng.uniform(-1, 1, size=(1, *shape)).astype(np.float32)]
                                                for _ in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()):
        return bytes(converter.convert())


def mobilenet_v2_224() -> bytes:
    """Keras' MobileNetV2 (alpha 1.0, 224x224, 1000 classes), batch 1."""
    keras = keras3()
    keras.utils.set_random_seed(0)
    body = keras.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=1.0, weights=None, classes=1000)
    inputs = keras.Input((224, 224, 3), batch_size=1)
    return _int8(keras.Model(inputs, body(inputs)), (224, 224, 3))


def ssd_mobilenet_v2_300() -> bytes:
    """SSD-MobileNetV2 300x300 in the TF1 Object Detection API layout (1917 anchors, 91 classes), without
    the detection post-processing op, which runs on the CPU in the measured model."""
    keras = keras3()
    layers = keras.layers
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(input_shape=(300, 300, 3), alpha=1.0, include_top=False, weights=None)
    features = [base.get_layer("block_13_expand_relu").output, base.get_layer("out_relu").output]
    x = features[-1]
    for middle, out in ((256, 512), (128, 256), (128, 256), (64, 128)):
        x = layers.ReLU(6.0)(layers.BatchNormalization()(layers.Conv2D(middle, 1, use_bias=False)(x)))
        x = layers.ReLU(6.0)(layers.BatchNormalization()(layers.Conv2D(out, 3, strides=2, padding="same",
                                                                       use_bias=False)(x)))
        features.append(x)
    boxes, scores = [], []
    for index, feature in enumerate(features):
        anchors = 3 if index == 0 else 6
        boxes.append(layers.Reshape((-1, 4))(layers.Conv2D(anchors * 4, 1)(feature)))
        scores.append(layers.Reshape((-1, 91))(layers.Conv2D(anchors * 91, 1)(feature)))
    body = keras.Model(base.input, [layers.Concatenate(axis=1)(boxes),
                                    layers.Activation("sigmoid")(layers.Concatenate(axis=1)(scores))])
    inputs = keras.Input((300, 300, 3), batch_size=1)
    return _int8(keras.Model(inputs, body(inputs)), (300, 300, 3))


WHY = """Why they differ. Vela's cycles are its static model of the NPU and its AXI memories; a measured
`Invoke` also holds what Vela does not see: the driver and command-stream set-up, cache maintenance, the
input copy and quantization, CPU post-processing (SSD's TFLite_Detection_PostProcess, non-maximum suppression
over 1917 boxes x 91 classes, on the A55), and memories slower under contention than the .ini's figures.
The MobileNetV2 board is not named, so neither its NPU size nor its clock nor where its 3.5 MB of weights live
is known: edgepipe's two Alif E7 configurations give 0.11x and 0.41x, so even the slower one is 2.5x faster
than the measurement (a U55-64, or weights in external flash, would explain most of the gap). On the
i.MX 93 the estimate is 1.17x the measurement although it leaves out the post-processing: the mainline NPU
clock (800 MHz) and 96 KiB of SRAM are assumptions, and NXP's BSP may run the NPU at 1 GHz with more SRAM
(Vela then gives 7.6 to 8.5 ms, 0.66x to 0.73x). Against Arm's Corstone-300 FVP (a simulator, not a board)
Vela agrees within 7% on MobileNetV2 (7.89 M vs 7.35 M NPU cycles, Arm ML Embedded Evaluation Kit,
docs/use_cases/img_class.md), which says nothing of board overheads. Read the NPU estimate as the NPU's share
of an inference, not a measurement: between 0.1x and 1.2x of the measured whole inference on these anchors.
No MLPerf Tiny round (v1.0 to v1.3) has an Ethos-U submission; the per-model tables of Fanariotis et al.
(arXiv 2509.17533, Alif E7) were not readable here."""


def main() -> None:
    models = {"mobilenet_v2_224": mobilenet_v2_224(), "ssd_mobilenet_v2_300": ssd_mobilenet_v2_300()}
    lines = ["## NPU targets against published figures", "",
             "Written by `python bench/npu_anchors.py` (anchor models rebuilt in Keras, random weights, full int8).", "",
             "| model | target (board) | measured ms | estimated ms (NPU + CPU) | estimate / measured | ops on the NPU |",
             "|---|---|---|---|---|---|"]
    for anchor in ANCHORS:
        blob = models[anchor["model"]]
        target = get_target(anchor["target"])
        estimate = target.estimates(blob, read_ops(blob), target.compile(blob))
        split = estimate["latency_split_ms"]
        lines.append(f"| {anchor['model']} | {anchor['target']} ({target.profile.title}) | {anchor['measured_ms']} | "
                     f"{estimate['estimated_latency_ms']:.2f} ({split['npu']:.2f} + {split['cpu_fallback']:.2f}) | "
                     f"{estimate['estimated_latency_ms'] / anchor['measured_ms']:.2f} | "
                     f"{estimate['npu_ops']} of {estimate['total_ops']} |")
    lines += ["", *(f"- {a['model']} on {a['target']}: {a['where']}" for a in ANCHORS), "", WHY]
    text = "\n".join(lines) + "\n"
    print(text)
    (Path(__file__).resolve().parent / "npu_anchors.md").write_text(text)


if __name__ == "__main__":
    main()
