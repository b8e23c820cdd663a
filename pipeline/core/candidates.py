"""Candidates and the matrix: typed records of what a run made and how each did where.

A :class:`Candidate` is one model the run made (how: :class:`Made`; what: its artifact bytes and
model description). A :class:`Verification` is how it compares with the float model on the eval
data; an :class:`Evaluation` is one candidate on one target. The report renders these; nothing
here runs anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from edgecore.model_info import ModelInfo
from pipeline.vocab import Activations, Calibration, ModelFormat, Recipe, Task, Weights
from targets import TargetResult


@dataclass(frozen=True)
class Made:
    """How a candidate was made: recipe, calibration, weight and activation scheme, float
    and int16 islands, PTQ or QAT, and the source format of the float model."""

    recipe: Recipe
    calibration: Calibration | None = None
    weights: Weights | None = None
    activations: Activations | None = None
    float_layers: tuple[str, ...] = ()
    int16_layers: tuple[str, ...] = ()  # int16 islands (layer:OP groups once resolved)
    qat: bool = False
    source: ModelFormat | None = None
    percentile: float | None = None

    @property
    def converter_default(self) -> bool:
        """Made exactly as the TFLite converter makes it (min/max, per-channel, asymmetric, no islands)."""
        return (self.calibration in (None, Calibration.MINMAX) and self.weights in (None, Weights.PER_CHANNEL)
                and self.activations in (None, Activations.ASYMMETRIC) and not self.float_layers
                and not self.int16_layers)

    @classmethod
    def for_recipe(cls, recipe: Recipe, *, qat: bool = False) -> "Made":
        """The defaults of the TFLite converter for ``recipe``."""
        calibrated = recipe.needs_calibration
        return cls(
            recipe=recipe,
            calibration=Calibration.MINMAX if calibrated else None,
            weights=None if recipe in (Recipe.FLOAT16, Recipe.FLOAT32) else Weights.PER_CHANNEL,
            # int16x8 activations are symmetric (zero point 0) by TFLite's 16x8 specification.
            activations=(Activations.ASYMMETRIC if recipe is Recipe.INT8 else Activations.SYMMETRIC) if calibrated else None,
            qat=qat,
        )

    def to_dict(self) -> dict[str, Any]:
        value = lambda v: None if v is None else str(v)  # noqa: E731
        return {"recipe": str(self.recipe), "calibration": value(self.calibration), "weights": value(self.weights),
                "activations": value(self.activations), "float_layers": list(self.float_layers),
                "int16_layers": list(self.int16_layers),
                "qat": self.qat, "source": value(self.source), "percentile": self.percentile}


@dataclass(frozen=True)
class CandidateSpec:
    """A candidate the plan asks for: its name, its file in ``--out`` and how to make it."""

    name: str
    filename: str
    made: Made


@dataclass(frozen=True)
class Candidate:
    """A model the run made: how, and the artifact (bytes and description)."""

    name: str
    filename: str
    made: Made
    artifact: bytes = field(repr=False)
    info: ModelInfo = field(repr=False)

    @classmethod
    def from_spec(cls, spec: CandidateSpec, artifact: bytes, info: ModelInfo, source: ModelFormat) -> "Candidate":
        return cls(name=spec.name, filename=spec.filename, made=replace(spec.made, source=source),
                   artifact=artifact, info=info)


@dataclass(frozen=True)
class Verification:
    """A candidate against the float model on the eval data (host outputs)."""

    task: Task
    float_accuracy: float | None
    accuracy: float | None
    agreement: float | None
    output_error: dict[str, float | None]
    float_perplexity: float | None = None  # sequence models
    perplexity: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"task": str(self.task), "float_accuracy": self.float_accuracy, "accuracy": self.accuracy,
               "agreement": self.agreement, "output_error": self.output_error}
        if self.task is Task.SEQUENCE:
            out.update(float_perplexity=self.float_perplexity, perplexity=self.perplexity)
        return out


@dataclass
class Evaluation:
    """One candidate on one target: the target's result (``problem`` says why there is none)."""

    candidate: str
    target: str
    result: TargetResult | None = None
    problem: str | None = None


@dataclass
class FloatBaseline:
    """The float32 ``.tflite`` of the float model, and (once verified) how it compares with Keras."""

    artifact: bytes = field(repr=False)
    info: ModelInfo = field(repr=False)
    host_latency_ms: dict[str, float] | None = None
    tflite_accuracy: float | None = None
    tflite_vs_keras: dict[str, float | None] | None = None
