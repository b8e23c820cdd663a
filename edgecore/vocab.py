"""The one vocabulary of edgepipe: every fixed set of words, and the preprocessing spec.

Frozen dataclasses and ``str`` enums with ``to_dict``/``from_dict`` so that JSON reports, TOML
files and click choices all speak the same words. It sits in the bottom layer because targets
(kernels, capabilities) and the pipeline (recipes, strategies) share it. No TensorFlow here.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import UsageError


class Choice(enum.StrEnum):
    """A fixed set of words: ``str(member)`` is its value, as in JSON, TOML and click choices."""

    @classmethod
    def choices(cls) -> list[str]:
        return [member.value for member in cls]

    @classmethod
    def parse(cls, value: Any, field: str):
        """``value`` as a member; a :class:`UsageError` naming ``field`` and the choices if it is not one."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            raise UsageError(f"{field} {value!r} is not one of: {', '.join(cls.choices())}.") from None


class Recipe(Choice):
    """How the converter quantizes the model."""

    INT8 = "int8"
    INT16X8 = "int16x8"
    FLOAT16 = "float16"
    DYNAMIC = "dynamic"
    FLOAT32 = "float32"

    @property
    def needs_calibration(self) -> bool:
        """Full-integer recipes calibrate activation ranges on representative data."""
        return self in (Recipe.INT8, Recipe.INT16X8)


class Calibration(Choice):
    """How activation ranges are chosen from the representative data (see ``pipeline.quantize.ranges``)."""

    MINMAX = "minmax"
    PERCENTILE = "percentile"
    MSE = "mse"
    MAE = "mae"
    KL = "kl"
    ROBUST = "robust"
    AUTO = "auto"


class Weights(Choice):
    """Weight quantization granularity."""

    PER_CHANNEL = "per-channel"
    PER_TENSOR = "per-tensor"


class Activations(Choice):
    """Activation quantization: asymmetric (zero point free) or symmetric (zero point 0)."""

    ASYMMETRIC = "asymmetric"
    SYMMETRIC = "symmetric"


class ModelFormat(Choice):
    """What the float model was loaded from (or made by)."""

    KERAS = "keras"
    H5_KERAS3 = "h5-keras3"
    H5_TF_KERAS = "h5-tf_keras"
    SAVED_MODEL = "saved_model"
    ONNX = "onnx"
    QAT = "qat"


class Task(Choice):
    """How outputs are judged: top-1 against labels (per token for sequences, with perplexity),
    or output error only."""

    CLASSIFICATION = "classification"
    SEQUENCE = "sequence"  # scores per position [N, T, V], labels [N, T]: token accuracy, perplexity
    REGRESSION = "regression"


class Strategy(Choice):
    """The ``tf.distribute`` strategy for quantization-aware training."""

    DEFAULT = "default"
    MIRRORED = "mirrored"
    MULTI_WORKER = "multi-worker"


class LayerStatus(Choice):
    """What QAT does with a layer."""

    QUANTIZED = "quantized"
    CUSTOM = "custom"
    FLOAT = "float"
    UNSUPPORTED = "unsupported"


class Kernels(Choice):
    """Which LiteRT kernels run a model: XNNPACK, the optimized builtins, or the reference ones."""

    XNNPACK = "xnnpack"
    BUILTIN = "builtin"
    REFERENCE = "reference"


class Capability(Choice):
    """What a target can do; the API checks a request against these before any work."""

    RUN = "run"
    ACCURACY = "accuracy"
    LATENCY = "latency"
    ESTIMATED_LATENCY = "estimated-latency"
    XNNPACK = "xnnpack"
    ARENA = "arena"
    FIT = "fit"
    ENERGY = "energy"
    DEPLOY = "deploy"
    SSH = "ssh"
    EMULATE = "emulate"
    INSTRUCTION_COUNT = "instruction-count"
    FLOAT_OPS = "float-ops"  # fine with float compute in an int8 model (float islands); MCUs are not


class ColorMode(Choice):
    """How images are decoded before they reach the model."""

    GRAYSCALE = "grayscale"
    RGB = "rgb"


@dataclass(frozen=True)
class Preprocess:
    """One preprocessing spec, applied identically to float evaluation, calibration and targets.

    ``model_input = raw * scale + offset`` where ``raw`` is the decoded sample (uint8 pixels for
    images). ``scale=None`` means "not decided yet": :meth:`resolve` picks 1/255 for uint8 data and
    1.0 otherwise, and the resolved value is what gets recorded. A model whose input is integer
    (``dtype`` int32: token ids for an embedding) takes the data as it is, never scaled.
    """

    shape: tuple[int, ...]
    color_mode: ColorMode | None = None
    scale: float | None = None
    offset: float = 0.0
    layout: str = "NHWC"
    dtype: str = "float32"  # the model input's type

    @property
    def tokens(self) -> bool:
        """Integer inputs: ids (e.g. characters or word pieces), taken as they are."""
        return self.dtype.startswith(("int", "uint"))

    @property
    def is_image(self) -> bool:
        return self.color_mode is not None

    @property
    def height_width(self) -> tuple[int, int] | None:
        return (self.shape[0], self.shape[1]) if self.is_image else None

    def resolve(self, raw_dtype: Any) -> "Preprocess":
        """Fix ``scale`` from the raw data's dtype if the user did not choose one."""
        if self.tokens:
            return replace(self, scale=1.0, offset=0.0)
        if self.scale is not None:
            return self
        import numpy as np

        return replace(self, scale=1.0 / 255.0 if np.dtype(raw_dtype) == np.uint8 else 1.0)

    @classmethod
    def from_input_shape(cls, shape: tuple[int | None, ...], **overrides: Any) -> "Preprocess":
        """Derive the default spec from a model input shape such as ``(None, 28, 28, 1)``."""
        if any(d is None for d in shape[1:]):
            raise UsageError(f"the model's input {list(shape)} has open dimensions (None); give their sizes with "
                             "--input-shape, e.g. --input-shape 96,96,3.")
        sample_shape = tuple(int(d) for d in shape[1:])
        color = None
        if len(sample_shape) == 3 and sample_shape[-1] in (1, 3) and not str(overrides.get("dtype") or "").startswith("int"):
            color = ColorMode.GRAYSCALE if sample_shape[-1] == 1 else ColorMode.RGB
        spec = cls(shape=sample_shape, color_mode=color)
        chosen = {k: v for k, v in overrides.items() if v is not None}
        if str(chosen.get("dtype", "")).startswith(("int", "uint")) and (chosen.get("scale", 1.0) != 1.0
                                                                      or chosen.get("offset", 0.0) != 0.0):
            raise UsageError("the model takes integer token ids, which are used as they are; drop --scale and "
                             "--offset.")
        if "color_mode" in chosen:
            chosen["color_mode"] = ColorMode(chosen["color_mode"])
        return replace(spec, **chosen)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["shape"] = list(self.shape)
        out["color_mode"] = self.color_mode.value if self.color_mode else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocess":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["shape"] = tuple(values["shape"])
        if values.get("color_mode"):
            values["color_mode"] = ColorMode(values["color_mode"])
        return cls(**values)
