"""The library API. The CLI only parses options, calls these and renders what they return."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from targets import RunOptions, available_targets, get_target
from targets.graph import inspect_model

from .artifacts import check_writable
from .config import ConvertConfig, PreprocessOverrides
from .data import load_dataset
from .errors import TargetError, UsageError
from .report import build_run_report
from .stages import QAT_STAGES, STAGES, Context, run_pipeline
from .vocab import Preprocess, Recipe

log = logging.getLogger("edgepipe")

DEMO_TARGETS = ("host", "cortex-m4")


@dataclass(frozen=True)
class ConversionResult:
    """Where the artifacts went and the report that describes them."""

    out: Path
    artifact: Path
    report: dict[str, Any]


def convert(config: ConvertConfig) -> ConversionResult:
    """Load, convert, verify, run targets and write artifacts plus report.json/report.md."""
    for name in config.targets:
        get_target(name)  # unknown targets fail before any work is done
    check_writable(config.out, config.output_names, config.overwrite)
    if config.qat is not None and config.recipe is not Recipe.INT8:
        raise UsageError("quantization-aware training produces int8 models; use the int8 recipe.")
    ctx = run_pipeline(Context(config=config), QAT_STAGES if config.qat else STAGES)
    return ConversionResult(out=config.out, artifact=config.out / config.artifact_name, report=ctx.report)


def run_on_target(model_path: str | Path, target: str, eval_path: str | Path | None = None, *,
                  options: RunOptions = RunOptions(),
                  preprocess: PreprocessOverrides = PreprocessOverrides()) -> dict[str, Any]:
    """Run a ``.tflite`` on ``target`` (over ``eval_path`` when given) and return its report."""
    chosen, path, blob = _model_for_target(model_path, target)
    info = inspect_model(blob)
    spec = Preprocess.from_input_shape((None, *info.inputs[0].shape[1:]), scale=preprocess.scale,
                                       offset=preprocess.offset, color_mode=preprocess.color_mode)
    data = load_dataset(eval_path, spec, role="--eval") if eval_path is not None else None
    result = chosen.run(blob, data.x if data else None, data.y if data else None, options)
    return build_run_report(path, blob, info, data, data.preprocess if data else spec, target, result)


def deploy(model_path: str | Path, target: str, out: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Write the C++ deploy bundle for ``target`` (an MCU target) to ``out``; return its manifest."""
    from targets.deploy import build_bundle
    from targets.flatbuffer import read_ops
    from targets.tflm import run_isolated

    from . import __version__
    from .artifacts import atomic_write_bytes

    if "deploy" not in get_target(target).capabilities:
        deployable = [name for name, t in available_targets().items() if "deploy" in t.capabilities]
        raise UsageError(f"target {target} has no deploy bundle; choose a microcontroller target: {', '.join(deployable)}.")
    chosen, _, blob = _model_for_target(model_path, target)
    out = Path(out)
    names = ["model_data.h", "model_data.cc", "model_ops.h", "deploy.json"]
    check_writable(out, names, overwrite)
    info = inspect_model(blob)
    arena, _ = run_isolated(blob, info, None)
    memory = chosen.memory(blob, read_ops(blob), arena.total)
    bundle = build_bundle(blob, info, target=target, arena_bytes=memory["arena_device_bytes"],
                          arena_measured=arena.total, tool_version=__version__)
    bundle.manifest.update({"fits": memory["fits"], "ram_bytes": memory["ram_bytes"], "flash_bytes": memory["flash_bytes"]})
    for name, data in bundle.files.items():
        atomic_write_bytes(out / name, data)
    log.info("wrote %s", ", ".join(str(out / n) for n in names))
    return bundle.manifest


def _model_for_target(model_path: str | Path, target: str):
    """The target, the model's path and bytes, once the target has said it can run the model."""
    chosen = get_target(target)
    path = Path(model_path)
    if not path.is_file():
        raise UsageError(f"model {path} does not exist; give the .tflite file written by `edgepipe convert`.")
    blob = path.read_bytes()
    problems = chosen.check(blob)
    if problems:
        raise TargetError(f"target {target} cannot run {path.name}: {'; '.join(problems)}.")
    return chosen, path, blob


def list_targets() -> list[dict[str, Any]]:
    """One summary row per registered target."""
    return [target.summary() for target in available_targets().values()]


def sample_path(*parts: str) -> Path:
    """A file shipped in ``calibration_data`` (the MNIST sample and the reference CNN)."""
    return Path(str(resources.files("calibration_data").joinpath(*parts)))


def demo_config(out: str | Path, *, overwrite: bool = False, options: RunOptions = RunOptions()) -> ConvertConfig:
    """The demo: the reference CNN, int8 with float32 baseline, on the bundled MNIST sample."""
    return ConvertConfig(
        model=sample_path("reference_cnn.keras"), calib=sample_path("mnist", "calib.npz"),
        eval=sample_path("mnist", "eval.npz"), recipe=Recipe.INT8, out=Path(out),
        targets=DEMO_TARGETS, overwrite=overwrite, run=options,
    )


def demo(out: str | Path = "demo-out", *, overwrite: bool = False, options: RunOptions = RunOptions()) -> ConversionResult:
    return convert(demo_config(out, overwrite=overwrite, options=options))


__all__ = ["ConversionResult", "ConvertConfig", "PreprocessOverrides", "Recipe", "RunOptions",
           "convert", "demo", "demo_config", "list_targets", "run_on_target"]
