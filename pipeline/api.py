"""The library API. The CLI only parses options, calls these and renders what they return."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from edgecore.model_info import inspect_model
from pipeline.core.artifacts import atomic_write_bytes, check_writable, locked_output
from pipeline.core.config import ConvertConfig, PreprocessOverrides, QatOptions
from pipeline.core.data import fit_to_model, load_dataset
from pipeline.frontend.lint import embedding_rows
from pipeline.report.reports import build_run_report
from pipeline.run.context import Context
from pipeline.run.inspection import InspectConfig
from pipeline.run.plan import plan
from pipeline.run.stages import run_pipeline
from pipeline.train.distribute import prepared
from targets import (
    Capability,
    RunOptions,
    available_targets,
    call_isolated,
    check_options,
    get_target,
    in_worker,
    require,
)

from .errors import ConversionError, TargetError, UsageError, first_line, sentence
from .vocab import Preprocess, Recipe

log = logging.getLogger("edgepipe")

DEMO_TARGETS = ("host", "cortex-m4")


@dataclass(frozen=True)
class ConversionResult:
    """Where the artifacts went, the chosen artifact, and the report that describes them."""

    out: Path
    artifact: Path | None  # None for a non-chief worker of a multi-worker QAT run, which writes nothing
    report: dict[str, Any]


def convert(config: ConvertConfig, *, isolated: bool | None = None) -> ConversionResult:
    """Make the run's candidates, verify them, run them on the targets, choose one, and write the
    artifacts plus report.json/report.md/report.html (nothing is written if any stage fails).

    The run happens in a worker process (``isolated``, the default unless this already is one, or
    ``EDGEPIPE_IN_PROCESS=1``), so a crash inside TensorFlow's converter becomes a ConversionError
    naming what was being converted, never a dead process."""
    if not isinstance(config, ConvertConfig):
        raise UsageError(f"convert() takes a ConvertConfig, not {type(config).__name__}.")
    with prepared(config.qat.strategy if config.qat is not None else None):
        return _convert_prepared(config, isolated)


def _convert_prepared(config: ConvertConfig, isolated: bool | None) -> ConversionResult:
    run_plan = plan(config)
    if run_plan.writes:
        check_writable(config.out, run_plan.outputs, config.overwrite)
    if isolated is None:
        isolated = not in_worker() and os.environ.get("EDGEPIPE_IN_PROCESS") != "1"
    if isolated:
        # TensorFlow aborts (CHECK) instead of failing when a thread cannot be created (EAGAIN on a
        # machine momentarily out of threads): one fresh worker more before it is the model's fault.
        return call_isolated(_convert_here, config, what="TensorFlow's converter crashed", forward_stderr=True,
                             error=ConversionError, hint_for=crash_hint, retries=1)
    ctx = run_pipeline(Context(config=config, plan=run_plan))
    if not run_plan.writes:  # a non-chief worker of a multi-worker QAT run
        return ConversionResult(out=config.out, artifact=None, report=ctx.report)
    return ConversionResult(out=config.out, artifact=config.out / run_plan.spec(ctx.chosen).filename,
                            report=ctx.report)


def convert_torch(module: Any, example_input: Any, config: ConvertConfig, *, opset: int = 17) -> ConversionResult:
    """Convert a PyTorch ``module`` through ONNX: export it with ``torch.onnx.export`` (batch as in
    ``example_input``, e.g. ``torch.zeros(1, 1, 28, 28)``) to ``config.model``, which must end in
    ``.onnx``, then :func:`convert` that file. The report names the ONNX file, so ``edgepipe rerun``
    and ``edgepipe convert`` work on it without torch. Needs the ``torch`` extra (the CPU wheel)."""
    if not isinstance(config, ConvertConfig):
        raise UsageError(f"convert_torch() takes a ConvertConfig, not {type(config).__name__}.")
    if config.model.suffix.lower() != ".onnx":
        raise UsageError(f"convert_torch() exports the module to config.model, which must end in .onnx, "
                         f"not {config.model.name}.")
    if config.model.exists() and not config.overwrite:
        raise UsageError(f"{config.model} exists; pass overwrite=True or choose another config.model.")
    try:
        import torch
    except ImportError as exc:
        raise UsageError(f"convert_torch() needs PyTorch ({exc}); run `pip install edgepipe[torch]` "
                         "(the CPU wheel is enough).") from exc
    if not isinstance(module, torch.nn.Module):
        raise UsageError(f"convert_torch() takes a torch.nn.Module, not {type(module).__name__}.")
    config.model.parent.mkdir(parents=True, exist_ok=True)
    partial = config.model.with_name(f".{config.model.name}.partial")
    module.eval()
    try:
        with torch.no_grad():
            torch.onnx.export(module, example_input, str(partial), input_names=["input"], output_names=["output"],
                              opset_version=opset, dynamo=False)
    except Exception as exc:  # torch raises many kinds for untraceable modules
        partial.unlink(missing_ok=True)
        raise ConversionError(f"torch.onnx.export could not export {type(module).__name__} "
                              f"({first_line(exc)}); check that the module runs on example_input.") from exc
    os.replace(partial, config.model)
    return convert(config)


def _convert_here(config: ConvertConfig) -> ConversionResult:
    return convert(config, isolated=False)


def crash_hint(doing: str) -> str:
    """The likely cause of a crash inside the converter, from what it was doing."""
    if "calibrat" in doing or "int8" in doing or "int16x8" in doing:
        return ("TensorFlow's int8 calibration crashes on some graphs (recurrent layers, for one); try --recipe "
                "dynamic or float16, or check the model and data on a smaller sample")
    return "try another recipe, or re-export the model (model.export) and convert the SavedModel"


def _spec_for(info, preprocess: PreprocessOverrides) -> Preprocess:
    """The preprocessing a ``.tflite`` takes: its input shape, and ids as they are for an integer
    input the converter left unquantized (token ids)."""
    tensor = info.inputs[0]
    ids = not tensor.quantized and tensor.dtype.startswith(("int", "uint"))
    return Preprocess.from_input_shape((None, *tensor.shape[1:]), scale=preprocess.scale, offset=preprocess.offset,
                                       color_mode=preprocess.color_mode, dtype=tensor.dtype if ids else "float32")


def _eval_data(eval_path, spec: Preprocess, info, blob: bytes):
    """``--eval`` for a ``.tflite``: loaded, its labels and token ids checked against the model."""
    if eval_path is None:
        return None
    data = load_dataset(eval_path, spec, role="--eval")
    return fit_to_model(data, info.outputs[0].shape, embedding_rows(blob), "--eval")


def run_on_target(model_path: str | Path, target: str, eval_path: str | Path | None = None, *,
                  options: RunOptions = RunOptions(),
                  preprocess: PreprocessOverrides = PreprocessOverrides()) -> dict[str, Any]:
    """Run a ``.tflite`` on ``target`` (over ``eval_path`` when given) and return its report."""
    chosen = get_target(target)
    check_options(chosen, options)
    path, blob = _read_model(model_path, chosen)
    info = inspect_model(blob)
    spec = _spec_for(info, preprocess)
    data = _eval_data(eval_path, spec, info, blob)
    result = chosen.run(blob, data.x if data else None, data.y if data else None, options)
    return build_run_report(path, blob, info, data, data.preprocess if data else spec, target, result)


def run_on_fleet(model_path: str | Path, inventory: str | Path, eval_path: str | Path | None = None, *,
                 target: str | None = None, options: RunOptions = RunOptions(),
                 preprocess: PreprocessOverrides = PreprocessOverrides(), parallel: int = 4, timeout: float = 600.0,
                 out: str | Path | None = None) -> dict[str, Any]:
    """Run a ``.tflite`` on every device of an inventory (see :mod:`pipeline.run.fleet`); a device that
    fails is a row with its reason. With ``out``, report.json/md/html are written there."""
    from pipeline.report.reports import fleet_report, write_reports
    from pipeline.run.fleet import read_inventory, run_fleet

    devices = read_inventory(inventory, target)
    path = Path(model_path)
    if not path.is_file():
        raise UsageError(f"model {path} does not exist; give the .tflite file written by `edgepipe convert`.")
    if out is not None:
        check_writable(Path(out), ["report.json"], overwrite=True)
    blob = path.read_bytes()
    for name in dict.fromkeys(d.target for d in devices):
        _read_model(path, get_target(name))  # every board profile can run it
    info = inspect_model(blob)
    spec = _spec_for(info, preprocess)
    data = _eval_data(eval_path, spec, info, blob)
    fleet = run_fleet(blob, devices, data.x if data else None, data.y if data else None, options,
                      parallel=parallel, timeout=timeout)
    report = fleet_report(path, blob, info, data, data.preprocess if data else spec, fleet)
    if out is not None:
        with locked_output(Path(out)):
            write_reports(Path(out), report)
    return report


def deploy(model_path: str | Path, target: str, out: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Write the C++ deploy bundle for ``target`` (an MCU target) to ``out``; return its manifest."""
    from pipeline import __version__

    chosen = get_target(target)
    require(chosen, Capability.DEPLOY, "a deploy bundle (choose a microcontroller or NPU target)")
    path, blob = _read_model(model_path, chosen)
    out = Path(out)
    bundle = chosen.deploy(blob, tool_version=__version__)
    check_writable(out, list(bundle.files), overwrite)
    for name, data in bundle.files.items():
        atomic_write_bytes(out / name, data)
    log.info("wrote %s", ", ".join(str(out / n) for n in bundle.files))
    return bundle.manifest


def _read_model(model_path: str | Path, target) -> tuple[Path, bytes]:
    """The model's path and bytes, once the target has said it can run the model."""
    path = Path(model_path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise UsageError(f"model {path} {what}; give the .tflite file written by `edgepipe convert`.")
    blob = path.read_bytes()
    problems = target.check(blob)
    if problems:
        raise TargetError(sentence(f"target {target.name} cannot run {path.name}: {'; '.join(problems)}"))
    return path, blob


def inspect(config: InspectConfig) -> dict[str, Any]:
    """Per-layer diagnosis, number formats and calibration sweep of a float model (``edgepipe inspect``)."""
    from pipeline.run.inspection import inspect_model as run

    if not isinstance(config, InspectConfig):
        raise UsageError(f"inspect() takes an InspectConfig, not {type(config).__name__}.")
    return run(config)


def rerun(report_path: str | Path, out: str | Path | None = None):
    """Repeat the conversion a report.json describes; see :mod:`pipeline.report.rerun`."""
    from pipeline.report.rerun import rerun as repeat

    return repeat(report_path, convert, out)


def rebuild_reports(folder: str | Path, *, html: bool = True) -> list[Path]:
    """report.md (and report.html) in ``folder``, made again from its report.json."""
    import json

    from pipeline.report.reports import MissingKey, Traced, write_reports

    folder = Path(folder)
    path = folder / "report.json"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{folder} has no readable report.json ({exc}); give the --out folder of a run.") from exc
    try:
        report = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON ({exc}); {_write_again(folder, None)}.") from exc
    except RecursionError as exc:
        raise UsageError(f"{path} nests arrays or objects too deeply to be a report; "
                         f"{_write_again(folder, None)}.") from exc
    if not isinstance(report, dict):
        raise UsageError(f"{path} holds a JSON {type(report).__name__}, not a report object; "
                         f"{_write_again(folder, None)}.")
    if "schema" not in report and ("targets" not in report or "artifact" not in report):
        raise UsageError(f"{path} is not an edgepipe report (no schema, targets or artifact); give the --out folder "
                         "of a run.")
    try:
        names = write_reports(folder, Traced(report), html=html)
    except MissingKey as exc:
        raise UsageError(f"{path} lacks the key '{exc.path}', which the reports need (it was written by another "
                         f"version of edgepipe, or edited); {_write_again(folder, report)}.") from exc
    except RecursionError as exc:
        raise UsageError(f"{path} nests its values too deeply to be a report (edited?); "
                         f"{_write_again(folder, report)}.") from exc
    except (TypeError, ValueError, AttributeError, IndexError) as exc:
        # A key of the wrong type (a list where a table belongs, a string for a number): the file
        # was edited or damaged. The pages are rendered before anything is written.
        raise UsageError(f"{path} has a value of the wrong type ({type(exc).__name__}: {exc}); it was edited or "
                         f"damaged; {_write_again(folder, report)}.") from exc
    return [folder / name for name in names if name != "report.json"]


def _write_again(folder: Path, report: dict | None) -> str:
    """How to write a complete report.json in ``folder`` again."""
    if report is not None and isinstance(report.get("config"), dict):
        return f"re-run the conversion to write it again: `edgepipe rerun {folder / 'report.json'} --out {folder}`"
    if (folder / "edgepipe.toml").is_file():
        return (f"re-run the conversion to write it again: `edgepipe convert -c {folder / 'edgepipe.toml'} "
                f"--out {folder} --overwrite`")
    return "re-run the command that wrote it (its --out folder gets a complete report.json)"


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


def demo_lm_config(out: str | Path, *, overwrite: bool = False, options: RunOptions = RunOptions()) -> ConvertConfig:
    """The language-model demo: the sample character GPT as float32, float16, int16x8 and int8
    side by side (perplexity, size, host latency), rewritten for the edge as any run is."""
    return ConvertConfig(
        model=sample_path("char_gpt.keras"), calib=sample_path("lm", "calib.npz"), eval=sample_path("lm", "eval.npz"),
        recipes=(Recipe.INT8, Recipe.INT16X8, Recipe.FLOAT16, Recipe.FLOAT32), out=Path(out), targets=("host",),
        overwrite=overwrite, run=options,
    )


def demo(out: str | Path | None = None, *, overwrite: bool = False, options: RunOptions = RunOptions(),
         lm: bool = False) -> ConversionResult:
    """Run :func:`demo_config` (the reference CNN on the bundled MNIST sample, into ``demo-out``),
    or with ``lm`` :func:`demo_lm_config` (the sample character GPT, into ``demo-lm-out``)."""
    if lm:
        return convert(demo_lm_config(out or "demo-lm-out", overwrite=overwrite, options=options))
    return convert(demo_config(out or "demo-out", overwrite=overwrite, options=options))


__all__ = ["ConversionResult", "ConvertConfig", "InspectConfig", "PreprocessOverrides", "QatOptions", "Recipe",
           "RunOptions", "convert", "demo", "demo_config", "deploy", "inspect", "list_targets", "rebuild_reports", "rerun", "run_on_fleet", "run_on_target",
           "sample_path", "demo_lm_config"]
