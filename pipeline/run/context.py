"""The typed state a run's stages share, and the plan that orders them.

Stages read and fill one :class:`Context`; :func:`pipeline.run.plan.plan` decides which stages run
and which candidates they make. Nothing here runs anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from pipeline.core.candidates import (
    Candidate,
    CandidateSpec,
    Evaluation,
    FloatBaseline,
    Verification,
)
from pipeline.core.config import ConvertConfig
from pipeline.core.data import Dataset
from pipeline.frontend.loading import LoadedModel
from pipeline.quantize.calibration import CalibrationWork
from pipeline.vocab import LayerStatus, Preprocess

BASELINE_FILE = "model_float32.tflite"
CONFIG_FILE = "edgepipe.toml"  # the resolved configuration, to pass back with -c
REPORT_FILES = ("report.json", "report.md", "report.html", CONFIG_FILE)


@dataclass(frozen=True)
class Stage:
    """One step of a run: a name for progress lines and a plain function over the context."""

    name: str
    run: Callable[["Context"], None]


@dataclass(frozen=True)
class RunPlan:
    """What a run will do: its stages in order, the candidates it makes, which one the report's
    top-level keys describe, and the files it writes."""

    stages: tuple[Stage, ...]
    candidates: tuple[CandidateSpec, ...]
    chosen: str | None  # None: a stage chooses (the ladder)
    baseline_file: str | None  # None when a candidate is the float32 model itself
    tolerant_targets: bool = False  # a target that cannot run a candidate is a cell, not a failure
    writes: bool = True  # False for a non-chief worker of a multi-worker QAT run

    @property
    def outputs(self) -> list[str]:
        if not self.writes:
            return []
        files = [spec.filename for spec in self.candidates]
        if self.baseline_file:
            files.insert(0, self.baseline_file)
        return [*files, *REPORT_FILES]

    def spec(self, name: str) -> CandidateSpec:
        return next(spec for spec in self.candidates if spec.name == name)


@dataclass
class QatRecord:
    """What quantization-aware training did: the layer scan, the rebuild check, the epochs, and
    the parity of the fake-quantized Keras model with its ``.tflite``."""

    rebuild_max_abs_difference: float
    layers: list[Any]
    legacy_model: Any = field(default=None, repr=False)
    epochs_run: int = 0
    resumed_from_epoch: int = 0
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)
    keras_accuracy: float | None = None
    parity: dict[str, Any] | None = None
    strategy: dict[str, Any] | None = None  # the tf.distribute engine and how many replicas

    def to_dict(self) -> dict[str, Any]:
        counts = {str(status): sum(row.status is status for row in self.layers)
                  for status in (LayerStatus.QUANTIZED, LayerStatus.CUSTOM, LayerStatus.FLOAT)}
        return {
            "rebuild_max_abs_difference": self.rebuild_max_abs_difference,
            "layers": [row.to_dict() for row in self.layers], "layer_counts": counts,
            "epochs_run": self.epochs_run, "resumed_from_epoch": self.resumed_from_epoch,
            "stopped_early": self.stopped_early, "history": self.history,
            "keras_accuracy": self.keras_accuracy, "strategy": self.strategy,
            **({"parity": self.parity} if self.parity else {}),
        }


@dataclass
class Context:
    """Everything the stages of one run share, filled in stage by stage."""

    config: ConvertConfig
    plan: RunPlan
    model: LoadedModel | None = None  # the model candidates are made from (rewritten, if it was)
    source_model: LoadedModel | None = None  # the user's model, when ctx.model is its rewrite
    float_artifact: bytes | None = None  # the float32 .tflite of ctx.model, once made
    preprocess: Preprocess | None = None
    calib: Dataset | None = None
    eval: Dataset | None = None
    holdout: Dataset | None = None  # --holdout: chosen on instead of the last fifth of calib
    train: Dataset | None = None
    baseline: FloatBaseline | None = None
    float_outputs: np.ndarray | None = None
    candidates: list[Candidate] = field(default_factory=list)
    verifications: dict[str, Verification] = field(default_factory=dict)
    evaluations: list[Evaluation] = field(default_factory=list)
    chosen: str | None = None
    qat: QatRecord | None = None
    calibration: CalibrationWork | None = None
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)  # per candidate: calibration, islands
    ladder: dict[str, Any] | None = None
    lint: list[dict[str, Any]] | None = None  # transformer lint of the float graph (pipeline.run.transformer)
    rewrite: dict[str, Any] | None = None  # the edge-friendly rewrites applied, and their float check
    diagnosis: list[dict] | None = None
    comparison: dict[str, Any] | None = None
    after_emit: list[Callable[[], None]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    def candidate(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.name == name)

    def results(self, candidate: str) -> dict[str, Any]:
        """Target name -> TargetResult for one candidate, in the order the targets ran."""
        return {e.target: e.result for e in self.evaluations if e.candidate == candidate and e.result is not None}

    @property
    def eval_xy(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        return (self.eval.x, self.eval.y) if self.eval is not None else (None, None)
