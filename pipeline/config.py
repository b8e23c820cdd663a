"""What a conversion run was asked to do: one frozen, serialisable config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from targets.base import RunOptions

from .convert import DEFAULT_CALIB_SAMPLES
from .vocab import Recipe


@dataclass(frozen=True)
class PreprocessOverrides:
    """User choices that replace what is read from the model's input shape (None = keep)."""

    scale: float | None = None
    offset: float | None = None
    color_mode: str | None = None


@dataclass(frozen=True)
class QatOptions:
    train: Path
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-4
    seed: int = 0
    patience: int = 2
    strategy: str = "default"  # or "mirrored": tf.distribute.MirroredStrategy over local GPUs
    parity_tolerance: float = 0.01
    resume: bool = True

    def to_dict(self) -> dict:
        out = asdict(self)
        out["train"] = str(self.train)
        return out


@dataclass(frozen=True)
class ConvertConfig:
    model: Path
    calib: Path | None
    eval: Path | None = None
    recipe: Recipe = Recipe.INT8
    out: Path = Path("edgepipe-out")
    targets: tuple[str, ...] = ("host",)
    float_io: bool = False
    dynamic_batch: bool = False
    unsafe: bool = False
    overwrite: bool = False
    calib_samples: int | None = DEFAULT_CALIB_SAMPLES
    preprocess: PreprocessOverrides = field(default_factory=PreprocessOverrides)
    run: RunOptions = field(default_factory=RunOptions)
    qat: QatOptions | None = None

    @property
    def artifact_name(self) -> str:
        return "model_int8_qat.tflite" if self.qat else f"model_{self.recipe.value}.tflite"

    @property
    def ptq_name(self) -> str:
        return "model_int8_ptq.tflite"

    @property
    def output_names(self) -> list[str]:
        names = [self.artifact_name, "report.json", "report.md"]
        if self.qat:
            names.insert(0, self.ptq_name)
        return names if self.recipe is Recipe.FLOAT32 else ["model_float32.tflite", *names]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("model", "calib", "eval", "out"):
            out[key] = None if out[key] is None else str(out[key])
        out["recipe"] = self.recipe.value
        out["targets"] = list(self.targets)
        out["qat"] = self.qat.to_dict() if self.qat else None
        return out
