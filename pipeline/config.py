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

    @property
    def artifact_name(self) -> str:
        return f"model_{self.recipe.value}.tflite"

    @property
    def output_names(self) -> list[str]:
        names = [self.artifact_name, "report.json", "report.md"]
        return names if self.recipe is Recipe.FLOAT32 else ["model_float32.tflite", *names]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("model", "calib", "eval", "out"):
            out[key] = None if out[key] is None else str(out[key])
        out["recipe"] = self.recipe.value
        out["targets"] = list(self.targets)
        return out
